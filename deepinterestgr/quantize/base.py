"""The quantizer contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import nn


class QuantizerOutput(NamedTuple):
    """Output of `Quantizer.forward` on a batch of B input vectors.

    quantized: [B, D_latent] sum over levels of the selected code vectors (straight-through in training)
    codes:     [B, L] long, one code per level in [0, codebook_size)
    loss:      scalar training loss (reconstruction + commitment + ...); zero for non-gradient quantizers
    metrics:   scalar tensors to log, e.g. {"recon_loss": ..., "commit_loss": ...}
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Quantizer(nn.Module, ABC):
    """Maps item vectors [B, D] to L codes per item. Keyword-only constructors.

    `trainable = False` quantizers (residual k-means) learn in `fit(x)` on the whole table instead of by gradient.
    """

    trainable: ClassVar[bool] = True
    num_levels: int
    codebook_size: int

    @abstractmethod
    def forward(self, x: torch.Tensor) -> QuantizerOutput: ...

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, L] for inputs [B, D] (eval mode, deterministic)."""
        return self(x).codes

    @abstractmethod
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, L] codes -> [B, D_latent] quantized vectors; equals `forward(x).quantized` for `codes = encode(x)`."""

    def fit(self, x: torch.Tensor) -> None:
        """Non-gradient quantizers learn their codebooks here; gradient ones may use it for k-means init."""
