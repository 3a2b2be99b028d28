"""``FlowNoisePolicyModule``: FIND's third noise policy, a prompt-conditioned coupling flow (:mod:`find_rl.policies.flow`)
as an RLlib ``TorchRLModule``, with ``TorchFlowDistribution``, a proper RLlib ``TorchDistribution`` for it.

How it fits RLlib's new API stack. The env runner calls ``module.forward_exploration`` (under ``no_grad``), then the
``GetActions`` connector does ``module.get_exploration_action_dist_cls().from_logits(out[ACTION_DIST_INPUTS])``,
``.sample()`` and ``.logp(actions)`` and stores the latter as ``Columns.ACTION_LOGP`` with every action. A flow's
distribution is not a function of a fixed-size parameter vector, so:

- ``_forward`` emits the **condition** as ``ACTION_DIST_INPUTS``: the prompt one-hot (per-prompt, ``(N, P)``) or the
  text embedding (``conditioning="embedding"``, ``(N, E)``), read from the observation (see ``envs/noise_bandit.py``);
- the distribution classes are RLlib's own partial classes (``Distribution.get_partial_dist_cls(flow=self.flow)``),
  bound to *this* module's flow, so ``from_logits(cond)`` builds q(. | c) with the module's live parameters. They
  are built on each call (cheap), never stored, so a copied module never samples from another copy's flow.

``ACTION_LOGP`` is then the flow's exact joint log-density at the sampled action, the learner's ``logp`` is
differentiable in the flow's parameters, and nothing but the module's ``state_dict`` needs checkpointing
(:meth:`~ray.rllib.core.rl_module.RLModule.save_to_path` / ``from_checkpoint`` work unchanged).
The alternative, emitting actions and ``ACTION_LOGP`` from ``_forward_exploration`` (``GetActions`` then passes
through), was rejected: inference, evaluation and the learner would each need a special path, and RLlib tools that
call ``get_*_action_dist_cls()`` (offline evaluation, ``compute_single_action`` style code) would not work.

``TorchFlowDistribution``: ``sample``/``rsample``/``logp`` exact; ``entropy()`` is the unbiased one-draw estimate
``D/2 log(2 pi e) + log|det dT/du|`` (there is no closed form; differentiable); ``kl(other)`` is the one-draw estimate
``log q_self(z) - log q_other(z)``, z ~ q_self; ``to_deterministic()`` samples ``T_c(0)``.

For the learner (signatures, all per observation row; ``D`` = latent size, ``O`` = observation size):

- ``log_prob(obs: (N, O), actions: (N, D)) -> (N,)``: joint log q(action | prompt), differentiable. FIND's PPO ratio
  uses the per-element mean, ``log_prob / D``, as for the Gaussians; ``ACTION_LOGP / D`` is the behaviour's.
- ``reverse_kl(obs: (N, O), n: int = 1) -> ()``: mean over rows of an n-draw reparameterised estimate of
  KL(q_c || N(0, I)) in nats (joint; divide by D for the per-element scale of the surrogate). Pass only valid rows.
- ``optimizer_param_groups() -> list[tuple[str, list[Parameter], float]]``: (name, parameters, lr multiplier).
- ``moment_summary(obs, n=64) -> (mu, log_std)``, each ``(N, D)``: the flow's per-element mean and log std from
  ``n`` fixed base draws per row (deterministic), for the reward calibrator's g and for logging.

model_config keys: ``num_prompts``, ``latent_shape`` (as the Gaussian modules), and ``conditioning`` ("prompt" |
"embedding", default "prompt"), ``flow_resolution`` (int or None: where the flow acts, default 4 = the C x 4 x 4 block
means; None = every element), ``flow_blocks`` (4), ``flow_hidden`` (32), ``flow_context`` (8), ``flow_masks``
(["checkerboard", "channel"]), ``flow_coupling`` ("affine" | "spline"), ``flow_bins`` (8) and ``flow_bound`` (3.0) for
splines, ``flow_max_log_scale`` (2.0), ``affine_lr_scale`` (1.0: the per-prompt shift trains at FIND's lr) and
``prior_share`` (0: the share of N(0, I) draws in the exploration (behaviour) distribution, see
:class:`TorchFlowDistribution`), ``coupling_lr_scale`` (0.002: the log-scales, coupling nets and prompt context at 1e-4 for lr 0.05; at 0.02 the
per-update KL was 10x the Gaussian's and a one-prompt run at lr 0.1 did not learn in 30 iterations, at 0.002 it reached
0.91 training alignment).
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDistribution
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch.distributions import Distribution, constraints

from find_rl.objectives.mass_covering import log_prior, mix_in_prior, mixture_log_prob
from find_rl.policies.flow import LOG_2PI, ConditionalCouplingFlow, reverse_kl
from find_rl.rllib.noise_policy import NoisePolicyRLModule, RegulariserContext

#: architecture constants a model_config may set (tests, studies) under these names; else the flow's own defaults
ARCHITECTURE = {"flow_context": "context_dim", "flow_masks": "masks", "flow_max_log_scale": "max_log_scale",
                "flow_bins": "bins", "flow_bound": "bound"}


class ConditionalFlowDistribution(Distribution):
    """``torch.distributions`` face of q(. | c) for a batch of conditions (batch ``(N,)``, event ``(D,)``).

    ``entropy()`` has no closed form: it returns the unbiased estimate ``D/2 log(2 pi e) + E_u[log|det dT/du|]``
    from ``entropy_samples`` reparameterised draws per row (differentiable).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, flow: ConditionalCouplingFlow, cond: torch.Tensor, *, entropy_samples: int = 1):
        self.flow, self.cond, self.entropy_samples = flow, cond, int(entropy_samples)
        super().__init__(batch_shape=torch.Size([len(cond)]), event_shape=torch.Size([flow.dim]), validate_args=False)

    def _flat_cond(self, copies: int) -> torch.Tensor:
        return self.cond.repeat(copies, *([1] * (self.cond.dim() - 1)))  # copy-major: matches (copies, N, D) reshapes

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        copies = math.prod(sample_shape)
        n = len(self.cond)
        u = torch.randn(copies * n, self.flow.dim, device=self.cond.device, dtype=self.flow.context.weight.dtype)
        z, _ = self.flow(u, self._flat_cond(copies))
        return z.reshape(*sample_shape, n, self.flow.dim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lead = value.shape[:-2]
        copies = math.prod(lead)
        return self.flow.log_prob(value.reshape(-1, self.flow.dim), self._flat_cond(copies)).reshape(*lead, len(self.cond))

    def entropy(self) -> torch.Tensor:
        k, n = self.entropy_samples, len(self.cond)
        feats = self.flow.features(self._flat_cond(k))
        u_y = torch.randn(k * n, *self.flow.view.shape, device=feats.device, dtype=feats.dtype)
        _, logdet = self.flow.transform(u_y, feats)
        return 0.5 * self.flow.dim * (1.0 + LOG_2PI) + logdet.reshape(k, n).mean(0)

    @property
    def mode(self) -> torch.Tensor:
        return self.flow.mode(self.cond)


class TorchFlowDistribution(TorchDistribution):
    """RLlib distribution over flattened noise: q(. | c) of a :class:`~find_rl.policies.flow.ConditionalCouplingFlow`.

    ``logits`` are the conditions (one-hot rows or text embeddings), ``flow`` the module's flow. Build it through
    ``TorchFlowDistribution.get_partial_dist_cls(flow=flow).from_logits(cond)`` (what the module's
    ``get_*_action_dist_cls`` return) or directly as ``TorchFlowDistribution(logits=cond, flow=flow)``.

    ``prior_share`` s > 0 makes it the behaviour mixture (1 - s) q + s N(0, I) of the mass-covering objectives
    (:mod:`find_rl.objectives.mass_covering`): each row is a fresh N(0, I) draw with probability s, and ``logp`` is the mixture's
    exact density, so RLlib's recorded ``ACTION_LOGP`` is the behaviour's. The module uses it for exploration only.
    """

    def __init__(self, logits: torch.Tensor, flow: ConditionalCouplingFlow, deterministic: bool = False,
                 prior_share: float = 0.0):
        self.logits, self.flow, self.deterministic = logits, flow, bool(deterministic)
        self.prior_share = float(prior_share)
        super().__init__(logits=logits, flow=flow)

    @override(TorchDistribution)
    def _get_torch_distribution(self, logits: torch.Tensor, flow: ConditionalCouplingFlow) -> ConditionalFlowDistribution:
        return ConditionalFlowDistribution(flow, logits)

    @override(TorchDistribution)
    def sample(self, *, sample_shape=None) -> torch.Tensor:
        if self.deterministic:
            mode = self._dist.mode.detach()
            return mode.expand(*(sample_shape or ()), *mode.shape)
        return mix_in_prior(super().sample(sample_shape=sample_shape), self.prior_share)  # the behaviour mixture

    @override(TorchDistribution)
    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        log_q = super().logp(value, **kwargs)
        return mixture_log_prob(log_q, log_prior(value), self.prior_share) if self.prior_share > 0 else log_q

    @override(TorchDistribution)
    def kl(self, other: "TorchFlowDistribution") -> torch.Tensor:
        z = self._dist.rsample()
        return self.logp(z) - other.logp(z)

    @staticmethod
    @override(TorchDistribution)
    def required_input_dim(space: gym.Space, *, cond_dim: int | None = None, **kwargs) -> int:
        if cond_dim is None:
            raise ValueError("a flow's inputs are its condition: pass cond_dim (the prompt count or the embedding size)")
        return int(cond_dim)

    @override(TorchDistribution)
    def to_deterministic(self) -> "TorchFlowDistribution":
        out = TorchFlowDistribution(logits=self.logits, flow=self.flow, deterministic=True)  # the mode of q itself
        out.__class__ = self.__class__  # keep the bound (partial) class
        return out


class FlowNoisePolicyModule(NoisePolicyRLModule):
    """Per-prompt (or text-conditioned) coupling flow over the initial noise; see the module docstring."""

    @override(TorchRLModule)
    def setup(self):
        self._read_config()
        cfg, pol = self.model_config, self.policy
        self.conditioning = pol.flow_conditioning
        embed_dim = self.observation_space.shape[0] - self.num_prompts
        if self.conditioning == "embedding" and embed_dim < 1:
            raise ValueError("--flow-conditioning embedding needs a text embedding in the observation; this pipeline gives none")
        self.reads_embedding = self.conditioning == "embedding"
        per_prompt = not self.reads_embedding
        architecture = {key: cfg[name] for name, key in ARCHITECTURE.items() if name in cfg}  # else the flow's defaults
        self.flow = ConditionalCouplingFlow(
            latent_shape=self.latent_shape, num_conditions=self.num_prompts if per_prompt else 0,
            embed_dim=0 if per_prompt else embed_dim, resolution=pol.mean_resolution, num_blocks=pol.flow_blocks,
            hidden=pol.flow_hidden, coupling=pol.flow_coupling, **architecture)
        self.affine_lr_scale = float(cfg.get("affine_lr_scale", 1.0))
        self.coupling_lr_scale = pol.flow_coupling_lr_scale

    def condition(self, obs: torch.Tensor) -> torch.Tensor:
        """The flow's condition from observation rows: the prompt one-hot or the text embedding."""
        return self.layout.embedding(obs) if self.reads_embedding else obs[:, : self.num_prompts]

    @override(TorchRLModule)
    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self.condition(batch[Columns.OBS])}

    @override(NoisePolicyRLModule)
    def noise_dist_cls(self, prior_share: float = 0.0):
        """q bound to this module's flow, or the behaviour mixture with ``prior_share``."""
        if prior_share > 0:
            return TorchFlowDistribution.get_partial_dist_cls(flow=self.flow, prior_share=prior_share)
        return TorchFlowDistribution.get_partial_dist_cls(flow=self.flow)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Joint ``log q(action | prompt)``, ``(N,)``, differentiable in the flow's parameters (= :meth:`log_density`)."""
        return self.log_density(obs, actions)

    def reverse_kl(self, obs: torch.Tensor, n: int = 1) -> torch.Tensor:
        """Mean over rows of an ``n``-draw estimate of KL(q_c || N(0, I)) (joint nats), reparameterised."""
        return reverse_kl(self.flow, self.condition(obs), n).mean()

    @override(NoisePolicyRLModule)
    def optimizer_param_groups(self) -> list[tuple[str, list[torch.nn.Parameter], float]]:
        """``[(name, parameters, lr multiplier)]``: the per-prompt shift at ``affine_lr_scale`` (it moves like the Gaussian's
        mean); the log-scales, the couplings and the prompt context at ``coupling_lr_scale``: Adam moves every weight by
        about its lr, so a coupling output fed by 32 x 3 x 3 inputs moves ~300 x as far, and a log-scale at the mean's
        rate would change the spread by e^0.4 per update."""
        g = self.flow.param_groups()
        shift = [*self.flow.shift.parameters()]
        rest = [p for p in g["affine"] if all(p is not q for q in shift)] + g["couplings"] + g["context"]
        return [("shift", shift, self.affine_lr_scale), ("couplings", rest, self.coupling_lr_scale)]

    @torch.no_grad()
    def moment_summary(self, obs: torch.Tensor, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element mean and log std of q(. | c) for each row, from ``n`` fixed (seeded) base draws per distinct row."""
        cond = self.condition(obs)
        uniq, inverse = torch.unique(cond, dim=0, return_inverse=True)
        gen = torch.Generator(device="cpu").manual_seed(0)
        u = torch.randn(n, self.flow.dim, generator=gen).to(cond.device)
        z, _ = self.flow(u.repeat(len(uniq), 1), uniq.repeat_interleave(n, 0))
        z = z.reshape(len(uniq), n, -1)
        return z.mean(1)[inverse], z.std(1).clamp(min=1e-6).log()[inverse]

    @override(NoisePolicyRLModule)
    def summary(self, obs, fwd_out):
        return self.moment_summary(obs, n=16)

    @override(NoisePolicyRLModule)
    def calibration_inputs(self, obs, dist_inputs):
        return torch.cat(self.moment_summary(obs), dim=-1)  # a flow has no (mu, sigma): g reads its moments

    @override(NoisePolicyRLModule)
    def regulariser(self, obs, fwd_out, ctx: RegulariserContext):
        """``--kl-coeff`` x the true reverse KL(q || N(0, I)) on fresh draws of the valid rows' q (entropy included),
        plus ``--replay-coeff`` x the importance-weighted NLL of the replayed rewarded noises; per latent element."""
        s, dim = ctx.find, self.flow.dim
        anchor = self.reverse_kl(obs[ctx.mask]) / dim
        return anchor, s.prior_kl_coeff * anchor + s.replay_coeff * self._replay_nll(ctx.replay, obs.device, dim)

    def _replay_nll(self, replay, device, dim: int) -> torch.Tensor:
        """Importance-weighted negative log-likelihood of the replayed rewarded noises, per element (find_rl/objectives/replay.py)."""
        from find_rl.policies.flow import replay_weights

        stored = replay.tensors() if replay is not None else None
        if stored is None:
            return torch.zeros((), device=device)
        z, logp_b, obs, group = (t.to(device) for t in stored)
        w = replay_weights(z, logp_b, group)
        return -(w * self.log_density(obs, z)).mean() / dim

    @override(NoisePolicyRLModule)
    def export(self, obs, **meta):
        import copy

        from find_rl.policies.export import FlowPolicy

        return FlowPolicy(flow=copy.deepcopy(self.flow).eval(), cond=self.condition(obs).detach().float(),
                          text_features="pooled" if self.reads_embedding else None, **meta)
