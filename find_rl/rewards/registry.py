"""Rewards: plain callables ``(images, prompts) -> scores``; a name -> factory registry at the bottom.

A reward may also offer ``score(images, prompts) -> dict`` with a float ``"score"`` array plus per-image
attribute results (bool arrays), which the env puts in ``info``. Images are ``(N, 3, H, W)`` float32 in [-1, 1].

A reward is named on the command line as ``NAME[=PATH][:WEIGHT]`` (``--reward clip=openai/clip-vit-large-patch14``,
``--reward pickscore=yuvalkirstain/PickScore_v1:1.0 --reward clip=PATH:0.5``); several specs are summed with their
weights (:class:`WeightedReward`).
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from find_rl.rewards.hps import HPSv2Score
from find_rl.rewards.image_reward import ImageRewardScore
from find_rl.worlds import WORLD_NAMES, get_world

#: OpenAI CLIP's input normalisation, used when a checkpoint ships no image-processor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class WorldReward:
    """An embedded world's exact scorer (:meth:`find_rl.worlds.World.score`): its shaped reward in [0, 1] plus
    ``aligned`` and ``strict`` flags per image; ``strict=True`` rewards the strict verdict (``--reward NAME-strict``),
    ``binary=True`` pays the verdict alone, 1 or 0 (``--reward NAME-binary``)."""

    def __init__(self, world: str = "shapes", *, strict: bool = False, binary: bool = False):
        self.world, self.strict, self.binary = get_world(world), bool(strict), bool(binary)

    def score(self, images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
        out = self.world.score(images, prompts, strict=self.strict)
        if self.binary:
            out["score"] = np.asarray(out["aligned"], dtype=np.float32)
        return out

    def __call__(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return self.score(images, prompts)["score"]


class ClipScore:
    """Image-text similarity of a transformers ``CLIPModel``: ``scale * cos(image, text)``.

    ``scale="fixed"`` gives CLIPScore's 100 x cosine (Hessel et al., 2021, without the clamp at 0);
    ``scale="logit"`` multiplies by the checkpoint's learned ``logit_scale.exp()``, which is how PickScore
    (Kirstain et al., 2023; a fine-tuned CLIP-H) is defined. Images are resized and normalised on the reward's
    device in torch (no PIL round trip); text embeddings are cached per prompt.
    """

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32", scale: str = "fixed",
                 batch_size: int = 64):
        from transformers import CLIPModel

        if scale not in ("fixed", "logit"):
            raise ValueError(f"scale must be 'fixed' or 'logit', got {scale!r}")
        self.model, self.tokenizer, self.mean, self.std = _load_model(CLIPModel, path, device, dtype, "CLIPModel")
        self.size = self.model.config.vision_config.image_size
        self.device, self.dtype = device, self.model.dtype
        self.scale = scale
        self.batch_size = batch_size
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        new = [p for p in dict.fromkeys(prompts) if p not in self._text]
        if new:
            tok = self.tokenizer(new, padding=True, truncation=True, return_tensors="pt").to(self.device)
            emb = _pooled(self.model.get_text_features(**tok))
            for p, e in zip(new, torch.nn.functional.normalize(emb.float(), dim=-1)):
                self._text[p] = e
        return torch.stack([self._text[p] for p in prompts])

    @torch.no_grad()
    def _image_embeddings(self, images) -> torch.Tensor:
        x = _pixels(images, self.size, self.mean, self.std, self.device)
        embs = [_pooled(self.model.get_image_features(pixel_values=chunk.to(self.dtype)))
                for chunk in x.split(self.batch_size)]
        return torch.nn.functional.normalize(torch.cat(embs).float(), dim=-1)

    def frame_embeddings(self, images) -> tuple[torch.Tensor, int]:
        """``(N * F, d)`` embeddings of images ``(N, 3, H, W)`` (F = 1) or of every frame of videos ``(N, F, 3, H, W)``."""
        images = torch.as_tensor(images)
        if images.ndim == 5:
            return self._image_embeddings(images.flatten(0, 1)), images.shape[1]
        return self._image_embeddings(images), 1

    def __call__(self, images, prompts: list[str]) -> np.ndarray:
        """Images ``(N, 3, H, W)``, or videos ``(N, F, 3, H, W)`` scored as the mean over their frames."""
        emb, frames = self.frame_embeddings(images)
        cos = (emb * self._text_embeddings([p for p in prompts for _ in range(frames)])).sum(-1)
        scale = self.model.logit_scale.exp().float() if self.scale == "logit" else 100.0
        return (scale * cos).reshape(len(prompts), frames).mean(1).cpu().numpy().astype(np.float32)


class AestheticScore:
    """LAION's improved aesthetic predictor: an MLP on the L2-normalised CLIP ViT-L/14 image embedding (1-10 scale).

    ``path`` is a folder holding the CLIP model (``save_pretrained`` format) and the head's weights as
    ``aesthetic_head.safetensors`` (or the released ``.pth``, read with ``weights_only=True``), keys
    ``layers.{0,2,4,6,7}.{weight,bias}`` of ``Linear(d, 1024) -> Linear(1024, 128) -> Linear(128, 64) ->
    Linear(64, 16) -> Linear(16, 1)`` (the dropouts in between are inactive at inference). The prompt is not used.
    """

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32"):
        self.clip = ClipScore(path, device=device, dtype=dtype)
        d = self.clip.model.config.projection_dim
        self.head = torch.nn.Sequential(torch.nn.Linear(d, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
                                        torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
                                        torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))
        try:
            self.head.load_state_dict(_aesthetic_head_state(Path(path)))
        except RuntimeError:  # keys or shapes of another head, or a head for another CLIP width
            raise ValueError(f"the aesthetic head in {path} does not fit (expects LAION's MLP on a {d}-d CLIP embedding)") from None
        self.head.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def __call__(self, images, prompts: list[str]) -> np.ndarray:
        emb, frames = self.clip.frame_embeddings(images)
        return self.head(emb).reshape(len(prompts), frames).mean(1).cpu().numpy().astype(np.float32)


def _aesthetic_head_state(folder: Path) -> dict:
    found = [folder / "aesthetic_head.safetensors"] if (folder / "aesthetic_head.safetensors").is_file() else sorted(folder.glob("*.pth"))
    if not found:
        raise ValueError(f"no aesthetic head in {folder}: put aesthetic_head.safetensors (or the released .pth) beside the CLIP model")
    try:
        if found[0].suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(found[0])
        else:
            state = torch.load(found[0], map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file: safetensors and torch raise many types
        raise ValueError(f"could not read aesthetic head {found[0]} ({e.__class__.__name__}); re-download it") from None
    return {k.removeprefix("module.").removeprefix("layers."): v for k, v in state.items()}


class XClipScore:
    """Video-text similarity of a transformers ``XCLIPModel`` (Ni et al., 2022): 100 x cos(video, text).

    X-CLIP's text embedding is conditioned on the video (its prompt generator), so each video is scored against
    the batch's unique prompts in one forward pass and its own prompt's column is kept. Videos are
    ``(N, F, 3, H, W)`` in [-1, 1]; ``num_frames`` of the checkpoint's frames are taken evenly spaced.
    """

    def __init__(self, path: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 16):
        from transformers import XCLIPModel

        self.model, self.tokenizer, self.mean, self.std = _load_model(XCLIPModel, path, device, dtype, "XCLIPModel")
        self.size = self.model.config.vision_config.image_size
        self.frames = self.model.config.vision_config.num_frames
        self.device, self.dtype = device, self.model.dtype
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, videos, prompts: list[str]) -> np.ndarray:
        v = torch.as_tensor(videos)
        if v.ndim != 5 or v.shape[2] != 3:
            raise ValueError(f"X-CLIP scores videos of shape (N, F, 3, H, W), got {tuple(v.shape)}")
        v = v[:, torch.linspace(0, v.shape[1] - 1, self.frames).round().long()]
        unique = list(dict.fromkeys(prompts))
        col = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        tok = self.tokenizer(unique, padding=True, truncation=True, return_tensors="pt").to(self.device)
        scores = []
        for i in range(0, len(v), self.batch_size):
            chunk = v[i:i + self.batch_size]
            px = _pixels(chunk.flatten(0, 1), self.size, self.mean, self.std, self.device).reshape(*chunk.shape[:2], 3, self.size, self.size)
            logits = self.model(**tok, pixel_values=px.to(self.dtype)).logits_per_video.float()  # (n, U)
            scores.append(logits.gather(1, col[i:i + len(chunk), None]).squeeze(1) * (100.0 / self.model.logit_scale.exp().float()))
        return torch.cat(scores).cpu().numpy().astype(np.float32)


def _load_model(cls, path: str, device: str, dtype: str, what: str):
    """(model, tokenizer, image mean, image std) from a folder or hub id, frozen on ``device``; one-line errors."""
    from transformers import AutoTokenizer

    from find_rl.diffusion.models import torch_dtype

    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        raise ValueError(f"reward model path {path} does not exist; pass a {what} folder or a hub id like 'org/name'")
    try:
        model = cls.from_pretrained(path, dtype=torch_dtype(dtype)).eval().requires_grad_(False).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"could not load {what} reward model {path!r} ({first[:160]}); pass a {what} folder or hub id") from None
    return (model, tokenizer, *_image_normalisation(path))


def _pixels(images, size: int, mean, std, device) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] -> the vision tower's input: resized (bicubic, antialiased) and normalised."""
    x = torch.as_tensor(images).to(device, torch.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"image rewards take images of shape (N, 3, H, W), got {tuple(x.shape)}")
    x = (x.clamp(-1, 1) + 1) / 2
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding; 4.x a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _image_normalisation(path: str) -> tuple[tuple, tuple]:
    """The checkpoint's image-processor mean/std, else OpenAI CLIP's (checkpoints saved without a processor)."""
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(path)
        return tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError, AttributeError):
        return CLIP_MEAN, CLIP_STD


