"""RQ-VAE (TIGER): MLP encoder -> residual quantization over L codebooks -> MLP decoder.

Training signal: reconstruction of the input + per-level codebook and commitment losses (β). Codebooks start from
k-means on the data (`fit`, or the first training batch), dead codes are restarted from badly represented items
(`refresh`), and the last level can use balanced Sinkhorn assignment (LC-Rec) to spread colliding items apart.
Gradients pass the quantizer by the straight-through estimator or, optionally, the rotation trick (Fifty et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepinterestgr.quantize.base import Quantizer, QuantizerOutput
from deepinterestgr.quantize.kmeans import (
    distinct_within_groups,
    kmeans,
    residual_candidates,
    sinkhorn_assign,
    squared_distances,
)


def mlp(dims: Sequence[int], *, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def rotate_to(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rotation trick: returns `target` in the forward pass; the gradient w.r.t. z is rotated and scaled like target/z.

    Uses the Householder form R = I - 2wwᵀ + 2quᵀ (u = z/|z|, q = e/|e|, w = (u+q)/|u+q|), treated as a constant.
    """
    eps = 1e-6
    norm_z, norm_t = z.norm(dim=-1, keepdim=True).clamp_min(eps), target.norm(dim=-1, keepdim=True)
    u, q = (z / norm_z).detach(), (target / norm_t.clamp_min(eps)).detach()
    w = F.normalize(u + q, dim=-1, eps=eps).detach()
    rotated = z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * u).sum(-1, keepdim=True) * q
    return (norm_t / norm_z).detach() * rotated


