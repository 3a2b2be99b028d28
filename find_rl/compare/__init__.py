"""FIND against its baselines at equal reward-evaluation budgets: ``python -m find_rl.compare --methods ... --out DIR``
(also reachable as ``python -m find_rl.evaluate --methods ...``).

Methods (each trained, where it trains, for ``--seeds`` seeds; every one scored the same way on fresh samples):

==================  ==========================================================================================
``base``            the frozen model under N(0, I)
``best-of-N``       N candidates from N(0, I) per delivered image, the reward keeps the best (e.g. ``best-of-16``)
``cem``             cross-entropy method / iterated elite means on the noise (:mod:`find_rl.baselines.cem`)
``cem-4x4``         the same, learning FIND's C x 4 x 4 mean (method and parametrisation unconfounded)
``ddpo``            DDPO-style RL fine-tuning of the denoiser on Ray Train (:mod:`find_rl.baselines.ddpo`)
``find``            ``python -m find_rl.train`` with its defaults (through :mod:`find_rl.run.find_run`)
``find-nocal``      ... ``--baseline none``;  ``find-noclip``: ``--clip-param inf``;  ``find-clamp``: ``--surrogate clamp``
``find-paper``      the released code's loop: one sample per iteration, clamp-only ratio (:mod:`find_rl.baselines.paper_loop`);
                    ``find-paper-4x4`` with FIND's C x 4 x 4 mean; any FIND method also as ``NAME+SETTING=VALUE``
``amortized``       one prompt-conditioned policy trained on every shapes prompt except ``--held-out``, scored on all
``amortized-all``   the same policy trained on all nine shapes prompts
==================  ==========================================================================================

Writes ``DIR/results.json`` (``{method: {prompt: {alignment, strict_alignment, diversity, reward_evals, wall_s, ...}}}``,
means over seeds), ``DIR/summary.json`` (per method: means and 95% t-intervals over seeds, the criteria),
``DIR/report.md``, ``DIR/alignment_vs_evals.png``, ``DIR/alignment_vs_wall.png`` and ``DIR/grids/<prompt>.png``.

Modules: ``settings`` (flags, method names), ``methods`` (one function per method -> ``MethodResult``), ``cache``,
``stats`` (intervals, aggregate, criteria), ``report``, ``cli``.
"""

from find_rl.compare.settings import DEFAULT_HELD_OUT, FIND_METHODS, CompareSettings, parse_methods
from find_rl.compare.stats import aggregate, criteria, mean_ci, time_to_reach

__all__ = ["CompareSettings", "DEFAULT_HELD_OUT", "FIND_METHODS", "aggregate", "criteria", "mean_ci", "parse_methods",
           "time_to_reach"]
