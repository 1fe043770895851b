"""Category-consistency reward: an example third-party DeepInterestGR plugin package."""

from dig_category_reward.reward import CategoryConsistencyReward

__all__ = ["CategoryConsistencyReward"]
