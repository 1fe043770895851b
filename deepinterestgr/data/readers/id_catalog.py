"""Item files of processed benchmarks (LC-Rec/LETTER, P5-derived, MiniOneRec): one JSON object keyed by item id."""

from __future__ import annotations

from pathlib import Path

from deepinterestgr.data.readers.base import DataFormatError, DatasetReader
from deepinterestgr.data.readers.lines import Problems, category_paths, load_json_document, text_field
from deepinterestgr.data.schema import Item


class IdCatalogReader(DatasetReader):
    """A reader of a processed benchmark whose item file is optional (interactions by integer id suffice);
    `require_metadata=True` makes a missing item file an error instead of items with ids only."""

    def __init__(self, *, strict: bool = False, require_metadata: bool = False) -> None:
        super().__init__(strict=strict)
        self.require_metadata = require_metadata


def item_from_record(item_id: int, record: dict) -> Item:
    """An Item whose source id is the ASIN when the record has one, else the (offset-corrected) integer id."""
    source = record.get("asin") or record.get("parent_asin") or item_id
    return Item(
        item_id=-1,
        source_id=str(source),
        title=text_field(record.get("title")),
        description=text_field(record.get("description")),
        brand=text_field(record.get("brand")),
        categories=category_paths(record.get("categories")),
        images=[u for u in [record.get("imUrl") or record.get("image")] if u],
    )


def read_item_file(path: Path, problems: Problems, *, key_offset: int = 0) -> dict[int, Item]:
    """{integer id: Item} from `{"<id>": {...}}`. `key_offset` is added to each key (P5 files keyed by LETTER id)."""
    document = load_json_document(path, problems)
    if not isinstance(document, dict):
        raise DataFormatError(f"{path}: expected a JSON object keyed by item id, got {type(document).__name__}.")
    items: dict[int, Item] = {}
    for key, record in document.items():
        try:
            item_id = int(key) + key_offset
        except ValueError:
            problems.report("bad_item_id", f"{path} (item {key!r})", "item key is not an integer id")
            continue
        if not isinstance(record, dict):
            problems.report("corrupt_record", f"{path} (item {key!r})",
                            f"item record is a {type(record).__name__}, not an object")
            continue
        p5_id = record.get("p5_id")
        if p5_id is not None and key_offset and p5_id != item_id:
            problems.report("inconsistent_id", f"{path} (item {key!r})", f"p5_id {p5_id} != key + {key_offset}")
            continue
        items[item_id] = item_from_record(item_id, record)
    return items


def items_in_id_order(catalog: dict[int, Item], referenced: list[int], problems: Problems, *, where: str,
                      require_metadata: bool) -> tuple[list[Item], dict[int, str]]:
    """Items in ascending id order (so a complete catalog keeps its original ids as dense ids), plus id → source id.

    Ids referenced by interactions but absent from the item file are kept with empty text, unless `require_metadata`,
    which makes each such id an `unknown_item` problem (its interactions are then dropped and counted by the caller).
    """
    missing = sorted(set(referenced) - catalog.keys())
    kept = dict(catalog)
    for item_id in missing:
        if require_metadata:
            problems.report("unknown_item", where, f"interactions name item {item_id}, which the item file lacks")
            continue
        kept[item_id] = Item(item_id=-1, source_id=str(item_id))
    seen: dict[str, int] = {}
    for item_id in sorted(kept):
        source = kept[item_id].source_id
        if source in seen:
            problems.report("duplicate_item", where, f"items {seen[source]} and {item_id} share source id {source}")
            del kept[item_id]  # its interactions become unknown-item skips in the caller
            continue
        seen[source] = item_id
    ids = sorted(kept)
    return [kept[i] for i in ids], {i: kept[i].source_id for i in ids}
