"""``ScenesPipeline``: the frozen text-to-image model of the scenes world, built from a real model's classes.

Components, as in ``StableDiffusionPipeline`` but in pixel space (no VAE):

- ``tokenizer``: a word-level ``PreTrainedTokenizerFast`` over the scenes vocabulary (``[BOS] words [EOS]`` padded
  with ``[PAD]`` to ``max_length``; an unknown word becomes ``[UNK]``), loadable with ``AutoTokenizer``;
- ``text_encoder``: a tiny ``T5EncoderModel`` trained from scratch (bidirectional self-attention, as the T5 encoders
  of Imagen, PixArt and SD3), or a tiny ``CLIPTextModel`` (causal, as SD 1.5's; ``ScenesModelConfig.text_encoder``);
- ``unet``: a ``UNet2DConditionModel`` that reads the encoder's ``last_hidden_state`` through cross-attention
  (and, with ``ScenesModelConfig.pooled_text``, an attention-pooled summary of it added to the time embedding:
  diffusers' ``addition_embed_type="text"``); it predicts x0 (``prediction_type="sample"``);
- ``scheduler``: a ``DDIMScheduler`` (eta 0 makes the image a deterministic function of the initial noise), with
  "trailing" timesteps (the first step at pure noise) for models trained that way.

The "latent" is the image itself, ``(3, 32, 32)``, so a noise policy acts on 3,072 numbers. Prompts are checked
with ``grammar.parse_prompt`` (a one-line ``ValueError`` names an unknown word) and encoded in their canonical text
(``parse_prompt(p).text``: "a photo of" dropped, lower case); ``""`` is the null prompt (classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from find_rl.core.observation import reads_padding_mask
from find_rl.diffusion.pixel_loop import denoise_to_images
from find_rl.worlds.scenes.geometry import IMAGE_SIZE, SHAPES
from find_rl.worlds.scenes.grammar import _COUNTS, _VOCABULARY, COLOURS, PLURALS, parse_prompt

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
#: Words of the tokenizer after the special tokens, in a fixed order ("photo" for GenEval's "a photo of").
WORDS: tuple[str, ...] = ("a", "one", "two", "three", *COLOURS, *SHAPES, *PLURALS, "and", "left", "right", "of",
                          "above", "below", "photo")
assert set(WORDS) >= _VOCABULARY and set(_COUNTS) <= set(WORDS)


@dataclass(frozen=True)
class ScenesModelConfig:
    """Every architectural default of the scenes model, declared once (``build_pipeline`` reads only this)."""

    image_size: int = IMAGE_SIZE
    #: The UNet sees the image as non-overlapping ``patch_size`` x ``patch_size`` patches (``pixel_unshuffle``: a
    #: fixed, lossless rearrangement, 3 x 32 x 32 -> 12 x 16 x 16 at 2) and predicts them back; the diffusion itself
    #: (noise, scheduler, latents) stays on the 3 x 32 x 32 image.
    patch_size: int = 2
    #: Fixed coordinate channels (x and y in [-1, 1] over the patch grid) appended to the UNet's input, as
    #: CoordConv: convolutions and attention without positional encodings see absolute position only through the
    #: border's zero padding, and a relation ("a circle left of a square") is a statement about positions. Extra
    #: input channels are how diffusers' inpainting UNets take their mask too; 0 turns them off.
    coord_channels: int = 2
    # UNet2DConditionModel (its resolutions: image_size / patch_size, halved after every block but the last)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_heads: int = 4  # diffusers' ``attention_head_dim`` is the number of heads in UNet2DConditionModel
    norm_num_groups: int = 8
    pooled_text: bool = True  # add an attention-pooled text summary to the time embedding (addition_embed_type="text")
    #: The text encoder's class: "t5" (``T5EncoderModel``: bidirectional, as Imagen's, PixArt's and SD3's; every token
    #: sees the whole prompt, so the first object's tokens know the relation that follows them) or "clip"
    #: (``CLIPTextModel``: causal, as SD 1.5's; the first model shipped used it).
    text_encoder: str = "t5"
    # the text encoder's size (CLIPTextModel or T5EncoderModel)
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 128
    max_length: int = 12  # [BOS] + the longest prompt ("a photo of" + 8 words) + [EOS]
    # DDIMScheduler
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    #: "trailing": the sampler's first step is the last training timestep (999, pure noise: the layout must come from
    #: the text), not 900 ("leading", diffusers' default), where training images still show through the noise
    #: (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").
    timestep_spacing: str = "trailing"
    # sampling defaults of ScenesPipeline.__call__
    num_inference_steps: int = 10
    guidance_scale: float = 1.0

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def build_tokenizer(max_length: int = ScenesModelConfig.max_length) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the scenes vocabulary (``AutoTokenizer`` loads it back after ``save_pretrained``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate((PAD, UNK, BOS, EOS, *WORDS))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
                                   model_max_length=max_length, padding_side="right")


class ScenesPipeline(DiffusionPipeline):
    def __init__(self, unet: UNet2DConditionModel, scheduler: DDIMScheduler, text_encoder: CLIPTextModel | T5EncoderModel,
                 tokenizer: PreTrainedTokenizerFast, patch_size: int = 1, coord_channels: int = 0):
        super().__init__()
        if coord_channels not in (0, 2):
            raise ValueError(f"coord_channels must be 0 or 2 (x and y), got {coord_channels}")
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(patch_size=patch_size, coord_channels=coord_channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """The initial noise's shape: the image's, ``(3, 32, 32)``."""
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        p = self.config.patch_size
        return (self.unet.config.out_channels // (p * p), size[0] * p, size[1] * p)

    def denoise(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's x0 prediction for noisy images ``x`` ``(N, 3, H, W)`` at timestep(s) ``t`` given the text states."""
        p = self.config.patch_size
        x = F.pixel_unshuffle(x, p) if p > 1 else x
        if self.config.coord_channels:
            x = torch.cat([x, coordinate_maps(x.shape[-2:], x.dtype, x.device).expand(len(x), -1, -1, -1)], dim=1)
        out = self.unet(x, t, encoder_hidden_states=cond).sample
        return F.pixel_shuffle(out, p) if p > 1 else out

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids ``(N, max_length)`` of the canonical prompt texts (``""``: the null prompt, ``[BOS] [EOS]``)."""
        texts = [p if p == "" else parse_prompt(p).text for p in prompts]
        return self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.text_encoder.device)
        if reads_padding_mask(self.text_encoder):  # bidirectional (T5): padding masked out, as T5's own
            return self.text_encoder(ids, attention_mask=(ids != self.tokenizer.pad_token_id).long()).last_hidden_state
        return self.text_encoder(ids).last_hidden_state

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """The encoder's ``last_hidden_state`` ``(N, max_length, text_hidden)``, what the UNet cross-attends to."""
        return self.encode_ids(self.tokenize(prompts))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        num_inference_steps: int = ScenesModelConfig.num_inference_steps,
        guidance_scale: float = ScenesModelConfig.guidance_scale,
        guidance_rescale: float = 0.0,
        guidance_stop: float = 1.0,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Render one image per prompt.

        1. Check and encode the prompts (and the null prompt ``""`` when some step is guided).
        2. Start from ``latents`` (the initial noise, ``(N, 3, 32, 32)``; drawn from N(0, I) with ``generator`` if
           not given).
        3. Run the scheduler's loop (DDIM as shipped; any diffusers scheduler set on ``self.scheduler``); the UNet
           predicts x0. Classifier-free guidance ``guidance_scale`` on the first ``int(guidance_stop * steps)`` steps,
           rescaled by ``guidance_rescale`` (``find_rl.diffusion.pixel_loop``).
        4. Return images in [-1, 1] as ``(N, 3, H, W)`` float32 (``"np"``/``"pt"``) or PIL images (``"pil"``).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        dtype = self.unet.dtype
        cond = self.encode_prompt(prompts).to(dtype)
        return denoise_to_images(self, self.denoise, cond=cond, null_cond=lambda: self.encode_prompt([""] * len(prompts)).to(dtype),
                                 n=len(prompts), num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                 guidance_rescale=guidance_rescale, guidance_stop=guidance_stop, eta=eta,
                                 generator=generator, latents=latents, output_type=output_type, return_dict=return_dict)


