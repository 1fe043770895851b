"""Recall@K and NDCG@K of generated item lists, full-ranking protocol, DDP-correct (summed states).

One relevant item per user (leave-one-out), so NDCG@K = 1 / log2(rank + 2) for a hit at 0-based rank < K, else 0
(the ideal DCG is 1). A generated list may hold duplicates or padding (-1): duplicates count once, at their best
(first) rank, and later items move up; padding is not an item.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection


def hit_ranks(pred_items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank [B] of `target` [B] in the de-duplicated list `pred_items` [B, K]; -1 when absent."""
    if pred_items.ndim != 2 or target.shape != pred_items.shape[:1]:
        raise ValueError("expected pred_items [B, K] and target [B]; "
                         f"got {tuple(pred_items.shape)}, {tuple(target.shape)}")
    k = pred_items.shape[1]
    same = pred_items.unsqueeze(2) == pred_items.unsqueeze(1)  # [B, K, K]: item j equals item i
    earlier = torch.ones(k, k, dtype=torch.bool, device=pred_items.device).tril(-1)  # i < j
    duplicate = (same & earlier).any(-1)  # item j appeared before
    counted = (pred_items >= 0) & ~duplicate
    rank = torch.cumsum(counted.long(), dim=1) - 1
    hit = counted & (pred_items == target.unsqueeze(1))
    return torch.where(hit.any(1), (rank * hit).sum(1), torch.full_like(target, -1))


class _TopKMetric(Metric):
    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _gain(self, rank: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, pred_items: torch.Tensor, target: torch.Tensor) -> None:
        """`pred_items` [B, K'] best first (K' may exceed k), `target` [B] item ids."""
        rank = hit_ranks(pred_items, target)
        hit = (rank >= 0) & (rank < self.k)
        gain = torch.where(hit, self._gain(rank.clamp(min=0).double()), torch.zeros_like(rank, dtype=torch.float64))
        self.total += gain.sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class RecallAtK(_TopKMetric):
    """Fraction of users whose target is among the top-k generated items (= HR@k with one target)."""

    def _gain(self, rank: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(rank)


class NDCGAtK(_TopKMetric):
    """Mean 1/log2(rank+2) of the target's rank when within the top k, else 0."""

    def _gain(self, rank: torch.Tensor) -> torch.Tensor:
        return 1.0 / torch.log2(rank + 2.0)


def retrieval_metrics(ks: tuple[int, ...] = (5, 10)) -> dict[str, _TopKMetric]:
    """{"recall@5": RecallAtK(5), "ndcg@5": ..., ...} for a torchmetrics MetricCollection."""
    out: dict[str, _TopKMetric] = {}
    for k in ks:
        out[f"recall@{k}"] = RecallAtK(k)
        out[f"ndcg@{k}"] = NDCGAtK(k)
    return out


def retrieval_collection(ks: tuple[int, ...] = (5, 10), *, prefix: str = "") -> MetricCollection:
    """The metrics of `retrieval_metrics` as one collection, with compute groups OFF.

    Recall@k and NDCG@k have identically shaped states; torchmetrics' compute groups merge metrics whose states are
    equal after the first update (e.g. a first batch whose hits are all at rank 0), and from then on NDCG@k would be
    computed from Recall@k's state.
    """
    return MetricCollection(retrieval_metrics(ks), prefix=prefix, compute_groups=False)
