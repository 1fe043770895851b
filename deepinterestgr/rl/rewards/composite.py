"""A weighted sum of named rewards, so a whole reward recipe is one config block."""

from __future__ import annotations

import torch

from deepinterestgr.rl.rewards.base import Reward, RewardBatch

#: Our defaults for the paper recipe. The paper fixes alpha = 0.5; its lambda values are not in the sources we
#: have, so these are ours: small enough that an exact hit (>= 1) always outranks any near miss (< 0.3).
PAPER_LAMBDA_VALID = 0.1
PAPER_LAMBDA_PREFIX = 0.2
PAPER_ALPHA = 0.5


class CompositeReward(Reward):
    """sum_k weights[k] * terms[k](batch): a whole reward recipe in one config block.

    `terms` maps a name (used in logs and `weights`) to a reward object: in a config, each is a
    `{class_path, init_args}` block naming any Reward subclass, built-in or from a plugin package; nothing is
    looked up in the global plugin registry. `weights` defaults to 1 per term. The paper's reward
    `R = 1[exact] + lambda_valid * 1[valid] + lambda_pref * LCP/L + alpha * q_t * 1[exact]` is
    `CompositeReward.paper()`:

        CompositeReward(terms={"exact": ExactMatchReward(), "valid": ValidityReward(), "prefix": PrefixReward(),
                               "qarm": QARMReward(alpha=0.5)},
                        weights={"exact": 1, "valid": 0.1, "prefix": 0.2, "qarm": 1})

    Bounds and required inputs are derived from the terms.
    """

    def __init__(self, *, terms: dict[str, Reward], weights: dict[str, float] | None = None) -> None:
        if not terms:
            raise ValueError("CompositeReward: `terms` is empty; give at least one reward, e.g. "
                             "{exact: {class_path: ExactMatchReward}}")
        not_rewards = {name: type(t).__name__ for name, t in terms.items() if not isinstance(t, Reward)}
        if not_rewards:
            raise TypeError(f"CompositeReward: terms must be Reward objects; got {not_rewards}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(f"CompositeReward: weights given for {unknown}, which are not among the terms "
                             f"{sorted(terms)}")
        self.terms: dict[str, Reward] = dict(terms)
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.terms}
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
        from deepinterestgr.rl.rewards.matching import ExactMatchReward, PrefixReward, ValidityReward
        from deepinterestgr.rl.rewards.qarm import QARMReward

        return cls(terms={"exact": ExactMatchReward(), "valid": ValidityReward(), "prefix": PrefixReward(),
                          "qarm": QARMReward(alpha=alpha)},
                   weights={"exact": 1.0, "valid": lambda_valid, "prefix": lambda_prefix, "qarm": 1.0})

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
        return (f"CompositeReward(terms={ {n: type(t).__name__ for n, t in self.terms.items()} }, "
                f"weights={self.weights})")
