"""The comparison's methods, one small function each, all returning a :class:`MethodResult` scored the same way.

Budgets: every trained method spends ``iterations x samples_per_prompt`` reward evaluations per prompt; ``best-of-N``
spends N per delivered image at generation time. Scoring: ``samples`` fresh samples per prompt, the same noise for every
method of a seed (seed 10000 + seed), detector alignment, strict alignment, diversity (:mod:`find_rl.evaluation.scoring`).
FIND (and the amortised policy) run through :mod:`find_rl.run.find_run` with settings, like ``python -m find_rl.train``.

Fresh-sample checkpoints (the unconfounded speed figure): FIND and DDPO keep their policy every ``checkpoint_every``
iterations (FIND between iterations, outside its timed loop; DDPO a copy of its denoiser on rank 0) and each is scored
after training on ``checkpoint_samples`` fresh samples per prompt, the same noise for both (seed 20000 + seed), by the
same detector. Each row's ``wall_s`` is the training loop's seconds up to that iteration.

Watching: every method that trains writes TensorBoard events into its run folder ``OUT/runs/<method>_s<seed>/``
through Ray's logger callback (:mod:`find_rl.run.tracking`), so ``tensorboard --logdir OUT/runs`` shows them side by side:
FIND runs (:mod:`find_rl.run.find_run`) their scalars and image grids, CEM, the paper's loop and DDPO (rank 0) their history
rows as they are made.

Sampler stochasticity: FIND samples with DDIM eta 0 (the image a function of the noise), DDPO trains with eta 1. ``base``
is also scored at eta 1 (row ``base (eta 1)``) and DDPO at eta 0 (row ``ddpo (eta 0)``), so each method stands beside the
frozen model at the eta it is scored with.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from find_rl.compare.settings import CompareSettings, method_info
from find_rl.core.progress import HistoryRow, history
from find_rl.evaluation.scoring import evaluate_distributions, evaluation_seed, score_image_sets


@dataclass
class MethodResult:
    per_prompt: dict  # {prompt: scores (+ "images": the first grid_images images)}
    reward_evals: int  # per trained prompt
    evals_per_image: int
    wall_s: float  # training (or, for best-of-N, generation) seconds
    cpu_s: float
    history: list[HistoryRow] = field(default_factory=list)
    held_out: tuple[str, ...] = ()  # scored prompts this method never trained on
    fresh: list[HistoryRow] = field(default_factory=list)  # fresh-sample alignment at checkpoints (see the module doc)
    variants: dict[str, dict] = field(default_factory=dict)  # {row suffix: per_prompt} the same run scored another way

    def to_dict(self) -> dict:
        """The comparison's run record (what the cache stores and the statistics read)."""
        def rows(per_prompt: dict) -> dict:
            return {p: r | {"held_out": p in self.held_out, "reward_evals": 0 if p in self.held_out else self.reward_evals}
                    for p, r in per_prompt.items()}

        return {"per_prompt": rows(self.per_prompt), "reward_evals": self.reward_evals, "evals_per_image": self.evals_per_image,
                "wall_s": self.wall_s, "cpu_s": self.cpu_s, "history": [dataclasses.asdict(h) for h in self.history],
                "fresh": [dataclasses.asdict(h) for h in self.fresh],
                "variants": {k: rows(v) for k, v in self.variants.items()}}


class _Clock:
    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


def _scoring(cs: CompareSettings, seed: int, sampler) -> dict:
    return dict(prompts=cs.prompts, samples=cs.samples, seed=evaluation_seed(seed), sampler=sampler, return_images=cs.grid_images,
                world=cs.world)


ETA1 = " (eta 1)"
ETA0 = " (eta 0)"


def _with_eta(sampler, eta: float, seed: int):
    """The same pipeline sampled with DDIM ``eta`` (its step noise seeded by ``seed``, so a rerun draws the same); a
    deterministic multistep sampler (UniPC, the scenes world's) becomes DDIM with the same steps and guidance when
    ``eta > 0``."""
    from find_rl.diffusion.sampler import DiffusionSampler

    scheduler = "ddim" if eta > 0 else sampler.settings.scheduler
    return DiffusionSampler(sampler.pipeline, dataclasses.replace(sampler.settings, eta=eta, scheduler=scheduler), seed=seed)


def _fresh_row(scores: dict, iteration: int, evals: int, wall_s: float) -> HistoryRow:
    per = {p: r["alignment"] for p, r in scores.items()}
    return HistoryRow(iteration=iteration, reward_evals_per_prompt=evals, wall_s=wall_s,
                      alignment=float(sum(per.values()) / len(per)), alignment_per_prompt=per)


