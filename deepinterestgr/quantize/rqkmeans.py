"""RQ-KMeans: residual k-means on the item table, no gradients (the strong non-neural SID baseline).

Level l clusters the residuals left by levels < l into K codes. `balanced` makes every cluster the same size
(capacity-limited assignment), which spreads items over the codebook and cuts collisions of the L-code prefix.
"""

from __future__ import annotations

import torch

from deepinterestgr.quantize.base import Quantizer, QuantizerOutput
from deepinterestgr.quantize.kmeans import (
    Init,
    assign,
    distinct_within_groups,
    kmeans,
    residual_candidates,
    squared_distances,
    update_centroids,
)


class RQKMeans(Quantizer):
    """Residual k-means, L levels x K codes, fitted on the whole table in `fit(x)`.

    Args (keyword-only):
        input_dim: input width; None = set by `build` (the trainer takes it from the data).
        num_levels, codebook_size: L codebooks of K codes each.
        iters: Lloyd iterations per level (nearest-code assignment).
        init: "kmeans++" or "random".
        balanced: after the Lloyd iterations, `balanced_iters` more where no code takes more than
            ceil(capacity_factor * N / K) items. Batches of at least `codebook_size` rows are then encoded under the
            same capacity (codes depend on the batch: encode the whole table at once, as the quantize stage does).
        capacity_factor: room per code relative to an exactly equal split (1.0 = equal sizes).
        distinct_last_level: items that share their first L-1 codes take distinct last codes (nearest free code),
            so the L-code prefix collides only where a group outgrows the codebook. Applies to batches of 2+ rows.
        seed: seeds the k-means init.
    """

    trainable = False

    def __init__(
        self,
        *,
        input_dim: int | None = None,
        num_levels: int = 3,
        codebook_size: int = 256,
        iters: int = 20,
        init: Init = "kmeans++",
        balanced: bool = False,
        balanced_iters: int = 5,
        capacity_factor: float = 1.0,
        distinct_last_level: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_levels, self.codebook_size = int(num_levels), int(codebook_size)
        self.iters, self.init, self.seed = int(iters), init, int(seed)
        self.balanced, self.balanced_iters, self.capacity_factor = (bool(balanced), int(balanced_iters),
                                                                    float(capacity_factor))
        self.distinct_last_level = bool(distinct_last_level)
        self.register_buffer("codebooks", torch.empty(0))
        self.register_buffer("initialized", torch.tensor(False))
        if input_dim is not None:
            self.build(input_dim)

    def build(self, input_dim: int) -> None:
        if self.is_built:
            super().build(input_dim)
            return
        super().build(input_dim)
        self.latent_dim = self.input_dim
        self.codebooks = torch.zeros(self.num_levels, self.codebook_size, self.input_dim)

    def _assign(self, residual: torch.Tensor, level: int, prefix: torch.Tensor | None = None) -> torch.Tensor:
        if prefix is not None and self.distinct_last_level and level == self.num_levels - 1 and residual.shape[0] > 1:
            return distinct_within_groups(squared_distances(residual, self.codebooks[level]), prefix)
        balanced = self.balanced and residual.shape[0] >= self.codebook_size
        return assign(residual, self.codebooks[level], balanced=balanced, capacity_factor=self.capacity_factor)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        if not self.is_built:
            self.build(x.shape[1])
        gen = torch.Generator().manual_seed(self.seed)
        residual = x.detach().float().cpu()
        for level in range(self.num_levels):
            centroids = kmeans(residual, self.codebook_size, iters=self.iters, init=self.init, generator=gen).centroids
            if self.balanced:
                # warm-started from the unconstrained solution: capacity-limited Lloyd steps
                for _ in range(self.balanced_iters):
                    assignment = assign(residual, centroids, balanced=True, capacity_factor=self.capacity_factor)
                    centroids = update_centroids(residual, assignment, centroids, generator=gen)
            self.codebooks[level] = centroids.to(self.codebooks)
            residual = residual - centroids[self._assign(residual, level)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        if not bool(self.initialized):
            raise RuntimeError("RQKMeans: call fit(x) on the item table before encoding")
        with torch.autocast(device_type=x.device.type, enabled=False):
            residual = x.float()
            quantized = torch.zeros_like(residual)
            codes = []
            for level in range(self.num_levels):
                prefix = torch.stack(codes, dim=1) if codes else torch.zeros(len(residual), 1, dtype=torch.long)
                code = self._assign(residual, level, prefix)
                e = self.codebooks[level][code]
                quantized, residual = quantized + e, residual - e
                codes.append(code)
        error = residual.pow(2).sum(-1).mean()
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), x.new_zeros(()), {"recon_loss": error})

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[levels, codes.long()].sum(dim=1)

    @torch.no_grad()
    def last_level_candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            raise RuntimeError("RQKMeans: call fit(x) on the item table before encoding")
        return residual_candidates(x.float(), self.codebooks)
