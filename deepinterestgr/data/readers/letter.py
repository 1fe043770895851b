"""LC-Rec / LETTER processed benchmarks: `<Cat>.inter.json` + `<Cat>.item.json` (or `<Cat>.item.derived.json`)."""

from __future__ import annotations

from pathlib import Path

from deepinterestgr.data.readers.amazon_raw import find_one
from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.readers.id_catalog import IdCatalogReader, items_in_id_order, read_item_file
from deepinterestgr.data.readers.lines import Problems, load_json_document
from deepinterestgr.data.schema import Interaction, RawDataset


class LetterReader(IdCatalogReader):
    """LC-Rec/LETTER format: {"user": [item ids]} chronological, item file keyed by the same 0-based ids.

    Sequences carry no timestamps, so position is the timestamp (file order is the chronological order).
    Without an item file (e.g. the Instruments release) items carry ids only and empty text.
    """

    expects = "<Cat>.inter.json + <Cat>.item.json or <Cat>.item.derived.json (LC-Rec/LETTER)"

    def read(self, path: str | Path, *, category: str | None = None) -> RawDataset:
        root = Path(path)
        problems = Problems(strict=self.strict)
        inter_path = find_one(root, [f"{category or '*'}.inter.json"], "LETTER interactions (.inter.json)")
        category = category or inter_path.name[: -len(".inter.json")]
        sequences = read_user_lists(inter_path, problems)

        candidates = (root / f"{category}.item.json", root / f"{category}.item.derived.json")
        item_files = [p for p in candidates if p.is_file()]
        catalog = read_item_file(item_files[0], problems) if item_files else {}
        if not item_files:
            problems.skips.add("item_file_missing", str(root / f"{category}.item.json"))
        referenced = [i for items in sequences.values() for i in items]
        items, source_of = items_in_id_order(catalog, referenced, problems, where=str(inter_path),
                                             require_metadata=self.require_metadata and bool(item_files))
        interactions = to_interactions(sequences, source_of, problems, where=str(inter_path))
        return RawDataset(items=items, interactions=interactions, skips=problems.skips, name=category)


def read_user_lists(path: Path, problems: Problems) -> dict[str, list[int]]:
    document = load_json_document(path, problems)
    if not isinstance(document, dict):
        raise DataFormatError(f"{path}: expected {{\"<user>\": [item ids]}}, got a {type(document).__name__}.")
    out: dict[str, list[int]] = {}
    for user, items in document.items():
        if not isinstance(items, list) or not all(type(i) is int and i >= 0 for i in items):
            problems.report("corrupt_record", f"{path} (user {user!r})",
                            "the sequence must be a list of non-negative integer item ids")
            continue
        out[user] = items
    return out


def to_interactions(sequences: dict[str, list[int]], source_of: dict[int, str], problems: Problems, *,
                    where: str) -> list[Interaction]:
    """Position-timestamped interactions; ids without a catalog entry are counted (`unknown_item`), never kept."""
    out = []
    for user, items in sequences.items():
        for position, item in enumerate(items):
            source = source_of.get(item)
            if source is None:
                problems.report("unknown_item_interaction", f"{where} (user {user!r}, position {position})",
                                f"item {item} is not in the catalog")
                continue
            out.append(Interaction(user=user, item=source, timestamp=float(position)))
    return out
