"""Code-table statistics: per-level usage and perplexity, collision rate of the L-code prefix."""

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


def code_table_metrics(codes: torch.Tensor, codebook_size: int) -> dict:
    sizes = group_sizes(codes)
    return {
        "num_items": int(codes.shape[0]),
        "collision_rate": collision_rate(codes),
        "num_unique_prefixes": int(sizes.numel()),
        "max_group_size": int(sizes.max()) if sizes.numel() else 0,
        "usage": level_usage(codes, codebook_size),
        "perplexity": level_perplexity(codes, codebook_size),
    }
