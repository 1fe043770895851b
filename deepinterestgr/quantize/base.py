"""The quantizer contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from deepinterestgr.init_args import RecordsInitArgs


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


class Quantizer(RecordsInitArgs, nn.Module, ABC):
    """Maps item vectors [B, D] to L codes per item. Keyword-only constructors.

    `trainable = False` quantizers (residual k-means) learn in `fit(x)` on the whole table instead of by gradient.
    """

    trainable: ClassVar[bool] = True
    num_levels: int
    codebook_size: int
    #: width of the input vectors; None until `build` (the datamodule knows it, users never type it)
    input_dim: int | None = None
    #: width of `QuantizerOutput.quantized` (None until built when it depends on the input)
    latent_dim: int | None = None

    def build(self, input_dim: int) -> None:
        """Allocate everything whose shape depends on the input width. Called once, before training or loading a
        state dict; calling it again with the same width is a no-op. Subclasses with input-sized parameters override
        it (and call it from `__init__` when `input_dim` is given)."""
        if self.input_dim is not None and self.input_dim != input_dim:
            raise ValueError(f"{type(self).__name__} was built for input width {self.input_dim}, got {input_dim}")
        self.input_dim = int(input_dim)

    @property
    def is_built(self) -> bool:
        return self.input_dim is not None

    @abstractmethod
    def forward(self, x: torch.Tensor) -> QuantizerOutput: ...

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, L] for inputs [B, D] (eval mode, deterministic)."""
        return self(x).codes

    @abstractmethod
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, L] codes -> [B, D_latent] quantized vectors; equals `forward(x).quantized` for `codes = encode(x)`."""

    def last_level_candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For items added after training (`dig items add`): their first L-1 codes [B, L-1] (nearest codes, each item
        on its own) and the squared distance [B, K] of their last residual to every last-level code, so that a new
        item can take the nearest code no existing item holds under its prefix. Residual quantizers implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot place new items (no last_level_candidates); "
                                  "retrain the quantizer on the grown catalog instead")

    def fit(self, x: torch.Tensor) -> None:
        """Non-gradient quantizers learn their codebooks here; gradient ones may use it for k-means init."""

    def refresh(self, x: torch.Tensor) -> dict[str, float]:
        """Periodic maintenance on the whole item table (e.g. restart dead codes), called by the trainer between epochs.

        Must be a deterministic function of `x` and the current weights: under DDP every rank calls it with the same
        table and must end with the same codebooks. Returns counts to log (e.g. {"restarted_l0": 3})."""
        return {}
