"""Tests of the third-party category reward, using the host's shared reward contract check."""

from __future__ import annotations

import pytest
import torch
from dig_category_reward import CategoryConsistencyReward

from deepinterestgr.rl.rewards.base import RewardBatch
from deepinterestgr.rl.rewards.testing import check_reward_contract


def _batch(categories, generated_items, target_items):
    generated_items = torch.tensor(generated_items)
    target_items = torch.tensor(target_items)
    codes = torch.zeros(*generated_items.shape, 4, dtype=torch.long)
    return RewardBatch(
        generated=codes,
        target=codes[:, 0],
        generated_items=generated_items,
        target_items=target_items,
        num_levels=3,
        extras={"item_categories": categories},
    )


def test_contract():
    check_reward_contract(CategoryConsistencyReward.for_contract_test())


def test_fraction_of_target_categories_shared():
    categories = [{"Skin", "Face"}, {"Skin"}, {"Hair"}, set()]
    batch = _batch(categories, [[0, 1, 2, -1], [0, 1, 2, 3]], [0, 3])
    out = CategoryConsistencyReward()(batch)
    # target 0 has {Skin, Face}: itself 1, item 1 shares Skin (1/2), item 2 nothing, invalid -> 0
    assert out[0].tolist() == [1.0, 0.5, 0.0, 0.0]
    # target 3 has no categories: nothing to be consistent with
    assert out[1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_multi_hot_tensor_equals_sets():
    categories = [{"a", "b"}, {"b"}, {"c"}]
    multi_hot = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    sets = CategoryConsistencyReward()(_batch(categories, [[0, 1, 2]], [0]))
    tensor = CategoryConsistencyReward()(_batch(multi_hot, [[0, 1, 2]], [0]))
    assert torch.equal(sets, tensor)


def test_missing_categories_is_a_clear_error():
    batch = _batch([], [[0]], [0])
    batch.extras.clear()
    with pytest.raises(ValueError, match="item_categories"):
        CategoryConsistencyReward()(batch)


def test_discovered_through_its_entry_point():
    from deepinterestgr.registry import Registry

    spec = Registry.load().get("reward", "category")
    assert spec.cls is CategoryConsistencyReward
    assert spec.source == "dig-category-reward"
