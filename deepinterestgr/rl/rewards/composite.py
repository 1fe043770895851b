"""A weighted sum of named rewards, so a whole reward recipe is one config block."""

from __future__ import annotations

from typing import Any

import torch

from deepinterestgr.rl.rewards.base import Reward, RewardBatch

#: Our defaults for the paper recipe. The paper fixes alpha = 0.5; its lambda values are not in the sources we
#: have, so these are ours: small enough that an exact hit (>= 1) always outranks any near miss (< 0.3).
PAPER_LAMBDA_VALID = 0.1
PAPER_LAMBDA_PREFIX = 0.2
PAPER_ALPHA = 0.5


class CompositeReward(Reward):
    """sum_k weights[k] * reward_k(batch), each term a registered reward built by name.

    `weights` maps registered reward names (built-in or from a plugin package) to weights; `options` holds
    constructor arguments per name. The paper's reward
    `R = 1[exact] + lambda_valid * 1[valid] + lambda_pref * LCP/L + alpha * q_t * 1[exact]` is

        CompositeReward(weights={"exact": 1, "valid": 0.1, "prefix": 0.2, "qarm": 1}, options={"qarm": {"alpha": 0.5}})

    or `CompositeReward.paper()`. Bounds and required inputs are derived from the terms.
    """

    def __init__(self, *, weights: dict[str, float], options: dict[str, dict[str, Any]] | None = None) -> None:
        from deepinterestgr.registry import get_registry

        if not weights:
            raise ValueError("CompositeReward: `weights` is empty; name at least one registered reward")
        options = dict(options or {})
        unknown = sorted(set(options) - set(weights))
        if unknown:
            raise ValueError(f"CompositeReward: options given for {unknown}, which have no weight in `weights`")
        registry = get_registry()
        self.weights = {name: float(w) for name, w in weights.items()}
        self.options = options
        self.terms: dict[str, Reward] = {
            name: registry.create("reward", name, **options.get(name, {})) for name in self.weights
        }
        low = sum(min(w * t.bounds[0], w * t.bounds[1]) for w, t in zip(self.weights.values(), self.terms.values()))
        high = sum(max(w * t.bounds[0], w * t.bounds[1]) for w, t in zip(self.weights.values(), self.terms.values()))
        self.bounds = (low, high)
        self.requires = tuple(dict.fromkeys(need for term in self.terms.values() for need in term.requires))

    @classmethod
    def paper(
        cls,
        *,
        lambda_valid: float = PAPER_LAMBDA_VALID,
        lambda_prefix: float = PAPER_LAMBDA_PREFIX,
        alpha: float = PAPER_ALPHA,
    ) -> "CompositeReward":
        """The DeepInterestGR reward: exact + lambda_valid * valid + lambda_prefix * LCP/L + QARM(alpha)."""
        return cls(
            weights={"exact": 1.0, "valid": lambda_valid, "prefix": lambda_prefix, "qarm": 1.0},
            options={"qarm": {"alpha": alpha}},
        )

    @classmethod
    def for_contract_test(cls) -> "CompositeReward":
        return cls.paper()

    def components(self, batch: RewardBatch) -> dict[str, torch.Tensor]:
        """Each term's unweighted reward [B, G], by name (logged separately by the policy)."""
        return {name: term(batch) for name, term in self.terms.items()}

    def __call__(self, batch: RewardBatch) -> torch.Tensor:
        self.check_inputs(batch)
        parts = self.components(batch)
        return sum(self.weights[name] * value.float() for name, value in parts.items())

    def __repr__(self) -> str:
        return f"CompositeReward(weights={self.weights}, options={self.options})"
