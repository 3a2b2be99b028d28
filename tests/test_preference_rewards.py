"""ImageReward and HPSv2 loaded from tiny random checkpoints in the released layouts, checked against hand computations
of the original forward passes (BLIP's ViT + med.py's BERT for ImageReward, open_clip's CLIP for HPSv2), bad folders,
weighted sums, the reward-worker actors, and short FIND runs through the CLI."""

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from find_rl.rewards.preference_weights import BERT_VOCAB
from find_rl.rewards.released_weights import OPENAI_MEAN, OPENAI_STD, resize_center_crop, resize_longest_pad
from find_rl.rewards.registry import RewardSpec, make_reward

PROMPTS = ["a dog", "a green cat", "four pandas on a sofa!"]


def _images(n, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).numpy() * 2 - 1


def _normalised(images):
    x = (torch.as_tensor(images) + 1) / 2
    return (x - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


def _imagereward_by_hand(state, med, pixels, ids, mask):
    """ImageReward.score_gard through the original modules' math, read from the released key names.

    BLIP's vit.py (timm-style blocks: qkv reshaped (B, N, 3, heads, C/heads), LayerNorm eps 1e-6, exact GELU) and
    med.py's BertModel (absolute positions, no token types, mask (1 - m) * -10000, cross-attention after
    self-attention in every layer), then the MLP on [CLS] and the published mean/std.
    """
    s = {k.removeprefix("blip.visual_encoder."): v for k, v in state.items() if k.startswith("blip.visual_encoder.")}
    t = {k.removeprefix("blip.text_encoder."): v for k, v in state.items() if k.startswith("blip.text_encoder.")}
    w, _, patch, _ = s["patch_embed.proj.weight"].shape
    x = F.conv2d(pixels, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([s["cls_token"].expand(len(x), -1, -1), x], 1)
    x = x + s["pos_embed"][:, :x.shape[1]]
    heads = w // 64
    for i in range(sum(k.endswith("attn.qkv.weight") for k in s)):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (w,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps=1e-6)
        B, N, C = h.shape
        qkv = F.linear(h, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"])
        qkv = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (C // heads) ** -0.5).softmax(-1)
        x = x + F.linear((attn @ qkv[2]).transpose(1, 2).reshape(B, N, C), s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        h = F.layer_norm(x, (w,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"]))
        x = x + F.linear(h, s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])
    image = F.layer_norm(x, (w,), s["norm.weight"], s["norm.bias"], eps=1e-6)

    d, nh, eps = med["hidden_size"], med["num_attention_heads"], med["layer_norm_eps"]
    hd, L = d // nh, ids.shape[1]
    h = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:L]
    h = F.layer_norm(h, (d,), t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps=eps)
    pad_mask = (1.0 - mask[:, None, None, :].float()) * -10000.0

    def attention(p, q_in, kv_in, add):
        def split(z):
            return z.view(len(z), -1, nh, hd).permute(0, 2, 1, 3)
        q = split(F.linear(q_in, t[p + "self.query.weight"], t[p + "self.query.bias"]))
        k = split(F.linear(kv_in, t[p + "self.key.weight"], t[p + "self.key.bias"]))
        v = split(F.linear(kv_in, t[p + "self.value.weight"], t[p + "self.value.bias"]))
        ctx = ((q @ k.transpose(-1, -2)) / math.sqrt(hd) + add).softmax(-1) @ v
        ctx = ctx.permute(0, 2, 1, 3).reshape(len(q_in), L, d)
        out = F.linear(ctx, t[p + "output.dense.weight"], t[p + "output.dense.bias"])
        return F.layer_norm(out + q_in, (d,), t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps=eps)

    for i in range(med["num_hidden_layers"]):
        b = f"encoder.layer.{i}."
        h = attention(b + "attention.", h, h, pad_mask)
        h = attention(b + "crossattention.", h, image, 0.0)  # image attention mask all ones: (1 - 1) * -10000
        inter = F.gelu(F.linear(h, t[b + "intermediate.dense.weight"], t[b + "intermediate.dense.bias"]))
        h = F.layer_norm(F.linear(inter, t[b + "output.dense.weight"], t[b + "output.dense.bias"]) + h, (d,),
                         t[b + "output.LayerNorm.weight"], t[b + "output.LayerNorm.bias"], eps=eps)
    r = h[:, 0]
    for j in (0, 2, 4, 6, 7):
        r = F.linear(r, state[f"mlp.layers.{j}.weight"], state[f"mlp.layers.{j}.bias"])
    return (r.squeeze(1) - 0.16717362830052426) / 1.0333394966054072


def test_imagereward_equals_the_original_forward_by_hand(tiny_imagereward):
    folder = tiny_imagereward
    reward = make_reward(f"imagereward={folder}")
    imgs = _images(3, seed=1)
    got = reward(imgs, PROMPTS)
    assert got.shape == (3,) and got.dtype == np.float32 and np.isfinite(got).all()
    # the released tokenisation: BERT [CLS] ... [SEP], padded with [PAD] to 35 tokens
    tok = reward.terms[0][1].tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    ids = [BERT_VOCAB.index(x) for x in ("[CLS]", "a", "dog", "[SEP]")]
    assert tok.input_ids[0].tolist() == ids + [0] * 31 and tok.attention_mask[0].sum() == 4
    state = torch.load(f"{folder}/ImageReward.pt", weights_only=True)
    med = json.loads(open(f"{folder}/med_config.json").read())
    with torch.no_grad():
        want = _imagereward_by_hand(state, med, _normalised(imgs), tok.input_ids, tok.attention_mask)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)
    assert reward.terms[0][1].model.vision.config.layer_norm_eps == 1e-6  # timm ViT's eps: too small a change to see above
    assert np.ptp(reward(imgs, ["a dog"] * 3)) > 1e-4  # the score follows the image ...
    assert np.ptp(reward(np.repeat(imgs[:1], 3, 0), PROMPTS)) > 1e-4  # ... and the prompt


def _hps_by_hand(state, pixels, ids):
    """open_clip's CLIP.forward (nn.MultiheadAttention blocks, causal text mask, eot = argmax token), 100 x cos."""
    def blocks(x, prefix, mask=None):  # x: (L, N, D), open_clip's LND layout
        d = x.shape[-1]
        for i in range(sum(k.startswith(prefix) and k.endswith("attn.in_proj_weight") for k in state)):
            b = f"{prefix}{i}."
            h = F.layer_norm(x, (d,), state[b + "ln_1.weight"], state[b + "ln_1.bias"])
            heads = d // (80 if prefix.startswith("visual") else 64)
            a, _ = F.multi_head_attention_forward(
                h, h, h, d, heads, state[b + "attn.in_proj_weight"], state[b + "attn.in_proj_bias"], None, None, False,
                0.0, state[b + "attn.out_proj.weight"], state[b + "attn.out_proj.bias"], training=False,
                need_weights=False, attn_mask=mask)
            x = x + a
            h = F.layer_norm(x, (d,), state[b + "ln_2.weight"], state[b + "ln_2.bias"])
            x = x + F.linear(F.gelu(F.linear(h, state[b + "mlp.c_fc.weight"], state[b + "mlp.c_fc.bias"])),
                             state[b + "mlp.c_proj.weight"], state[b + "mlp.c_proj.bias"])
        return x

    w = state["visual.conv1.weight"].shape[0]
    conv = state["visual.conv1.weight"]
    x = F.conv2d(pixels, conv, stride=conv.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([state["visual.class_embedding"].expand(len(x), 1, -1), x], 1) + state["visual.positional_embedding"]
    x = F.layer_norm(x, (w,), state["visual.ln_pre.weight"], state["visual.ln_pre.bias"])
    x = blocks(x.permute(1, 0, 2), "visual.transformer.resblocks.").permute(1, 0, 2)
    image = F.layer_norm(x[:, 0], (w,), state["visual.ln_post.weight"], state["visual.ln_post.bias"]) @ state["visual.proj"]
    tw, L = state["token_embedding.weight"].shape[1], ids.shape[1]
    causal = torch.full((L, L), float("-inf")).triu(1)
    x = state["token_embedding.weight"][ids] + state["positional_embedding"]
    x = blocks(x.permute(1, 0, 2), "transformer.resblocks.", causal).permute(1, 0, 2)
    x = F.layer_norm(x, (tw,), state["ln_final.weight"], state["ln_final.bias"])
    text = x[torch.arange(len(ids)), ids.argmax(-1)] @ state["text_projection"]
    return 100 * (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)


def _open_clip_tokens(prompt_tokens, context=77):
    """open_clip.tokenize's layout: <start_of_text> tokens <end_of_text>, zero-padded to the context length."""
    return torch.tensor([[532, *t, 533] + [0] * (context - len(t) - 2) for t in prompt_tokens])


@pytest.mark.parametrize("version, filename", [("v2.1", "HPS_v2.1_compressed.pt"), ("v2.0", "HPS_v2_compressed.pt")])
def test_hpsv2_equals_open_clips_forward_by_hand(tmp_path, version, filename):
    from find_rl.rewards.preference_weights import save_hps_folder

    folder = save_hps_folder(tmp_path / "hps", version=version, seed=3)
    reward = make_reward(f"hpsv2={folder}")
    imgs = _images(3, seed=2)
    got = reward(imgs, PROMPTS)
    # byte-level BPE over the tiny merges: "a" -> a</w> (256 + 64), "!" -> !</w> (256 + 0); dog, green, cat, four, pandas,
    # on, sofa end merge chains (512 + rank of their last merge)
    ids = _open_clip_tokens([[320, 513], [320, 519, 515], [531, 524, 525, 320, 528, 256]])
    assert reward.terms[0][1].tokenizer(["a dog"]).input_ids[0] == [532, 320, 513, 533]
    state = torch.load(f"{folder}/{filename}", weights_only=True)["state_dict"]
    with torch.no_grad():
        want = _hps_by_hand(state, _normalised(imgs), ids)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)
    assert np.ptp(got) > 1e-3 and np.all(np.abs(got) <= 100 + 1e-4)


def test_hpsv2_reads_a_clip_tokenizer_beside_the_checkpoint_too(tiny_hpsv2, tmp_path):
    from find_rl.rewards.hps import _bpe_tokenizer

    folder = tmp_path / "hps-hf-tokenizer"
    folder.mkdir()
    shutil.copy(f"{tiny_hpsv2}/HPS_v2.1_compressed.pt", folder)
    tok = _bpe_tokenizer(Path(tiny_hpsv2))
    (folder / "vocab.json").write_text(json.dumps(tok.get_vocab()))
    merges = gzip.open(f"{tiny_hpsv2}/bpe_simple_vocab_16e6.txt.gz").read().decode().split("\n")[1:]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    imgs = _images(2, seed=5)
    np.testing.assert_allclose(make_reward(f"hpsv2={folder}")(imgs, PROMPTS[:2]),
                               make_reward(f"hpsv2={tiny_hpsv2}")(imgs, PROMPTS[:2]), rtol=0, atol=1e-5)


def test_the_released_image_transforms_on_tensors():
    x = _images(2, size=32, seed=3)
    for transform in (resize_center_crop, resize_longest_pad):  # no resampling at the model's size
        np.testing.assert_array_equal(transform(x, 32).numpy(), _normalised(x).numpy())
    tall = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(4)) * 2 - 1  # H 48, W 40
    norm = (torch.tensor(OPENAI_MEAN)[:, None, None], torch.tensor(OPENAI_STD)[:, None, None])
    # ImageReward: shorter side 40 -> 20, longer 48 -> int(20 * 48 / 40) = 24; centre rows round((24 - 20) / 2) = 2 .. 22
    small = F.interpolate((tall + 1) / 2, size=(24, 20), mode="bicubic", antialias=True, align_corners=False)[..., 2:22, :]
    np.testing.assert_allclose(resize_center_crop(tall, 20).numpy(), ((small - norm[0]) / norm[1]).numpy(), atol=1e-6)
    # HPSv2 (open_clip ResizeMaxSize): longer side 48 -> 20, shorter 40 -> round(40 * 20 / 48) = 17; 3 black columns, 1 left
    small = F.interpolate((tall + 1) / 2, size=(20, 17), mode="bicubic", antialias=True, align_corners=False)
    padded = torch.cat([torch.zeros(1, 3, 20, 1), small, torch.zeros(1, 3, 20, 2)], dim=-1)
    np.testing.assert_allclose(resize_longest_pad(tall, 20).numpy(), ((padded - norm[0]) / norm[1]).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"images of shape \(N, 3, H, W\)"):
        resize_center_crop(np.zeros((2, 4, 8, 8), np.float32), 8)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_imagereward_folder_problems_are_one_line(tiny_imagereward, tmp_path):
    def refused(folder, msg):
        with pytest.raises(ValueError, match=msg) as e:
            make_reward(f"imagereward={folder}")
        assert "\n" not in str(e.value)

    refused(tmp_path / "nowhere", "is not a folder")
    for name, msg in [("ImageReward.pt", "no ImageReward.pt"), ("med_config.json", "no med_config.json"),
                      ("tokenizer/vocab.txt", "no .*vocab.txt")]:
        bad = _copy(tiny_imagereward, tmp_path / name.replace("/", "_"))
        (bad / name).unlink()
        refused(bad, msg)
    state = torch.load(f"{tiny_imagereward}/ImageReward.pt", weights_only=True)
    for edit, msg in [
        (lambda s: s.pop("blip.visual_encoder.norm.weight"), "missing blip.visual_encoder.norm.weight"),
        (lambda s: s.pop("mlp.layers.7.bias"), "missing mlp.layers.7.bias"),
        (lambda s: s.update({"blip.itm_head.weight": torch.zeros(2, 32)}), "unexpected blip.itm_head.weight"),
        (lambda s: s.update({"module." + k: s.pop(k) for k in list(s)}),
         r"missing blip\.text_encoder\..*; unexpected module\.blip\."),
    ]:
        bad = _copy(tiny_imagereward, tmp_path / f"keys{len(list(tmp_path.iterdir()))}")
        s = dict(state)
        edit(s)
        torch.save(s, bad / "ImageReward.pt")
        refused(bad, msg)
    bad = _copy(tiny_imagereward, tmp_path / "shape")
    med = json.loads((bad / "med_config.json").read_text())
    (bad / "med_config.json").write_text(json.dumps(med | {"intermediate_size": 48}))
    refused(bad, r"intermediate.dense.weight has shape \(64, 32\) but the ImageReward config gives \(48, 32\)")
    (bad / "med_config.json").write_text(json.dumps({"hidden_size": 32}))
    refused(bad, "is not ImageReward's med_config.json")
    (bad / "med_config.json").write_text(json.dumps(med))
    (bad / "ImageReward.pt").write_bytes(b"not a checkpoint")
    refused(bad, "could not read the ImageReward checkpoint")
    with pytest.raises(ValueError, match="needs a model"):
        RewardSpec.parse("imagereward")


def test_hpsv2_folder_problems_are_one_line(tiny_hpsv2, tmp_path):
    def refused(folder, msg):
        with pytest.raises(ValueError, match=msg) as e:
            make_reward(f"hpsv2={folder}")
        assert "\n" not in str(e.value)

    both = _copy(tiny_hpsv2, tmp_path / "both")
    shutil.copy(both / "HPS_v2.1_compressed.pt", both / "HPS_v2_compressed.pt")
    refused(both, "both HPS_v2.1_compressed.pt and HPS_v2_compressed.pt; keep one")
    (both / "HPS_v2_compressed.pt").unlink()
    (both / "bpe_simple_vocab_16e6.txt.gz").unlink()
    refused(both, "no bpe_simple_vocab_16e6.txt.gz")
    none = _copy(tiny_hpsv2, tmp_path / "none")
    (none / "HPS_v2.1_compressed.pt").unlink()
    refused(none, "no HPS_v2.1_compressed.pt or HPS_v2_compressed.pt; download")
    state = torch.load(f"{tiny_hpsv2}/HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    for i, (edit, msg) in enumerate([
        (lambda s: s.pop("visual.transformer.resblocks.0.attn.in_proj_bias"),
         "missing visual.transformer.resblocks.0.attn.in_proj_bias"),
        (lambda s: s.update({"visual.attn_pool.query": torch.zeros(4, 4)}), "unexpected visual.attn_pool.query"),
        (lambda s: s.update({"text.logit_bias": s.pop("logit_scale")}), "missing logit_scale; unexpected text.logit_bias"),
    ]):
        bad = _copy(tiny_hpsv2, tmp_path / f"keys{i}")
        s = dict(state)
        edit(s)
        torch.save({"state_dict": s}, bad / "HPS_v2.1_compressed.pt")
        refused(bad, msg)
    wrong_vocab = _copy(tiny_hpsv2, tmp_path / "vocab")
    with gzip.open(wrong_vocab / "bpe_simple_vocab_16e6.txt.gz", "wb") as f:
        f.write(b"#version: 0.2\nd o")
    refused(wrong_vocab, "the BPE vocabulary .* has 515 tokens, the checkpoint 534")


def test_weighted_sum_with_the_other_rewards(tiny_imagereward, tiny_hpsv2, tiny_clip):
    imgs = _images(2, seed=6)
    ir = make_reward(f"imagereward={tiny_imagereward}")(imgs, PROMPTS[:2])
    hps = make_reward(f"hpsv2={tiny_hpsv2}")(imgs, PROMPTS[:2])
    clip = make_reward(f"clip={tiny_clip}")(imgs, PROMPTS[:2])
    both = make_reward([f"imagereward={tiny_imagereward}", f"clip={tiny_clip}:0.5", f"hpsv2={tiny_hpsv2}:-0.25"])
    np.testing.assert_allclose(both(imgs, PROMPTS[:2]), ir + 0.5 * clip - 0.25 * hps, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_reward_worker_actors_build_them_from_the_same_spec(tiny_imagereward, tiny_hpsv2, ray_local):
    from find_rl.rewards.scorers import ScorerPool

    specs = [f"imagereward={tiny_imagereward}", f"hpsv2={tiny_hpsv2}:0.5"]
    imgs = _images(3, seed=7)
    pool = ScorerPool.create(specs, 1)
    try:
        out = pool.score(imgs, PROMPTS)
    finally:
        pool.kill()
    np.testing.assert_allclose(out["score"], make_reward(specs)(imgs, PROMPTS), rtol=1e-5, atol=1e-4)
    assert out["valid"].all()


@pytest.mark.slow
@pytest.mark.parametrize("rewards", [["imagereward"], ["hpsv2"], ["imagereward", "clip:0.5"]])
def test_train_cli_with_preference_rewards(rewards, tiny_sd, tiny_imagereward, tiny_hpsv2, tiny_clip, tmp_path):
    """`python -m find_rl.train --model <tiny SD> --reward imagereward=<folder>` (and hpsv2, and a weighted sum with
    CLIP) trains and exports, loading the rewards from their released-layout folders."""
    from find_rl import train
    from find_rl.policies.export import load_policy

    paths = {"imagereward": tiny_imagereward, "hpsv2": tiny_hpsv2, "clip": tiny_clip}
    reward_args = []
    for spec in rewards:
        name, _, weight = spec.partition(":")
        reward_args += ["--reward", f"{name}={paths[name]}" + (f":{weight}" if weight else "")]
    out = tmp_path / "run"
    assert train.main(["--out", str(out), "--model", tiny_sd, *reward_args, "--prompts", "a dog", "a green cat",
                       "--iterations", "2", "--samples-per-prompt", "4", "--num-inference-steps", "2",
                       "--guidance-scale", "7.5", "--mean-resolution", "2"]) == 0
    rows = [json.loads(ln) for ln in (out / "progress.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["reward_mean"]) for r in rows)
    pol = load_policy(out)
    assert tuple(pol.mean.shape) == (2, 4, 8, 8) and pol.mean.abs().sum() > 0
