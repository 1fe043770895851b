"""Versions of a run's item catalog and SID table: what `dig items add` writes and `dig serve` reads.

Version 0 is the run as trained: `<run>/data/catalog.jsonl` and the SID table in the model's checkpoint. Each
`dig items add` writes a complete new version and then moves one pointer:

    <run>/items/v0003/catalog.jsonl          every item, row i = item i (old items keep their ids)
    <run>/items/v0003/sid_table.safetensors  codes and suffixes of every item (old rows unchanged)
    <run>/items/v0003/sid_table.json
    <run>/items/v0003/version.json           {"version", "num_items", "trained_items", "added", "created"}
    <run>/items/current.json                 {"version": 3, "dir": "v0003"}  (replaced atomically, last)

A reader that sees `current.json` therefore always sees a whole version, and a server polls only the pointer's
stat (`pointer_stamp`) to pick a new one up without a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepinterestgr.artifacts import ArtifactError, atomic_write_json, atomic_write_jsonl, read_jsonl
from deepinterestgr.data.schema import Item
from deepinterestgr.quantize.sid import SIDTable

ITEMS_DIR = "items"
POINTER = "current.json"


@dataclass
class ItemsVersion:
    version: int
    table: SIDTable
    catalog: list[Item]
    #: items [0, trained_items) were in the catalog the generator was trained on; later ones were added
    trained_items: int
    path: Path | None = None

    @property
    def num_items(self) -> int:
        return self.table.num_items


def pointer_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / ITEMS_DIR / POINTER


def pointer_stamp(run_dir: str | Path) -> tuple[int, int] | None:
    """(mtime_ns, inode) of the version pointer, None before any `dig items add`: cheap to poll per request."""
    try:
        st = pointer_path(run_dir).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino


def read_catalog(path: Path) -> list[Item]:
    items = []
    for lineno, row in enumerate(read_jsonl(path), 1):
        try:
            item = Item.from_json(row)
        except TypeError as e:
            raise ArtifactError(f"{path}:{lineno}: not a catalog row ({e})") from e
        if item.item_id != len(items):
            raise ArtifactError(f"{path}:{lineno}: item_id {item.item_id}, expected {len(items)} (dense ids in order)")
        items.append(item)
    return items


def base_version(run_dir: str | Path, table: SIDTable) -> ItemsVersion:
    """Version 0: the run's own catalog and the SID table the model was trained on."""
    catalog = read_catalog(Path(run_dir) / "data" / "catalog.jsonl")
    if len(catalog) != table.num_items:
        raise ArtifactError(f"{Path(run_dir) / 'data' / 'catalog.jsonl'}: {len(catalog)} items but the model's SID "
                            f"table has {table.num_items}; the checkpoint was trained on another catalog")
    return ItemsVersion(0, table, catalog, table.num_items, None)


def load_current(run_dir: str | Path, base_table: SIDTable) -> ItemsVersion:
    """The newest complete version of the run's items (version 0 when none was added)."""
    pointer = pointer_path(run_dir)
    if not pointer.exists():
        return base_version(run_dir, base_table)
    try:
        ref = json.loads(pointer.read_text(encoding="utf-8"))
        directory = pointer.parent / ref["dir"]
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{pointer}: unreadable version pointer ({e}); rerun `dig items add`") from e
    info = json.loads((directory / "version.json").read_text(encoding="utf-8"))
    table = SIDTable.load(directory)
    catalog = read_catalog(directory / "catalog.jsonl")
    if len(catalog) != table.num_items:
        raise ArtifactError(f"{directory}: catalog has {len(catalog)} items, SID table {table.num_items}")
    trained = int(info["trained_items"])
    if trained > table.num_items or not (table.full()[:trained] == base_table.full()[:trained]).all():
        raise ArtifactError(f"{directory}: its first {trained} SIDs differ from the model's SID table; this version "
                            "was written for another model. Rerun `dig items add` for this run.")
    return ItemsVersion(int(info["version"]), table, catalog, trained, directory)


def write_version(run_dir: str | Path, table: SIDTable, catalog: list[Item], *, previous: ItemsVersion,
                  before_pointer: Callable[[Path], None] | None = None) -> ItemsVersion:
    """Write version previous.version + 1 and move the pointer to it (the pointer last: readers never see half).
    `before_pointer(directory)` adds files to the version before it becomes current."""
    if len(catalog) != table.num_items:
        raise ValueError(f"catalog has {len(catalog)} items but the SID table {table.num_items}")
    version = previous.version + 1
    root = Path(run_dir) / ITEMS_DIR
    directory = root / f"v{version:04d}"
    if directory.exists():
        raise ArtifactError(f"{directory} exists but {pointer_path(run_dir)} does not point at it: another "
                            "`dig items add` is running or was interrupted; remove the folder and retry")
    directory.mkdir(parents=True)
    atomic_write_jsonl(directory / "catalog.jsonl", (it.to_json() for it in catalog))
    table.save(directory)
    atomic_write_json(directory / "version.json", {
        "version": version, "num_items": table.num_items, "trained_items": previous.trained_items,
        "added": table.num_items - previous.num_items, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if before_pointer is not None:
        before_pointer(directory)
    atomic_write_json(root / POINTER, {"version": version, "dir": directory.name})
    return ItemsVersion(version, table, catalog, previous.trained_items, directory)
