"""Reward plugins: the shared contract over every registered reward, and hand-made batches per reward."""

from __future__ import annotations

import math

import pytest
import torch

from deepinterestgr.registry import get_registry
from deepinterestgr.rl.rewards import (
    CompositeReward,
    ExactMatchReward,
    PrefixReward,
    QARMReward,
    RankPenaltyReward,
    Reward,
    RewardBatch,
    ValidityReward,
)
from deepinterestgr.rl.rewards.rank import rank_penalties
from deepinterestgr.rl.rewards.testing import check_reward_contract, make_reward_batch

REWARD_SPECS = get_registry().specs("reward")


@pytest.mark.parametrize("spec", REWARD_SPECS, ids=[s.name for s in REWARD_SPECS])
def test_every_registered_reward_meets_the_contract(spec):
    check_reward_contract(spec.cls.for_contract_test())


def test_builtins_are_registered():
    assert {"exact", "valid", "prefix", "rank", "qarm", "composite"} <= set(get_registry().list("reward"))


def test_contract_check_catches_a_broken_reward():
    class OutOfBoundsReward(ExactMatchReward):
        def __call__(self, batch):
            return super().__call__(batch) * 2

    with pytest.raises(AssertionError, match="outside bounds"):
        check_reward_contract(OutOfBoundsReward())


def hand_batch() -> RewardBatch:
    """Target of user 0 is item 0 = (1,2,3); of user 1, item 4 = (5,5,5). L = 3, one suffix column."""
    generated = torch.tensor(
        [
            [[1, 2, 3, -1], [1, 2, 0, -1], [1, 7, 3, -1], [9, 2, 3, -1]],  # exact, LCP 2, LCP 1, LCP 0
            [[5, 5, 4, -1], [5, 5, 5, 0], [0, 0, 0, -1], [5, 9, 9, -1]],  # LCP 2, same codes + suffix 0 (LCP 3), ...
        ]
    )
    return RewardBatch(
        generated=generated,
        target=torch.tensor([[1, 2, 3, -1], [5, 5, 5, 1]]),
        generated_items=torch.tensor([[0, 1, 2, -1], [3, 5, 6, -1]]),
        target_items=torch.tensor([0, 4]),
        num_levels=3,
        ranks=torch.tensor([[1, 0, 2, 3], [0, 1, 2, 3]]),
        item_quality=torch.tensor([0.8, 0.1, 0.2, 0.3, 0.6, 0.5, 0.4]),
    )


def test_exact_valid_prefix_on_a_hand_made_batch():
    batch = hand_batch()
    assert ExactMatchReward()(batch).tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert ValidityReward()(batch).tolist() == [[1, 1, 1, 0], [1, 1, 1, 0]]
    expected_lcp = torch.tensor([[3, 2, 1, 0], [2, 3, 0, 1]]) / 3
    # the suffix is excluded: user 1's candidate 1 shares all 3 semantic codes though its suffix differs
    assert torch.allclose(PrefixReward()(batch), expected_lcp)


def test_qarm_is_alpha_q_on_exact_and_zero_otherwise():
    batch = hand_batch()
    out = QARMReward(alpha=0.5)(batch)
    assert out[0, 0].item() == pytest.approx(0.5 * 0.8)
    assert out[0, 1:].abs().sum() == 0 and out[1].abs().sum() == 0  # wrong items never get the bonus
    # even a perfect-quality catalog gives nothing to non-target generations
    batch.item_quality = torch.ones(7)
    assert (QARMReward(alpha=0.5)(batch)[~batch.exact] == 0).all()


def test_qarm_without_quality_is_a_clear_error():
    batch = hand_batch()
    batch.item_quality = None
    with pytest.raises(ValueError, match="item_quality"):
        QARMReward()(batch)


def test_qarm_rejects_quality_outside_unit_interval():
    batch = hand_batch()
    batch.item_quality = batch.item_quality * 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        QARMReward()(batch)


def test_composite_equals_the_paper_formula():
    batch = hand_batch()
    lam_valid, lam_pref, alpha = 0.1, 0.3, 0.5
    out = CompositeReward.paper(lambda_valid=lam_valid, lambda_prefix=lam_pref, alpha=alpha)(batch)
    exact = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float)
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.float)
    lcp = torch.tensor([[3, 2, 1, 0], [2, 3, 0, 1]], dtype=torch.float)
    q_target = torch.tensor([0.8, 0.6])[:, None]
    expected = exact + lam_valid * valid + lam_pref * lcp / 3 + alpha * q_target * exact
    assert torch.allclose(out, expected)
    assert out[0, 0].item() == pytest.approx(1 + 0.1 + 0.3 + 0.4)


def test_composite_terms_are_typed_bounds_and_inputs_follow_them():
    reward = CompositeReward(terms={"exact": ExactMatchReward(), "rank": RankPenaltyReward()})
    assert reward.weights == {"exact": 1.0, "rank": 1.0}  # 1 per term unless weighted
    assert reward.bounds == (-1.0, 1.0)
    assert reward.requires == ("ranks",)
    assert set(reward.components(hand_batch())) == {"exact", "rank"}
    with pytest.raises(ValueError, match="weights given for"):
        CompositeReward(terms={"exact": ExactMatchReward()}, weights={"qarm": 1.0})
    with pytest.raises(TypeError, match="must be Reward objects"):
        CompositeReward(terms={"exact": "exact"})
    with pytest.raises(ValueError, match="is empty"):
        CompositeReward(terms={})


def test_composite_takes_a_reward_no_registry_knows(fresh_registry):
    """A term is any Reward object: nothing is resolved through the (global or a test-local) plugin registry."""

    class Half(Reward):
        bounds = (0.0, 0.5)

        def __call__(self, batch):
            return torch.full(batch.generated.shape[:2], 0.5)

    reward = CompositeReward(terms={"exact": ExactMatchReward(), "half": Half()}, weights={"half": 2.0})
    batch = hand_batch()
    assert torch.allclose(reward(batch), ExactMatchReward()(batch).float() + 1.0)
    assert reward.bounds == (0.0, 2.0)


def test_rank_penalty_follows_minionerec():
    penalties = rank_penalties(4)
    discounts = [1 / math.log2(r + 2) for r in range(4)]
    assert torch.allclose(penalties, torch.tensor([-d / sum(discounts) for d in discounts]))
    assert penalties.sum().item() == pytest.approx(-1.0)
    out = RankPenaltyReward()(hand_batch())
    # user 0 hit the target (rank 1): the others are penalised by their ranks 0, 2, 3; the target gets 0
    assert torch.allclose(out[0], torch.stack([torch.tensor(0.0), penalties[0], penalties[2], penalties[3]]))
    # user 1 missed: no ranking signal, all zero
    assert out[1].abs().sum() == 0


def test_rank_penalty_needs_ranks():
    batch = hand_batch()
    batch.ranks = None
    with pytest.raises(ValueError, match="ranks"):
        RankPenaltyReward()(batch)


def test_random_batches_contain_every_kind_of_candidate():
    batch = make_reward_batch(batch_size=16, group_size=8, seed=3)
    lcp = PrefixReward()(batch) * batch.num_levels
    assert batch.exact.any() and (batch.generated_items < 0).any()
    assert ((lcp > 0) & (lcp < batch.num_levels)).any()  # partial prefix matches
