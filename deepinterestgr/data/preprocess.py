"""Turn a reader's RawDataset into the prepared catalog and sequences: dedupe, k-core, dense ids, chronology.

Pure functions over in-memory data (no files), so the rules are tested on hand-made cases.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.readers.lines import Problems
from deepinterestgr.data.schema import Item, RawDataset, SkipReport, UserSequence


@dataclass
class Prepared:
    """Dense catalog (item_id = index) and per-user chronological sequences of dense ids."""

    items: list[Item]
    sequences: list[UserSequence]
    skips: SkipReport
    removed: dict[str, int] = field(default_factory=dict)  # users / items / interactions removed by filtering
    kcore_rounds: int = 0


def kcore_filter(pairs: list[tuple[str, str]], *, k: int, min_user: int) -> tuple[list[bool], int]:
    """Iterative k-core over (user, item) interactions: keep an interaction only while its user has ≥ max(k,
    min_user) interactions and its item ≥ k, repeating until nothing changes (removing users can push items under
    k and back). `k=0` applies only `min_user`. Returns a keep-mask over `pairs` and the number of rounds."""
    keep = [True] * len(pairs)
    user_min, item_min = max(k, min_user), k
    rounds = 0
    while True:
        users = Counter(u for (u, _), kept in zip(pairs, keep) if kept)
        items = Counter(i for (_, i), kept in zip(pairs, keep) if kept)
        changed = False
        for n, (u, i) in enumerate(pairs):
            if keep[n] and (users[u] < user_min or items[i] < item_min):
                keep[n] = False
                changed = True
        if not changed:
            return keep, rounds
        rounds += 1


def preprocess(raw: RawDataset, *, kcore: int = 5, min_interactions: int = 3, strict: bool = False) -> Prepared:
    """Validate, dedupe (user, item, timestamp), filter (min length, k-core) and re-index a RawDataset.

    Item order: the reader's item order, restricted to items that keep an interaction (a complete catalog such as
    LETTER's keeps its own ids). User order: first appearance among the interactions. Each sequence is sorted by
    timestamp, stably, so ties keep file order.
    """
    if kcore < 0 or min_interactions < 1:
        raise ValueError(
            f"kcore must be >= 0 and min_interactions >= 1, got kcore={kcore}, min_interactions={min_interactions}")
    skips = SkipReport()
    skips.merge(raw.skips)
    problems = Problems(strict=strict, skips=skips)
    name = raw.name or "dataset"
    if not raw.items:
        raise DataFormatError(
            f"{name}: the catalog is empty (the reader found no items); check the data path and category.")

    catalog: dict[str, Item] = {}
    for item in raw.items:
        if item.source_id in catalog:
            problems.report("duplicate_item", f"{name} item {item.source_id}", "appears twice in the catalog")
            continue
        catalog[item.source_id] = item

    seen: set[tuple[str, str, float]] = set()
    rows = []  # (user, item, timestamp) in reader order
    for n, x in enumerate(raw.interactions):
        if x.item not in catalog:
            problems.report("unknown_item", f"{name} interaction {n} (user {x.user})",
                            f"names item {x.item!r}, not in the catalog")
            continue
        key = (x.user, x.item, float(x.timestamp))
        if key in seen:
            skips.add("duplicate_interaction", f"{name} interaction {n} (user {x.user}, item {x.item})")
            continue
        seen.add(key)
        rows.append(key)
    if not rows:
        raise DataFormatError(f"{name}: no usable interactions; every record was skipped ({dict(skips.counts)}).")

    lengths = Counter(u for u, _, _ in rows)
    for user, count in lengths.items():
        if count < min_interactions:
            skips.add("user_too_short", f"user {user} ({count} interactions)")
    keep, rounds = kcore_filter([(u, i) for u, i, _ in rows], k=kcore, min_user=min_interactions)
    kept_rows = [r for r, kept in zip(rows, keep) if kept]
    short_users = sum(1 for c in lengths.values() if c < min_interactions)
    if len(kept_rows) < len(rows):
        skips.add("filtered_interactions", f"k-core {kcore} / min_interactions {min_interactions}",
                  len(rows) - len(kept_rows))
    if not kept_rows:
        raise DataFormatError(
            f"{name}: no interactions survive kcore={kcore} and min_interactions={min_interactions}; "
            "lower them (kcore=0 disables k-core)."
        )

    used = {i for _, i, _ in kept_rows}
    dense: dict[str, int] = {}
    items: list[Item] = []
    for item in catalog.values():
        if item.source_id in used:
            dense[item.source_id] = len(items)
            items.append(replace(item, item_id=len(items)))
        else:
            skips.add("item_without_interactions", f"item {item.source_id}")

    by_user: dict[str, list[tuple[float, int]]] = {}
    for user, item, ts in kept_rows:
        by_user.setdefault(user, []).append((ts, dense[item]))
    sequences = []
    for user, events in by_user.items():
        events.sort(key=lambda e: e[0])  # stable: equal timestamps keep file order
        sequences.append(UserSequence(user=user, items=[i for _, i in events], timestamps=[t for t, _ in events]))

    removed = {
        "users": len(lengths) - len(by_user),
        "users_too_short": short_users,
        "items": len(catalog) - len(items),
        "interactions": len(rows) - len(kept_rows),
    }
    return Prepared(items=items, sequences=sequences, skips=skips, removed=removed, kcore_rounds=rounds)


TEXT_FIELDS = ("title", "description", "brand", "categories", "images")


def dataset_stats(prepared: Prepared, *, name: str = "") -> dict:
    """Counts, density, sequence lengths, text coverage per field and skipped records by reason."""
    n_users, n_items = len(prepared.sequences), len(prepared.items)
    n_inter = sum(len(s.items) for s in prepared.sequences)
    lengths = sorted(len(s.items) for s in prepared.sequences)
    coverage = {}
    for f in TEXT_FIELDS:
        count = sum(1 for it in prepared.items if getattr(it, f))
        coverage[f] = {"items": count, "of": n_items, "fraction": round(count / n_items, 6) if n_items else 0.0}
    with_attributes = sum(1 for it in prepared.items if it.attributes)
    if with_attributes:  # only then: stats of catalogs without the field keep their bytes
        coverage["attributes"] = {"items": with_attributes, "of": n_items,
                                  "fraction": round(with_attributes / n_items, 6)}
    no_text = sum(1 for it in prepared.items if not (it.title or it.description or it.brand or it.categories))
    return {
        "dataset": name,
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "density": n_inter / (n_users * n_items) if n_users and n_items else 0.0,
        "sequence_length": {
            "min": lengths[0] if lengths else 0,
            "median": lengths[len(lengths) // 2] if lengths else 0,
            "mean": round(n_inter / n_users, 4) if n_users else 0.0,
            "max": lengths[-1] if lengths else 0,
        },
        "text_coverage": coverage,
        "items_without_text": no_text,
        "removed": prepared.removed,
        "kcore_rounds": prepared.kcore_rounds,
        "skips": prepared.skips.to_json(),
    }
