"""Random-weight stand-ins of real architectures, saved exactly like real checkpoints (``save_pretrained``).

No network is needed: tests build ``"tiny"`` versions and load them back through the same ``from_pretrained`` code
that real checkpoints use; the GPU benchmark builds full-size ones (``"sd15"``: Stable Diffusion 1.5's UNet, VAE
and CLIP text encoder shapes; ``"vit-l-14"``: a CLIP ViT-L/14 reward model) when real weights are not at hand.
Speed and memory depend on the shapes, not on the values, so these time like the real models. The tokenizer is
a real ``CLIPTokenizer`` over a letters-only vocabulary (no merges), padded to the model's context length.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

_VOCAB = ["<|startoftext|>", "<|endoftext|>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]

SD_PRESETS = {
    "tiny": dict(
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16),
        unet=dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=16, attention_head_dim=4,
                  norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        vae=dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16, layers_per_block=1),
    ),
    "sd15": dict(  # runwayml/stable-diffusion-v1-5's configs
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
        unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                  attention_head_dim=8, norm_num_groups=32,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        vae=dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512, layers_per_block=2),
    ),
}

CLIP_PRESETS = {
    "tiny": dict(text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           max_position_embeddings=16),
                 vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             image_size=32, patch_size=8),
                 projection_dim=8),
    "vit-l-14": dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               max_position_embeddings=77, vocab_size=49408),
                     vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                 image_size=224, patch_size=14),
                     projection_dim=768),
}


def clip_tokenizer(model_max_length: int):
    """A real ``CLIPTokenizer`` over a letters-only vocabulary (save it with ``save_pretrained``)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(_VOCAB)}))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length)


def _text_config(preset: dict):
    from transformers import CLIPTextConfig

    cfg = dict(vocab_size=len(_VOCAB), bos_token_id=0, eos_token_id=1, pad_token_id=1) | preset
    return CLIPTextConfig(**cfg)


def save_sd_pipeline(path: str | Path, preset: str = "tiny", *, seed: int = 0, device: str = "cpu",
                     dtype: torch.dtype = torch.float32) -> str:
    """Build a random-weight ``StableDiffusionPipeline`` of ``preset``'s shapes and ``save_pretrained`` it to ``path``.

    ``device`` only speeds up the random initialisation (full-size UNets initialise much faster on a GPU).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    if preset not in SD_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(SD_PRESETS)}")
    p = SD_PRESETS[preset]
    path = Path(path)
    torch.manual_seed(seed)
    with torch.device(device):
        text_encoder = CLIPTextModel(_text_config(p["text"]))
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **p["unet"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **p["vae"])
    tokenizer = clip_tokenizer(p["text"]["max_position_embeddings"])
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1)  # SD 1.5 ships PNDM; the sampler swaps it for DDIM
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    (pipe if dtype == torch.float32 else pipe.to(dtype=dtype)).save_pretrained(path, safe_serialization=True)
    return str(path)


def save_clip_model(path: str | Path, preset: str = "tiny", *, seed: int = 0, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> str:
    """Build a random-weight ``CLIPModel`` (and its tokenizer) of ``preset``'s shapes and save it to ``path``."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    if preset not in CLIP_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(CLIP_PRESETS)}")
    p = CLIP_PRESETS[preset]
    path = Path(path)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=_text_config(p["text"]).to_dict(), vision_config=CLIPVisionConfig(**p["vision"]).to_dict(),
                        projection_dim=p["projection_dim"])
    with torch.device(device):
        model = CLIPModel(config)
    (model if dtype == torch.float32 else model.to(dtype=dtype)).save_pretrained(path)
    clip_tokenizer(p["text"]["max_position_embeddings"]).save_pretrained(path)
    return str(path)