def _checkpoint_scoring(cs: CompareSettings, seed: int, sampler) -> dict:
    return dict(prompts=cs.prompts, samples=cs.checkpoint_samples, seed=evaluation_seed(seed, checkpoint=True), sampler=sampler, world=cs.world)


def _keep(cs: CompareSettings, iteration: int) -> bool:
    return iteration == cs.iterations or (cs.checkpoint_every > 0 and iteration % cs.checkpoint_every == 0)


def base(cs: CompareSettings, seed: int, sampler, reward, run_dir: Path) -> MethodResult:
    eta1 = evaluate_distributions(**(_scoring(cs, seed, sampler) | {"sampler": _with_eta(sampler, 1.0, evaluation_seed(seed)),
                                                                     "return_images": 0}))
    return MethodResult(evaluate_distributions(**_scoring(cs, seed, sampler)), 0, 1, 0.0, 0.0, variants={ETA1: eta1})


def best_of_n(n: int):
    def method(cs: CompareSettings, seed: int, sampler, reward, run_dir: Path) -> MethodResult:
        from find_rl.baselines.best_of_n import best_of_n as pick

        with _Clock() as c:
            picked = pick(sampler, reward, cs.prompts, n=n, images=cs.samples, seed=evaluation_seed(seed))
        scores = score_image_sets({p: v["images"] for p, v in picked.items()}, return_images=cs.grid_images, world=cs.world)
        return MethodResult(scores, n * cs.samples, n, c.wall, c.cpu)
    return method


def _events(run_dir: Path, settings):
    """A baseline's TensorBoard events in its run folder (its history rows, :meth:`RunLog.log_row`)."""
    from find_rl.core.settings import TrackingSettings
    from find_rl.run.tracking import RunLog

    return RunLog(run_dir, TrackingSettings(), config=dataclasses.asdict(settings))


def cem(resolution: int | None = None):
    """CEM learning a full-resolution mean (``None``, as published) or FIND's C x r x r one (unconfounded)."""
    def method(cs: CompareSettings, seed: int, sampler, reward, run_dir: Path) -> MethodResult:
        from find_rl.baselines.cem import CEMSettings, run_cem

        s = CEMSettings(iterations=cs.iterations, population=cs.samples_per_prompt, mean_resolution=resolution)
        with _events(run_dir, s) as events, _Clock() as c:
            out = run_cem(sampler, reward, cs.prompts, s, seed=seed, on_row=events.log_row)
        return _from_distribution(cs, seed, sampler, out, c)
    return method


def paper_loop(resolution: int | None = None):
    """The released code's loop with a full-resolution mean (``None``) or FIND's C x r x r one."""
    def method(cs: CompareSettings, seed: int, sampler, reward, run_dir: Path) -> MethodResult:
        from find_rl.baselines.paper_loop import PaperLoopSettings, run_paper_loop

        s = PaperLoopSettings(iterations=cs.iterations * cs.samples_per_prompt, mean_resolution=resolution)
        with _events(run_dir, s) as events, _Clock() as c:
            out = run_paper_loop(sampler, reward, cs.prompts, s, seed=seed, on_row=events.log_row)
        return _from_distribution(cs, seed, sampler, out, c)
    return method


def _from_distribution(cs: CompareSettings, seed: int, sampler, out: dict, clock: _Clock) -> MethodResult:
    scores = evaluate_distributions(mean=out["mean"], std=out["std"], **_scoring(cs, seed, sampler))
    return MethodResult(scores, cs.iterations * cs.samples_per_prompt, 1, clock.wall, clock.cpu,
                        [HistoryRow.from_row(r) for r in out["history"]])


