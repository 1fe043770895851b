"""Leave-one-out views of the sequences and full-ranking Recall@K / NDCG@K of a recommender's top-K lists.

Split protocols (BASELINES.md). One protocol holds for every row of a table, generator included:

- ``"train"`` (the default, TIGER's): every model is fitted on items[:-2] of every user, for both splits; the test
  history items[:-1] reads the valid item but nothing is fitted on it.
- ``"train+valid"``: for the test split, count models are refitted on items[:-1] (train + valid targets). It only
  makes sense in its own labelled table where every method, the generator included, is refitted the same way.

Models with an early-stopping rule (SASRec) train once on items[:-2] and select on valid. Histories are the last
`max_history` items before the target.
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
PROTOCOLS = ("train", "train+valid")
DEFAULT_KS = (5, 10)


class SplitView(NamedTuple):
    """What a model may see for one evaluation split: fit sequences [U][*], histories [U][<=max_history],
    targets [U]."""

    fit_sequences: list[list[int]]
    histories: list[list[int]]
    targets: list[int]


def split_view(sequences: Sequence[UserSequence], split: str, *, max_history: int = 20,
               protocol: str = "train") -> SplitView:
    """The fit data and (history, target) pairs of `split` ("valid" or "test") under `protocol`; see the module doc."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    examples = eval_examples(sequences, split)  # validates the split name and >= 3 items per user
    cut = 1 if split == "test" and protocol == "train+valid" else 2
    return SplitView(
        fit_sequences=[list(s.items[:-cut]) for s in sequences],
        histories=[list(e.history[-max_history:]) for e in examples],
        targets=[e.target for e in examples],
    )


def score_top_k(top_k: torch.Tensor, targets: Sequence[int] | torch.Tensor, *,
                ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """{"recall@5": ..., "ndcg@5": ..., ...} of top-K lists [U, K] (best first) against targets [U]."""
    if top_k.shape[1] < max(ks):
        raise ValueError(f"top-K lists hold {top_k.shape[1]} items but recall/ndcg@{max(ks)} was asked")
    metrics = retrieval_metrics(tuple(ks))
    targets = torch.as_tensor(targets, dtype=torch.long)
    for metric in metrics.values():
        metric.update(top_k, targets)
    return {name: float(metric.compute()) for name, metric in metrics.items()}


def drop_history_items(top: torch.Tensor, histories: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """The first `k` items [U, k] of each ranked list `top` [U, K] that are not in that user's history (-1 where
    fewer remain): a recommender's "never recommend what the user already has" rule, applied after ranking."""
    out = torch.full((len(histories), k), -1, dtype=torch.long)
    for u, (row, hist) in enumerate(zip(top.tolist(), histories)):
        seen = set(hist)
        kept = [i for i in row if i not in seen and i >= 0][:k]
        out[u, : len(kept)] = torch.tensor(kept, dtype=torch.long)
    return out


def evaluate(recommender: SequenceRecommender, view: SplitView, *, ks: Sequence[int] = DEFAULT_KS,
             exclude_history: bool = False) -> dict[str, float]:
    """Full-ranking metrics of an already fitted recommender on one split view. With `exclude_history`, the
    recommender's lists skip the items of each user's history (a model option selected on valid like any other:
    on 5-core Amazon data a target is almost never a history item, so a repeat is a wasted slot)."""
    k = max(ks)
    if not exclude_history:
        return score_top_k(recommender.recommend(view.histories, k=k), view.targets, ks=ks)
    longest = max((len(h) for h in view.histories), default=0)
    top = recommender.recommend(view.histories, k=min(k + longest, recommender.num_items))
    return score_top_k(drop_history_items(top, view.histories, k), view.targets, ks=ks)
