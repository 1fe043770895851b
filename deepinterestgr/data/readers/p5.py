"""P5 / S3-Rec sequential files: `user item item ...` per line with 1-based item ids, plus a derived item file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deepinterestgr.data.readers.amazon_raw import find_one
from deepinterestgr.data.readers.base import DataFormatError, DatasetReader
from deepinterestgr.data.readers.id_catalog import items_in_id_order, read_item_file
from deepinterestgr.data.readers.letter import to_interactions
from deepinterestgr.data.readers.lines import Problems, iter_lines, load_json_document, where
from deepinterestgr.data.schema import Item, RawDataset

ITEM_KEYS = ("auto", "p5", "letter")


class P5Reader(DatasetReader):
    """P5/S3-Rec format: `sequential_data.txt` or `<Cat>.txt` lines `user item item ...` (1-based P5 item ids).

    The item file (`*.item.derived.json` or `<Cat>.item.json`) is keyed either by P5 id (Toys) or by LETTER id =
    P5 id − 1 (Beauty, whose records also carry `p5_id`); `item_keys="auto"` tells them apart by the `p5_id`
    field or a key 0. A folder with both `sequential_data.txt` and `<Cat>.txt` (Toys) uses `sequential_data.txt`:
    the other file has S3-Rec numbering that no item file matches. The `.npy` maps are pickles and are never read.

    `attribute_file` (e.g. `Sports_and_Outdoors_item2attributes.json`, S3-Rec's `{"<P5 id>": [attribute ids]}`)
    fills `Item.attributes` (brand + category ids without names) for an `attribute_source` evidence plugin; a
    malformed entry is a `corrupt_record` problem, an item without an entry is counted as `no_attributes`.
    """

    expects = "sequential_data.txt or <Cat>.txt + <Cat>.item.derived.json / <Cat>.item.json (P5 / S3-Rec)"

    def __init__(self, *, strict: bool = False, item_keys: str = "auto", sequence_file: str | None = None,
                 item_file: str | None = None, require_metadata: bool = False,
                 attribute_file: str | None = None) -> None:
        super().__init__(strict=strict)
        if item_keys not in ITEM_KEYS:
            raise ValueError(f"item_keys must be one of {ITEM_KEYS}, got {item_keys!r}")
        self.item_keys, self.sequence_file, self.item_file = item_keys, sequence_file, item_file
        self.require_metadata, self.attribute_file = require_metadata, attribute_file

    def read(self, path: str | Path, *, category: str | None = None) -> RawDataset:
        root = Path(path)
        problems = Problems(strict=self.strict)
        seq_path = self._sequence_path(root, category)
        sequences = read_sequence_lines(seq_path, problems)
        item_path = self._item_path(root, category)
        catalog = read_item_file(item_path, problems, key_offset=self._key_offset(item_path)) if item_path else {}
        if item_path is None:
            problems.skips.add("item_file_missing", str(root))
        referenced = [i for items in sequences.values() for i in items]
        items, source_of = items_in_id_order(catalog, referenced, problems, where=str(seq_path),
                                             require_metadata=self.require_metadata and item_path is not None)
        interactions = to_interactions(sequences, source_of, problems, where=str(seq_path))
        if self.attribute_file:
            items = with_attributes(items, list(source_of), root / self.attribute_file, problems)
        name = category or (item_path.name.split(".")[0] if item_path else seq_path.stem)
        return RawDataset(items=items, interactions=interactions, skips=problems.skips, name=name)

    def _sequence_path(self, root: Path, category: str | None) -> Path:
        if self.sequence_file:
            return root / self.sequence_file
        patterns = ["sequential_data.txt"] + ([f"{category}.txt"] if category else ["*.txt"])
        return find_one(root, patterns, "P5 sequence (.txt)")

    def _item_path(self, root: Path, category: str | None) -> Path | None:
        if self.item_file:
            return root / self.item_file
        cat = category or "*"
        try:
            return find_one(root, [f"{cat}.item.derived.json", f"{cat}.item.json"], "item")
        except DataFormatError:
            if category is None and list(root.glob("*.item*.json")):
                raise
            return None

    def _key_offset(self, item_path: Path) -> int:
        if self.item_keys != "auto":
            return 1 if self.item_keys == "letter" else 0
        # parsed again by read_item_file, which reports the file's problems; this pass only looks at the keys
        document = load_json_document(item_path, Problems(strict=False))
        keyed_by_letter = "0" in document or any(isinstance(r, dict) and "p5_id" in r for r in document.values())
        return 1 if keyed_by_letter else 0


def with_attributes(items: list[Item], ids: list[int], path: Path, problems: Problems) -> list[Item]:
    """`items` (whose P5 ids are `ids`, same order) with `attributes` from S3-Rec's item2attributes file."""
    if not path.is_file():
        raise DataFormatError(f"{path}: attribute file not found (reader option attribute_file). Check the name, or "
                              "drop the option.")
    document = load_json_document(path, problems)
    if not isinstance(document, dict):
        raise DataFormatError(f"{path}: expected {{\"<P5 item id>\": [attribute ids]}}, got a "
                              f"{type(document).__name__}.")
    out = []
    for item, item_id in zip(items, ids):
        values = document.get(str(item_id))
        if values is None:
            problems.skips.add("no_attributes", f"{path} (item {item_id})")
            values = []
        elif not isinstance(values, list) or not all(type(v) is int or isinstance(v, str) for v in values):
            problems.report("corrupt_record", f"{path} (item {item_id!r})",
                            "attributes must be a list of attribute ids (integers or strings)")
            values = []
        out.append(dataclasses.replace(item, attributes=[str(v) for v in dict.fromkeys(values)]))
    return out


def read_sequence_lines(path: Path, problems: Problems) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for lineno, text in iter_lines(path, problems):
        tokens = text.split()
        if len(tokens) < 2:
            problems.report("corrupt_line", where(path, lineno), "expected `user item [item ...]`")
            continue
        try:
            items = [int(t) for t in tokens[1:]]
        except ValueError:
            problems.report("corrupt_line", where(path, lineno), "item ids must be integers")
            continue
        if min(items) < 1:
            problems.report("corrupt_line", where(path, lineno), "P5 item ids are 1-based; found an id < 1")
            continue
        if tokens[0] in out:
            problems.report("duplicate_user", where(path, lineno), f"user {tokens[0]} already has a sequence")
            continue
        out[tokens[0]] = items
    return out
