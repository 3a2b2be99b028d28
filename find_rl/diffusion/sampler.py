"""``DiffusionSampler``: a frozen diffusers pipeline that turns (prompts, initial noise) into images.

Nothing RL lives here. The pipeline's scheduler is swapped for DDIM (or UniPC, ``scheduler="unipc"``) unless
``scheduler="keep"``; sampler choices left at None are the world's own (``SamplerSettings.resolved``: the scenes model
renders with UniPC and guidance on its first steps), else DDIM with 10 steps and no guidance. The initial noise enters the unmodified pipeline through ``latents=``, the entry point
every diffusers text-to-image pipeline offers. With DDIM and ``eta = 0`` (the default) sampling is
deterministic, so the image, and therefore the reward, is a function of the noise: FIND's one-step MDP.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, UniPCMultistepScheduler

from find_rl.diffusion.models import load_pipeline, torch_dtype
from find_rl.diffusion.pixel_loop import guided_steps
from find_rl.worlds import world_of_model
from find_rl.core.settings import SamplerSettings  # noqa: F401  (declared with the other settings; used here)

logger = logging.getLogger(__name__)

#: ``SamplerSettings.scheduler`` -> the diffusers class swapped in (``keep``: none)
SCHEDULER_CLASSES = {"ddim": DDIMScheduler, "unipc": UniPCMultistepScheduler}


def check_device(device: str) -> None:
    """A one-line ``ValueError`` for a device this process cannot use (``torch.device`` would raise deep inside a load)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA GPU (torch {torch.__version__}); use cpu, or run on a GPU node")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")


def sampler_text(settings: SamplerSettings) -> str:
    """One line for a report: ``UniPC, 15 steps, guidance 3.0 on the first 4 steps (rescale 0.7)``."""
    s = settings.resolved()
    name = {"ddim": "DDIM", "unipc": "UniPC", "keep": "the checkpoint's scheduler"}[s.scheduler]
    text = f"{name}, {s.num_inference_steps} steps" + (f", eta {s.eta}" if s.eta > 0 else "")
    guided = guided_steps(s.num_inference_steps, s.guidance_scale, s.guidance_stop)
    if not guided:
        return text + ", no guidance"
    where = "every step" if guided == s.num_inference_steps else f"the first {guided} steps"
    return text + f", guidance {s.guidance_scale} on {where}" + (f" (rescale {s.guidance_rescale})" if s.guidance_rescale else "")


@dataclass
class SampleOutput:
    images: np.ndarray  # (N, 3, H, W) float32 in [-1, 1]; videos: (N, F, 3, H, W)
    latents: torch.Tensor  # (N, *latent_shape): the initial noise as the pipeline consumed it


