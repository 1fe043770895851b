"""The reward contract, shaped like a torchmetrics metric: one override and class-level metadata."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from deepinterestgr.init_args import RecordsInitArgs


@dataclass
class RewardBatch:
    """A group of G generated SIDs for each of B users.

    generated:        [B, G, L+1] long SID codes (L semantic levels + suffix column, -1 = no suffix)
    target:           [B, L+1] long SID codes of the target item
    generated_items:  [B, G] long catalog item id each generation decodes to, -1 when it is no catalog item
    target_items:     [B] long
    num_levels:       L (the suffix is excluded from prefix agreement)
    ranks:            [B, G] long position of each candidate in its group (0 = best), when the group comes from
                      beam search; None for sampled groups
    item_quality:     [N] float q_i in [0, 1] per catalog item (QARM), when the evidence stage computed it
    extras:           anything a third-party reward needs (e.g. item categories); documented by that reward
    """

    generated: torch.Tensor
    target: torch.Tensor
    generated_items: torch.Tensor
    target_items: torch.Tensor
    num_levels: int
    ranks: torch.Tensor | None = None
    item_quality: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> torch.Tensor:
        """[B, G] bool: the generation is the target item."""
        return self.generated_items == self.target_items[:, None]


class Reward(RecordsInitArgs, ABC):
    """Maps a `RewardBatch` to rewards [B, G] (float32)."""

    higher_is_better: ClassVar[bool] = True
    #: inclusive range of values this reward can take, checked by the contract test; an instance may set its own
    #: (QARMReward's is (0, alpha), CompositeReward's follows from its weights)
    bounds: ClassVar[tuple[float, float]] = (0.0, 1.0)

    #: inputs this reward needs beyond the always-present fields: "ranks", "item_quality" or "extras.<key>".
    #: The policy checks them before training starts (e.g. QARM without `<run>/evidence/quality.safetensors`).
    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def __call__(self, batch: RewardBatch) -> torch.Tensor: ...

    @classmethod
    def for_contract_test(cls) -> "Reward":
        """An instance for the shared contract test; override when the constructor has required arguments."""
        return cls()

    @classmethod
    def example_extras(cls, *, num_items: int, generator: torch.Generator) -> dict[str, Any]:
        """Random but valid `RewardBatch.extras` this reward needs, so contract tests can build a batch for it."""
        return {}

    def missing_inputs(self, batch: RewardBatch) -> list[str]:
        """The entries of `requires` that `batch` does not provide."""
        missing = []
        for need in self.requires:
            if need.startswith("extras."):
                present = need.removeprefix("extras.") in batch.extras
            else:
                present = getattr(batch, need, None) is not None
            if not present:
                missing.append(need)
        return missing

    def check_inputs(self, batch: RewardBatch) -> None:
        """Raise a ValueError naming what is missing, instead of failing somewhere inside `__call__`."""
        missing = self.missing_inputs(batch)
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs {', '.join(missing)} in the RewardBatch; "
                "see the reward's docstring for which stage produces it"
            )
