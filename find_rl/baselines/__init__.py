"""Baselines FIND is measured against, at equal reward-evaluation budgets (see :mod:`find_rl.compare`):

- :mod:`~find_rl.baselines.best_of_n`: best-of-N at generation time (N reward evaluations per delivered image);
- :mod:`~find_rl.baselines.cem`: the cross-entropy method / iterated elite means on the initial noise;
- :mod:`~find_rl.baselines.paper_loop`: the released FIND code's loop (one sample per iteration, clamp-only ratio
  against N(0, I), L2 "KL"), as a faithful ablation of this implementation's batching and PPO clipping;
- :mod:`~find_rl.baselines.ddpo`: DDPO-style RL fine-tuning of the diffusion model itself, data-parallel on Ray
  Train's ``TorchTrainer``.

Everything but the DDPO trainer is free of Ray.
"""
