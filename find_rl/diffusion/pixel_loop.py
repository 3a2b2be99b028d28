"""The denoising loop the embedded worlds' pixel-space pipelines share (``ShapesPipeline``, ``ScenesPipeline``): start
from the initial noise, run the scheduler with an x0-predicting denoiser (classifier-free guidance optional), return
images in [-1, 1] as diffusers pipelines do."""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import ImagePipelineOutput

from find_rl.diffusion.images import to_pil


def denoise_to_images(pipeline, denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, n: int,
                      num_inference_steps: int, guidance_scale: float, eta: float, generator: torch.Generator | None,
                      latents: torch.Tensor | None, output_type: str, return_dict: bool):
    """``denoise(x, t)`` predicts x0 for a batch of ``n`` rows (``2n`` when ``guidance_scale > 1``: the null condition's
    rows first). The latents are checked against ``pipeline.latent_shape`` (drawn from N(0, I) with ``generator`` if
    not given); ``output_type`` "np"/"pt" gives ``(N, 3, H, W)`` float32, "pil" PIL images."""
    device, dtype = pipeline.unet.device, pipeline.unet.dtype
    do_cfg = guidance_scale > 1.0
    shape = (n, *pipeline.latent_shape)
    if latents is None:
        latents = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape} for {n} prompts")
    x = latents.to(device=device, dtype=dtype) * pipeline.scheduler.init_noise_sigma
    pipeline.scheduler.set_timesteps(num_inference_steps, device=device)
    for t in pipeline.scheduler.timesteps:
        out = denoise(torch.cat([x, x]) if do_cfg else x, t)
        if do_cfg:
            uncond, text = out.chunk(2)
            out = uncond + guidance_scale * (text - uncond)
        x = pipeline.scheduler.step(out, t, x, eta=eta, generator=generator).prev_sample
    images = x.clamp(-1, 1).float()
    if output_type == "pt":
        result = images
    elif output_type == "np":
        result = images.cpu().numpy()
    elif output_type == "pil":
        result = to_pil(images.cpu().numpy())
    else:
        raise ValueError(f"output_type must be 'np', 'pt' or 'pil', got {output_type!r}")
    return ImagePipelineOutput(images=result) if return_dict else (result,)
