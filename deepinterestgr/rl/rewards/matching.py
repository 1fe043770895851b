"""Rule rewards that compare a generated SID with the target: exact item, catalog validity, shared prefix."""

from __future__ import annotations

import torch

from deepinterestgr.rl.rewards.base import Reward, RewardBatch


class ExactMatchReward(Reward):
    """1 when the generation decodes to the target item, else 0."""

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return batch.exact.float()


class ValidityReward(Reward):
    """1 when the generation decodes to a catalog item (any item), else 0.

    Under trie-constrained decoding every candidate is valid and this term is a constant (zero advantage); it matters
    for unconstrained sampling, where it teaches the policy the catalog.
    """

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        return (batch.generated_items >= 0).float()


def common_prefix_length(generated: torch.Tensor, target: torch.Tensor, num_levels: int) -> torch.Tensor:
    """[B, G] long: how many leading semantic levels of `generated` [B, G, >=L] equal `target` [B, >=L]."""
    same = generated[..., :num_levels] == target[:, None, :num_levels]
    # cumprod turns the first mismatch into zeros for every later level
    return same.long().cumprod(dim=-1).sum(dim=-1)


class PrefixReward(Reward):
    """LCP(gen, target) / L over the L semantic levels; the collision suffix is excluded.

    Partial credit for landing in the target's semantic neighbourhood (same coarse code, same first two codes, ...).
    """

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        lcp = common_prefix_length(batch.generated, batch.target, batch.num_levels)
        return lcp.float() / batch.num_levels
