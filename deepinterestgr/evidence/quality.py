"""QARM item quality: `q = Σ w_k ℓ_k / Σ w_k` with the DCIM confidences as weights."""

from __future__ import annotations

from collections.abc import Sequence


def quality_score(confidences: Sequence[float | None], labels: Sequence[int]) -> float:
    """Confidence-weighted share of descriptors the judge accepted.

    Weights are the miner's confidences; uniform when every confidence is None. A mix of present and absent
    confidences is an error (there is no honest weight for the missing ones). No descriptors -> 0.0 (the stage
    counts these items). All weights zero -> 0.0, since no descriptor carries any belief."""
    if len(confidences) != len(labels):
        raise ValueError(f"{len(confidences)} confidences but {len(labels)} labels; they must pair up")
    if not labels:
        return 0.0
    present = [c is not None for c in confidences]
    if any(present) and not all(present):
        raise ValueError("confidences mix numbers and None; give all or none (uniform weights)")
    for label in labels:
        if label not in (0, 1):
            raise ValueError(f"labels must be 0 or 1, got {label!r}")
    weights = [1.0] * len(labels) if not any(present) else [float(c) for c in confidences]
    if any(w < 0 for w in weights):
        raise ValueError(f"confidences must be non-negative, got {weights}")
    total = sum(weights)
    return sum(w * lab for w, lab in zip(weights, labels)) / total if total > 0 else 0.0
