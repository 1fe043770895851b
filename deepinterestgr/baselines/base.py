"""What every baseline recommender does: fit on training sequences, then rank the whole catalog for histories.

The protocol (shared with the generative models, see `deepinterestgr.data.split`): chronological leave-one-out,
every catalog item is a candidate and the evaluator masks nothing. A method may choose not to recommend history
items (the no-repeat rule, `evaluation.evaluate(..., exclude_history=True)`): a model option selected on valid,
which the generator has too (`GeneratorModule(exclude_history=...)`), so no side gets it for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch


class SequenceRecommender(ABC):
    """A next-item recommender over dense item ids 0..num_items-1."""

    num_items: int

    @abstractmethod
    def fit(self, train_sequences: Sequence[Sequence[int]], *, num_items: int) -> "SequenceRecommender":
        """Learn from chronological item sequences (the part of each user's sequence before the target)."""

    @abstractmethod
    def recommend(self, histories: Sequence[Sequence[int]], *, k: int) -> torch.Tensor:
        """Top-k item ids [U, k] (long, best first, distinct) for each history (oldest first; may be empty)."""


def check_sequences(sequences: Sequence[Sequence[int]], num_items: int, *, what: str) -> None:
    """Raise ValueError naming the offending row when an item id is outside the catalog (never a silent wrong score)."""
    for row, seq in enumerate(sequences):
        for item in seq:
            if not 0 <= item < num_items:
                raise ValueError(
                    f"{what}: row {row} holds item id {item}, outside the catalog [0, {num_items}); "
                    "item ids must be the dense ids of data/catalog.jsonl"
                )
