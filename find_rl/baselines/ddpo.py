"""A DDPO-style baseline: fine-tune the diffusion model itself with RL on the same reward (Black et al., 2023,
DDPO-IS; the approach FIND claims to beat in wall-clock), data-parallel on Ray Train's ``TorchTrainer``.

The denoising loop is the MDP: each DDIM step with ``eta > 0`` is a Gaussian policy
``x_{t-1} ~ N(mean_theta(x_t, t, c), sigma_t^2)`` whose mean comes from the denoiser (all of it trained here).
Per iteration every worker renders its share of the batch with the current denoiser, recording the trajectory and
each step's log-density; rewards are gathered across workers for per-prompt advantage normalisation; then
``num_inner_epochs`` passes of DDPO's clipped importance-sampling loss on every timestep of every trajectory
(gradients summed over timesteps, one optimiser step per minibatch, DDP averages them across workers)::

    ratio_t = exp(log p_theta(x_{t-1} | x_t) - log p_old(x_{t-1} | x_t))     (per-element mean log-density)
    L       = mean_t max(-A * ratio_t, -A * clip(ratio_t, 1 - clip_range, 1 + clip_range)),  A clipped to +-adv_clip

The math (:func:`ddim_step_with_logprob`) is diffusers' own ``DDIMScheduler.step`` plus the Gaussian density of
the step it takes, free of Ray; :func:`run_ddpo` is the Ray Train driver. Supported models: pipelines whose
denoiser is called as ``unet(x, t, class_labels=...)`` or ``unet(x, t, encoder_hidden_states=...)`` without CFG
(the shapes model; SD-style UNets with ``guidance_scale=1``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
UNET_DIR = "unet"
HISTORY_FILE = "ddpo_history.json"
SNAPSHOT_FILE = "snapshots.pt"  # {iteration: the denoiser's state_dict after it}, with snapshot_every > 0


@dataclass
class DDPOSettings:
    iterations: int = 80
    samples_per_prompt: int = 32  # per iteration, over all workers (the same budget accounting as FIND)
    lr: float = 1e-3  # best of 3e-4 / 1e-3 / 3e-3 at 40 iterations (bench/RESULTS.md)
    clip_range: float = 1e-4  # DDPO's default
    adv_clip: float = 5.0
    num_inner_epochs: int = 1
    minibatches: int = 2  # optimiser steps per inner epoch
    eta: float = 1.0  # DDIM stochasticity of the trained sampler (DDPO's default)
    num_inference_steps: int = 10
    max_grad_norm: float = 1.0
    min_step_std: float = 0.05  # steps with a smaller noise std are not trained on (see train_loop_per_worker)
    # Ray Train 2.60 hands a worker's report to its controller through a one-slot queue that the controller empties
    # every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): reporting every iteration held each 0.36 s GPU iteration to ~2 s.
    # The full per-iteration history still travels with the final checkpoint.
    report_every: int = 20
    # Keep a copy of the denoiser every this many iterations (0: none), in memory on rank 0 (outside the timed loop's
    # sampling and update; a copy of the shapes world's 1 MB denoiser takes ~1 ms), saved with the final checkpoint so
    # fresh samples can score the training curve afterwards (find_rl.compare's speed figure).
    snapshot_every: int = 0
    model: str = "shapes"
    reward: str = "shapes"

    def __post_init__(self):
        if self.iterations < 1 or self.samples_per_prompt < 2:
            raise ValueError(f"DDPO needs iterations >= 1 and samples_per_prompt >= 2, got {self.iterations}, {self.samples_per_prompt}")
        if self.eta <= 0:
            raise ValueError("DDPO needs eta > 0: with eta = 0 the denoising steps have no density to optimise")
        if self.lr <= 0 or self.clip_range <= 0 or self.minibatches < 1 or self.num_inner_epochs < 1 or self.report_every < 1:
            raise ValueError("DDPO needs lr > 0, clip_range > 0, minibatches >= 1, num_inner_epochs >= 1, report_every >= 1")
        if self.snapshot_every < 0:
            raise ValueError(f"DDPO needs snapshot_every >= 0, got {self.snapshot_every}")


def step_std(scheduler, t, eta: float) -> float:
    """The noise std of the DDIM step from ``t`` (after ``set_timesteps``): ``eta * sqrt(variance(t, t_prev))``."""
    prev_t = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return eta * float(scheduler._get_variance(int(t), prev_t)) ** 0.5


def ddim_step_with_logprob(scheduler, model_output: torch.Tensor, t, x: torch.Tensor, *, eta: float,
                           prev_sample: torch.Tensor | None = None, generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One stochastic DDIM step and its per-element mean log-density, ``(x_prev, logp)`` with ``logp`` ``(N,)``.

    The step's mean is diffusers' ``DDIMScheduler.step`` with zero variance noise (differentiable in
    ``model_output``); its std is ``eta * sqrt(variance(t, t_prev))``. With ``prev_sample`` given, the density of
    that sample is returned instead of drawing a new one (the training pass re-scores recorded trajectories)."""
    zero = torch.zeros_like(x)
    mean = scheduler.step(model_output, t, x, eta=eta, variance_noise=zero).prev_sample
    std = torch.as_tensor(step_std(scheduler, t, eta), device=x.device, dtype=x.dtype)
    if float(std) == 0.0:  # the last DDIM step (to alpha_prod[0]) is deterministic: no density, nothing to train
        return (mean if prev_sample is None else prev_sample), torch.zeros(len(x), device=x.device, dtype=x.dtype)
    if prev_sample is None:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        prev_sample = (mean + std * noise).detach()
    logp = (-0.5 * ((prev_sample - mean) / std) ** 2 - torch.log(std) - LOG_SQRT_2PI).flatten(1).mean(-1)
    return prev_sample, logp


