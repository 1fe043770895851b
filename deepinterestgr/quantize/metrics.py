"""Code-table statistics: per-level usage and perplexity, collision rates of every prefix depth, collapse flags."""

from __future__ import annotations

import torch


def level_usage(codes: torch.Tensor, codebook_size: int) -> list[int]:
    """Distinct codes used at each level of codes [N, L]."""
    return [int(torch.unique(codes[:, level]).numel()) for level in range(codes.shape[1])]


def level_perplexity(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """exp(entropy) of each level's code distribution: K for uniform use, 1 for collapse to one code."""
    out = []
    for level in range(codes.shape[1]):
        p = torch.bincount(codes[:, level].long(), minlength=codebook_size).double()
        p = p[p > 0] / p.sum()
        out.append(float(torch.exp(-(p * p.log()).sum())))
    return out


def group_sizes(codes: torch.Tensor) -> torch.Tensor:
    """Sizes of the groups of items sharing all L codes [num_distinct_prefixes]."""
    return torch.unique(codes, dim=0, return_counts=True)[1]


def collision_rate(codes: torch.Tensor) -> float:
    """Fraction of items whose L codes are shared with at least one other item."""
    if codes.shape[0] == 0:
        return 0.0
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())


def prefix_collision_rates(codes: torch.Tensor) -> list[float]:
    """Collision rate of the first d codes for d = 1..L (the last entry equals `collision_rate`)."""
    return [collision_rate(codes[:, :depth]) for depth in range(1, codes.shape[1] + 1)]


def perplexity_shares(perplexity: list[float], codebook_size: int, num_items: int) -> list[float]:
    """Each level's perplexity over the most it can be, min(codebook size, items): 1.0 is uniform use."""
    ceiling = max(1, min(codebook_size, num_items))
    return [p / ceiling for p in perplexity]


def collapsed_levels(metrics: dict, min_share: float) -> list[int]:
    """Levels whose perplexity share is below `min_share` (a codebook that has collapsed onto a few codes)."""
    return [level for level, share in enumerate(metrics["perplexity_share"]) if share < min_share]


def code_table_metrics(codes: torch.Tensor, codebook_size: int) -> dict:
    sizes = group_sizes(codes)
    perplexity = level_perplexity(codes, codebook_size)
    return {
        "num_items": int(codes.shape[0]),
        "collision_rate": collision_rate(codes),
        "num_unique_prefixes": int(sizes.numel()),
        "max_group_size": int(sizes.max()) if sizes.numel() else 0,
        "usage": level_usage(codes, codebook_size),
        "perplexity": perplexity,
        "perplexity_share": perplexity_shares(perplexity, codebook_size, int(codes.shape[0])),
        "prefix_collision_rate": prefix_collision_rates(codes),
    }
