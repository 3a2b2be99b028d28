"""A replay of rewarded noises for the flow family, free of Ray: per prompt, the last ``size`` noises that earned the
reward, with the behaviour log-density each was drawn with (RLlib's ``ACTION_LOGP``) and its observation row.

The learner adds ``- replay_coeff * mean_i w_i log q(z_i | c_i) / D`` to the flow's loss, with the self-normalised
importance weights of :func:`find_rl.policies.flow.replay_weights`, w_i ∝ N(z_i; 0, I) / q_b(z_i) per prompt: maximum likelihood
on the rewarded set reweighted toward the frozen model's own distribution restricted to it, N(z) 1[z rewarded] / Z, which
is the small-beta optimum of E_q[r] - beta KL(q || N(0, I)). Where the policy gradient alone is mode-seeking (it sharpens
around the rewarded region it found first), this term is mass-covering: it pulls q toward every rewarded region it has
seen in proportion to its prior mass. "Rewarded" is the reward's ``aligned`` flag when it reports one (the shapes
detector), else a reward above its prompt's batch mean.
"""

from __future__ import annotations

import torch


class RewardedReplay:
    def __init__(self, *, num_groups: int, size: int = 256):
        if size < 1:
            raise ValueError(f"replay size must be >= 1, got {size}")
        self.num_groups, self.size = int(num_groups), int(size)
        self._z: list[torch.Tensor | None] = [None] * self.num_groups
        self._logp: list[torch.Tensor | None] = [None] * self.num_groups
        self._obs: list[torch.Tensor | None] = [None] * self.num_groups

    closed = False

    def add(self, z: torch.Tensor, logp: torch.Tensor, obs: torch.Tensor, group: torch.Tensor, rewarded: torch.Tensor) -> None:
        """Keep the rewarded rows (``z`` (N, D), joint behaviour ``logp`` (N,), ``obs`` (N, O), ``group`` (N,) prompt index);
        each prompt keeps its newest ``size``. Nothing once :meth:`clear` closed it."""
        if self.closed:
            return
        keep = rewarded.bool()
        for g in torch.unique(group[keep]).tolist():
            sel = keep & (group == g)
            parts = [t.detach().cpu() for t in (z[sel], logp[sel], obs[sel])]
            for store, new in zip((self._z, self._logp, self._obs), parts):
                store[g] = (new if store[g] is None else torch.cat([store[g], new]))[-self.size :]

    def __len__(self) -> int:
        return sum(len(z) for z in self._z if z is not None)

    def noises(self, group: int) -> torch.Tensor | None:
        """The kept noises of prompt ``group``, ``(n, D)``, or None."""
        return self._z[group]

    def clear(self) -> None:
        """Forget every row and stop keeping new ones (the seeded mixture's store, once it has seeded)."""
        self._z, self._logp, self._obs = ([None] * self.num_groups for _ in range(3))
        self.closed = True

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(z, logp, obs, group)`` over every prompt, or None when empty."""
        groups = [g for g in range(self.num_groups) if self._z[g] is not None]
        if not groups:
            return None
        group = torch.cat([torch.full((len(self._z[g]),), g, dtype=torch.long) for g in groups])
        return (torch.cat([self._z[g] for g in groups]), torch.cat([self._logp[g] for g in groups]),
                torch.cat([self._obs[g] for g in groups]), group)

    def get_state(self) -> dict:
        return {"z": list(self._z), "logp": list(self._logp), "obs": list(self._obs), "closed": self.closed}

    def set_state(self, state: dict) -> None:
        self._z, self._logp, self._obs = list(state["z"]), list(state["logp"]), list(state["obs"])
        self.closed = bool(state.get("closed", False))


class RenderReplay:
    """Past renders of every outcome, aligned and failed, for the mass-covering objectives (:mod:`find_rl.objectives.mass_covering`):
    per prompt the newest ``size`` rows of (noise ``z``, behaviour log-density, observation, reward).

    A batch is staged by :meth:`stage` while its own loss is computed (so it is not counted twice) and joins the
    replay at :meth:`commit`, after the update. The log-variance loss needs no importance weights, so replayed rows
    count like fresh ones: they widen the behaviour over the regions earlier policies visited."""

    FIELDS = ("z", "logp", "obs", "reward")

    def __init__(self, *, num_groups: int, size: int):
        if size < 1:
            raise ValueError(f"render replay size must be >= 1, got {size}")
        self.num_groups, self.size = int(num_groups), int(size)
        self._rows: list[dict | None] = [None] * self.num_groups
        self._staged: tuple | None = None

    def stage(self, z: torch.Tensor, logp: torch.Tensor, obs: torch.Tensor, reward: torch.Tensor, group: torch.Tensor) -> None:
        self._staged = tuple(t.detach().cpu() for t in (z, logp, obs, reward, group))

    def commit(self) -> None:
        if self._staged is None:
            return
        *parts, group = self._staged
        for g in torch.unique(group).tolist():
            sel = group == g
            new = dict(zip(self.FIELDS, (t[sel] for t in parts)))
            old = self._rows[g]
            self._rows[g] = {k: (new[k] if old is None else torch.cat([old[k], new[k]]))[-self.size :] for k in self.FIELDS}
        self._staged = None

    def __len__(self) -> int:
        return sum(len(r["z"]) for r in self._rows if r is not None)

    def tensors(self) -> tuple[torch.Tensor, ...] | None:
        """``(z, logp, obs, reward, group)`` over every prompt, or None when empty."""
        groups = [g for g in range(self.num_groups) if self._rows[g] is not None]
        if not groups:
            return None
        group = torch.cat([torch.full((len(self._rows[g]["z"]),), g, dtype=torch.long) for g in groups])
        return (*(torch.cat([self._rows[g][k] for g in groups]) for k in self.FIELDS), group)

    def get_state(self) -> dict:
        return {"rows": list(self._rows)}

    def set_state(self, state: dict) -> None:
        self._rows = list(state["rows"])
