"""The noise bandit's observation layout and the frozen model's text encoding, written once (no Ray).

An observation row is ``[one-hot of the prompt's index (P entries) | text features of the prompt (E entries)]``:
per-prompt policies (and the reward calibrator's grouping) read the one-hot, prompt-conditioned policies the text
features. The env builds rows with :func:`prompt_features`; every reader goes through :class:`ObservationLayout`.

The text features (``--text-features``, :data:`TEXT_FEATURES`) are the frozen encoder's pooled embedding
(``"pooled"``, E = its width), or its token states with their attention mask (``"tokens"``:
``[last_hidden_state (T x H, flattened) | mask (T)]``, E = T (H + 1)), which a policy reads by attention
(:class:`find_rl.policies.amortized.TokenReader`), as a cross-attending denoiser reads them.

The text encoding (:func:`encode_text`) is the pipeline's own: the shapes world's encoder (one vector per prompt, which
its denoiser takes as ``class_labels``), or a transformers text encoder whose last hidden states condition the denoiser
(DDPO's denoiser call): CLIP (SD, SDXL, ModelScope, the first scenes model), whose pooled output goes into the
observation, or T5 (the scenes model; Imagen, PixArt, SD3), bidirectional, read with its padding masked out and
pooled by the mean of its real tokens' states (it has no pooled output). A pipeline that prepares its own prompt
text (``pipeline.tokenize(prompts) -> ids``: the scenes model tokenizes the canonical text, "a photo of a Red circle"
as "a red circle") is read through it, so a policy sees what the denoiser reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from find_rl.core.settings import TEXT_FEATURES


@dataclass(frozen=True)
class ObservationLayout:
    num_prompts: int

    def prompt_index(self, obs: torch.Tensor) -> torch.Tensor:
        """``(N, P + E)`` rows -> ``(N,)`` prompt indices (the one-hot's argmax)."""
        return obs[:, : self.num_prompts].argmax(-1)

    def embedding(self, obs: torch.Tensor) -> torch.Tensor:
        """``(N, P + E)`` rows -> ``(N, E)`` pooled text embeddings."""
        return obs[:, self.num_prompts :]

    def rows(self, embeddings: np.ndarray | torch.Tensor, index: list[int | None] | None = None) -> torch.Tensor:
        """Observation rows for embeddings; ``index[i]`` is the one-hot position of row i (None or absent: all zeros, a
        prompt the policy was not trained on)."""
        emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        onehot = torch.zeros(len(emb), self.num_prompts)
        for i, k in enumerate(index or []):
            if k is not None:
                onehot[i, k] = 1.0
        return torch.cat([onehot, emb], dim=1)


#: transformers ``model_type`` of the bidirectional (T5-family) text encoders
T5_TYPES = ("t5", "mt5", "umt5")


def reads_padding_mask(encoder) -> bool:
    """Whether a transformers text encoder is bidirectional (T5) and so takes the padding's attention mask; a causal
    CLIP encoder's real tokens never see the padding after them."""
    return getattr(getattr(encoder, "config", None), "model_type", "") in T5_TYPES


@dataclass
class TextEncoding:
    pooled: torch.Tensor  # (P, E): one vector per prompt (empty E for pipelines without a text encoder)
    hidden: torch.Tensor | None  # (P, T, H): token states for a cross-attending denoiser; None for the shapes model
    mask: torch.Tensor | None = None  # (P, T): 1 for a real token (BOS, words, EOS), 0 for padding; None with hidden


@torch.no_grad()
def encode_text(pipeline, prompts: list[str]) -> TextEncoding:
    """The pipeline's own text encoding of ``prompts`` (see the module docstring)."""
    enc = getattr(pipeline, "text_encoder", None)
    tokenizer = getattr(pipeline, "tokenizer", None)
    if enc is not None and hasattr(enc, "encode"):  # the shapes world's encoder
        return TextEncoding(pooled=enc.encode(prompts).float(), hidden=None)
    if enc is not None and tokenizer is not None:  # transformers text encoders (CLIP, T5)
        if hasattr(pipeline, "tokenize"):  # a pipeline that prepares its own prompt text (the scenes model's canonical text)
            ids = pipeline.tokenize(prompts)
            mask = (ids != tokenizer.pad_token_id).float()
        else:
            tok = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt")
            ids, mask = tok.input_ids, tok.get("attention_mask")
            mask = torch.ones(ids.shape) if mask is None else mask.float()
        mask = mask.to(enc.device)
        if reads_padding_mask(enc):
            out = enc(ids.to(enc.device), attention_mask=mask.long())
            pooled = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:
            out = enc(ids.to(enc.device))
            pooled = out.pooler_output
        return TextEncoding(pooled=pooled.float(), hidden=out.last_hidden_state, mask=mask)
    return TextEncoding(pooled=torch.zeros(len(prompts), 0), hidden=None)


def text_features(pipeline, prompts: list[str], kind: str = "pooled") -> torch.Tensor:
    """``(P, E)`` float32 text features of ``prompts`` (see the module docstring); a one-line ``ValueError`` when the
    pipeline's encoder has no token states for ``"tokens"``."""
    if kind not in TEXT_FEATURES:
        raise ValueError(f"text features must be one of {', '.join(TEXT_FEATURES)}, got {kind!r}")
    enc = encode_text(pipeline, prompts)
    if kind == "pooled":
        return enc.pooled.float().cpu()
    if enc.hidden is None:
        raise ValueError("this model's text encoder gives one vector per prompt and no token states; "
                         "use --text-features pooled")
    return torch.cat([enc.hidden.float().flatten(1), enc.mask.float()], dim=1).cpu()


def token_shape(pipeline) -> tuple[int, int]:
    """``(T, H)`` of the pipeline's token states (the ``"tokens"`` features' layout)."""
    enc = encode_text(pipeline, [""])
    if enc.hidden is None:
        raise ValueError("this model's text encoder gives one vector per prompt and no token states; "
                         "use --text-features pooled")
    return tuple(int(v) for v in enc.hidden.shape[1:])


def prompt_features(pipeline, prompts: list[str], kind: str = "pooled") -> np.ndarray:
    """``(P, P + E)`` float32 observation rows of ``prompts`` in this order (the env's observation table)."""
    emb = text_features(pipeline, prompts, kind).numpy()
    return ObservationLayout(len(prompts)).rows(emb, list(range(len(prompts)))).numpy()
