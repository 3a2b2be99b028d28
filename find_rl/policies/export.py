"""The portable format of learned noise distributions (no Ray needed to read it).

A policy folder holds:

- ``noise_policy.json``: ``{"format": "find_rl.noise_policy", "version": 1, "family": "gaussian" | "amortized" |
  "flow" | "mixture", "prompts": [...], "model": ..., "latent_shape": [...], "sampler": {num_inference_steps, guidance_scale, eta,
  device, dtype}, "training": {...}}``, plus ``"flow": {...}`` (the flow's constructor arguments) for the flow family,
  ``"amortized": {...}`` (the network's) for the amortised one, and ``"text_features"`` (``"pooled"`` | ``"tokens"``)
  for a policy that reads the prompt's text. A file without ``family`` is a Gaussian (the first exports).
- ``noise_policy.safetensors``: for a **Gaussian**, tensors ``mean`` and ``std``, each ``(P, *latent_shape)`` float32;
  row i is N(mean_i, std_i^2) over the initial latent of prompt i. For a **flow**, the flow's parameters under
  ``flow.<name>`` and ``cond`` ``(P, F)``: each prompt's condition (one-hot or text embedding), so no text encoder is
  needed to use it. For the **amortised** Gaussian, the network's parameters under ``net.<name>`` and ``cond``
  ``(P, F)``, the listed prompts' text features (mean and std follow from them with one forward pass). For the
  **mixture**, ``means`` ``(P, K, *latent_shape)``, ``std`` ``(P, *latent_shape)`` and, when learned, ``weights``
  ``(P, K)``, with ``"mixture": {"components": K, "weights": "equal" | "learned"}`` in the JSON.

A policy with ``text_features`` (the amortised one; the flow conditioned on the embedding) answers **any prompt**:
:meth:`AmortizedPolicy.add_prompts` / :meth:`FlowPolicy.add_prompts` take a new prompt's text features, computed by
the frozen model's own text encoder (:func:`find_rl.evaluation.scoring.serve_prompts` does it for ``evaluate`` and
``generate``).

Use it with any diffusers pipeline: ``latents = policy.sample(prompt, n)`` (a Gaussian: ``mean[i] + std[i] * eps``;
a flow: ``T_c(eps)``), then ``pipe(prompt, latents=latents)``. :func:`load_policy` validates both files and raises a
one-line error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "find_rl.noise_policy"
VERSION = 1
TENSORS_FILE = "noise_policy.safetensors"
META_FILE = "noise_policy.json"


@dataclass
class NoisePolicy:
    prompts: list[str]
    mean: torch.Tensor  # (P, *latent_shape)
    std: torch.Tensor  # (P, *latent_shape)
    model: str = "shapes"
    sampler: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape[1:])

    def index(self, prompt: str) -> int:
        if prompt not in self.prompts:
            raise ValueError(f"prompt {prompt!r} is not in this policy; it was trained for: {', '.join(map(repr, self.prompts))}")
        return self.prompts.index(prompt)

    family = "gaussian"

    def sample(self, prompt: str, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` initial latents ``(n, *latent_shape)`` drawn from this prompt's learned distribution."""
        eps = torch.randn((n, *self.latent_shape), generator=generator)
        return self.transform([self.index(prompt)], eps[None])[0]

    def transform(self, indices: list[int], eps: torch.Tensor) -> torch.Tensor:
        """Base noise ``eps`` ``(len(indices), S, *latent_shape)`` from N(0, I) -> the same shape from each prompt's
        distribution (the same eps for every policy: methods are compared on the same noise)."""
        shape = (len(indices), 1, *self.latent_shape)
        return self.mean[indices].reshape(shape) + self.std[indices].reshape(shape) * eps


