"""One noise policy over many prompts (issue 24's machinery): a fresh subset of prompts per iteration, the amortised
policy reading the frozen encoder's token states by attention, and an export that answers any prompt of its model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from find_rl.policies.amortized import AmortizedNoiseNet, TokenReader

SHAPES_PROMPTS = ["a green circle", "a red square", "a blue triangle", "a red circle", "a green square", "a blue square"]


def test_vector_env_draws_a_fresh_balanced_subset_of_prompts_each_iteration():
    from envs.noise_bandit import NoiseBanditVectorEnv

    env = NoiseBanditVectorEnv(num_envs=6, prompts=SHAPES_PROMPTS, prompts_per_iteration=2)
    np.random.seed(0)
    _, info = env.reset(seed=0)
    first = info["prompt_index"]
    assert len(set(first.tolist())) == 2 and np.bincount(first).max() == 3  # two prompts, three images each
    env.step(np.zeros((6, env.single_action_space.shape[0]), np.float32))  # renders
    seen = {tuple(sorted(set(first.tolist())))}
    for _ in range(6):
        _, _, _, _, info = env.step(np.zeros((6, env.single_action_space.shape[0]), np.float32))  # the reset step
        drawn = info["prompt_index"]
        assert len(set(drawn.tolist())) == 2 and np.bincount(drawn).max() == 3
        seen.add(tuple(sorted(set(drawn.tolist()))))
        env.step(np.zeros((6, env.single_action_space.shape[0]), np.float32))
    assert len(seen) > 1  # afresh, not the same pair every time
    np.random.seed(0)
    again = NoiseBanditVectorEnv(num_envs=6, prompts=SHAPES_PROMPTS, prompts_per_iteration=2)
    assert (again.reset(seed=0)[1]["prompt_index"] == first).all()  # numpy's seeded generator: reproducible
    with pytest.raises(ValueError, match="prompts_per_iteration"):
        NoiseBanditVectorEnv(num_envs=2, prompts=SHAPES_PROMPTS, prompts_per_iteration=0)


def _token_rows(n: int, tokens: int, width: int, lengths: list[int], gen: torch.Generator) -> torch.Tensor:
    states = torch.randn(n, tokens, width, generator=gen)
    mask = torch.zeros(n, tokens)
    for i, k in enumerate(lengths):
        mask[i, :k] = 1
    return torch.cat([states.flatten(1), mask], dim=1)


def test_token_reader_ignores_padding_and_the_net_starts_at_standard_normal():
    gen = torch.Generator().manual_seed(0)
    rows = _token_rows(3, 6, 8, [3, 5, 6], gen)
    reader = TokenReader((6, 8), queries=2)
    out = reader(rows)
    assert out.shape == (3, 16)
    changed = rows.clone()
    changed[0, 3 * 8 : 6 * 8] += 5.0 * torch.randn(24, generator=gen)  # the padding tokens of row 0
    assert torch.allclose(reader(changed)[0], out[0])
    changed[0, :8] += 5.0 * torch.randn(8, generator=gen)  # a real token (not a uniform shift: layer norm removes that)
    assert not torch.allclose(reader(changed)[0], out[0])
    net = AmortizedNoiseNet(embed_dim=6 * 9, latent_shape=(3, 8, 8), hidden=16, token_shape=(6, 8), queries=2)
    mu, log_std = net(rows)
    assert mu.shape == (3, 192) and torch.all(mu == 0) and torch.all(log_std == 0)
    with pytest.raises(ValueError, match="take 54 numbers"):
        AmortizedNoiseNet(embed_dim=50, latent_shape=(3, 8, 8), token_shape=(6, 8))


def test_token_reading_policy_learns_a_target_mean_per_prompt():
    """The attention path must be trainable: fit two prompts' means (differing in one word) by gradient descent."""
    gen = torch.Generator().manual_seed(1)
    rows = _token_rows(2, 4, 8, [4, 4], gen)
    rows[1, 8:16] = rows[0, 8:16] + torch.randn(8, generator=gen)  # only the second token differs
    rows[1, :8], rows[1, 16:32] = rows[0, :8], rows[0, 16:32]
    net = AmortizedNoiseNet(embed_dim=36, latent_shape=(1, 4, 4), hidden=16, token_shape=(4, 8), queries=2,
                            mean_resolution=None)
    target = torch.stack([torch.ones(16), -torch.ones(16)])
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        loss = ((net(rows)[0] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_amortized_export_answers_new_prompts_from_their_text_features(tmp_path):
    from find_rl.policies.export import AmortizedPolicy, load_policy, save_policy

    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(3, 4, 4), hidden=8)
    with torch.no_grad():
        net.mean_linear.bias.fill_(0.5 * 8)  # mu = 0.5 everywhere (the linear path divides by E)
    pol = AmortizedPolicy(prompts=["a", "b"], net=net.eval(), cond=torch.randn(2, 8), model="shapes")
    save_policy(tmp_path, pol)
    meta = json.loads((tmp_path / "noise_policy.json").read_text())
    assert meta["family"] == "amortized" and meta["text_features"] == "pooled" and meta["amortized"]["hidden"] == 8
    back = load_policy(tmp_path)
    assert isinstance(back, AmortizedPolicy) and back.prompts == ["a", "b"]
    assert torch.allclose(back.mean, pol.mean) and back.mean.shape == (2, 3, 4, 4)
    back.add_prompts(["c", "a"], torch.randn(2, 8))  # "a" is known: only "c" is added
    assert back.prompts == ["a", "b", "c"] and back.mean.shape == (3, 3, 4, 4)
    z = back.transform([back.index("c")], torch.zeros(1, 2, 3, 4, 4))
    assert torch.allclose(z, torch.full_like(z, 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        back.add_prompts(["d"], torch.randn(1, 5))


def test_train_prompts_is_for_prompt_conditioned_policies():
    from find_rl.core.settings import RunSettings

    with pytest.raises(ValueError, match="--train-prompts picks training prompts"):
        RunSettings(world="scenes", train_prompts=10)
    run = RunSettings(world="scenes", train_prompts=10, policy=RunSettings().policy.__class__(policy_type="amortized"))
    assert run.answers_any_prompt and run.prompts_per_iteration == 32


def test_scenes_training_prompts_never_hold_a_policy_or_held_out_prompt():
    from find_rl.worlds import get_world

    world = get_world("scenes")
    prompts = world.policy_training_prompts()
    assert len(prompts) >= 1000 and len(set(prompts)) == len(prompts)
    assert {world.split_of(p) for p in prompts} == {"common", "rare"}
    assert len({world.category_of(p) for p in prompts[:300]}) == 6  # a spread subset: every category early on


@pytest.mark.slow
def test_amortized_policy_over_many_scenes_prompts_trains_exports_and_answers_unseen_prompts(ray_local, tmp_path):
    """``train --world scenes --policy-type amortized --text-features tokens --train-prompts N``: a subset drawn per
    iteration, the report per split x category on the evaluation set, and an export that generate and evaluate apply to
    held-out prompts it never trained on."""
    from find_rl import evaluate, generate, train
    from find_rl.policies.export import AmortizedPolicy, load_policy

    out = tmp_path / "amortized"
    assert train.main(["--out", str(out), "--world", "scenes", "--policy-type", "amortized", "--text-features", "tokens",
                       "--train-prompts", "40", "--prompts-per-iteration", "4", "--samples-per-prompt", "2",
                       "--iterations", "2", "--eval-set-samples", "2"]) == 0
    run = json.loads((out / "run.json").read_text())["settings"]
    assert len(run["prompts"]) == 40 and run["token_shape"] == [12, 64]
    text = (out / "results.md").read_text()
    assert "| unseen_pairs | counting |" in text and "GenEval overall" in text
    pol = load_policy(out)
    assert isinstance(pol, AmortizedPolicy) and pol.text_features == "tokens" and pol.cond.shape[1] == 12 * 65
    held_out = "a green circle left of a red triangle"  # an unseen colour-shape pair
    assert generate.main(["--policy", str(out), "--prompt", held_out, "--num-images", "2", "--out", str(tmp_path / "g")]) == 0
    assert evaluate.main(["--policy", str(out), "--samples", "2", "--prompts", held_out, "a red circle",
                          "--json", str(tmp_path / "e.json")]) == 0
    res = json.loads((tmp_path / "e.json").read_text())["prompts"]
    assert res[held_out]["split"] == "unseen_pairs"
    assert generate.main(["--policy", str(out), "--prompt", "a purple circle", "--out", str(tmp_path / "bad")]) == 2


def test_amortized_gaussian_learns_each_prompts_rewarded_side_by_importance_weighted_mle():
    """The amortised Gaussian trained by ``--objective iw-mle`` (the behaviour mixture's draws, the weighted
    likelihood) moves each prompt's mean to the half of the latent its reward pays for, read from the embedding."""
    import math

    from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian

    from find_rl.objectives import mass_covering as ob
    from find_rl.rllib.noise_module import TorchDiagGaussianBehaviour

    torch.manual_seed(0)
    net = AmortizedNoiseNet(embed_dim=8, latent_shape=(1, 4, 4), mean_resolution=2, hidden=16)
    emb = torch.randn(2, 8)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    group = torch.arange(2).repeat_interleave(64)
    sign = torch.tensor([1.0, -1.0])[group]  # prompt 0 is paid for a positive left half, prompt 1 a negative one
    for _ in range(60):
        with torch.no_grad():
            logits = torch.cat(net(emb[group]), -1)
            behaviour = TorchDiagGaussianBehaviour.get_partial_dist_cls(prior_share=0.2).from_logits(logits)
            z = behaviour.sample()
            log_b = behaviour.logp(z)
        reward = (sign * z.reshape(-1, 4, 4)[:, :, :2].mean((1, 2)) > 0.5).float()
        log_q = TorchDiagGaussian.from_logits(torch.cat(net(emb[group]), -1)).logp(z)
        loss = ob.iw_mle_loss(log_q, ob.log_prior(z), log_b, reward, group, beta=0.1, num_groups=2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mu = net(emb)[0].reshape(2, 4, 4)
    assert mu[0, :, :2].mean() > 0.3 and mu[1, :, :2].mean() < -0.3, mu
    assert math.isfinite(loss.item())