def denoiser_kwargs(pipeline, prompts: list[str]) -> dict:
    """The conditioning keyword the pipeline's denoiser takes, for these prompts."""
    from find_rl.core.observation import encode_text

    text = encode_text(pipeline, prompts)
    if text.hidden is None:  # the shapes model: class_labels = prompt embedding
        return {"class_labels": text.pooled.to(pipeline.unet.device, pipeline.unet.dtype)}
    return {"encoder_hidden_states": text.hidden.to(pipeline.unet.dtype)}


@torch.no_grad()
def sample_trajectories(unet, scheduler, cond: dict, noise: torch.Tensor, *, steps: int, eta: float,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roll out the stochastic sampler: ``(latents (N, steps + 1, ...), logps (N, steps), timesteps (steps,))``."""
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    xs, logps = [x], []
    for t in scheduler.timesteps:
        out = unet(x, t, **cond).sample
        x, logp = ddim_step_with_logprob(scheduler, out, t, x, eta=eta, generator=generator)
        xs.append(x)
        logps.append(logp)
    return torch.stack(xs, 1), torch.stack(logps, 1), scheduler.timesteps.clone()


def ddpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip_range: float) -> torch.Tensor:
    """DDPO's clipped importance-sampling loss for one timestep (mean over the rows)."""
    ratio = torch.exp((logp - logp_old).clamp(-20.0, 20.0))  # a guard before exp; the clip binds far earlier
    return torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)).mean()


