"""Most-popular: every user gets the items with the most training interactions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepinterestgr.baselines.base import SequenceRecommender, check_sequences


def item_counts(sequences: Sequence[Sequence[int]], num_items: int) -> torch.Tensor:
    """Interactions per item [num_items] (float64) over all sequences."""
    flat = torch.tensor([item for seq in sequences for item in seq], dtype=torch.long)
    return torch.bincount(flat, minlength=num_items).double()


def top_by_score(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k ids of `scores` [..., N]; ties go to the smaller item id, so results do not depend on the sort kernel."""
    n = scores.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the catalog size), got {k}")
    # a stable sort keeps equal scores in id order
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[..., :k]


class MostPopular(SequenceRecommender):
    """Ranks items by their interaction count in the training sequences, the same list for every user."""

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def fit(self, train_sequences: Sequence[Sequence[int]], *, num_items: int) -> "MostPopular":
        check_sequences(train_sequences, num_items, what="most-popular training sequences")
        self.num_items = num_items
        self.counts = item_counts(train_sequences, num_items)
        return self

    def recommend(self, histories: Sequence[Sequence[int]], *, k: int) -> torch.Tensor:
        if self.counts is None:
            raise RuntimeError("MostPopular.recommend called before fit")
        return top_by_score(self.counts, k).expand(len(histories), k).clone()
