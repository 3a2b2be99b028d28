"""What a finished FIND run leaves in its folder: the portable export, the learning curve, and (on the shapes world)
before/after image grids and the results table scored on fresh samples, never the training batches.

- ``noise_policy.safetensors`` + ``noise_policy.json`` (:mod:`find_rl.policies.export`; ``training`` records the settings);
- ``curve.png`` (training-batch reward and alignment per prompt);
- ``grid_<prompt>.png``, ``results.md``, ``results.csv`` (``--eval-samples`` fresh samples per prompt, seed 10000 + seed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from find_rl.core.progress import FindProgress
from find_rl.core.settings import RunSettings

logger = logging.getLogger("find_rl.run.artifacts")


def training_record(run: RunSettings) -> dict:
    """What an exported policy says about how it was trained (``noise_policy.json``'s ``training``)."""
    loop = run.loop
    settings = run.to_dict()
    training = {"iterations": loop.iterations, "seed": loop.seed, "reward": run.reward_spec, "clip_param": run.find.clip,
                "reward_evals_per_prompt": loop.iterations * run.samples_per_prompt_per_iteration,
                "policy_type": run.policy.policy_type, "settings": {k: v for k, v in settings.items() if k != "prompts"}}
    return training


def export(run_dir: Path, policy) -> Path:
    """Write the learned policy (:meth:`find_rl.run.find_run.FindRun.policy`) in the portable format."""
    from find_rl.policies.export import save_policy

    path = save_policy(run_dir, policy)
    logger.info("exported %s/noise_policy.safetensors", run_dir)
    return path


def finish(run: RunSettings, run_dir: Path, policy, history: list[FindProgress]) -> list[dict]:
    """Export, draw the curve and (an embedded world's model, ``eval_samples`` > 0) score fresh samples: the per-prompt result rows
    (:func:`find_rl.evaluation.report.results_rows`; empty when not evaluated)."""
    from find_rl.evaluation.report import image_grid, plot_curves, results_rows, write_results
    from find_rl.diffusion.sampler import DiffusionSampler, sampler_text
    from find_rl.evaluation.scoring import evaluate_distributions, evaluation_seed, load_aligned_ceiling

    export(run_dir, policy)
    if history:
        plot_curves([h.to_dict() for h in history], run.prompts, run_dir / "curve.png")
    from find_rl.worlds import world_of_model

    samples, world = run.loop.eval_samples, world_of_model(run.model)
    if samples <= 0 or world is None:  # scored with an embedded world's exact scorer only
        return []
    sampler = DiffusionSampler.from_pretrained(run.model, run.sampler)
    seed = evaluation_seed(run.loop.seed)  # fresh noise, never the training stream
    if run.draws_prompts:  # one policy over many prompts: the world's evaluation set, per split x category
        return _finish_on_evaluation_set(run, run_dir, policy, sampler, world, seed)
    prompts = list(run.prompts) + list(run.eval_prompts)  # held-out prompts (amortised policy) come last
    base = evaluate_distributions(prompts=prompts, samples=samples, seed=seed, sampler=sampler, return_images=16, world=world)
    after = evaluate_distributions(prompts=prompts, transform=lambda u: policy.transform(list(range(len(prompts))), u),
                                   samples=samples, seed=seed, sampler=sampler, return_images=16, world=world)
    for p in prompts:
        image_grid({"base": base[p]["images"], "FIND": after[p]["images"]}, run_dir / f"grid_{p.replace(' ', '_')}.png")
    rows = results_rows(base, after, held_out=run.eval_prompts, ceiling=load_aligned_ceiling(run.model, run.sampler))
    evals = run.loop.iterations * run.samples_per_prompt_per_iteration
    header = (f"FIND ({policy_text(run)}) on {run.model}: {run.loop.iterations} iterations, {evals} reward "
              f"evaluations per trained prompt, seed {run.loop.seed}; scored on {samples} fresh samples per prompt "
              + f"({world.scorer_text()}); sampler: {sampler_text(sampler.settings)}")
    write_results(rows, run_dir, header=header)
    return rows


def policy_text(run: RunSettings) -> str:
    """The policy as a report names it: its family, and a seeded mixture's seeding."""
    pol = run.policy
    if pol.policy_type == "mixture" and pol.mixture_seed_share:
        return (f"mixture policy of {pol.mixture_components} components seeded on aligned draws after "
                f"{pol.mixture_seed_share:.0%} of the iterations, width {pol.mixture_width:g}; {', '.join(run.reward)} reward")
    return f"{pol.policy_type} policy"


def _finish_on_evaluation_set(run: RunSettings, run_dir: Path, policy, sampler, world, seed: int) -> list[dict]:
    """The report of a run over more prompts than it draws per iteration: the frozen model and the policy on the
    world's evaluation set (every split, held-out ones included; ``eval_set_samples`` fresh samples per prompt),
    per prompt and per split x category (``results.md``; ``results.csv`` per prompt)."""
    from find_rl.diffusion.sampler import sampler_text
    from find_rl.evaluation.report import results_rows, split_category_table, write_results
    from find_rl.evaluation.scoring import evaluate_distributions, load_aligned_ceiling
    from find_rl.evaluation.scoring import answers_any_prompt, serve_prompts

    prompts = list(dict.fromkeys(list(world.eval_prompts()) + list(run.eval_prompts)))
    serve_prompts(policy, prompts, model=run.model)  # a policy that reads the text: their features from the encoder
    if not answers_any_prompt(policy) and any(p not in policy.prompts for p in prompts):
        # a per-prompt policy over many prompts: the evaluation prompts it trained on, else its first ones
        prompts = [p for p in prompts if p in policy.prompts] or list(policy.prompts[: len(prompts)])
    idx = [policy.index(p) for p in prompts]
    samples = run.loop.eval_set_samples
    base = evaluate_distributions(prompts=prompts, samples=samples, seed=seed, sampler=sampler, world=world)
    after = evaluate_distributions(prompts=prompts, transform=lambda u: policy.transform(idx, u), samples=samples,
                                   seed=seed, sampler=sampler, world=world)
    trained = set(run.prompts)
    rows = results_rows(base, after, held_out=[p for p in prompts if p not in trained],
                        ceiling=load_aligned_ceiling(run.model, run.sampler))
    header = (f"FIND ({policy_text(run)}) on {run.model}: {run.loop.iterations} iterations over "
              f"{len(run.prompts)} training prompts ({run.prompts_drawn} drawn per iteration, "
              f"{run.loop.iterations * run.batch_size * run.runners} reward evaluations in all), seed {run.loop.seed}; "
              f"scored on the {world.name} world's evaluation set ({len(prompts)} prompts), {samples} fresh samples per "
              f"prompt; sampler: {sampler_text(sampler.settings)}; *held out* = not trained on")
    write_results(rows, run_dir, header=header)
    md = run_dir / "results.md"
    md.write_text("\n".join([header, "", *split_category_table(base, after, trained=trained), "", "Per prompt:", ""])
                  + "\n".join(md.read_text().splitlines()[2:]) + "\n")
    return rows
