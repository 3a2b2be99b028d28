"""Tiny random-weight ImageReward and HPSv2 folders, written in the released files' own layouts.

Tests load them through the same code path as a user's download (:mod:`find_rl.rewards.image_reward`, :mod:`find_rl.rewards.hps`),
so no network is needed. The key names, the file names and the config format are the released ones; only the
sizes are small. Key names are enumerated here from the original modules, independently of the loaders' key maps:
``ImageReward(BLIP_Pretrain(vit='large'), MLP(768))`` of THUDM/ImageReward @ c1392c6 (``ImageReward.pt`` is its
``state_dict()``, ``blip.vision_proj``/``text_proj`` and the ``position_ids`` buffer included), and open_clip's
``CLIP`` for ``ViT-H-14`` as vendored in tgxs002/HPSv2 @ 866735e (``HPS_v2*_compressed.pt`` holds
``{"state_dict": model.state_dict()}``). ``bench/bench_preference_rewards.py`` checks both against the original code.
"""

from __future__ import annotations

import gzip
import json
import string
from collections import OrderedDict
from pathlib import Path

import torch

#: med_config.json as released with ImageReward (BERT-base, cross-attention on), the sizes of which "tiny" shrinks.
MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
              "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
              "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
              "encoder_width": 768, "add_cross_attention": True}
TINY_IMAGEREWARD = dict(vision_width=128, vision_layers=1, patch=16, image_size=32,  # 2 heads of 64; 2x2 patches
                        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  max_position_embeddings=40))
TINY_HPS = dict(vision_width=160, vision_layers=1, patch=8, image_size=32,  # 2 heads of 80; 4x4 patches
                text_width=128, text_layers=1, context=77, embed_dim=32)  # 2 heads of 64; open_clip's 77 tokens
#: BERT WordPiece vocabulary: BERT's special tokens, letters, word pieces and a few whole words.
BERT_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + list(string.ascii_lowercase)
              + ["##" + c for c in string.ascii_lowercase] + ["dog", "cat", "green", "on", "the"])
#: BPE merges in open_clip's file format (pairs over CLIP's byte alphabet; "</w>" ends a word).
BPE_MERGES = ["d o", "do g</w>", "c a", "ca t</w>", "g r", "gr e", "gre e", "gree n</w>", "p a", "pa n", "pan d",
              "pand a", "panda s</w>", "o n</w>", "s o", "so f", "sof a</w>", "f o", "fo u", "fou r</w>"]
_WB = ("weight", "bias")


