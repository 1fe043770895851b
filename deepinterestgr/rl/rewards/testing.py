"""Contract-test helpers for reward plugins, importable by third-party packages.

    from deepinterestgr.rl.rewards.testing import check_reward_contract
    def test_my_reward_contract():
        check_reward_contract(MyReward.for_contract_test())
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from deepinterestgr.quantize.sid import NO_SUFFIX
from deepinterestgr.rl.rewards.base import Reward, RewardBatch


def make_catalog_sids(*, num_items: int, num_levels: int, codebook_size: int,
                      generator: torch.Generator) -> torch.Tensor:
    """[num_items, L+1] distinct random SIDs (no suffix needed since the L codes are already distinct)."""
    space = codebook_size**num_levels
    if num_items > space:
        raise ValueError(f"{num_items} items do not fit in {codebook_size}^{num_levels} distinct SIDs")
    flat = torch.randperm(space, generator=generator)[:num_items]
    digits = [(flat // codebook_size**level) % codebook_size for level in reversed(range(num_levels))]
    codes = torch.stack(digits, dim=1)
    return torch.cat([codes, torch.full((num_items, 1), NO_SUFFIX, dtype=torch.long)], dim=1)


def make_reward_batch(
    *,
    batch_size: int = 4,
    group_size: int = 8,
    num_levels: int = 3,
    codebook_size: int = 8,
    num_items: int = 64,
    p_exact: float = 0.2,
    p_invalid: float = 0.15,
    p_sibling: float = 0.3,
    with_ranks: bool = True,
    with_quality: bool = True,
    extras: dict[str, Any] | None = None,
    seed: int = 0,
) -> RewardBatch:
    """A random but valid `RewardBatch`: every kind of candidate a reward has to handle appears.

    Each candidate is, at random, the target itself (`p_exact`), an invalid SID that decodes to no item
    (`p_invalid`), a catalog item sharing a prefix with the target when one exists (`p_sibling`), or any other
    catalog item. Ranks are a random permutation per group (beam positions); quality is uniform in [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    catalog = make_catalog_sids(num_items=num_items, num_levels=num_levels, codebook_size=codebook_size, generator=g)
    target_items = torch.randint(num_items, (batch_size,), generator=g)
    generated_items = torch.randint(num_items, (batch_size, group_size), generator=g)

    # siblings: catalog items with the target's first code, so prefix rewards see partial matches
    for b, t in enumerate(target_items.tolist()):
        siblings = torch.nonzero(catalog[:, 0] == catalog[t, 0]).flatten()
        pick = torch.rand(group_size, generator=g) < p_sibling
        choice = siblings[torch.randint(len(siblings), (group_size,), generator=g)]
        generated_items[b] = torch.where(pick, choice, generated_items[b])
    exact = torch.rand(batch_size, group_size, generator=g) < p_exact
    generated_items = torch.where(exact, target_items[:, None].expand_as(generated_items), generated_items)
    generated = catalog[generated_items]

    # invalid: codes outside the catalog (codebook_size is never a valid code), item id -1
    invalid = (torch.rand(batch_size, group_size, generator=g) < p_invalid) & ~exact
    bad_codes = generated.clone()
    bad_codes[..., num_levels - 1] = codebook_size
    generated = torch.where(invalid[..., None], bad_codes, generated)
    generated_items = torch.where(invalid, torch.full_like(generated_items, -1), generated_items)

    ranks = torch.stack([torch.randperm(group_size, generator=g) for _ in range(batch_size)]) if with_ranks else None
    quality = torch.rand(num_items, generator=g) if with_quality else None
    return RewardBatch(
        generated=generated,
        target=catalog[target_items],
        generated_items=generated_items,
        target_items=target_items,
        num_levels=num_levels,
        ranks=ranks,
        item_quality=quality,
        extras=dict(extras or {}),
    )


def slice_batch(batch: RewardBatch, rows: slice | torch.Tensor) -> RewardBatch:
    """The same batch restricted to some users (catalog-wide fields such as quality and extras are shared)."""
    return RewardBatch(
        generated=batch.generated[rows],
        target=batch.target[rows],
        generated_items=batch.generated_items[rows],
        target_items=batch.target_items[rows],
        num_levels=batch.num_levels,
        ranks=None if batch.ranks is None else batch.ranks[rows],
        item_quality=batch.item_quality,
        extras=batch.extras,
    )


def _clone(batch: RewardBatch) -> RewardBatch:
    return copy.deepcopy(batch)


def _same_batch(a: RewardBatch, b: RewardBatch) -> bool:
    fields = ("generated", "target", "generated_items", "target_items", "ranks", "item_quality")
    return all(
        (getattr(a, f) is None and getattr(b, f) is None) or torch.equal(getattr(a, f), getattr(b, f)) for f in fields
    )


def check_reward_contract(reward: Reward, *, seeds: tuple[int, ...] = (0, 1, 2), num_items: int = 64) -> None:
    """Assert the reward contract on random batches; raises AssertionError naming the broken rule.

    Checked: a float32 tensor of shape [B, G], finite, inside `reward.bounds`, deterministic, does not modify its
    input, each user's group scored independently of the other users (groups never span DDP ranks), and a batch
    without a required input fails with a ValueError rather than a wrong number.
    """
    name = type(reward).__name__
    assert isinstance(reward, Reward), f"{name} does not subclass deepinterestgr.rl.rewards.base.Reward"
    low, high = reward.bounds
    assert math.isfinite(low) and math.isfinite(high) and low <= high, (
        f"{name}.bounds {reward.bounds} is not a finite range")
    for seed in seeds:
        extras = type(reward).example_extras(num_items=num_items, generator=torch.Generator().manual_seed(seed))
        for batch_size, group_size in ((4, 8), (1, 1), (3, 5)):
            batch = make_reward_batch(
                batch_size=batch_size, group_size=group_size, num_items=num_items, extras=extras, seed=seed
            )
            before = _clone(batch)
            out = reward(batch)
            where = f"{name} (seed {seed}, B={batch_size}, G={group_size})"
            assert isinstance(out, torch.Tensor), f"{where}: returned {type(out).__name__}, not a tensor"
            assert out.shape == (batch_size, group_size), (
                f"{where}: shape {tuple(out.shape)} != {(batch_size, group_size)}")
            assert out.dtype == torch.float32, f"{where}: dtype {out.dtype}, expected torch.float32"
            assert torch.isfinite(out).all(), f"{where}: non-finite rewards {out}"
            tol = 1e-5 * max(1.0, abs(low), abs(high))
            assert out.min() >= low - tol and out.max() <= high + tol, (
                f"{where}: rewards {out.min():.4f}..{out.max():.4f} outside bounds {reward.bounds}"
            )
            assert _same_batch(batch, before), f"{where}: modified its input batch"
            assert torch.equal(out, reward(batch)), f"{where}: not deterministic"
            if batch_size > 1:
                alone = torch.cat([reward(slice_batch(batch, slice(b, b + 1))) for b in range(batch_size)])
                assert torch.allclose(alone, out, atol=1e-6), f"{where}: a user's rewards depend on other users' groups"
    for need in reward.requires:
        if need.startswith("extras."):
            key = need.removeprefix("extras.")
            batch = make_reward_batch(extras={k: v for k, v in extras.items() if k != key}, num_items=num_items)
        else:
            batch = make_reward_batch(
                with_ranks=need != "ranks", with_quality=need != "item_quality", extras=extras, num_items=num_items
            )
        try:
            reward(batch)
        except ValueError:
            continue
        raise AssertionError(f"{name} requires {need!r} but did not raise ValueError when it was missing")