def per_prompt_advantages(rewards: np.ndarray, prompt_ids: np.ndarray, adv_clip: float) -> np.ndarray:
    """DDPO's per-prompt stat tracking within the batch: ``(r - mean_c) / (std_c + 1e-6)``, clipped."""
    adv = np.zeros_like(rewards, dtype=np.float32)
    for c in np.unique(prompt_ids):
        m = prompt_ids == c
        adv[m] = (rewards[m] - rewards[m].mean()) / (rewards[m].std() + 1e-6)
    return np.clip(adv, -adv_clip, adv_clip)


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    # NCCL gathers only CUDA tensors: such a group gathers on this worker's GPU and hands back a tensor where x was
    y = x.to(torch.device("cuda", torch.cuda.current_device())) if dist.get_backend() == "nccl" else x
    parts = [torch.zeros_like(y) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, y)
    return torch.cat(parts).to(x.device)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: sample, score, gather, DDPO update; reports one metrics row per iteration and the
    fine-tuned denoiser as the final checkpoint."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from find_rl.diffusion.models import load_pipeline
    from find_rl.rewards.registry import make_reward, score_batch
    from find_rl.core.settings import TrackingSettings
    from find_rl.run.tracking import RunLog

    s = DDPOSettings(**config["settings"])
    prompts: list[str] = config["prompts"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(config.get("threads", 1)))
    torch.manual_seed(config["seed"] * 1000 + rank)
    gen = torch.Generator().manual_seed(config["seed"] * 1000 + rank)
    device = ray.train.torch.get_device()
    # rank 0 logs each iteration's row through Ray's TensorBoard logger callback into the run folder (find_rl.run.tracking)
    events = RunLog(Path(config["log_dir"]), TrackingSettings()) if rank == 0 and config.get("log_dir") else None
    pipe = load_pipeline(s.model, device=str(device))
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    unet = pipe.unet
    unet.requires_grad_(True)
    unet.train()
    model = ray.train.torch.prepare_model(unet)  # DDP across workers (gloo on CPU, NCCL on GPU)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=s.lr, weight_decay=0.0)
    reward = make_reward(s.reward, device=str(device))
    if s.samples_per_prompt % world:
        raise ValueError(f"samples_per_prompt {s.samples_per_prompt} must divide evenly over {world} workers")
    per_worker = s.samples_per_prompt // world
    ids = np.repeat(np.arange(len(prompts)), per_worker)
    my_prompts = [prompts[i] for i in ids]
    cond = denoiser_kwargs(pipe, my_prompts)
    shape = (unet.config.in_channels, *([unet.config.sample_size] * 2))
    id_all = _all_gather(torch.as_tensor(ids))  # every worker's prompt ids, in gather order (fixed for the run)
    history, snapshots, t0 = [], {}, time.perf_counter()
    cpu0 = float(_all_gather(torch.tensor([time.process_time()], dtype=torch.float64)).sum())
    for it in range(s.iterations):
        t_start = time.perf_counter()
        unet.eval()
        noise = torch.randn((len(my_prompts), *shape), generator=gen).to(device)
        xs, logps, timesteps = sample_trajectories(unet, scheduler, cond, noise, steps=s.num_inference_steps, eta=s.eta,
                                                   generator=gen)
        images = xs[:, -1].clamp(-1, 1).float().cpu().numpy()
        scored = score_batch(reward, images, my_prompts)
        cpu_all = _all_gather(torch.tensor([time.process_time()], dtype=torch.float64))  # every worker's CPU seconds so far
        r_all = _all_gather(torch.as_tensor(scored["score"], dtype=torch.float32))
        aligned_all = _all_gather(torch.as_tensor(scored.get("aligned", np.zeros(len(ids), bool)), dtype=torch.float32))
        adv_all = per_prompt_advantages(r_all.numpy(), id_all.numpy(), s.adv_clip)
        adv = torch.as_tensor(adv_all[rank * len(ids) : (rank + 1) * len(ids)]).to(device)
        t_sampled = time.perf_counter()
        # The last steps of a short DDIM schedule have a tiny noise std (0.006 at t = 100 of 10 steps, 0 at t = 0):
        # their log-density moves by ~|d mean| / std under any update, so one such step's gradient swamps the others
        # and the clipped ratio of every other step. They are sampled but not trained on.
        trainable = [(j, t) for j, t in enumerate(timesteps) if step_std(scheduler, t, s.eta) >= s.min_step_std]
        unet.train()
        for _ in range(s.num_inner_epochs):
            perm = torch.randperm(len(ids), generator=gen)
            for mb in perm.chunk(s.minibatches):
                mb_cond = {k: v[mb] for k, v in cond.items()}
                for j, t in trainable:  # gradients summed over the trajectory's stochastic timesteps
                    out = model(xs[mb, j], t, **mb_cond).sample
                    _, logp = ddim_step_with_logprob(scheduler, out, t, xs[mb, j], eta=s.eta, prev_sample=xs[mb, j + 1])
                    (ddpo_loss(logp, logps[mb, j], adv[mb], s.clip_range) / len(trainable)).backward()
                torch.nn.utils.clip_grad_norm_(unet.parameters(), s.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_updated = time.perf_counter()
        aligned = aligned_all.numpy()
        per_prompt = {p: float(aligned[id_all.numpy() == i].mean()) for i, p in enumerate(prompts)}
        row = {"iteration": it + 1, "reward_mean": float(r_all.mean()), "alignment": float(aligned.mean()),
               "alignment_per_prompt": per_prompt, "reward_evals_per_prompt": (it + 1) * s.samples_per_prompt,
               "wall_s": time.perf_counter() - t0, "cpu_s": float(cpu_all.sum() - cpu0),
               "sample_s": t_sampled - t_start, "update_s": t_updated - t_sampled}  # the rest of wall_s: Ray Train's report
        history.append(row)
        if events is not None:
            events.log_row(row)
        if rank == 0 and s.snapshot_every and (it + 1) % s.snapshot_every == 0:
            snapshots[it + 1] = {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}
        metrics = {k: v for k, v in row.items() if k != "alignment_per_prompt"}
        if it + 1 < s.iterations:
            if (it + 1) % s.report_every == 0:  # every worker reports on the same iterations
                ray.train.report(metrics)
        elif rank == 0:  # the last report carries the fine-tuned denoiser and the curve
            with tempfile.TemporaryDirectory() as tmp:
                unet.save_pretrained(os.path.join(tmp, UNET_DIR))
                Path(tmp, HISTORY_FILE).write_text(json.dumps(history))
                if snapshots:
                    torch.save(snapshots, os.path.join(tmp, SNAPSHOT_FILE))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
    if events is not None:
        events.close()


def run_ddpo(s: DDPOSettings, prompts: list[str], out: Path, *, seed: int = 0, num_workers: int = 1, use_gpu: bool = False,
             threads_per_worker: int = 1, events: bool = False) -> dict:
    """Fine-tune with ``num_workers`` data-parallel Ray Train workers (``events``: rank 0 also writes each iteration's
    row as TensorBoard events into ``out``). Returns ``{"unet": path, "history": [...],
    "wall_s": seconds of fit(), "snapshots": path or None}``; the checkpoint folder holds the fine-tuned denoiser
    (``save_pretrained``) and, with ``s.snapshot_every``, ``snapshots.pt`` (:func:`load_snapshots`)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if s.samples_per_prompt % num_workers:
        raise ValueError(f"--ddpo samples per prompt ({s.samples_per_prompt}) must divide evenly over {num_workers} workers")
    from find_rl.rllib.ray_session import ray_session

    with ray_session(actors=num_workers):
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"settings": asdict(s), "prompts": list(prompts), "seed": seed, "threads": threads_per_worker,
                               "log_dir": str(Path(out).resolve()) if events else None},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            run_config=RunConfig(name=f"ddpo_s{seed}", storage_path=str(Path(out).resolve())),
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
        if result.error is not None:
            raise RuntimeError(f"DDPO training failed: {result.error}")
        ckpt = Path(result.checkpoint.path)
        snaps = ckpt / SNAPSHOT_FILE
        return {"unet": str(ckpt / UNET_DIR), "history": json.loads((ckpt / HISTORY_FILE).read_text()), "wall_s": wall,
                "snapshots": str(snaps) if snaps.is_file() else None,
                "settings": asdict(s), "num_workers": num_workers}


def load_snapshots(path: str | Path) -> dict[int, dict]:
    """The denoiser's state_dicts kept during training, ``{iteration: state_dict}`` in iteration order."""
    snaps = torch.load(path, map_location="cpu", weights_only=True)
    return {int(k): snaps[k] for k in sorted(snaps, key=int)}
