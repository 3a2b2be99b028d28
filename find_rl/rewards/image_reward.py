"""ImageReward (Xu et al., NeurIPS 2023), the reward of the FIND paper, loaded offline from its released files.

``--reward imagereward=PATH``: PATH is a folder holding

    ImageReward.pt         the released state dict (hub repository THUDM/ImageReward)
    med_config.json        its text encoder's BERT config (same repository)
    tokenizer/vocab.txt    bert-base-uncased's WordPiece vocabulary (hub repository google-bert/bert-base-uncased;
                           its tokenizer_config.json may sit beside it)

The model follows ``ImageReward/ImageReward.py`` and ``ImageReward/models/BLIP/*`` of THUDM/ImageReward @ c1392c6:

1. the image (resized, centre-cropped, CLIP-normalised; :func:`find_rl.rewards.released_weights.resize_center_crop`) goes
   through BLIP's ViT (``blip.visual_encoder``): all tokens after its final LayerNorm are the image embedding;
2. the prompt, BERT-tokenised and padded to 35 tokens, goes through BLIP's BERT text encoder (``blip.text_encoder``),
   whose every layer cross-attends to the image tokens;
3. the ``[CLS]`` output goes through the MLP head ``mlp.layers``: Linear(d, 1024), Linear(1024, 128), Linear(128, 64),
   Linear(64, 16), Linear(16, 1), with no activation in between (the dropouts are inactive at inference);
4. reward = (head output - 0.16717362830052426) / 1.0333394966054072, the published mean and std.

Built from transformers' ``BlipVisionModel`` and ``BlipTextModel``; the released keys are renamed as transformers'
BLIP conversion script (``models/blip/convert_blip_original_pytorch_to_hf.py``) renames them. The ViT's shape is read
from the checkpoint (its heads are 64 wide, as in BLIP's base and large ViTs); the text encoder's from
``med_config.json``. ``blip.vision_proj``, ``blip.text_proj`` (BLIP's contrastive heads) and the
``position_ids`` buffer are in the released file and unused here. No Ray imports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from find_rl.rewards.released_weights import check_keys, layer_count, load_renamed, read_torch_file, resize_center_crop

#: ImageReward's published normalisation of the head's output (``ImageReward.mean`` / ``ImageReward.std``).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
#: The prompt length ImageReward tokenises to (``padding="max_length", max_length=35``).
PROMPT_TOKENS = 35
HEAD_LAYERS = (0, 2, 4, 6, 7)  # indices of the Linear layers in ImageReward's MLP (Dropouts in between)
CHECKPOINT, CONFIG, TOKENIZER = "ImageReward.pt", "med_config.json", "tokenizer"
_V, _T = "blip.visual_encoder.", "blip.text_encoder."
_UNUSED = {"blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias",
           "blip.text_encoder.embeddings.position_ids"}
_WB = ("weight", "bias")
#: BLIP ViT names -> transformers BlipVisionModel names (after convert_blip_original_pytorch_to_hf.rename_key).
_VISION_RENAMES = [
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"encoder.layers.\1.layer_norm\2.\3"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
]


def released_keys(vision_layers: int, text_layers: int) -> set[str]:
    """The parameter names of ``ImageReward`` (``BLIP_Pretrain(vit='large')`` + ``MLP``) that the reward uses."""
    vision = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    vision += [f"blocks.{i}.{m}.{p}" for i in range(vision_layers)
               for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for p in _WB]
    text = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
            "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
    for i in range(text_layers):
        for att in ("attention", "crossattention"):
            text += [f"encoder.layer.{i}.{att}.self.{m}.{p}" for m in ("query", "key", "value") for p in _WB]
            text += [f"encoder.layer.{i}.{att}.output.{m}.{p}" for m in ("dense", "LayerNorm") for p in _WB]
        text += [f"encoder.layer.{i}.{m}.{p}" for m in ("intermediate.dense", "output.dense", "output.LayerNorm") for p in _WB]
    head = [f"mlp.layers.{j}.{p}" for j in HEAD_LAYERS for p in _WB]
    return {_V + k for k in vision} | {_T + k for k in text} | set(head)


def our_name(released: str) -> str:
    """The name in :class:`ImageRewardModel` of a released ImageReward parameter."""
    if released.startswith(_V):
        key = released[len(_V):]
        for pattern, template in _VISION_RENAMES:
            if m := re.fullmatch(pattern, key):
                return "vision." + m.expand(template)
        raise KeyError(released)
    if released.startswith(_T):
        return "text." + released[len(_T):]  # BLIP's med.py and transformers' BlipTextModel share BERT's names
    return released  # mlp.layers.*


class ImageRewardModel(torch.nn.Module):
    """BLIP ViT + cross-attending BERT (transformers modules) + ImageReward's MLP head; forward -> raw head output."""

    def __init__(self, vision_config, text_config, head_in: int):
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        nn, dims = torch.nn, (head_in, 1024, 128, 64, 16, 1)
        self.mlp = nn.Module()  # named as in the released file: mlp.layers.{0,2,4,6,7}
        self.mlp.layers = nn.Sequential(nn.Linear(dims[0], dims[1]), nn.Dropout(0.2), nn.Linear(dims[1], dims[2]),
                                        nn.Dropout(0.2), nn.Linear(dims[2], dims[3]), nn.Dropout(0.1),
                                        nn.Linear(dims[3], dims[4]), nn.Linear(dims[4], dims[5]))

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_atts, is_decoder=False).last_hidden_state
        return self.mlp.layers(text[:, 0].float()).squeeze(1)