@dataclass(frozen=True)
class RewardSpec:
    """One ``NAME[=PATH][:WEIGHT]`` term of the reward."""

    name: str
    path: str | None = None
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "RewardSpec":
        body, weight = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep:
            try:
                body, weight = head, float(tail)
            except ValueError:
                pass  # a ':' inside a path, not a weight
        name, eq, path = body.partition("=")
        name = name.strip()
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; available: {', '.join(sorted(REWARDS))} (form NAME[=PATH][:WEIGHT])")
        if not math.isfinite(weight) or weight == 0:
            raise ValueError(f"reward {text!r}: the weight must be a finite non-zero number")
        needs_path = name in PATH_REWARDS
        if needs_path and not (eq and path):
            where = "FOLDER (the released files)" if name in FOLDER_REWARDS else "PATH_OR_HUB_ID"
            raise ValueError(f"reward {name!r} needs a model: write {name}={where}")
        if not needs_path and eq:
            raise ValueError(f"reward {name!r} takes no path; write just {name!r}")
        return cls(name, path if eq else None, weight)


class WeightedReward:
    """``sum_k w_k * reward_k(images, prompts)``; a single term with weight 1 passes attribute results through."""

    def __init__(self, terms: list[tuple[float, Callable]]):
        if not terms:
            raise ValueError("no reward given; pass --reward NAME[=PATH][:WEIGHT]")
        self.terms = terms

    def score(self, images, prompts: list[str]) -> dict[str, np.ndarray]:
        if len(self.terms) == 1 and self.terms[0][0] == 1.0:
            r = self.terms[0][1]
            return dict(r.score(images, prompts)) if hasattr(r, "score") else {"score": np.asarray(r(images, prompts))}
        total = np.zeros(len(prompts), np.float64)
        for w, r in self.terms:
            total += w * _checked(r(images, prompts), len(prompts))
        return {"score": total.astype(np.float32)}

    def __call__(self, images, prompts: list[str]) -> np.ndarray:
        return self.score(images, prompts)["score"]


