"""The third-party reward package in plugins/dig-category-reward: one entry-point line, discovered by the real
entry-point machinery, usable by name in a composite reward."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import tomllib
import torch

from deepinterestgr.registry import Registry
from deepinterestgr.rl.rewards import CompositeReward, ExactMatchReward
from deepinterestgr.rl.rewards.testing import make_reward_batch

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "dig-category-reward"


@pytest.fixture(scope="module")
def installed():
    try:
        importlib.metadata.distribution("dig-category-reward")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("dig-category-reward is not installed: pip install -e plugins/dig-category-reward --no-deps")


def test_package_declares_one_entry_point():
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    assert project["name"] == "dig-category-reward"
    assert project["entry-points"] == {"deepinterestgr": {"category_reward": "dig_category_reward.plugin"}}


def test_entry_point_is_discovered_with_its_source(installed):
    registry = Registry.load()
    spec = registry.get("reward", "category")
    assert spec.source == "dig-category-reward"
    assert spec.cls.__name__ == "CategoryConsistencyReward"
    assert registry.get("reward", "CategoryConsistencyReward") is spec  # configs may name it by class


def test_plugin_reward_composes_with_builtins(installed):
    from dig_category_reward import CategoryConsistencyReward

    reward = CompositeReward(terms={"exact": ExactMatchReward(), "category": CategoryConsistencyReward()},
                             weights={"exact": 1.0, "category": 0.5})
    extras = CategoryConsistencyReward.example_extras(num_items=64, generator=torch.Generator().manual_seed(0))
    batch = make_reward_batch(extras=extras)
    parts = reward.components(batch)
    assert torch.allclose(reward(batch), parts["exact"] + 0.5 * parts["category"])
    assert reward.requires == ("extras.item_categories",)
