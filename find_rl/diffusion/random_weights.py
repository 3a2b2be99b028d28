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

_TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16)
_TINY_VAE = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16, layers_per_block=1)
_SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512, layers_per_block=2)
_CLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu")

_TINY_UNET = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=16,
                  attention_head_dim=4, norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))

#: ``kind`` picks the pipeline class: "sd" (StableDiffusionPipeline), "sdxl" (StableDiffusionXLPipeline),
#: "t2v" (TextToVideoSDPipeline, ModelScope's text-to-video), "animatediff" (AnimateDiffPipeline: an SD UNet plus a
#: MotionAdapter, joined into a UNetMotionModel). Full-size presets copy the public configs' shapes.
PIPELINE_PRESETS = {
    "tiny": dict(kind="sd", text=_TINY_TEXT, vae=_TINY_VAE, unet=_TINY_UNET),
    # SD 1.5's latent shape (4 x 64 x 64) with the tiny networks: the policies' cost at SD's action size on a CPU
    "tiny-sd64": dict(kind="sd", text=_TINY_TEXT, vae=_TINY_VAE, unet=_TINY_UNET | dict(sample_size=64)),
    "sd15": dict(kind="sd", text=_CLIP_L_TEXT, vae=_SD_VAE,  # runwayml/stable-diffusion-v1-5
                 unet=dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                           cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
                           down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                           up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)),
    "tiny-sdxl": dict(kind="sdxl", text=_TINY_TEXT | dict(projection_dim=16), text_2=_TINY_TEXT | dict(projection_dim=16),
                      vae=_TINY_VAE,
                      unet=dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=32,
                                attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=6 * 8 + 16,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))),
    "sdxl": dict(kind="sdxl", text=_CLIP_L_TEXT | dict(projection_dim=768), vae=_SD_VAE | dict(sample_size=1024),
                 text_2=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                             max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280),
                 unet=dict(sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
                           cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
                           use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                           projection_class_embeddings_input_dim=2816,
                           down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))),
    "tiny-t2v": dict(kind="t2v", text=_TINY_TEXT, vae=_TINY_VAE,
                     unet=dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=16,
                               attention_head_dim=4, norm_num_groups=8,
                               down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                               up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))),
    "tiny-animatediff": dict(kind="animatediff", text=_TINY_TEXT, vae=_TINY_VAE, unet=_TINY_UNET,  # + a motion adapter
                             motion=dict(block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
                                         motion_norm_num_groups=8, motion_max_seq_length=32)),
    "modelscope": dict(kind="t2v", vae=_SD_VAE,  # ali-vilab/text-to-video-ms-1.7b
                       text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                                 max_position_embeddings=77, vocab_size=49408, hidden_act="gelu"),
                       unet=dict(sample_size=32, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                 cross_attention_dim=1024, attention_head_dim=64, norm_num_groups=32,
                                 down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                                 up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3)),
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


def save_pipeline(path: str | Path, preset: str = "tiny", *, seed: int = 0, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> str:
    """Build a random-weight diffusers pipeline of ``preset``'s shapes (see ``PIPELINE_PRESETS``) and save it.

    ``device`` only speeds up the random initialisation (full-size UNets initialise much faster on a GPU).
    """
    import diffusers
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if preset not in PIPELINE_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PIPELINE_PRESETS)}")
    p = PIPELINE_PRESETS[preset]
    kind = p["kind"]
    path = Path(path)
    torch.manual_seed(seed)
    unet_cls = diffusers.UNet3DConditionModel if kind == "t2v" else diffusers.UNet2DConditionModel
    parts = {}
    with torch.device(device):
        parts["text_encoder"] = CLIPTextModel(_text_config(p["text"]))
        if kind == "sdxl":
            parts["text_encoder_2"] = CLIPTextModelWithProjection(_text_config(p["text_2"]))
        parts["unet"] = unet_cls(in_channels=4, out_channels=4, **p["unet"])
        parts["vae"] = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **p["vae"])
        if kind == "animatediff":
            parts["motion_adapter"] = diffusers.MotionAdapter(**p["motion"])
    parts["tokenizer"] = clip_tokenizer(p["text"]["max_position_embeddings"])
    if kind == "sdxl":
        parts["tokenizer_2"] = clip_tokenizer(p["text_2"]["max_position_embeddings"])
    # SD 1.5 ships PNDM (SDXL Euler, ModelScope DDIM); the sampler swaps any of them for DDIM
    parts["scheduler"] = diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 skip_prk_steps=True, steps_offset=1)
    if kind == "sd":
        pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    elif kind == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True)
    elif kind == "animatediff":
        pipe = diffusers.AnimateDiffPipeline(**parts)
    else:
        pipe = diffusers.TextToVideoSDPipeline(**parts)
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


def save_xclip_model(path: str | Path, *, seed: int = 0, num_frames: int = 4) -> str:
    """A tiny random-weight ``XCLIPModel`` (video-text reward) with its tokenizer, saved to ``path``."""
    from transformers import XCLIPConfig, XCLIPModel, XCLIPVisionConfig

    path = Path(path)
    torch.manual_seed(seed)
    vision = XCLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8, num_frames=num_frames, mit_hidden_size=16,
                               mit_intermediate_size=32, mit_num_hidden_layers=1, mit_num_attention_heads=2)
    config = XCLIPConfig(text_config=_text_config(CLIP_PRESETS["tiny"]["text"]).to_dict(), vision_config=vision.to_dict(),
                         projection_dim=16, prompt_layers=1, prompt_num_attention_heads=2)  # MIT width = projection_dim
    XCLIPModel(config).save_pretrained(path)
    clip_tokenizer(CLIP_PRESETS["tiny"]["text"]["max_position_embeddings"]).save_pretrained(path)
    return str(path)


def save_aesthetic_model(path: str | Path, *, seed: int = 0) -> str:
    """A tiny random CLIP plus a random LAION-style aesthetic head (``aesthetic_head.safetensors``) in one folder."""
    from safetensors.torch import save_file

    path = Path(save_clip_model(path, "tiny", seed=seed))
    torch.manual_seed(seed + 1)
    dims = [CLIP_PRESETS["tiny"]["projection_dim"], 1024, 128, 64, 16, 1]
    state = {}
    for layer, (i, o) in zip((0, 2, 4, 6, 7), zip(dims, dims[1:])):
        state[f"layers.{layer}.weight"], state[f"layers.{layer}.bias"] = torch.randn(o, i) / i**0.5, torch.randn(o)
    save_file(state, path / "aesthetic_head.safetensors")
    return str(path)
