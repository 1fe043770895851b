"""The module the `deepinterestgr` entry point names; pluggy collects its hook implementations."""

from deepinterestgr.registry import hookimpl


@hookimpl
def dig_register_reward(register):
    from dig_category_reward.reward import CategoryConsistencyReward

    register("category", CategoryConsistencyReward, aliases=("category_consistency",))
