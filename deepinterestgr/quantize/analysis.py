"""How much known ground truth (the synthetic catalog's latent intents) a SID table carries."""

from __future__ import annotations

import torch
from torchmetrics.functional.clustering import normalized_mutual_info_score


def purity(clusters: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of items whose label is the majority label of their cluster (1.0 = every cluster is pure)."""
    clusters, labels = clusters.long(), labels.long()
    _, cluster_idx = torch.unique(clusters, return_inverse=True)
    num_labels = int(labels.max()) + 1
    counts = torch.zeros(int(cluster_idx.max()) + 1, num_labels, dtype=torch.long)
    counts.index_put_((cluster_idx, labels), torch.ones_like(labels), accumulate=True)
    return float(counts.max(dim=1).values.sum()) / len(labels)


def prefix_ids(codes: torch.Tensor, depth: int) -> torch.Tensor:
    """One id per distinct prefix of the first `depth` levels of codes [N, L]."""
    return torch.unique(codes[:, :depth], dim=0, return_inverse=True)[1]


def sid_label_information(codes: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Purity and normalised mutual information of SID prefixes (level 0, levels 0-1) with item labels."""
    out: dict[str, float] = {}
    for depth in range(1, min(2, codes.shape[1]) + 1):
        clusters = prefix_ids(codes, depth)
        out[f"purity@L{depth}"] = purity(clusters, labels)
        out[f"nmi@L{depth}"] = float(normalized_mutual_info_score(clusters, labels.long()))
    return out