class DiffusionSampler:
    """Render a batch of prompts from a batch of initial noise in one pipeline call."""

    def __init__(self, pipeline, settings: SamplerSettings | None = None, *, seed: int = 0):
        self.pipeline = pipeline
        self.settings = (settings or SamplerSettings()).resolved()  # choices still None: the generic sampler
        self._use_scheduler()
        if self.settings.compile_unet:
            pipeline.unet.to(memory_format=torch.channels_last)
            pipeline.unet = torch.compile(pipeline.unet)  # first batch of each shape pays the compile time
        params = inspect.signature(pipeline.__call__).parameters
        if not {"prompt", "latents"} <= set(params):
            raise ValueError(f"{type(pipeline).__name__} does not take prompt= and latents=; FIND needs a text-to-image or "
                             "text-to-video pipeline (e.g. StableDiffusionPipeline, StableDiffusionXLPipeline, TextToVideoSDPipeline)")
        self._call_params = set(params)
        #: text-to-video pipelines (ModelScope TextToVideoSD, AnimateDiff) take num_frames; latents gain a frame axis
        self.is_video = "num_frames" in params
        self.num_frames = None
        if self.is_video:
            default = params["num_frames"].default
            self.num_frames = int(self.settings.num_frames or (default if isinstance(default, int) else 16))
        self._generator = torch.Generator(device="cpu").manual_seed(seed)  # used only when eta > 0
        if self.settings.eta > 0:
            logger.warning("eta=%s: sampling is stochastic, so the reward is noisy given the initial noise", self.settings.eta)

    def _use_scheduler(self) -> None:
        """Put the settings' scheduler class on the pipeline (from its config), e.g. DDIM for SD 1.5's PNDM: FIND wants a
        deterministic sampler (DDIM at eta 0, UniPC) so that the image is a function of the noise. Checked before
        every call too: samplers that share one pipeline (another eta, another scheduler) must not render with each
        other's."""
        wanted = SCHEDULER_CLASSES.get(self.settings.scheduler)
        if wanted is not None and type(self.pipeline.scheduler) is not wanted:
            self.pipeline.scheduler = wanted.from_config(self.pipeline.scheduler.config)

    @classmethod
    def from_pretrained(cls, model: str = "shapes", settings: SamplerSettings | None = None, *, seed: int = 0):
        world = world_of_model(model)
        settings = (settings or SamplerSettings()).resolved(world.name if world else None)  # the world's own sampler
        check_device(settings.device)
        return cls(load_pipeline(model, device=settings.device, dtype=settings.dtype), settings, seed=seed)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one initial-noise tensor, read from the pipeline (never a constant)."""
        if hasattr(self.pipeline, "latent_shape"):
            return tuple(self.pipeline.latent_shape)
        unet = self.pipeline.unet
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        frames = (self.num_frames,) if self.is_video else ()
        return (unet.config.in_channels, *frames, *size)

    @property
    def latent_dim(self) -> int:
        return int(np.prod(self.latent_shape))

    def check_noise(self, noise: torch.Tensor | np.ndarray, n: int) -> torch.Tensor:
        """``noise`` of shape ``(n, *latent_shape)`` or ``(n, latent_dim)`` -> a float tensor of the former."""
        noise = torch.as_tensor(noise)
        flat = (n, self.latent_dim)
        if tuple(noise.shape) not in (flat, (n, *self.latent_shape)):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}; expected {flat} or {(n, *self.latent_shape)} for {n} prompts"
            )
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or inf; the initial noise must be finite")
        return noise.reshape(n, *self.latent_shape)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor | np.ndarray, prompts: list[str]) -> SampleOutput:
        """Render ``len(prompts)`` images from ``noise`` (one row per prompt) in one pipeline call."""
        s = self.settings
        self._use_scheduler()
        latents = self.check_noise(noise, len(prompts)).to(device=s.device, dtype=torch_dtype(s.dtype))
        kwargs = dict(num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, latents=latents)
        for name, value, off in (("guidance_rescale", s.guidance_rescale, 0.0), ("guidance_stop", s.guidance_stop, 1.0)):
            if name in self._call_params:
                kwargs[name] = value
            elif value != off:
                raise ValueError(f"--{name.replace('_', '-')} {value}: {type(self.pipeline).__name__} takes no {name}; "
                                 f"leave it at {off}")
        if self.is_video:
            kwargs["num_frames"] = self.num_frames
        if "eta" in self._call_params:
            kwargs["eta"] = s.eta
        if s.eta > 0:
            kwargs["generator"] = self._generator
        out = self.pipeline(prompt=list(prompts), output_type="np", **kwargs)
        if self.is_video:  # diffusers video pipelines: frames (N, F, H, W, C) in [0, 1]
            frames = np.asarray(out.frames, dtype=np.float32)
            return SampleOutput(images=frames.transpose(0, 1, 4, 2, 3) * 2.0 - 1.0, latents=latents)
        images = np.asarray(out.images, dtype=np.float32)
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2) * 2.0 - 1.0  # diffusers image pipelines: NHWC in [0, 1]
        return SampleOutput(images=images, latents=latents)


#: images per pipeline call when rendering many (bounded memory, and one call's batching overhead amortised)
RENDER_CHUNK = 576


def render(sampler, noise: torch.Tensor, prompts: list[str], *, chunk: int = RENDER_CHUNK) -> np.ndarray:
    """Render ``noise`` ``(N, *latent_shape)`` for ``prompts`` (N) in calls of at most ``chunk`` images: ``(N, ...)``
    images. The one render loop of the evaluation and the baselines (``sampler``: anything with ``sample``)."""
    return np.concatenate([sampler.sample(noise[i : i + chunk], prompts[i : i + chunk]).images
                           for i in range(0, len(prompts), chunk)])