@dataclass
class AmortizedPolicy:
    """The amortised Gaussian: N(mu(e), sigma(e)^2) with (mu, sigma) = ``net(e)`` of the prompt's text features e
    (:class:`find_rl.policies.amortized.AmortizedNoiseNet`); ``cond`` holds e for the listed prompts."""

    prompts: list[str]
    net: torch.nn.Module  # find_rl.policies.amortized.AmortizedNoiseNet
    cond: torch.Tensor  # (P, F): each listed prompt's text features
    text_features: str = "pooled"
    model: str = "shapes"
    sampler: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    family = "amortized"

    def __post_init__(self):
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.net.latent_shape)

    @property
    def mean(self) -> torch.Tensor:
        """``(P, *latent_shape)``: each listed prompt's mean."""
        return self._distributions()[0]

    @property
    def std(self) -> torch.Tensor:
        return self._distributions()[1]

    @torch.no_grad()
    def _distributions(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._table is None or len(self._table[0]) != len(self.prompts):
            mu, log_std = self.net(self.cond)
            shape = (len(self.cond), *self.latent_shape)
            self._table = (mu.reshape(shape), log_std.exp().reshape(shape))
        return self._table

    def add_prompts(self, prompts: list[str], cond: torch.Tensor) -> None:
        """Serve more prompts: ``cond`` ``(len(prompts), F)`` are their text features (the model's encoder's)."""
        _add_prompts(self, prompts, cond)

    index = NoisePolicy.index
    sample = NoisePolicy.sample
    transform = NoisePolicy.transform


def _add_prompts(policy, prompts: list[str], cond: torch.Tensor) -> None:
    new = [p for p in prompts if p not in policy.prompts]
    keep = [i for i, p in enumerate(prompts) if p in new and p not in prompts[:i]]
    if not keep:
        return
    cond = torch.as_tensor(cond, dtype=torch.float32)
    if cond.shape[1:] != policy.cond.shape[1:]:
        raise ValueError(f"text features of shape {tuple(cond.shape[1:])} do not fit this policy's "
                         f"{tuple(policy.cond.shape[1:])}; encode the prompts with the model it was trained on")
    policy.prompts = list(policy.prompts) + [prompts[i] for i in keep]
    policy.cond = torch.cat([policy.cond, cond[keep]])


@dataclass
class FlowPolicy:
    """The flow family: q(z | c_i) = the pushforward of N(0, I) by the conditional flow T_{c_i} (:mod:`find_rl.policies.flow`)."""

    prompts: list[str]
    flow: torch.nn.Module  # find_rl.policies.flow.ConditionalCouplingFlow
    cond: torch.Tensor  # (P, F): each prompt's condition
    model: str = "shapes"
    sampler: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    text_features: str | None = None  # "pooled" when conditioned on the text embedding (answers any prompt)
    family = "flow"

    def add_prompts(self, prompts: list[str], cond: torch.Tensor) -> None:
        """Serve more prompts (a flow conditioned on the text embedding only): ``cond`` are their pooled embeddings."""
        if self.text_features is None:
            raise ValueError("this flow learned one condition per trained prompt; it answers only "
                             f"{', '.join(map(repr, self.prompts))}")
        _add_prompts(self, prompts, cond)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.flow.view.latent_shape)

    index = NoisePolicy.index
    sample = NoisePolicy.sample  # both families draw eps ~ N(0, I) and map it through their own ``transform``

    @torch.no_grad()
    def transform(self, indices: list[int], eps: torch.Tensor) -> torch.Tensor:
        p, s = eps.shape[:2]
        cond = self.cond[indices].repeat_interleave(s, 0)
        z, _ = self.flow(eps.reshape(p * s, -1), cond)
        return z.reshape(eps.shape)