class RQVAE(Quantizer):
    """Residual-quantized VAE with k-means codebook init, dead-code restarts and optional last-level Sinkhorn.

    Args (keyword-only):
        input_dim: input width; None = set later by `build` (the trainer takes it from the data).
        hidden_dims: encoder widths between input and latent (decoder mirrors them).
        latent_dim: width of the quantized vectors.
        num_levels, codebook_size: L codebooks of K codes each.
        beta: commitment weight.
        rotation_trick: rotation trick instead of the straight-through estimator.
        kmeans_iters: Lloyd iterations of the k-means codebook init.
        sinkhorn_epsilon: when set, the last level assigns codes with balanced Sinkhorn for batches of at least
            `codebook_size` rows (training and table encoding); None = nearest code.
        distinct_last_level: when encoding in eval mode, items sharing their first L-1 codes take distinct last
            codes (nearest free code), so the L-code prefix collides only where a group outgrows the codebook.
        restart_dead_codes: `refresh` re-seeds codes no item uses from the worst-represented residuals.
        seed: seeds k-means init and restarts (same seed, same data -> same codebooks on every DDP rank).
    """

    def __init__(
        self,
        *,
        input_dim: int | None = None,
        hidden_dims: Sequence[int] = (512, 256, 128),
        latent_dim: int = 32,
        num_levels: int = 3,
        codebook_size: int = 256,
        beta: float = 0.25,
        rotation_trick: bool = False,
        kmeans_iters: int = 20,
        sinkhorn_epsilon: float | None = None,
        distinct_last_level: bool = False,
        restart_dead_codes: bool = True,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.hidden_dims, self.latent_dim = tuple(hidden_dims), int(latent_dim)
        self.num_levels, self.codebook_size = int(num_levels), int(codebook_size)
        self.beta, self.rotation_trick, self.kmeans_iters = float(beta), bool(rotation_trick), int(kmeans_iters)
        self.sinkhorn_epsilon, self.restart_dead_codes = sinkhorn_epsilon, bool(restart_dead_codes)
        self.dropout, self.seed = float(dropout), int(seed)
        self.distinct_last_level = bool(distinct_last_level)
        self.codebooks = nn.Parameter(torch.randn(self.num_levels, self.codebook_size, self.latent_dim) * 0.01)
        self.register_buffer("initialized", torch.tensor(False))
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        # counts dead-code refreshes; a buffer so that a fit resumed from a checkpoint draws the same restarts
        self.register_buffer("refreshes", torch.tensor(0, dtype=torch.long))
        if input_dim is not None:
            self.build(input_dim)

    def build(self, input_dim: int) -> None:
        if self.is_built:
            super().build(input_dim)  # only checks the width
            return
        super().build(input_dim)
        dims = [self.input_dim, *self.hidden_dims, self.latent_dim]
        self.encoder = mlp(dims, dropout=self.dropout)
        self.decoder = mlp(dims[::-1], dropout=self.dropout)

    def _require_built(self) -> None:
        if not self.is_built:
            raise RuntimeError("RQVAE: input width unknown; call build(input_dim) or pass input_dim=")

    # --------------------------------------------------------------------------------------------- quantization
    def _level_codes(self, residual: torch.Tensor, level: int, prefix: torch.Tensor | None = None) -> torch.Tensor:
        dist = squared_distances(residual, self.codebooks[level].detach().float())
        last = level == self.num_levels - 1
        if last and prefix is not None and self.distinct_last_level and not self.training and residual.shape[0] > 1:
            return distinct_within_groups(dist, prefix)
        if last and self.sinkhorn_epsilon is not None and residual.shape[0] >= self.codebook_size:
            return sinkhorn_assign(dist, epsilon=self.sinkhorn_epsilon)
        return dist.argmin(dim=1)

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, latent] -> (sum of code vectors [B, latent], codes [B, L], codebook+commitment loss)."""
        residual, quantized = z, torch.zeros_like(z)
        codes, vq_loss = [], z.new_zeros(())
        for level in range(self.num_levels):
            prefix = torch.stack(codes, dim=1) if codes else None
            code = self._level_codes(residual.detach(), level, prefix)
            e = self.codebooks[level][code]
            # codebook moves to the (frozen) residual; encoder commits to the (frozen) code
            vq_loss = (vq_loss + (e - residual.detach()).pow(2).sum(-1).mean()
                       + self.beta * (residual - e.detach()).pow(2).sum(-1).mean())
            quantized = quantized + e
            residual = residual - e.detach()
            codes.append(code)
        return quantized, torch.stack(codes, dim=1), vq_loss

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        self._require_built()
        if self.training and not bool(self.initialized):
            self.fit(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            z = self.encoder(x)
            code_sum, codes, vq_loss = self._quantize(z)
            if self.training:
                quantized = rotate_to(z, code_sum) if self.rotation_trick else z + (code_sum - z).detach()
            else:
                quantized = code_sum  # exact sum of code vectors: equals decode_codes(codes)
            recon = self.decoder(quantized)
            recon_loss = (recon - x).pow(2).sum(-1).mean()
        loss = recon_loss + vq_loss
        metrics = {"recon_loss": recon_loss.detach(), "vq_loss": vq_loss.detach(),
                   "latent_residual": (z - code_sum).pow(2).sum(-1).mean().detach()}
        return QuantizerOutput(quantized, codes, loss, metrics)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(codes.shape[1], device=codes.device)
        return self.codebooks[levels, codes.long()].sum(dim=1)

    @torch.no_grad()
    def last_level_candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_built()
        was_training = self.training
        self.eval()
        z = self.encoder(x.float())
        self.train(was_training)
        return residual_candidates(z, self.codebooks.detach())

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, L] -> decoded input-space vectors [B, input_dim]."""
        self._require_built()
        return self.decoder(self.decode_codes(codes))

    # ------------------------------------------------------------------------------------ codebook maintenance
    def _generator(self, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """k-means init of every codebook on the encoder's residuals of x (one level after the other)."""
        self._require_built()
        gen = self._generator(0)
        was_training = self.training
        self.eval()
        z = self.encoder(x.float())
        residual = z.cpu()
        for level in range(self.num_levels):
            result = kmeans(residual, self.codebook_size, iters=self.kmeans_iters, generator=gen)
            self.codebooks.data[level] = result.centroids.to(self.codebooks)
            residual = residual - result.centroids[result.assignment]
        self.initialized.fill_(True)
        self.train(was_training)

    @torch.no_grad()
    def refresh(self, x: torch.Tensor) -> dict[str, float]:
        """Re-seed codes that no item of x uses with the residuals the current codes represent worst."""
        if not self.restart_dead_codes or not bool(self.initialized):
            return {}
        self._require_built()
        self.refreshes += 1
        gen = self._generator(int(self.refreshes))
        was_training = self.training
        self.eval()
        residual = self.encoder(x.float())
        stats: dict[str, float] = {}
        for level in range(self.num_levels):
            code = self._level_codes(residual, level)
            counts = torch.bincount(code, minlength=self.codebook_size)
            dead = (counts == 0).nonzero().squeeze(1)
            if len(dead):
                error = (residual - self.codebooks[level][code]).pow(2).sum(-1)
                picks = torch.multinomial(error.cpu().clamp_min(1e-12), len(dead), replacement=len(dead) > len(error),
                                          generator=gen).to(residual.device)
                self.codebooks.data[level, dead] = residual[picks].to(self.codebooks)
                code = self._level_codes(residual, level)
            stats[f"restarted_l{level}"] = float(len(dead))
            residual = residual - self.codebooks[level][code]
        self.train(was_training)
        return stats
