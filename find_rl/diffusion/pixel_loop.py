"""The denoising loop the embedded worlds' pixel-space pipelines share (``ShapesPipeline``, ``ScenesPipeline``): start
from the initial noise, run the scheduler with an x0-predicting denoiser (classifier-free guidance optional, on the
first steps only if asked, with diffusers' guidance rescale), return images in [-1, 1] as diffusers pipelines do."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from diffusers import ImagePipelineOutput
from diffusers.guiders.guider_utils import rescale_noise_cfg

from find_rl.diffusion.images import to_pil


def guided_steps(num_inference_steps: int, guidance_scale: float, guidance_stop: float) -> int:
    """How many of the first steps use classifier-free guidance: ``int(guidance_stop * num_inference_steps)`` when
    ``guidance_scale > 1`` (the rule of diffusers' ``ClassifierFreeGuidance(stop=...)``), else 0."""
    return int(guidance_stop * num_inference_steps) if guidance_scale > 1.0 else 0


def check_guidance(guidance_rescale: float, guidance_stop: float) -> None:
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
    if not 0.0 <= guidance_stop <= 1.0:
        raise ValueError(f"guidance_stop must be in [0, 1] (a fraction of the steps), got {guidance_stop}")


def denoise_to_images(pipeline, denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                      cond: torch.Tensor, null_cond: Callable[[], torch.Tensor], n: int, num_inference_steps: int,
                      guidance_scale: float, eta: float, generator: torch.Generator | None, latents: torch.Tensor | None,
                      output_type: str, return_dict: bool, guidance_rescale: float = 0.0, guidance_stop: float = 1.0):
    """``denoise(x, t, c)`` predicts x0 for noisy images ``x`` under condition rows ``c``; ``cond`` has one row per
    image, ``null_cond()`` gives the null condition's rows (called only when some step is guided).

    Classifier-free guidance (``guidance_scale > 1``) runs on the first ``guided_steps(...)`` steps, on the x0
    prediction: ``x0 = null + scale * (text - null)``, then, with ``guidance_rescale`` φ > 0, diffusers'
    ``rescale_noise_cfg`` (Lin et al. 2024, §3.4: the guided prediction's standard deviation pulled back toward the
    text prediction's, by φ). The scheduler's ``step`` gets ``eta`` and ``generator`` only where it takes them (DDIM);
    a scheduler without ``eta`` is deterministic, and ``eta > 0`` for it is an error. The latents are checked against
    ``pipeline.latent_shape`` (drawn from N(0, I) with ``generator`` if not given); ``output_type`` "np"/"pt" gives
    ``(N, 3, H, W)`` float32, "pil" PIL images."""
    check_guidance(guidance_rescale, guidance_stop)
    device, dtype = pipeline.unet.device, pipeline.unet.dtype
    shape = (n, *pipeline.latent_shape)
    if latents is None:
        latents = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape} for {n} prompts")
    scheduler = pipeline.scheduler
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs = {}
    if "eta" in step_params:
        step_kwargs["eta"] = eta
    elif eta > 0:
        raise ValueError(f"eta={eta}: {type(scheduler).__name__} is deterministic and takes no eta; use eta 0 or DDIM")
    if "generator" in step_params:
        step_kwargs["generator"] = generator
    x = latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps, device=device)
    guided = guided_steps(len(scheduler.timesteps), guidance_scale, guidance_stop)
    both = torch.cat([null_cond(), cond]) if guided else None
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        if i < guided:
            uncond, text = denoise(torch.cat([x_in, x_in]), t, both).chunk(2)
            out = uncond + guidance_scale * (text - uncond)
            if guidance_rescale > 0:
                out = rescale_noise_cfg(out, text, guidance_rescale=guidance_rescale)
        else:
            out = denoise(x_in, t, cond)
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
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
