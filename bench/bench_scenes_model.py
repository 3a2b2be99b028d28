"""Time candidate scenes-model architectures on this CPU: one training step (forward + backward + AdamW) at a batch
size, and sampling throughput (images/s for a DDIM loop of ``--sample-steps``).

    flock /tmp/cpu.lock python bench/bench_scenes_model.py --threads 2 --batch 128
"""

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from find_rl.worlds.scenes.pipeline import ScenesModelConfig, build_pipeline, num_parameters

D2 = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
CANDIDATES = {
    "default": ScenesModelConfig(),
    "p1_32_64_64": ScenesModelConfig(patch_size=1, block_out_channels=(32, 64, 64)),
    "p2_48_96_96": ScenesModelConfig(block_out_channels=(48, 96, 96)),
    "p2_32_64_96": ScenesModelConfig(block_out_channels=(32, 64, 96)),
    "p2_48_64_96": ScenesModelConfig(block_out_channels=(48, 64, 96)),
    "p2_32_64_64": ScenesModelConfig(block_out_channels=(32, 64, 64)),
    "p2_48_96": ScenesModelConfig(block_out_channels=(48, 96), **D2),
    "p2_64_96": ScenesModelConfig(block_out_channels=(64, 96), **D2),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--sample-steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name, cfg in CANDIDATES.items():
        if a.only and name not in a.only:
            continue
        torch.manual_seed(0)
        pipe = build_pipeline(cfg)
        params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3)
        ids = pipe.tokenize(["a red circle left of a blue square"] * a.batch)
        x = torch.randn(a.batch, 3, 32, 32)
        t = torch.randint(0, 1000, (a.batch,))
        times = []
        for r in range(a.reps + 1):
            t0 = time.perf_counter()
            pred = pipe.denoise(x, t, pipe.encode_ids(ids))
            loss = F.mse_loss(pred, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        step = min(times[1:])
        pipe.unet.eval()
        prompts = ["a red circle left of a blue square"] * a.sample_batch
        pipe(prompts[:2], num_inference_steps=2)
        t0 = time.perf_counter()
        pipe(prompts, num_inference_steps=a.sample_steps)
        ips = a.sample_batch / (time.perf_counter() - t0)
        n = num_parameters(pipe)
        print(f"{name:10s} unet {n['unet']:>9,} text {n['text_encoder']:>7,}  train step (batch {a.batch}) {step:.3f} s  "
              f"sampling {ips:.1f} img/s ({a.sample_steps} steps, batch {a.sample_batch}, {a.threads} threads)", flush=True)


if __name__ == "__main__":
    main()