@dataclass
class MixturePolicy:
    """The mixture family: q(z | c_i) = sum_k w[i, k] N(means[i, k], std[i]^2) (:mod:`find_rl.policies.mixture`).

    Drawing S samples of a prompt maps base noise eps_s through one component each (``mixture.component_of``: ``s mod
    K`` for equal weights; the same eps as every other family)."""

    prompts: list[str]
    means: torch.Tensor  # (P, K, *latent_shape)
    std: torch.Tensor  # (P, *latent_shape)
    weights: torch.Tensor | None = None  # (P, K) learned weights; None: equal
    model: str = "shapes"
    sampler: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    family = "mixture"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.std.shape[1:])

    @property
    def components(self) -> int:
        return int(self.means.shape[1])

    index = NoisePolicy.index
    sample = NoisePolicy.sample

    def transform(self, indices: list[int], eps: torch.Tensor) -> torch.Tensor:
        from find_rl.policies.mixture import transform

        return transform(self.means[indices], self.std[indices], eps, None if self.weights is None else self.weights[indices])


def save_policy(directory: str | Path, policy: NoisePolicy | FlowPolicy) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "family": policy.family, "prompts": policy.prompts, "model": policy.model,
            "latent_shape": list(policy.latent_shape), "sampler": policy.sampler, "training": policy.training}
    if getattr(policy, "text_features", None) is not None:
        meta["text_features"] = policy.text_features
    if policy.family == "flow":
        tensors = {f"flow.{k}": v for k, v in policy.flow.state_dict().items()} | {"cond": policy.cond}
        meta["flow"] = policy.flow.config()
    elif policy.family == "amortized":
        tensors = {f"net.{k}": v for k, v in policy.net.state_dict().items()} | {"cond": policy.cond}
        meta["amortized"] = policy.net.config()
    elif policy.family == "mixture":
        tensors = {"means": policy.means, "std": policy.std}
        meta["mixture"] = {"components": policy.components, "weights": "equal" if policy.weights is None else "learned"}
        if policy.weights is not None:
            tensors["weights"] = policy.weights
    else:
        tensors = {"mean": policy.mean, "std": policy.std}
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, str(d / TENSORS_FILE))
    (d / META_FILE).write_text(json.dumps(meta, indent=2))
    return d


def load_policy(directory: str | Path) -> NoisePolicy:
    d = Path(directory)
    meta_path, tensor_path = d / META_FILE, d / TENSORS_FILE
    if not meta_path.is_file() or not tensor_path.is_file():
        raise ValueError(f"{d} is not an exported find_rl policy: it needs {META_FILE} and {TENSORS_FILE} (written by find_rl.train)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path} is corrupt ({e.__class__.__name__}); re-export the policy") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a find_rl noise policy (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{meta_path} has version {meta.get('version')}; this find_rl reads version {VERSION}")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{tensor_path} is corrupt or unreadable ({e.__class__.__name__}); re-export the policy") from None
    if meta.get("family", "gaussian") == "flow":
        return _load_flow(meta, tensors, tensor_path)
    if meta.get("family") == "amortized":
        return _load_amortized(meta, tensors, tensor_path)
    if meta.get("family") == "mixture":
        return _load_mixture(meta, tensors, tensor_path)
    if set(tensors) != {"mean", "std"}:
        raise ValueError(f"{tensor_path} must hold exactly 'mean' and 'std', found {sorted(tensors)}")
    mean, std = tensors["mean"], tensors["std"]
    prompts = meta.get("prompts")
    expect = (len(prompts or []), *meta.get("latent_shape", []))
    if not prompts or tuple(mean.shape) != expect or tuple(std.shape) != expect:
        raise ValueError(f"{tensor_path}: mean {tuple(mean.shape)} / std {tuple(std.shape)} do not match {expect} from {META_FILE}")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"{tensor_path} holds NaN/inf or non-positive std values; re-export the policy")
    return NoisePolicy(prompts=list(prompts), mean=mean, std=std, model=meta.get("model", "shapes"),
                       sampler=meta.get("sampler", {}), training=meta.get("training", {}))


def _build(cls, config: dict, tensors: dict, prefix: str, tensor_path: Path, what: str) -> torch.nn.Module:
    """``cls(**config)`` with the ``prefix.``-named tensors loaded: a one-line error when they do not fit."""
    try:
        module = cls(**config)
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        raise ValueError(f"{tensor_path}: {what} does not load ({first}); re-export the policy") from None
    return module.eval()