def ddpo(cs: CompareSettings, seed: int, sampler, reward, run_dir: Path) -> MethodResult:
    """DDPO, scored with its own sampler (eta 1; row ``ddpo``) and at eta 0 (row ``ddpo (eta 0)``); its fresh-sample
    checkpoints with its own sampler."""
    from diffusers import UNet2DModel

    from find_rl.baselines.ddpo import DDPOSettings, load_snapshots, run_ddpo
    from find_rl.diffusion.models import load_pipeline
    from find_rl.diffusion.sampler import DiffusionSampler, SamplerSettings

    s = DDPOSettings(iterations=cs.iterations, samples_per_prompt=cs.samples_per_prompt, lr=cs.ddpo_lr,
                     snapshot_every=cs.checkpoint_every)
    out = run_ddpo(s, cs.prompts, run_dir, seed=seed, num_workers=cs.ddpo_workers,
                   threads_per_worker=max(1, cs.threads // cs.ddpo_workers), use_gpu=cs.device.startswith("cuda"), events=True)
    pipe = load_pipeline(cs.world, device=cs.device)
    history = [HistoryRow.from_row(r) for r in out["history"]]
    fresh = []
    snaps = load_snapshots(out["snapshots"]) if out.get("snapshots") else {}
    for it in [0, *snaps]:  # iteration 0: the frozen denoiser
        if it and not _keep(cs, it):
            continue
        if it:
            pipe.unet.load_state_dict(snaps[it])
        own = DiffusionSampler(pipe, SamplerSettings(eta=s.eta, device=cs.device), seed=evaluation_seed(seed, checkpoint=True))
        scores = evaluate_distributions(**(_checkpoint_scoring(cs, seed, sampler) | {"sampler": own}))
        fresh.append(_fresh_row(scores, it, it * cs.samples_per_prompt, history[it - 1].wall_s if it else 0.0))
    pipe.unet = UNet2DModel.from_pretrained(out["unet"], low_cpu_mem_usage=False).to(cs.device)
    tuned = DiffusionSampler(pipe, SamplerSettings(eta=s.eta, device=cs.device), seed=evaluation_seed(seed))  # DDPO's own sampler
    scores = evaluate_distributions(**(_scoring(cs, seed, sampler) | {"sampler": tuned}))
    eta0 = evaluate_distributions(**(_scoring(cs, seed, sampler) | {"sampler": _with_eta(tuned, 0.0, evaluation_seed(seed)),
                                                                     "return_images": 0}))
    return MethodResult(scores, cs.iterations * cs.samples_per_prompt, 1, out["wall_s"], out["history"][-1]["cpu_s"],
                        history, fresh=fresh, variants={ETA0: eta0})


def find(changes: dict, *, amortized: str | None = None):
    """A FIND run through :mod:`find_rl.run.find_run` with ``changes`` to the train defaults; ``amortized``: "held-out" (trained
    on every shapes prompt but ``--held-out``) or "all" (all nine)."""
    def method(cs: CompareSettings, seed: int, sampler, reward, run_dir: Path) -> MethodResult:
        from find_rl.run.artifacts import export
        from find_rl.run.find_run import FindRun, prepare_run_dir, resolve
        from find_rl.core.settings import RunSettings
        from find_rl.worlds import get_world

        held = tuple(sorted(cs.held_out)) if amortized == "held-out" else ()
        extra = dict(changes)
        if amortized:
            extra |= {"policy_type": "amortized", "amortized_hidden": cs.amortized_hidden, "eval_prompts": list(held),
                      "prompts": [p for p in get_world(cs.world).prompts() if p not in held]}
        kept = {}  # {iteration: policy} for the fresh-sample checkpoints, taken between iterations (outside their clock)
        with _Clock() as c:
            run = RunSettings(world=cs.world, prompts=list(cs.prompts), samples_per_prompt=cs.samples_per_prompt).replace(
                seed=seed, iterations=cs.iterations, eval_samples=0, threads=cs.threads, device=cs.device, **extra)
            run = resolve(run)
            prepare_run_dir(run_dir, run)
            with FindRun(run, run_dir, live_metrics=False) as fr:
                kept[0] = fr.policy()
                for row in fr.iterations():
                    if _keep(cs, row.iteration):
                        kept[row.iteration] = fr.policy()
                policy = fr.policy()
                rows = fr.history
            export(run_dir, policy)
        idx = [policy.index(p) for p in cs.prompts]
        scores = evaluate_distributions(transform=lambda u: policy.transform(idx, u), **_scoring(cs, seed, sampler))
        # the curve is over the scored prompts the run trained on (an amortised run also trains the common prompts)
        curve = [h.over([p for p in cs.prompts if p in run.prompts]) for h in history(rows)]
        fresh = []
        for it, pol in kept.items():
            ck = evaluate_distributions(transform=lambda u, pol=pol: pol.transform(idx, u), **_checkpoint_scoring(cs, seed, sampler))
            fresh.append(_fresh_row(ck, it, it * cs.samples_per_prompt, curve[it - 1].wall_s if it else 0.0))
        return MethodResult(scores, cs.iterations * cs.samples_per_prompt, 1, c.wall, c.cpu, curve, held, fresh)
    return method


def method_for(name: str):
    """The function that trains (where it trains) and scores method ``name``."""
    info = method_info(name)
    if info.kind == "best-of":
        return best_of_n(info.n)
    if info.kind == "cem":
        return cem(info.resolution)
    if info.kind == "paper":
        return paper_loop(info.resolution)
    if info.kind == "amortized":
        return find({}, amortized=info.amortized)
    return {"base": base, "ddpo": ddpo}.get(info.kind) or find(info.changes)
