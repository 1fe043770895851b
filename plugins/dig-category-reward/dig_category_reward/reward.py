"""Partial credit for generating an item from the target's categories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from deepinterestgr.rl.rewards.base import Reward, RewardBatch

CATEGORIES_KEY = "item_categories"


def categories_to_multi_hot(categories: Sequence[set[str]] | torch.Tensor) -> torch.Tensor:
    """[N, C] bool from per-item category sets (or a multi-hot tensor, passed through as bool)."""
    if isinstance(categories, torch.Tensor):
        if categories.ndim != 2:
            raise ValueError(f"extras[{CATEGORIES_KEY!r}] tensor must be multi-hot [N, C]; "
                             f"got {tuple(categories.shape)}")
        return categories.bool()
    vocab = {name: i for i, name in enumerate(sorted({c for cats in categories for c in cats}))}
    multi_hot = torch.zeros(len(categories), max(len(vocab), 1), dtype=torch.bool)
    for item, cats in enumerate(categories):
        for c in cats:
            multi_hot[item, vocab[c]] = True
    return multi_hot


class CategoryConsistencyReward(Reward):
    """|cats(gen) ∩ cats(target)| / |cats(target)|, in [0, 1]; 0 for invalid generations or uncategorised targets.

    Needs `extras["item_categories"]`: `list[set[str]]` indexed by catalog item id, or a multi-hot tensor [N, C].
    """

    requires: ClassVar[tuple[str, ...]] = (f"extras.{CATEGORIES_KEY}",)

    def __init__(self) -> None:
        # the conversion of a list of sets is cached per object: the catalog is the same on every step
        self._cache: tuple[Any, torch.Tensor] | None = None

    def _multi_hot(self, categories: Any) -> torch.Tensor:
        if isinstance(categories, torch.Tensor):
            return categories_to_multi_hot(categories)
        if self._cache is None or self._cache[0] is not categories:
            self._cache = (categories, categories_to_multi_hot(categories))
        return self._cache[1]

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        self.check_inputs(batch)
        multi_hot = self._multi_hot(batch.extras[CATEGORIES_KEY]).to(batch.generated_items.device).float()
        valid = batch.generated_items >= 0
        generated = multi_hot[batch.generated_items.clamp(min=0)]  # [B, G, C]
        target = multi_hot[batch.target_items]  # [B, C]
        shared = (generated * target[:, None, :]).sum(-1)
        total = target.sum(-1, keepdim=True)
        fraction = torch.where(total > 0, shared / total.clamp(min=1), torch.zeros_like(shared))
        return torch.where(valid, fraction, torch.zeros_like(fraction)).float()

    @classmethod
    def example_extras(cls, *, num_items: int, generator: torch.Generator) -> dict[str, Any]:
        names = ["Skin", "Hair", "Makeup", "Fragrance", "Tools", "Bath"]
        picks = torch.rand(num_items, len(names), generator=generator) < 0.4
        return {CATEGORIES_KEY: [{n for n, keep in zip(names, row) if keep} for row in picks.tolist()]}
