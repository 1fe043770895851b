"""QARM: the relevance-gated quality bonus of DeepInterestGR."""

from __future__ import annotations

from typing import ClassVar

import torch

from deepinterestgr.rl.rewards.base import Reward, RewardBatch


class QARMReward(Reward):
    """alpha * q_target * 1[generation == target], in [0, alpha].

    `q_i` is the item quality from the evidence stage (`<run>/evidence/quality.safetensors`, key "quality"): the
    confidence-weighted fraction of the item's intent descriptors judged specific, actionable and grounded. The gate
    is the point: semantic quality never rewards a fluent but wrong item, it only sharpens credit for hits on
    well-described targets.
    """

    requires: ClassVar[tuple[str, ...]] = ("item_quality",)

    def __init__(self, *, alpha: float = 0.5) -> None:
        if not alpha >= 0:
            raise ValueError(f"QARMReward: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.bounds = (0.0, self.alpha)

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        self.check_inputs(batch)
        quality = batch.item_quality.to(batch.generated_items.device).float()
        target_quality = quality[batch.target_items]  # [B]
        if not bool(((target_quality >= 0) & (target_quality <= 1)).all()):
            raise ValueError("QARMReward: item quality must lie in [0, 1]; rerun the evidence stage's quality judge")
        return self.alpha * target_quality[:, None] * batch.exact.float()