def _check_cond(meta: dict, tensors: dict, tensor_path: Path, latent_shape, width: int | None = None) -> torch.Tensor:
    """The ``cond`` tensor, one row per listed prompt (``width`` numbers when given), every tensor finite."""
    prompts, cond = meta.get("prompts"), tensors.get("cond")
    if (not prompts or cond is None or len(cond) != len(prompts) or (width is not None and cond.shape[1] != width)
            or tuple(latent_shape) != tuple(meta.get("latent_shape", []))):
        raise ValueError(f"{tensor_path}: conditions / latent shape do not match {META_FILE}; re-export the policy")
    if not all(torch.isfinite(v).all() for v in tensors.values()):
        raise ValueError(f"{tensor_path} holds NaN/inf values; re-export the policy")
    return cond


def _load_flow(meta: dict, tensors: dict, tensor_path: Path) -> FlowPolicy:
    from find_rl.policies.flow import ConditionalCouplingFlow

    flow = _build(ConditionalCouplingFlow, meta.get("flow", {}), tensors, "flow", tensor_path, "the flow")
    cond = _check_cond(meta, tensors, tensor_path, flow.view.latent_shape)
    return FlowPolicy(prompts=list(meta["prompts"]), flow=flow, cond=cond, model=meta.get("model", "shapes"),
                      sampler=meta.get("sampler", {}), training=meta.get("training", {}),
                      text_features=meta.get("text_features"))


def _load_amortized(meta: dict, tensors: dict, tensor_path: Path) -> AmortizedPolicy:
    from find_rl.policies.amortized import AmortizedNoiseNet

    net = _build(AmortizedNoiseNet, meta.get("amortized", {}), tensors, "net", tensor_path, "the amortised network")
    cond = _check_cond(meta, tensors, tensor_path, net.latent_shape, width=net.in_dim)
    return AmortizedPolicy(prompts=list(meta["prompts"]), net=net, cond=cond, text_features=meta.get("text_features", "pooled"),
                           model=meta.get("model", "shapes"), sampler=meta.get("sampler", {}), training=meta.get("training", {}))


def _load_mixture(meta: dict, tensors: dict, tensor_path: Path) -> MixturePolicy:
    learned = (meta.get("mixture") or {}).get("weights") == "learned"
    expect = {"means", "std"} | ({"weights"} if learned else set())
    if set(tensors) != expect:
        raise ValueError(f"{tensor_path} must hold exactly {sorted(expect)}, found {sorted(tensors)}")
    means, std, prompts = tensors["means"], tensors["std"], meta.get("prompts")
    latent = tuple(meta.get("latent_shape", []))
    k = (meta.get("mixture") or {}).get("components")
    weights = tensors.get("weights")
    if weights is not None and (tuple(weights.shape) != (len(prompts or []), k) or (weights < 0).any()
                                or not torch.allclose(weights.sum(-1), torch.ones(len(weights)), atol=1e-4)):
        raise ValueError(f"{tensor_path}: weights {tuple(weights.shape)} are not one distribution over {k} components "
                         f"per prompt; re-export the policy")
    if not prompts or tuple(std.shape) != (len(prompts), *latent) or tuple(means.shape) != (len(prompts), k, *latent):
        raise ValueError(f"{tensor_path}: means {tuple(means.shape)} / std {tuple(std.shape)} do not match "
                         f"{len(prompts or [])} prompts x {k} components x {latent} from {META_FILE}")
    if not (torch.isfinite(means).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise ValueError(f"{tensor_path} holds NaN/inf or non-positive std values; re-export the policy")
    return MixturePolicy(prompts=list(prompts), means=means, std=std, weights=weights, model=meta.get("model", "shapes"),
                         sampler=meta.get("sampler", {}), training=meta.get("training", {}))
