"""HPSv2 and HPSv2.1 (Wu et al., 2023), human-preference scores, loaded offline from their released files.

``--reward hpsv2=PATH``: PATH is a folder holding

    HPS_v2.1_compressed.pt or HPS_v2_compressed.pt   the released checkpoint (hub repository xswu/HPSv2); one of them
    bpe_simple_vocab_16e6.txt.gz                      open_clip's BPE vocabulary (in the open-clip-torch wheel, and in
                                                      HPSv2's repository at hpsv2/src/open_clip/); or instead a CLIP
                                                      tokenizer's vocab.json + merges.txt (the same BPE vocabulary)

HPSv2 is open_clip's ``ViT-H-14`` fine-tuned on human preferences; ``hpsv2/img_score.py`` (tgxs002/HPSv2 @ 866735e)
builds it with ``create_model_and_transforms('ViT-H-14', ...)``, loads ``checkpoint['state_dict']`` strictly and
scores ``image_features @ text_features.T`` of the L2-normalised features, i.e. the cosine. The HPS v2 benchmark
(``hpsv2/evaluation.py``) and the published tables use ``100 * cos``; this reward returns **100 x cos** (so
``hpsv2.score()`` = this / 100), the scale of ``--reward clip``.

The network is transformers' ``CLIPModel`` in ViT-H-14's shapes (read from the checkpoint: widths, depths,
patch, image size, context, vocabulary; heads 80 wide in the image tower and 64 in the text tower, as ViT-H-14's
open_clip config has them), with open_clip's keys renamed and its fused ``in_proj`` attention weights split into
q/k/v. open_clip itself is not used: it imports torchvision, whose only release for torch 2.13 on PyPI is a CUDA
build that does not load beside the CPU torch this project pins. The prompt is tokenised with transformers'
``CLIPTokenizer`` over open_clip's BPE file (open_clip also runs ``ftfy.fix_text``; only mojibake differs). The
image is prepared as ``img_score.py``'s ``preprocess_val`` prepares it: the longer side resized to the model's size
and the rest zero-padded (:func:`find_rl.rewards.released_weights.resize_longest_pad`), not centre-cropped.
"""

from __future__ import annotations

import gzip
import html
import re
from pathlib import Path

import numpy as np
import torch

from find_rl.rewards.released_weights import check_keys, layer_count, load_renamed, read_torch_file, resize_longest_pad

CHECKPOINTS = ("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt")
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VISION_HEAD_WIDTH, TEXT_HEAD_WIDTH = 80, 64  # open_clip ViT-H-14: vision width 1280 / 16 heads, text 1024 / 16
_BLOCK = ("ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
          "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
          "mlp.c_proj.bias")
_BLOCK_RENAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                  "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_RENAMES = {  # open_clip CLIP -> transformers CLIPModel; "T" marks a projection stored transposed by open_clip
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight", "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.proj": "T visual_projection.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
    "text_projection": "T text_projection.weight",
    "logit_scale": "logit_scale",
}


def released_keys(vision_layers: int, text_layers: int) -> set[str]:
    """The state-dict names of open_clip's ``CLIP`` (ViT-H-14: no custom text tower, no attentional pooler)."""
    blocks = {f"visual.transformer.resblocks.{i}.{k}" for i in range(vision_layers) for k in _BLOCK}
    blocks |= {f"transformer.resblocks.{i}.{k}" for i in range(text_layers) for k in _BLOCK}
    return set(_RENAMES) | blocks


def renamed_state(state: dict) -> dict[str, tuple[str, torch.Tensor]]:
    """open_clip's state dict -> ``{CLIPModel name: (open_clip name, tensor)}``; in_proj split into q, k, v."""
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"(visual\.)?transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias|in_proj_\w+)", key):
            tower = "vision_model" if m[1] else "text_model"
            prefix = f"{tower}.encoder.layers.{m[2]}."
            if m[4].startswith("in_proj"):
                kind = m[4].removeprefix("in_proj_")
                for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{proj}.{kind}"] = (key, part)
            else:
                out[f"{prefix}{_BLOCK_RENAMES[m[3]]}.{m[4]}"] = (key, value)
        else:
            name = _RENAMES[key]
            out[name.removeprefix("T ")] = (key, value.T if name.startswith("T ") else value)
    return out