def _checked(scores, n: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != n:
        raise ValueError(f"reward returned {len(scores)} scores for {n} images; it must return one per image")
    return scores


REWARDS: dict[str, Callable[..., Callable]] = {
    **{name: (lambda w: lambda **_: WorldReward(w))(name) for name in WORLD_NAMES},  # each world's exact scorer
    **{f"{name}-strict": (lambda w: lambda **_: WorldReward(w, strict=True))(name) for name in WORLD_NAMES},
    **{f"{name}-binary": (lambda w: lambda **_: WorldReward(w, binary=True))(name) for name in WORLD_NAMES},
    "clip": lambda path, **kw: ClipScore(path, scale="fixed", **kw),
    "pickscore": lambda path, **kw: ClipScore(path, scale="logit", **kw),
    "aesthetic": lambda path, **kw: AestheticScore(path, **kw),
    "xclip": lambda path, **kw: XClipScore(path, **kw),
    "imagereward": lambda path, **kw: ImageRewardScore(path, **kw),  # a folder with the released files
    "hpsv2": lambda path, **kw: HPSv2Score(path, **kw),  # a folder with the released files (v2 or v2.1)
}
#: Rewards built on a model checkpoint: their spec must name it (``NAME=PATH``).
PATH_REWARDS = {"clip", "pickscore", "aesthetic", "xclip", "imagereward", "hpsv2"}
#: ... of which these read a local folder of released files only (no hub id)
FOLDER_REWARDS = {"imagereward", "hpsv2"}


def make_reward(spec: str | list[str], *, device: str = "cpu", dtype: str = "float32") -> WeightedReward:
    """Build the reward from one spec or a list of specs (``NAME[=PATH][:WEIGHT]``), models on ``device``."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    parsed = [RewardSpec.parse(s) for s in specs]
    if not parsed:
        raise ValueError("no reward given; pass --reward NAME[=PATH][:WEIGHT]")
    terms = []
    for s in parsed:
        kwargs = {"device": device, "dtype": dtype} if s.name in PATH_REWARDS else {}
        terms.append((s.weight, REWARDS[s.name](s.path, **kwargs) if s.path else REWARDS[s.name](**kwargs)))
    return WeightedReward(terms)


def score_batch(reward, images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
    """Call ``reward`` and check its output: one finite-or-flagged float per image.

    Returns the reward's dict with ``"score"`` (non-finite scores replaced by 0) and ``"valid"`` (False where
    the reward returned NaN/inf, so that the sample can be skipped and counted instead of corrupting the policy).
    """
    out = dict(reward.score(images, prompts)) if hasattr(reward, "score") else {"score": reward(images, prompts)}
    scores = _checked(out["score"], len(prompts))
    valid = np.isfinite(scores)
    out["score"] = np.where(valid, scores, 0.0).astype(np.float32)
    out["valid"] = valid
    return out
