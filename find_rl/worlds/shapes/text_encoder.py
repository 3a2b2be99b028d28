"""A small compositional text encoder for the shapes world, saved and loaded like any diffusers model.

A prompt is parsed into (shape, colour) words and embedded additively, ``E_shape[s] + E_colour[c]``, with a
learned "null" row for an attribute the prompt leaves open (the empty prompt is the unconditional embedding,
used for classifier-free guidance and null-prompt dropout). The embedding is compositional, not one vector per
combination; that is what makes a rare pair such as "a green circle" drift toward the common shape of its
colour, as real text encoders do with "a green dog".
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from find_rl.worlds.shapes.world import COLOURS, SHAPES, parse_prompt


class ShapesTextEncoder(ModelMixin, ConfigMixin):
    """``encode(prompts) -> (N, embed_dim)``; the vocabulary is part of the saved config."""

    @register_to_config
    def __init__(self, embed_dim: int = 64, shapes: tuple[str, ...] = SHAPES, colours: tuple[str, ...] = COLOURS):
        super().__init__()
        if tuple(shapes) != SHAPES or tuple(colours) != COLOURS:
            raise ValueError(f"this encoder's vocabulary {shapes}/{colours} does not match find_rl's shapes world")
        self.shape_embedding = nn.Embedding(len(shapes) + 1, embed_dim)  # last row = null
        self.colour_embedding = nn.Embedding(len(colours) + 1, embed_dim)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """``(N, 2)`` long tensor of (shape, colour) token ids; the null id stands for an open attribute."""
        ids = []
        for p in prompts:
            a = parse_prompt(p)
            ids.append((len(SHAPES) if a.shape is None else a.shape, len(COLOURS) if a.colour is None else a.colour))
        return torch.tensor(ids, dtype=torch.long, device=self.device).reshape(-1, 2)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.shape_embedding(token_ids[:, 0]) + self.colour_embedding(token_ids[:, 1])

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self(self.tokenize(prompts))
