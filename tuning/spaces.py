"""Search spaces for ``python -m find_rl.tune``: train-flag names (argparse dests) -> Ray Tune domains.

Why the default ``clip_param`` grid is so small: FIND's ratio is the *per-element* mean of the log-density ratio
(``find_rl/policies/policy_math.py``). For a mean step of delta (in sigma units) per element, a sample's log ratio is about
-delta^2 / 2 +- |delta| / sqrt(D), i.e. about -approx_kl: ~0.001 per update at the default lr 0.05 and up to ~0.01 at
lr 0.1 on the shapes world (``bench/RESULTS.md``). The PPO clip binds only when ``clip_param`` is of that order, so
0.2 (the old default, which never binds there) is the reference point and the others bracket the measured step sizes.
The sweep runs at lr 0.1 (the default since this sweep showed the clip is what keeps it stable: unclipped, a prompt
collapsed to 0 alignment). ``--kl-grid`` adds the flow family's ``kl_coeff`` (beta) as a second axis; ``--beta-grid`` and ``--prior-share-grid``
sweep the mass-covering objectives' target temperature and behaviour prior share (``--objective log-variance | iw-mle``;
the clip grid is then idle: give it one value).
"""

from __future__ import annotations

CLIP_PARAM_GRID = (0.002, 0.005, 0.01, 0.2)
SEEDS = (0,)
#: train flags the clip sweep changes from the train defaults (a faster lr where the clip has work to do)
CLIP_SWEEP_OVERRIDES = {"lr": 0.1, "iterations": 60, "eval_samples": 128}


def clip_sweep(grid=CLIP_PARAM_GRID, seeds=SEEDS, kl_grid=None, *, beta_grid=None, prior_share_grid=None) -> dict:
    """The param space: every ``clip_param`` in ``grid`` crossed with every seed (and every ``kl_coeff`` of ``kl_grid``,
    ``beta`` of ``beta_grid`` and ``prior_share`` of ``prior_share_grid``: the mass-covering objective's target
    temperature and behaviour prior share)."""
    from ray import tune

    if not grid or any(c <= 0 for c in grid):
        raise ValueError(f"clip_param values must be > 0, got {list(grid)}")
    space = {"clip_param": tune.grid_search([float(c) for c in grid]), "seed": tune.grid_search([int(s) for s in seeds])}
    if kl_grid:
        space["kl_coeff"] = tune.grid_search([float(k) for k in kl_grid])
    if beta_grid:
        space["beta"] = tune.grid_search([float(b) for b in beta_grid])
    if prior_share_grid:
        space["prior_share"] = tune.grid_search([float(s) for s in prior_share_grid])
    return space
