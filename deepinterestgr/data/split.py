"""Chronological leave-one-out (the paper's protocol): per user, the last item is the test target, the
second-to-last the valid target, the rest is training history."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from deepinterestgr.data.schema import UserSequence


class Example(NamedTuple):
    """One next-item example: `history` (dense ids, oldest first, untruncated) → `target`."""

    user: str
    history: list[int]
    target: int


class LeaveOneOut(NamedTuple):
    train: list[int]  # items[:-2]: the training sequence
    valid: Example  # history items[:-2] → items[-2]
    test: Example  # history items[:-1] → items[-1]


def leave_one_out(sequence: UserSequence) -> LeaveOneOut:
    items = sequence.items
    if len(items) < 3:
        raise ValueError(
            f"user {sequence.user}: leave-one-out needs >= 3 interactions, got {len(items)}; "
            "prepare the data with min_interactions >= 3"
        )
    return LeaveOneOut(
        train=items[:-2],
        valid=Example(sequence.user, items[:-2], items[-2]),
        test=Example(sequence.user, items[:-1], items[-1]),
    )


def train_examples(sequences: Iterable[UserSequence]) -> Iterator[Example]:
    """Every next-item example inside the training part: history items[:i] → items[i] for 1 <= i < len-2."""
    for seq in sequences:
        train = leave_one_out(seq).train
        for i in range(1, len(train)):
            yield Example(seq.user, train[:i], train[i])


def eval_examples(sequences: Iterable[UserSequence], split: str) -> list[Example]:
    """The one valid or test example per user."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    return [getattr(leave_one_out(s), split) for s in sequences]


#: seed of the validation user sample; fixed (not the training seed) so every method and seed sees the same users
VALID_SAMPLE_SEED = 0


def validation_sample(num_users: int, max_users: int | None, *, seed: int = VALID_SAMPLE_SEED) -> list[int] | None:
    """Sorted indices of a seeded random sample of `max_users` users out of `num_users`, or None for all users.

    The first users of a dataset are not a sample (on Beauty users 0..2,999 are about half as easy as the average),
    so a validation subset is drawn at random; the same (num_users, max_users, seed) always gives the same users,
    for the generator, the policy and every baseline.
    """
    if max_users is None or max_users <= 0 or max_users >= num_users:
        return None
    import random

    return sorted(random.Random(seed).sample(range(num_users), max_users))
