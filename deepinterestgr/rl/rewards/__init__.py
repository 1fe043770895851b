"""Reward plugins for the GRPO policy. Built-ins are registered through the plugin hooks
(see deepinterestgr.registry.builtins), exactly as a third-party package registers its own."""

from deepinterestgr.rl.rewards.base import Reward, RewardBatch
from deepinterestgr.rl.rewards.composite import CompositeReward
from deepinterestgr.rl.rewards.matching import ExactMatchReward, PrefixReward, ValidityReward
from deepinterestgr.rl.rewards.qarm import QARMReward
from deepinterestgr.rl.rewards.rank import RankPenaltyReward

__all__ = [
    "CompositeReward",
    "ExactMatchReward",
    "PrefixReward",
    "QARMReward",
    "RankPenaltyReward",
    "Reward",
    "RewardBatch",
    "ValidityReward",
]


def register_builtins(register) -> None:
    register("exact", ExactMatchReward)
    register("valid", ValidityReward, aliases=("validity",))
    register("prefix", PrefixReward, aliases=("lcp",))
    register("rank", RankPenaltyReward, aliases=("ndcg_rank",))
    register("qarm", QARMReward)
    register("composite", CompositeReward)
