"""``ShapesPipeline``: the embedded text-to-image model, a diffusers pipeline in pixel space.

Components: a ``UNet2DModel`` conditioned through ``class_labels`` on the prompt embedding (x0 prediction), a
``DDIMScheduler`` and a :class:`~find_rl.worlds.shapes.text_encoder.ShapesTextEncoder`. Saved with
``save_pretrained`` and loaded with ``from_pretrained`` (safetensors), exactly as a Stable Diffusion checkpoint
is. As in ``StableDiffusionPipeline``, the initial noise enters through ``latents=``; here the "latent" is the
image itself (3 x 16 x 16), so the noise policy acts on 768 numbers.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel

from find_rl.diffusion.pixel_loop import denoise_to_images
from find_rl.worlds.shapes.text_encoder import ShapesTextEncoder


class ShapesPipeline(DiffusionPipeline):
    def __init__(self, unet: UNet2DModel, scheduler: DDIMScheduler, text_encoder: ShapesTextEncoder):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, *size)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        num_inference_steps: int = 10,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        guidance_stop: float = 1.0,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Render one image per prompt.

        1. Embed the prompts (and the empty prompt when ``guidance_scale > 1``).
        2. Start from ``latents`` (the initial noise; drawn from N(0, I) with ``generator`` if not given).
        3. Run the scheduler's denoising loop; the UNet predicts x0 (``prediction_type="sample"``).
        4. Return images in [-1, 1] as ``(N, 3, H, W)`` float32 (``"np"``/``"pt"``) or PIL images (``"pil"``).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        dtype = self.unet.dtype
        cond = self.text_encoder.encode(prompts).to(dtype)
        return denoise_to_images(self, lambda x, t, c: self.unet(x, t, class_labels=c).sample, cond=cond,
                                 null_cond=lambda: self.text_encoder.encode([""] * len(prompts)).to(dtype), n=len(prompts),
                                 num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                 guidance_rescale=guidance_rescale, guidance_stop=guidance_stop, eta=eta,
                                 generator=generator, latents=latents, output_type=output_type, return_dict=return_dict)


def build_pipeline(*, embed_dim: int = 64, num_train_timesteps: int = 1000) -> ShapesPipeline:
    """A fresh, untrained shapes pipeline (the architecture of the shipped model)."""
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        norm_num_groups=8,
        class_embed_type="identity",
    )
    if embed_dim != unet.config.block_out_channels[0] * 4:
        raise ValueError(f"embed_dim must equal 4 x the first block width ({unet.config.block_out_channels[0] * 4})")
    scheduler = DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        clip_sample=True,
        set_alpha_to_one=False,
    )
    return ShapesPipeline(unet=unet, scheduler=scheduler, text_encoder=ShapesTextEncoder(embed_dim=embed_dim))
