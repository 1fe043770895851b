"""MiniOneRec's rank-aware penalty for beam-search groups."""

from __future__ import annotations

from typing import ClassVar

import torch

from deepinterestgr.rl.rewards.base import Reward, RewardBatch


def rank_penalties(group_size: int) -> torch.Tensor:
    """[G] the penalty of a wrong candidate at rank r (0 = best): -(1/log2(r+2)) / sum_j 1/log2(j+2).

    NDCG-shaped and normalised so the penalties of a whole group sum to -1: a wrong candidate ranked above the
    target costs more than one ranked below it.
    """
    discounts = 1.0 / torch.log2(torch.arange(group_size, dtype=torch.float64) + 2.0)
    return (-discounts / discounts.sum()).float()


class RankPenaltyReward(Reward):
    """MiniOneRec-style rank penalty (their `ndcg_rule_reward`), values in [-1, 0].

    Only groups that contain the target are penalised (a group that missed the target carries no ranking signal):
    there, each wrong candidate at rank r gets `rank_penalties(G)[r]` and the target itself gets 0. Meant to be
    added to the exact-match reward. Needs `ranks` (beam-search position of each candidate), so it applies to
    `candidates: beam` groups only.
    """

    bounds: ClassVar[tuple[float, float]] = (-1.0, 0.0)
    requires: ClassVar[tuple[str, ...]] = ("ranks",)

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        self.check_inputs(batch)
        exact = batch.exact
        group_size = exact.shape[1]
        ranks = batch.ranks.long()
        if ranks.numel() and (ranks.min() < 0 or ranks.max() >= group_size):
            raise ValueError(f"RankPenaltyReward: ranks must lie in [0, {group_size}); "
                             f"got {ranks.min()}..{ranks.max()}")
        penalty = rank_penalties(group_size).to(exact.device)[ranks]
        group_hit = exact.any(dim=1, keepdim=True)
        return torch.where(group_hit & ~exact, penalty, torch.zeros_like(penalty))
