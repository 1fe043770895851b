"""GRPO (DeepSeekMath, arXiv 2402.03300) for SID generation: group-relative advantages, the clipped surrogate and
the k3 KL penalty to a frozen reference policy.

Per sequence o_i of a group of G candidates for one user, with per-token ratio rho_t = pi(o_t) / pi_old(o_t):

    J = mean_i mean_t [ min(rho_t * A_i, clip(rho_t, 1 - eps, 1 + eps) * A_i) - beta * KL_t ]
    A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-6)
    KL_t = pi_ref(o_t) / pi(o_t) - log(pi_ref(o_t) / pi(o_t)) - 1        (Schulman's k3 estimator)

k3 is an unbiased, always non-negative estimate of KL(pi || pi_ref) from samples of pi, with lower variance than
-log ratio. The loss is -J. `PolicyModule` optimises each generated batch `ppo_epochs` times (GRPO's mu) against the
log-probs of the policy that generated it: on the first epoch rho = 1 and the clip is idle, from the second on the
ratio moves and the clip bounds the update.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

ADVANTAGE_EPS = 1e-6


def group_advantages(rewards: torch.Tensor, *, mask: torch.Tensor | None = None,
                     eps: float = ADVANTAGE_EPS, scale: bool = True) -> torch.Tensor:
    """[B, G] advantages: rewards centred within each user's group (row), and divided by the group's std when
    `scale` (GRPO; TRL's `scale_rewards="group"`).

    The std is the unbiased sample std (as in TRL's GRPOTrainer); a group whose rewards are all equal gets zero
    advantages (no signal), and so does a group of fewer than two candidates. `mask` [B, G] (True = a real
    candidate) leaves padding out of the group statistics and gives it advantage 0.

    Dividing by the std makes the advantages blind to any per-group factor on the rewards: QARM's gated bonus turns
    an exact-match reward into (1 + alpha * q_target) * exact, the same factor for every candidate of a user, so
    with `scale=True` it changes nothing. `scale=False` (Dr. GRPO's unscaled advantages, Liu et al. 2025) keeps
    the factor: a hit on a well-judged target then weighs more than one on a poorly judged target.
    """
    if rewards.ndim != 2:
        raise ValueError(f"group_advantages: rewards must be [B, G], got {tuple(rewards.shape)}")
    rewards = rewards.float()
    weights = torch.ones_like(rewards) if mask is None else mask.float()
    count = weights.sum(dim=1, keepdim=True)
    mean = (rewards * weights).sum(dim=1, keepdim=True) / count.clamp(min=1)
    var = ((rewards - mean) ** 2 * weights).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    advantages = (rewards - mean) / (var.sqrt() + eps) if scale else rewards - mean
    return torch.where((count >= 2) & (weights > 0), advantages, torch.zeros_like(advantages))


def k3_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1, >= 0."""
    delta = ref_log_probs - log_probs
    return torch.exp(delta) - delta - 1


class GRPOLoss(NamedTuple):
    loss: torch.Tensor  # scalar, to minimise: -(surrogate - beta * kl)
    surrogate: torch.Tensor  # scalar, mean clipped surrogate
    kl: torch.Tensor  # scalar, mean per-token k3 KL to the reference
    clip_fraction: torch.Tensor  # scalar, fraction of tokens where the clipped branch is the active one


def grpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    beta: float = 0.001,
    mask: torch.Tensor | None = None,
) -> GRPOLoss:
    """GRPO loss over N sequences of S tokens.

    log_probs      [N, S] per-token log-probs under the policy being optimised (with grad)
    old_log_probs  [N, S] the same tokens under the policy that generated them (no grad)
    ref_log_probs  [N, S] the same tokens under the frozen reference policy (no grad)
    advantages     [N]    one advantage per sequence (from `group_advantages(...).flatten()`)
    mask           [N, S] bool, tokens that count (all, for fixed-length SIDs)
    """
    if not (log_probs.shape == old_log_probs.shape == ref_log_probs.shape) or log_probs.ndim != 2:
        raise ValueError(
            "grpo_loss: log-prob tensors must share one [N, S] shape; got "
            f"{tuple(log_probs.shape)}, {tuple(old_log_probs.shape)}, {tuple(ref_log_probs.shape)}"
        )
    if advantages.shape != log_probs.shape[:1]:
        raise ValueError(f"grpo_loss: advantages must be [N]={log_probs.shape[0]}, got {tuple(advantages.shape)}")
    log_probs, old_log_probs, ref_log_probs = log_probs.float(), old_log_probs.float(), ref_log_probs.float()
    adv = advantages.float()[:, None]
    ratio = torch.exp(log_probs - old_log_probs.detach())
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    kl = k3_kl(log_probs, ref_log_probs.detach())
    per_token = surrogate - beta * kl
    is_clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
    weights = torch.ones_like(per_token) if mask is None else mask.float()
    # mean over each sequence's tokens, then over sequences (DeepSeekMath's 1/G sum_i 1/|o_i| sum_t)
    tokens = weights.sum(dim=1)
    counted = tokens > 0  # a sequence with no counted token (a padding beam) is left out, not averaged in as 0

    def seq_mean(x: torch.Tensor) -> torch.Tensor:
        per_sequence = (x * weights).sum(dim=1) / tokens.clamp(min=1)
        return (per_sequence * counted).sum() / counted.sum().clamp(min=1)

    objective = seq_mean(per_token)
    return GRPOLoss(
        loss=-objective,
        surrogate=seq_mean(surrogate).detach(),
        kl=seq_mean(kl).detach(),
        clip_fraction=seq_mean(is_clipped.float()).detach(),
    )
