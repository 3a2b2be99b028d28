"""Offline probes of the amortised noise policy on the scenes world (issue 24): how much can a prompt-conditioned mean
learn from a fixed set of scored noises, or from per-prompt FIND teachers, and does it carry to held-out prompts?

Three steps (each alone on the CPU; 2 torch threads):

    # 1. N(0, I) draws for the first N training prompts, K each, rendered and scored (600 x 32: ~6 min)
    python bench/amortized_offline.py collect --prompts 600 --samples 32 --out runs/offline/d600.pt
    # 2. reward-weighted regression: the network's mean fitted to each prompt's softmax(r / beta)-weighted mean draw
    python bench/amortized_offline.py fit --data runs/offline/d600.pt --splits train
    # 3. distillation (NPNet-style): the network fitted to per-prompt FIND means (a teacher run's export)
    python bench/amortized_offline.py teacher-prompts --prompts 40 > runs/offline/dist40.txt
    python -m find_rl.train --world scenes --prompts-file runs/offline/dist40.txt --prompts-per-iteration 40 --samples-per-prompt 32 --iterations 20 --lr 0.05 --eval-samples 32 --out runs/dist40
    python bench/amortized_offline.py fit --teacher runs/dist40

``fit`` scores the fitted means (sigma 1) and the frozen model on the evaluation set's cells of ``--splits`` (default:
every split; ``train``: the first 48 fitted prompts) with the same noise (seed 7, ``--samples`` per prompt), and prints
each split's GenEval overall, the "unseen overall" (policy + held-out cells) and the per-prompt paired gain with a 95%
interval. ``teacher-prompts`` prints the first N of the world's policy-training prompts, one per line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HELD = ("policy", "unseen_pairs", "unseen_relations", "swapped")
SPLITS = ("common", "rare", *HELD)


def collect(a) -> None:
    from find_rl.diffusion.sampler import DiffusionSampler, render
    from find_rl.worlds import get_world

    w = get_world("scenes")
    prompts = w.policy_training_prompts()[: a.prompts]
    s = DiffusionSampler.from_pretrained("scenes")
    z = torch.randn(len(prompts) * a.samples, *s.latent_shape, generator=torch.Generator().manual_seed(a.seed))
    flat = [p for p in prompts for _ in range(a.samples)]
    t = time.perf_counter()
    images = render(s, z, flat)
    print(f"rendered {len(flat)} images in {time.perf_counter() - t:.0f} s", flush=True)
    sc = w.score(images, flat)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"z": z, "prompts": prompts, "K": a.samples, "score": torch.tensor(sc["score"]),
                "aligned": torch.tensor(sc["aligned"])}, a.out)
    print(f"aligned rate {sc['aligned'].mean():.3f} -> {a.out}")


def fit(a) -> None:
    from find_rl.core.observation import text_features, token_shape
    from find_rl.diffusion.sampler import DiffusionSampler
    from find_rl.evaluation.scoring import evaluate_distributions
    from find_rl.policies.amortized import AmortizedNoiseNet
    from find_rl.worlds import get_world
    from find_rl.worlds.scenes.evaluation_set import default_eval_prompts

    if (a.data is None) == (a.teacher is None):
        raise SystemExit("error: give one of --data (a collected dataset) or --teacher (a per-prompt FIND run)")
    if a.data is not None:  # reward-weighted regression targets
        d = torch.load(a.data)
        prompts, k = d["prompts"], d["K"]
        z = d["z"].reshape(len(prompts), k, -1)
        r = d["score"].reshape(len(prompts), k).float()
    else:  # distillation targets: the teacher's learned means
        from find_rl.policies.export import load_policy

        pol = load_policy(a.teacher)
        prompts = list(pol.prompts)
        z, r = pol.mean.reshape(len(prompts), 1, -1).float(), torch.zeros(len(prompts), 1)
    s = DiffusionSampler.from_pretrained("scenes")
    feats = text_features(s.pipeline, prompts, a.features)
    torch.manual_seed(a.seed)
    net = AmortizedNoiseNet(embed_dim=feats.shape[1], latent_shape=s.latent_shape, mean_resolution=4, hidden=a.hidden,
                            token_shape=token_shape(s.pipeline) if a.features == "tokens" else None)
    target = (torch.softmax(r / a.beta, dim=1)[..., None] * z).sum(1)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    for _ in range(a.steps):
        mu, _ = net(feats)
        loss = ((mu - target) ** 2).sum(1).mean() / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"fitted {len(prompts)} prompts: loss {loss.item():.2f}, |mu| {mu.abs().mean():.3f}, |target| {target.abs().mean():.3f}")
    w = get_world("scenes")
    splits = a.splits.split(",")
    ev = prompts[:48] if splits == ["train"] else [p for p in default_eval_prompts() if w.split_of(p) in splits]
    with torch.no_grad():
        mu, _ = net(text_features(s.pipeline, ev, a.features))
    base = evaluate_distributions(model="scenes", prompts=ev, samples=a.samples, seed=7, sampler=s)
    res = evaluate_distributions(model="scenes", prompts=ev, mean=mu, std=torch.ones_like(mu), samples=a.samples, seed=7,
                                 sampler=s)
    cells: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for p in ev:
        key = ("train" if splits == ["train"] else w.split_of(p), w.category_of(p))
        cells.setdefault(key, []).append((base[p]["alignment"], res[p]["alignment"]))
    for sp in dict.fromkeys(k[0] for k in cells):
        b, f = np.mean([np.mean(v, 0) for k, v in cells.items() if k[0] == sp], 0)
        print(f"{sp}: frozen {b:.3f} -> policy {f:.3f} ({f - b:+.3f})")
    unseen = {k: v for k, v in cells.items() if k[0] in HELD or k[0] == "train"}
    b, f = np.mean([np.mean(v, 0) for v in unseen.values()], 0)
    d = np.array([fa - ba for v in unseen.values() for ba, fa in v])
    print(f"unseen overall {b:.3f} -> {f:.3f} ({f - b:+.3f}); per-prompt gain {d.mean():+.3f} ± "
          f"{1.96 * d.std(ddof=1) / np.sqrt(len(d)):.3f} (n = {len(d)})")
    if a.json:
        a.json.write_text(json.dumps({"prompts": ev, "frozen": [base[p]["alignment"] for p in ev],
                                      "policy": [res[p]["alignment"] for p in ev]}, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--prompts", type=int, default=600)
    c.add_argument("--samples", type=int, default=32)
    c.add_argument("--seed", type=int, default=123)
    c.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit")
    f.add_argument("--data", type=Path)
    f.add_argument("--teacher", type=Path)
    f.add_argument("--beta", type=float, default=0.1, help="temperature of the per-prompt reward weights (--data)")
    f.add_argument("--features", default="pooled", choices=("pooled", "tokens"))
    f.add_argument("--hidden", type=int, default=64)
    f.add_argument("--steps", type=int, default=2000)
    f.add_argument("--lr", type=float, default=0.01)
    f.add_argument("--samples", type=int, default=16)
    f.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits of the evaluation set, or 'train'")
    f.add_argument("--seed", type=int, default=0, help="the network's initialisation")
    f.add_argument("--json", type=Path)
    t = sub.add_parser("teacher-prompts")
    t.add_argument("--prompts", type=int, default=40)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    if a.cmd == "collect":
        collect(a)
    elif a.cmd == "fit":
        fit(a)
    else:
        from find_rl.worlds import get_world

        print("\n".join(get_world("scenes").policy_training_prompts()[: a.prompts]))


if __name__ == "__main__":
    main(sys.argv[1:])
