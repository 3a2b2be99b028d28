"""Where a DDPO iteration's time goes: per-iteration sampling (trajectories + reward), update (backward through the
trained steps) and the rest (Ray Train's report), read from a finished comparison run's history.

    python -m find_rl.evaluate --methods ddpo --seeds 0 --iterations 8 --out runs/ddpo-timing [--device cuda --ddpo-workers 1]
    python bench/ddpo_phases.py runs/ddpo-timing/runs/ddpo_s0/method.json
"""

import json
import sys

import numpy as np

run = json.load(open(sys.argv[1]))
hist = run["history"]
step = np.diff(np.r_[0.0, [h["wall_s"] for h in hist]])
sample = np.array([h["sample_s"] for h in hist])
update = np.array([h["update_s"] for h in hist])
for h, d, s, u in zip(hist, step, sample, update):
    print(f"iteration {h['iteration']:3d}: {d:.3f} s = sample {s:.3f} + update {u:.3f} + other {d - s - u:.3f}")
k = slice(1, None) if len(hist) > 1 else slice(None)  # the first iteration carries warm-up
print(f"median after the first: iteration {np.median(step[k]):.3f} s, sample {np.median(sample[k]):.3f}, "
      f"update {np.median(update[k]):.3f}; fit wall {run['wall_s']:.1f} s")
