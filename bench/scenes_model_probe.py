"""Probe a scenes-model recipe: train for ``--steps`` (optionally with architecture/recipe overrides as JSON), then
score the EMA model on ``default_eval_prompts`` and print the split x category table.

    flock /tmp/cpu.lock python bench/scenes_model_probe.py --steps 500 --threads 2 --samples 4 [--model '{...}'] [--train '{...}']
"""

import argparse
import json
import time
from dataclasses import replace

import torch

from find_rl.core.settings import SamplerSettings
from find_rl.worlds.scenes.baseline import evaluate, markdown_table
from find_rl.worlds.scenes.pipeline import ScenesModelConfig, num_parameters
from find_rl.worlds.scenes.train_model import TrainConfig, train

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=500)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--samples", type=int, default=4)
ap.add_argument("--model", default="{}")
ap.add_argument("--train", default="{}")
ap.add_argument("--save", default=None)
ap.add_argument("--eval-steps", type=int, nargs="*", default=[None])
ap.add_argument("--guidance", type=float, nargs="*", default=[None])
a = ap.parse_args()
torch.set_num_threads(a.threads)
m = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(a.model).items()}
mc = replace(ScenesModelConfig(), **m)
tc = replace(TrainConfig(steps=a.steps), **json.loads(a.train))
print(mc, tc, flush=True)
pipe, rec = train(tc, mc, log=lambda s: print(s, flush=True))
print(num_parameters(pipe), rec, flush=True)
if a.save:
    pipe.save_pretrained(a.save)
pipe.set_progress_bar_config(disable=True)
for st in a.eval_steps:
    for g in a.guidance:
        r = evaluate(pipe, samples=a.samples, seed=0, settings=SamplerSettings(  # DDIM, guidance on every step
            scheduler="ddim", num_inference_steps=st, guidance_scale=g, guidance_rescale=0.0, guidance_stop=1.0))
        print(f"--- eval steps {st} guidance {g}: {r['images_per_second']:.1f} img/s")
        print(markdown_table(r), flush=True)
