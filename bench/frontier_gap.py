"""Where a policy family's points lie against another family's alignment / aligned-diversity curve.

    python bench/frontier_gap.py runs/compare/summary.json \
        --curve find find+anchor_coeff=0.003 find+anchor_coeff=0.01 \
        --points find+policy_type=flow find+policy_type=flow+kl_coeff=0.005 find+policy_type=flow+kl_coeff=0.02

Reads the ``summary.json`` that ``python -m find_rl.evaluate`` writes (means and 95% intervals over seeds). The curve is
the piecewise-linear interpolation of aligned diversity kept against alignment through the ``--curve`` methods; for each
``--points`` method inside the curve's alignment range it prints the curve's value at the point's alignment and the gap
(point minus curve, in percentage points). A point outside the range is reported as such, not extrapolated.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def curve_at(curve: list[tuple[float, float]], alignment: float) -> float | None:
    """The curve's aligned-kept at ``alignment`` (linear between its points), None outside its alignment range."""
    xs, ys = zip(*sorted(curve))
    if not xs[0] <= alignment <= xs[-1]:
        return None
    return float(np.interp(alignment, xs, ys))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", help="summary.json written by python -m find_rl.evaluate")
    ap.add_argument("--curve", nargs="+", required=True, help="methods whose points make the curve (at least two)")
    ap.add_argument("--points", nargs="+", required=True, help="methods to place against the curve")
    a = ap.parse_args(argv)
    methods = json.load(open(a.summary))["methods"]
    missing = [m for m in a.curve + a.points if m not in methods]
    if missing:
        sys.exit(f"error: {', '.join(missing)} not in {a.summary} (it has: {', '.join(methods)})")
    if len(a.curve) < 2:
        sys.exit("error: --curve needs at least two methods")

    def point(m: str) -> tuple[float, float]:
        return methods[m]["alignment"]["mean"], methods[m]["aligned_kept"]["mean"]

    curve = [point(m) for m in a.curve]
    print("| method | alignment | aligned diversity kept | curve at that alignment | gap |")
    print("|---|---|---|---|---|")
    for m in a.curve + a.points:
        x, y = point(m)
        ci = methods[m]["aligned_kept"]["ci95"]
        if m in a.curve:
            print(f"| {m} (curve) | {x:.3f} | {y:.0%} ± {ci:.0%} | | |")
            continue
        c = curve_at(curve, x)
        gap = "outside the curve's range" if c is None else f"{100 * (y - c):+.1f} points"
        print(f"| {m} | {x:.3f} | {y:.0%} ± {ci:.0%} | {'—' if c is None else f'{c:.0%}'} | {gap} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
