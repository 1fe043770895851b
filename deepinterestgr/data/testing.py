"""Contract checks for dataset readers, reusable by third-party reader plugins in their own tests."""

from __future__ import annotations

from pathlib import Path

from deepinterestgr.data.readers.base import DataFormatError, DatasetReader
from deepinterestgr.data.schema import Interaction, Item, RawDataset


def check_raw_dataset(raw: RawDataset) -> None:
    """What every reader must return: typed records, unique item source ids, every interaction naming a listed
    item (items without metadata are listed with empty text, not left out), numeric timestamps."""
    assert isinstance(raw, RawDataset), f"read() must return a RawDataset, got {type(raw).__name__}"
    assert all(isinstance(it, Item) for it in raw.items), "items must be Item instances"
    ids = [it.source_id for it in raw.items]
    assert all(isinstance(s, str) and s for s in ids), "every Item.source_id must be a non-empty string"
    assert len(set(ids)) == len(ids), "Item.source_id values must be unique"
    known = set(ids)
    for n, x in enumerate(raw.interactions):
        assert isinstance(x, Interaction), f"interaction {n} is a {type(x).__name__}, not an Interaction"
        assert x.item in known, f"interaction {n} names item {x.item!r}, which is not in RawDataset.items"
        assert isinstance(x.user, str) and x.user, f"interaction {n}: user must be a non-empty string"
        assert isinstance(x.timestamp, (int, float)), f"interaction {n}: timestamp must be a number"
    for it in raw.items:
        assert isinstance(it.categories, list) and isinstance(it.images, list), f"{it.source_id}: list fields"
        assert all(isinstance(getattr(it, f), str) for f in ("title", "description", "brand")), it.source_id


def check_reader_contract(reader_cls: type[DatasetReader], empty_dir: str | Path) -> RawDataset | None:
    """A reader is keyword-constructible with `strict`, documents what it expects, and on a folder without its
    files either raises DataFormatError (file readers) or returns a valid RawDataset (generating readers)."""
    assert issubclass(reader_cls, DatasetReader)
    assert reader_cls.expects, f"{reader_cls.__name__}.expects must say which files the reader reads"
    reader = reader_cls(strict=True)
    try:
        raw = reader.read(empty_dir)
    except DataFormatError as e:
        assert str(empty_dir) in str(e), f"the error must name the folder or file: {e}"
        return None
    check_raw_dataset(raw)
    return raw


def copy_dataset(src: str | Path, dst: str | Path, *, gz: bool = False) -> Path:
    """Copy a dataset folder (e.g. a test fixture) to `dst`; with `gz`, every file is gzip-compressed (`name.gz`)."""
    import shutil

    root = Path(dst)
    shutil.copytree(src, root)
    if gz:
        gzip_files(root)
    return root


def gzip_files(folder: str | Path) -> None:
    """Replace every file of `folder` by its gzip-compressed `name.gz` (the raw Amazon dumps ship compressed)."""
    import gzip
    import shutil

    for f in list(Path(folder).iterdir()):
        with open(f, "rb") as fin, gzip.open(f.with_name(f.name + ".gz"), "wb") as fout:
            shutil.copyfileobj(fin, fout)
        f.unlink()


def replace_line(path: str | Path, lineno: int, data: bytes) -> None:
    """Overwrite line `lineno` (1-based) of a file with raw bytes: injects a malformed record for bad-input tests."""
    path = Path(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[lineno - 1] = data
    path.write_bytes(b"".join(lines))
