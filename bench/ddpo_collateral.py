"""What fine-tuning the denoiser (the DDPO baseline) does to the prompts it was not trained on.

FIND leaves the diffusion model untouched: every other prompt keeps the frozen model's images. DDPO changes the
shared denoiser, so its effect on the common prompts is part of its cost. For each finished DDPO run of a comparison,
scores the fine-tuned model (its own sampler, eta 1) and the frozen model on every shapes prompt, 256 fresh samples.
``--eta 0`` renders both with deterministic DDIM instead, the sampler every other method of the comparison is scored
with (DDPO trained the eta-1 sampler; this asks how much of its gain survives on the deterministic one).

    python bench/ddpo_collateral.py runs/compare/runs/ddpo_s0 runs/compare/runs/ddpo_s1 runs/compare/runs/ddpo_s2
    python bench/ddpo_collateral.py --eta 0 runs/compare/runs/ddpo_s0 runs/compare/runs/ddpo_s1 runs/compare/runs/ddpo_s2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel

from find_rl.baselines.ddpo import DDPOSettings
from find_rl.evaluate import evaluate_distributions
from find_rl.diffusion.models import load_pipeline
from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings
from find_rl.worlds.shapes.world import all_prompts, rare_prompts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path, help="comparison run folders (runs/<out>/runs/ddpo_s<seed>)")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eta", type=float, default=None, help="DDIM eta of both samplers (default: DDPO's training eta, 1)")
    a = ap.parse_args()
    if a.eta is not None and not 0 <= a.eta <= 1:
        ap.error(f"--eta must lie in [0, 1], got {a.eta}")
    torch.set_num_threads(a.threads)
    prompts, rare = all_prompts(), set(rare_prompts())
    common = [p for p in prompts if p not in rare]
    eta = DDPOSettings().eta if a.eta is None else a.eta
    for run in a.runs:
        unets = sorted(run.glob("*/checkpoint_*/unet"))
        if not unets:
            raise SystemExit(f"{run}: no DDPO checkpoint (*/checkpoint_*/unet); pass a finished ddpo_s<seed> run folder")
        seed = int(run.name.rsplit("_s", 1)[1])
        scores = {}
        for name, unet in (("frozen", None), ("ddpo", unets[-1])):
            pipe = load_pipeline("shapes")
            if unet is not None:
                pipe.unet = UNet2DModel.from_pretrained(unet, low_cpu_mem_usage=False)
            sampler = DiffusionSampler(pipe, SamplerSettings(eta=eta), seed=10_000 + seed)
            scores[name] = evaluate_distributions(prompts=prompts, samples=a.samples, seed=10_000 + seed, sampler=sampler)
        for group, ps in (("common", common), ("rare", sorted(rare))):
            f, d = (np.mean([scores[k][p]["alignment"] for p in ps]) for k in ("frozen", "ddpo"))
            kept = np.mean([scores["ddpo"][p]["diversity"] / scores["frozen"][p]["diversity"] for p in ps])
            print(f"{run} (eta {eta:g}): {group} prompts alignment frozen {f:.3f} -> ddpo {d:.3f}, diversity kept {kept:.0%}", flush=True)
        print("  " + ", ".join(f"{p} {scores['frozen'][p]['alignment']:.2f}->{scores['ddpo'][p]['alignment']:.2f}" for p in common))


if __name__ == "__main__":
    main()