def _random_state(shapes: dict[str, tuple], seed: int) -> OrderedDict:
    """Seeded values that keep activations O(1): LayerNorm scales near 1, weights ~ 1/sqrt(fan-in)."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        leaf = name.rsplit(".", 2)
        if name.endswith("weight") and any(n in leaf[-2] for n in ("norm", "LayerNorm", "ln_")):
            x = 1 + 0.1 * x
        elif len(shape) >= 2 and not any(e in name for e in ("embed", "embedding", "cls_token")):
            x = x / (torch.tensor(shape[1:]).prod().float().sqrt())
        else:
            x = 0.5 * x
        state[name] = x
    return state


def save_imagereward_folder(path: str | Path, *, seed: int = 0) -> str:
    """``ImageReward.pt`` + ``med_config.json`` + ``tokenizer/`` (a BERT vocabulary) of tiny random weights."""
    p, t = TINY_IMAGEREWARD, TINY_IMAGEREWARD["text"]
    folder = Path(path)
    (folder / "tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    med = MED_CONFIG | t | {"vocab_size": len(BERT_VOCAB) + 2}  # + BLIP's [DEC] and [ENC]
    (folder / "med_config.json").write_text(json.dumps(med, indent=2))
    w, d, mlp_w = p["vision_width"], t["hidden_size"], 4 * p["vision_width"]
    shapes = {"blip.visual_encoder.cls_token": (1, 1, w),
              "blip.visual_encoder.pos_embed": (1, (p["image_size"] // p["patch"]) ** 2 + 1, w),
              "blip.visual_encoder.patch_embed.proj.weight": (w, 3, p["patch"], p["patch"]),
              "blip.visual_encoder.patch_embed.proj.bias": (w,)}
    for i in range(p["vision_layers"]):
        b = f"blip.visual_encoder.blocks.{i}."
        shapes |= {b + "norm1.weight": (w,), b + "norm1.bias": (w,),
                   b + "attn.qkv.weight": (3 * w, w), b + "attn.qkv.bias": (3 * w,),
                   b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                   b + "norm2.weight": (w,), b + "norm2.bias": (w,),
                   b + "mlp.fc1.weight": (mlp_w, w), b + "mlp.fc1.bias": (mlp_w,),
                   b + "mlp.fc2.weight": (w, mlp_w), b + "mlp.fc2.bias": (w,)}
    shapes |= {"blip.visual_encoder.norm.weight": (w,), "blip.visual_encoder.norm.bias": (w,)}
    e = "blip.text_encoder.embeddings."
    shapes |= {e + "word_embeddings.weight": (med["vocab_size"], d),
               e + "position_embeddings.weight": (t["max_position_embeddings"], d),
               e + "LayerNorm.weight": (d,), e + "LayerNorm.bias": (d,)}
    for i in range(t["num_hidden_layers"]):
        b = f"blip.text_encoder.encoder.layer.{i}."
        for att, kv_in in (("attention", d), ("crossattention", w)):  # cross-attention keys/values read the ViT width
            shapes |= {b + f"{att}.self.query.weight": (d, d), b + f"{att}.self.query.bias": (d,),
                       b + f"{att}.self.key.weight": (d, kv_in), b + f"{att}.self.key.bias": (d,),
                       b + f"{att}.self.value.weight": (d, kv_in), b + f"{att}.self.value.bias": (d,),
                       b + f"{att}.output.dense.weight": (d, d), b + f"{att}.output.dense.bias": (d,),
                       b + f"{att}.output.LayerNorm.weight": (d,), b + f"{att}.output.LayerNorm.bias": (d,)}
        inter = t["intermediate_size"]
        shapes |= {b + "intermediate.dense.weight": (inter, d), b + "intermediate.dense.bias": (inter,),
                   b + "output.dense.weight": (d, inter), b + "output.dense.bias": (d,),
                   b + "output.LayerNorm.weight": (d,), b + "output.LayerNorm.bias": (d,)}
    shapes |= {"blip.vision_proj.weight": (256, w), "blip.vision_proj.bias": (256,),  # BLIP_Pretrain's embed_dim = 256
               "blip.text_proj.weight": (256, d), "blip.text_proj.bias": (256,)}
    dims = (d, 1024, 128, 64, 16, 1)
    for j, (i, o) in zip((0, 2, 4, 6, 7), zip(dims, dims[1:])):
        shapes |= {f"mlp.layers.{j}.weight": (o, i), f"mlp.layers.{j}.bias": (o,)}
    state = _random_state(shapes, seed)
    # med.py registers position_ids as a persistent buffer, so the released state dict carries it (int64, (1, L))
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(t["max_position_embeddings"]).expand((1, -1))
    torch.save(state, folder / "ImageReward.pt")
    return str(folder)


def save_hps_folder(path: str | Path, *, version: str = "v2.1", seed: int = 0) -> str:
    """``HPS_v2.1_compressed.pt`` (or ``HPS_v2_compressed.pt``) + ``bpe_simple_vocab_16e6.txt.gz``, tiny and random."""
    if version not in ("v2.0", "v2.1"):
        raise ValueError(f"version must be 'v2.0' or 'v2.1', got {version!r}")
    p = TINY_HPS
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(folder / "bpe_simple_vocab_16e6.txt.gz", "wb", mtime=0) as f:  # open_clip's header line, then merges
        f.write(("\"bpe_simple_vocab_16e6.txt#version: 0.2\n" + "\n".join(BPE_MERGES)).encode("utf-8"))
    vocab = 2 * 256 + len(BPE_MERGES) + 2  # bytes, bytes + "</w>", merges, <start_of_text>, <end_of_text>
    w, tw, e = p["vision_width"], p["text_width"], p["embed_dim"]
    shapes = {"positional_embedding": (p["context"], tw), "text_projection": (tw, e), "logit_scale": (),
              "visual.class_embedding": (w,), "visual.positional_embedding": ((p["image_size"] // p["patch"]) ** 2 + 1, w),
              "visual.proj": (w, e), "visual.conv1.weight": (w, 3, p["patch"], p["patch"]),
              "visual.ln_pre.weight": (w,), "visual.ln_pre.bias": (w,)}
    for prefix, width, layers in (("visual.transformer.", w, p["vision_layers"]), ("transformer.", tw, p["text_layers"])):
        for i in range(layers):
            b = f"{prefix}resblocks.{i}."
            shapes |= {b + "ln_1.weight": (width,), b + "ln_1.bias": (width,), b + "attn.in_proj_weight": (3 * width, width),
                       b + "attn.in_proj_bias": (3 * width,), b + "attn.out_proj.weight": (width, width),
                       b + "attn.out_proj.bias": (width,), b + "ln_2.weight": (width,), b + "ln_2.bias": (width,),
                       b + "mlp.c_fc.weight": (4 * width, width), b + "mlp.c_fc.bias": (4 * width,),
                       b + "mlp.c_proj.weight": (width, 4 * width), b + "mlp.c_proj.bias": (width,)}
        if prefix == "visual.transformer.":
            shapes |= {"visual.ln_post.weight": (w,), "visual.ln_post.bias": (w,)}
    shapes |= {"token_embedding.weight": (vocab, tw), "ln_final.weight": (tw,), "ln_final.bias": (tw,)}
    state = _random_state(shapes, seed)
    state["logit_scale"] = torch.tensor(1 / 0.07).log()
    name = "HPS_v2.1_compressed.pt" if version == "v2.1" else "HPS_v2_compressed.pt"
    torch.save({"state_dict": state}, folder / name)
    return str(folder)