class ImageRewardScore:
    """``(images, prompts) -> ImageReward`` (the normalised score; higher is better; about N(0, 1) on its data)."""

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 16):
        from find_rl.diffusion.models import torch_dtype

        folder = Path(path).expanduser()
        self.model, self.tokenizer = load_image_reward(folder)
        self.model.to(device)
        self.model.vision.to(torch_dtype(dtype))
        self.model.text.to(torch_dtype(dtype))  # the head stays in float32, as ImageReward casts its input to float
        self.size = self.model.vision.config.image_size
        self.device, self.dtype, self.batch_size = device, torch_dtype(dtype), batch_size

    @torch.no_grad()
    def __call__(self, images, prompts: list[str]) -> np.ndarray:
        x = resize_center_crop(images, self.size, device=self.device)
        if len(x) != len(prompts):
            raise ValueError(f"got {len(x)} images for {len(prompts)} prompts")
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=PROMPT_TOKENS,
                             return_tensors="pt").to(self.device)
        raw = [self.model(x[i:i + self.batch_size].to(self.dtype), tok.input_ids[i:i + self.batch_size],
                          tok.attention_mask[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return ((torch.cat(raw) - REWARD_MEAN) / REWARD_STD).cpu().numpy().astype(np.float32)


def load_image_reward(folder: Path):
    """``(ImageRewardModel in eval mode, BERT tokenizer with BLIP's [DEC]/[ENC] tokens)`` from a released folder."""
    from transformers import BlipTextConfig, BlipVisionConfig

    if not folder.is_dir():
        raise ValueError(f"imagereward: {folder} is not a folder; put {CHECKPOINT}, {CONFIG} and {TOKENIZER}/vocab.txt in one")
    for name in (CHECKPOINT, CONFIG):
        if not (folder / name).is_file():
            raise ValueError(f"imagereward: no {name} in {folder}; download it from the THUDM/ImageReward hub repository")
    med = _med_config(folder / CONFIG)
    state = read_torch_file(folder / CHECKPOINT, "ImageReward")
    vision_layers = layer_count(state, _V + "blocks.")
    check_keys(state, released_keys(vision_layers, med["num_hidden_layers"]), optional=_UNUSED, what="ImageReward",
               path=folder / CHECKPOINT)
    width, _, patch, _ = state[_V + "patch_embed.proj.weight"].shape
    grid = round((state[_V + "pos_embed"].shape[1] - 1) ** 0.5)
    if width % 64:
        raise ValueError(f"{folder / CHECKPOINT}: a ViT of width {width} is not BLIP's (its attention heads are 64 wide)")
    vision = BlipVisionConfig(hidden_size=width, intermediate_size=state[_V + "blocks.0.mlp.fc1.weight"].shape[0],
                              num_hidden_layers=vision_layers, num_attention_heads=width // 64, image_size=grid * patch,
                              patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-6, attention_dropout=0.0)
    text = BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], encoder_hidden_size=width,
                          intermediate_size=med["intermediate_size"], num_hidden_layers=med["num_hidden_layers"],
                          num_attention_heads=med["num_attention_heads"],
                          max_position_embeddings=med["max_position_embeddings"],
                          hidden_act=med.get("hidden_act", "gelu"), layer_norm_eps=med.get("layer_norm_eps", 1e-12),
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=med.get("pad_token_id", 0),
                          bos_token_id=None, eos_token_id=None, sep_token_id=None, is_decoder=True, use_cache=False)
    model = ImageRewardModel(vision, text, head_in=med["hidden_size"])
    renamed = {our_name(k): (k, v) for k, v in state.items() if k not in _UNUSED}
    load_renamed(model, renamed, what="ImageReward", path=folder / CHECKPOINT)
    return model.eval().requires_grad_(False), _tokenizer(folder / TOKENIZER, med["vocab_size"])


def _med_config(path: Path) -> dict:
    try:
        med = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"could not read {path} ({e.__class__.__name__}); download med_config.json again") from None
    need = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")
    if lacking := [k for k in need if not isinstance(med.get(k), int)]:
        raise ValueError(f"{path} is not ImageReward's med_config.json (no integer {', '.join(lacking)})")
    if not med.get("add_cross_attention", False) or med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path} is not ImageReward's med_config.json "
                         "(it needs add_cross_attention: true and absolute positions)")
    if med["max_position_embeddings"] < PROMPT_TOKENS:
        raise ValueError(f"{path}: max_position_embeddings {med['max_position_embeddings']} is fewer than the "
                         f"{PROMPT_TOKENS} prompt tokens")
    return med


def _tokenizer(folder: Path, vocab_size: int):
    """bert-base-uncased's tokenizer plus the two tokens BLIP adds (``init_tokenizer`` in ImageReward's blip.py)."""
    from transformers import BertTokenizer

    if not (folder / "vocab.txt").is_file():
        raise ValueError(f"imagereward: no {folder}/vocab.txt; put bert-base-uncased's vocab.txt "
                         "(hub repository google-bert/bert-base-uncased) in that folder")
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tokenizer) > vocab_size:
        raise ValueError(f"imagereward: the tokenizer in {folder} has {len(tokenizer)} tokens, more than the "
                         f"{vocab_size} of med_config.json; use bert-base-uncased's vocab.txt")
    return tokenizer
