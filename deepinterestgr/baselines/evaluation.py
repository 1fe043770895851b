"""Leave-one-out views of the sequences and full-ranking Recall@K / NDCG@K of a recommender's top-K lists.

Split protocol (as in BASELINES.md): a count-based model is fitted on everything before the target it predicts:
for the valid target on items[:-2] of every user, for the test target on items[:-1] (train + valid targets). A
model with an early-stopping rule (SASRec) is trained once on items[:-2] and selects on valid. Histories are the
last `max_history` items before the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from deepinterestgr.baselines.base import SequenceRecommender
from deepinterestgr.data.schema import UserSequence
from deepinterestgr.data.split import eval_examples
from deepinterestgr.generate.metrics import retrieval_metrics

SPLITS = ("valid", "test")
DEFAULT_KS = (5, 10)


class SplitView(NamedTuple):
    """What a model may see for one evaluation split: fit sequences [U][*], histories [U][<=max_history], targets [U]."""

    fit_sequences: list[list[int]]
    histories: list[list[int]]
    targets: list[int]


def split_view(sequences: Sequence[UserSequence], split: str, *, max_history: int = 20) -> SplitView:
    """The fit data and (history, target) pairs of `split` ("valid" or "test"); see the module doc."""
    examples = eval_examples(sequences, split)  # validates the split name and >= 3 items per user
    cut = 2 if split == "valid" else 1
    return SplitView(
        fit_sequences=[list(s.items[:-cut]) for s in sequences],
        histories=[list(e.history[-max_history:]) for e in examples],
        targets=[e.target for e in examples],
    )


def score_top_k(top_k: torch.Tensor, targets: Sequence[int] | torch.Tensor, *, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """{"recall@5": ..., "ndcg@5": ..., ...} of top-K lists [U, K] (best first) against targets [U]."""
    if top_k.shape[1] < max(ks):
        raise ValueError(f"top-K lists hold {top_k.shape[1]} items but recall/ndcg@{max(ks)} was asked")
    metrics = retrieval_metrics(tuple(ks))
    targets = torch.as_tensor(targets, dtype=torch.long)
    for metric in metrics.values():
        metric.update(top_k, targets)
    return {name: float(metric.compute()) for name, metric in metrics.items()}


def evaluate(recommender: SequenceRecommender, view: SplitView, *, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Full-ranking metrics of an already fitted recommender on one split view."""
    return score_top_k(recommender.recommend(view.histories, k=max(ks)), view.targets, ks=ks)