def coordinate_maps(size: tuple[int, int], dtype: torch.dtype, device) -> torch.Tensor:
    """``(1, 2, H, W)``: x (left -1 to right +1) and y (top -1 to bottom +1) at the centres of an H x W grid."""
    h, w = size
    y = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, dtype=dtype, device=device)
    x = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(x, y, indexing="xy"))[None]


def build_pipeline(config: ScenesModelConfig = ScenesModelConfig()) -> ScenesPipeline:
    """A fresh, untrained scenes pipeline of the given architecture (torch's global RNG draws the initial weights)."""
    c = config
    if c.image_size % (c.patch_size * 2 ** (len(c.block_out_channels) - 1)):
        raise ValueError(f"image_size {c.image_size} must be divisible by patch_size x 2^(number of blocks - 1)")
    if len(c.down_block_types) != len(c.block_out_channels) or len(c.up_block_types) != len(c.block_out_channels):
        raise ValueError("down_block_types, up_block_types and block_out_channels must have one entry per resolution")
    if c.text_encoder not in ("t5", "clip"):
        raise ValueError(f"text_encoder must be 't5' or 'clip', got {c.text_encoder!r}")
    tokenizer = build_tokenizer(c.max_length)
    if c.text_encoder == "clip":
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=c.text_hidden, intermediate_size=c.text_intermediate,
            num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads, max_position_embeddings=c.max_length,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    else:
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=c.text_hidden, d_kv=c.text_hidden // c.text_heads, d_ff=c.text_intermediate,
            num_layers=c.text_layers, num_heads=c.text_heads, relative_attention_num_buckets=16,
            relative_attention_max_distance=c.max_length, dropout_rate=0.0, feed_forward_proj="gated-gelu",
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id))
    extra = dict(addition_embed_type="text", addition_embed_type_num_heads=c.text_heads) if c.pooled_text else {}
    unet = UNet2DConditionModel(
        sample_size=c.image_size // c.patch_size, in_channels=3 * c.patch_size**2 + c.coord_channels, out_channels=3 * c.patch_size**2,
        block_out_channels=tuple(c.block_out_channels), down_block_types=tuple(c.down_block_types),
        up_block_types=tuple(c.up_block_types), layers_per_block=c.layers_per_block,
        attention_head_dim=c.attention_heads, norm_num_groups=c.norm_num_groups,
        cross_attention_dim=c.text_hidden, **extra)
    scheduler = DDIMScheduler(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                              prediction_type="sample", clip_sample=True, set_alpha_to_one=False,
                              timestep_spacing=c.timestep_spacing)
    return ScenesPipeline(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                          patch_size=c.patch_size, coord_channels=c.coord_channels)


def num_parameters(pipe: ScenesPipeline) -> dict[str, int]:
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "text_encoder")}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``(N, 3, H, W)`` in [-1, 1] -> ``(N, H, W, 3)`` uint8 (for grids and PNGs)."""
    return ((np.asarray(images).transpose(0, 2, 3, 1) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