class HPSv2Score:
    """``(images, prompts) -> 100 x cos(image, prompt)`` of an HPSv2 / HPSv2.1 checkpoint; text features cached."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 16):
        from find_rl.diffusion.models import torch_dtype

        self.model, self.tokenizer = load_hps(Path(path).expanduser())
        self.model.to(device, torch_dtype(dtype))
        self.size = self.model.config.vision_config.image_size
        self.context = self.model.config.text_config.max_position_embeddings
        self.device, self.dtype, self.batch_size = device, torch_dtype(dtype), batch_size
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised ``encode_text`` of each prompt (open_clip: eot token's output, ``ln_final``, projection)."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._text]
        if new:
            ids = self.token_ids(new).to(self.device)
            emb = self.model.text_projection(self.model.text_model(input_ids=ids).pooler_output)
            for p, e in zip(new, torch.nn.functional.normalize(emb.float(), dim=-1)):
                self._text[p] = e
        return torch.stack([self._text[p] for p in prompts])

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """``(N, context)`` ids: <start> BPE tokens <end>, truncated as open_clip's ``tokenize`` truncates.

        Padding uses the end token (open_clip pads with 0); with the causal mask the end token, whose output is
        the text feature, never sees the padding, so the features are the same.
        """
        cleaned = [html.unescape(html.unescape(p)).strip() for p in prompts]  # open_clip's basic_clean, less ftfy
        return self.tokenizer(cleaned, padding="max_length", truncation=True, max_length=self.context,
                              return_tensors="pt").input_ids

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        """L2-normalised ``encode_image`` (class token after ``ln_post``, projection) of ``(N, 3, H, W)`` in [-1, 1]."""
        x = resize_longest_pad(images, self.size, device=self.device)
        embs = [self.model.visual_projection(self.model.vision_model(pixel_values=c.to(self.dtype)).pooler_output)
                for c in x.split(self.batch_size)]
        return torch.nn.functional.normalize(torch.cat(embs).float(), dim=-1)

    def __call__(self, images, prompts: list[str]) -> np.ndarray:
        img = self.image_features(images)
        if len(img) != len(prompts):
            raise ValueError(f"got {len(img)} images for {len(prompts)} prompts")
        return (100.0 * (img * self.text_features(list(prompts))).sum(-1)).cpu().numpy().astype(np.float32)


def load_hps(folder: Path):
    """``(CLIPModel in eval mode, CLIPTokenizer)`` from a folder with a released HPSv2 checkpoint and the BPE."""
    from transformers import CLIPConfig, CLIPModel

    if not folder.is_dir():
        raise ValueError(f"hpsv2: {folder} is not a folder; put {' or '.join(CHECKPOINTS)} and {BPE_FILE} in one")
    found = [folder / c for c in CHECKPOINTS if (folder / c).is_file()]
    if len(found) != 1:
        if found:
            raise ValueError(f"hpsv2: {folder} has both {' and '.join(CHECKPOINTS)}; keep one")
        raise ValueError(f"hpsv2: {folder} has no {' or '.join(CHECKPOINTS)}; download one from the xswu/HPSv2 hub repository")
    ckpt = read_torch_file(found[0], "HPSv2")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    vision_layers = layer_count(state, "visual.transformer.resblocks.")
    text_layers = layer_count(state, "transformer.resblocks.")
    check_keys(state, released_keys(vision_layers, text_layers), what="HPSv2 (open_clip ViT-H-14)", path=found[0])
    width, _, patch, _ = state["visual.conv1.weight"].shape
    vocab, text_width = state["token_embedding.weight"].shape
    if width % VISION_HEAD_WIDTH or text_width % TEXT_HEAD_WIDTH:
        raise ValueError(f"{found[0]}: widths {width} / {text_width} are not ViT-H-14's (heads {VISION_HEAD_WIDTH} / "
                         f"{TEXT_HEAD_WIDTH} wide); is this an HPSv2 checkpoint?")
    tokenizer = _bpe_tokenizer(folder)
    if len(tokenizer) != vocab or tokenizer.eos_token_id != vocab - 1:
        raise ValueError(f"hpsv2: the BPE vocabulary in {folder} has {len(tokenizer)} tokens, the checkpoint {vocab}; "
                         f"use open_clip's {BPE_FILE}")
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=text_width, num_hidden_layers=text_layers,
                         intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                         num_attention_heads=text_width // TEXT_HEAD_WIDTH, hidden_act="gelu", layer_norm_eps=1e-5,
                         max_position_embeddings=state["positional_embedding"].shape[0],
                         bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=width, num_hidden_layers=vision_layers, num_attention_heads=width // VISION_HEAD_WIDTH,
                           intermediate_size=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                           image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5),
        projection_dim=state["visual.proj"].shape[1])
    model = CLIPModel(config)
    load_renamed(model, renamed_state(state), what="HPSv2 (ViT-H-14)", path=found[0])
    return model.eval().requires_grad_(False), tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-character table (openai/CLIP ``simple_tokenizer.py``, as open_clip has it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:  # bytes without a printable character map to 256, 257, ...
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe_tokenizer(folder: Path):
    """transformers' CLIPTokenizer over open_clip's BPE file (its vocabulary built as ``SimpleTokenizer`` builds it)."""
    from transformers import CLIPTokenizer

    if (folder / BPE_FILE).is_file():
        try:
            lines = gzip.open(folder / BPE_FILE).read().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError, EOFError) as e:
            raise ValueError(f"could not read {folder / BPE_FILE} ({e.__class__.__name__}); copy it again") from None
        merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1] if m.strip()]
        chars = list(bytes_to_unicode().values())
        vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return CLIPTokenizer.from_pretrained(str(folder))
    raise ValueError(f"hpsv2: no {BPE_FILE} (or vocab.json + merges.txt) in {folder}; copy open_clip's BPE file there")
