"""GRPO math against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from deepinterestgr.rl.grpo import group_advantages, grpo_loss, k3_kl


def test_advantages_are_standardised_within_each_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    adv = group_advantages(rewards)
    # row 0: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / 0.57735 = +-0.8660
    s = math.sqrt(1 / 3)
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-6), atol=1e-6)
    # row 1: all equal -> no signal
    assert torch.equal(adv[1], torch.zeros(4))
    # row 2: mean 0.75, unbiased std = sqrt((3*0.5625 + 5.0625)/3) = 1.5
    assert torch.allclose(adv[2], torch.tensor([-0.75, -0.75, -0.75, 2.25]) / (1.5 + 1e-6), atol=1e-6)
    # groups are independent: shifting one row changes nothing in the others
    shifted = rewards.clone()
    shifted[0] += 10
    assert torch.allclose(group_advantages(shifted)[1:], adv[1:])
    assert torch.allclose(group_advantages(shifted)[0], adv[0], atol=1e-5)


def test_single_candidate_group_has_zero_advantage():
    assert torch.equal(group_advantages(torch.tensor([[3.0], [1.0]])), torch.zeros(2, 1))


def test_k3_kl_is_zero_at_equality_and_matches_formula():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    kl = k3_kl(logp, ref)
    # ratio ref/pi = 0.5: 0.5 - log 0.5 - 1 = 0.19315
    assert kl[0, 0].item() == pytest.approx(0.5 - math.log(0.5) - 1, abs=1e-6)
    assert kl[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert (k3_kl(torch.randn(5, 4), torch.randn(5, 4)) >= 0).all()


def test_loss_on_policy_is_minus_mean_advantage_plus_kl():
    # ratio = 1 (old = current): surrogate = A per token; loss = -(mean A - beta * mean KL)
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 1.0]]))
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.25, 1.0]]))
    adv = torch.tensor([1.0, -3.0])
    out = grpo_loss(logp, logp, ref, adv, beta=0.1)
    kl_00 = 0.5 - math.log(0.5) - 1
    expected_kl = (kl_00 / 2 + 0.0) / 2
    assert out.surrogate.item() == pytest.approx(-1.0)
    assert out.kl.item() == pytest.approx(expected_kl, abs=1e-6)
    assert out.loss.item() == pytest.approx(1.0 + 0.1 * expected_kl, abs=1e-6)
    assert out.clip_fraction.item() == 0.0


def test_clipping_caps_the_ratio_in_the_direction_of_the_advantage():
    old = torch.log(torch.tensor([[0.5], [0.5], [0.5], [0.5]]))
    new = torch.log(torch.tensor([[0.8], [0.8], [0.2], [0.2]]))  # ratios 1.6, 1.6, 0.4, 0.4
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = grpo_loss(new, old, new, adv, clip_eps=0.2, beta=0.0)
    # per sequence min(r*A, clip(r)*A): 1.2 (clipped), -1.6, 0.4, -0.8 (clipped)
    assert out.surrogate.item() == pytest.approx((1.2 - 1.6 + 0.4 - 0.8) / 4, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(0.5)


def test_gradient_pushes_up_positive_advantage_tokens():
    logits = torch.zeros(2, 3, requires_grad=True)
    logp = torch.log_softmax(logits, -1)[:, :1]  # [2, 1]: the log-prob of token 0
    out = grpo_loss(logp, logp.detach(), logp.detach(), torch.tensor([1.0, -1.0]), beta=0.0)
    out.loss.backward()
    assert logits.grad[0, 0] < 0 < logits.grad[1, 0]  # descent raises token 0 for A>0, lowers it for A<0


def test_mask_excludes_tokens():
    logp = torch.log(torch.tensor([[0.5, 0.1]]))
    ref = torch.log(torch.tensor([[0.5, 0.9]]))
    masked = grpo_loss(logp, logp, ref, torch.tensor([1.0]), mask=torch.tensor([[True, False]]))
    assert masked.kl.item() == pytest.approx(0.0)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))


def test_masked_candidates_are_left_out_of_the_group_statistics():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 5.0]])
    adv = group_advantages(rewards, mask=torch.tensor([[True, True, True, False]]))
    assert torch.allclose(adv[:, :3], group_advantages(rewards[:, :3]))
    assert adv[0, 3] == 0
    # one real candidate is no group
    assert torch.equal(group_advantages(rewards, mask=torch.tensor([[True, False, False, False]])), torch.zeros(1, 4))


def test_fully_masked_sequences_do_not_dilute_the_loss():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    adv = torch.tensor([2.0, 0.0])
    mask = torch.tensor([[True, True], [False, False]])
    out = grpo_loss(logp, logp, logp, adv, mask=mask)
    assert out.surrogate.item() == pytest.approx(2.0)


def test_qarm_factor_cancels_in_scaled_advantages_but_not_in_unscaled_ones():
    """QARM with the exact reward is (1 + alpha * q_target) * exact: one factor per user's group. GRPO's std
    divides it out (QARM then changes nothing, as measured on Beauty); Dr. GRPO's unscaled advantages keep it."""
    exact = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    q_target = torch.tensor([[1.0], [0.2]])
    qarm = (1 + 0.5 * q_target) * exact
    assert torch.allclose(group_advantages(qarm), group_advantages(exact), atol=1e-5)
    unscaled, plain = group_advantages(qarm, scale=False), group_advantages(exact, scale=False)
    assert torch.allclose(unscaled, (1 + 0.5 * q_target) * plain)
    assert unscaled[0, 0] > plain[0, 0]  # the well-judged target's hit weighs more
    assert torch.allclose(unscaled.sum(dim=1), torch.zeros(2), atol=1e-6)  # still centred per group
