"""RQ-KMeans: residual k-means on the item table, no gradients (the strong non-neural SID baseline).

Level l clusters the residuals left by levels < l into K codes. `balanced` makes every cluster the same size
(equal-size Sinkhorn assignment), which spreads items over the codebook and cuts collisions of the L-code prefix.
"""

from __future__ import annotations

import torch

from deepinterestgr.quantize.base import Quantizer, QuantizerOutput
from deepinterestgr.quantize.kmeans import Init, kmeans, sinkhorn_assign, squared_distances


class RQKMeans(Quantizer):
    """Residual k-means, L levels x K codes, fitted on the whole table in `fit(x)`.

    Args (keyword-only):
        input_dim: input width; None = set by `build` (the trainer takes it from the data).
        num_levels, codebook_size: L codebooks of K codes each.
        iters: Lloyd iterations per level (nearest-code assignment).
        init: "kmeans++" or "random".
        balanced: after the Lloyd iterations, `balanced_iters` more with equal-size Sinkhorn assignment; batches of
            at least `codebook_size` rows are then also encoded with Sinkhorn, so encode the whole table at once.
        sinkhorn_epsilon: entropic regularisation of the balanced assignment (on distances scaled to [0, 1]).
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
        sinkhorn_epsilon: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_levels, self.codebook_size = int(num_levels), int(codebook_size)
        self.iters, self.init, self.seed = int(iters), init, int(seed)
        self.balanced, self.balanced_iters, self.sinkhorn_epsilon = bool(balanced), int(balanced_iters), float(sinkhorn_epsilon)
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

    def _assign(self, residual: torch.Tensor, level: int) -> torch.Tensor:
        dist = squared_distances(residual, self.codebooks[level])
        if self.balanced and residual.shape[0] >= self.codebook_size:
            return sinkhorn_assign(dist, epsilon=self.sinkhorn_epsilon)
        return dist.argmin(dim=1)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        if not self.is_built:
            self.build(x.shape[1])
        gen = torch.Generator().manual_seed(self.seed)
        residual = x.detach().float().cpu()
        for level in range(self.num_levels):
            centroids = kmeans(residual, self.codebook_size, iters=self.iters, init=self.init, generator=gen).centroids
            if self.balanced and self.balanced_iters:
                # warm-started from the plain solution: Sinkhorn iterations are the expensive part
                for _ in range(self.balanced_iters):
                    assignment = sinkhorn_assign(squared_distances(residual, centroids), epsilon=self.sinkhorn_epsilon)
                    counts = torch.bincount(assignment, minlength=self.codebook_size)
                    sums = torch.zeros_like(centroids).index_add_(0, assignment, residual)
                    centroids = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None], centroids)
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
                code = self._assign(residual, level)
                e = self.codebooks[level][code]
                quantized, residual = quantized + e, residual - e
                codes.append(code)
        error = residual.pow(2).sum(-1).mean()
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), x.new_zeros(()), {"recon_loss": error})

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[levels, codes.long()].sum(dim=1)
