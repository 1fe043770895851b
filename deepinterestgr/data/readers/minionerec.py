"""MiniOneRec release (`data/Amazon/`): `index/<Cat>.item.json` + sample CSVs in `train/`, `valid/`, `test/`.

Each CSV row is one sample (history = up to 10 previous item ids, target = the next item), rows sorted by target
time. Per-user sequences are rebuilt by taking the first sample's history and appending every target in order.
"""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

from deepinterestgr.data.readers.amazon_raw import find_one
from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.readers.id_catalog import IdCatalogReader, items_in_id_order, read_item_file
from deepinterestgr.data.readers.letter import to_interactions
from deepinterestgr.data.readers.lines import Problems, iter_lines, where
from deepinterestgr.data.schema import RawDataset

SPLITS = ("train", "valid", "test")
REQUIRED_COLUMNS = ("user_id", "history_item_id", "item_id")


class MiniOneRecReader(IdCatalogReader):
    """MiniOneRec CSV/JSON: index/<Cat>.item.json + {train,valid,test}/<Cat>_*.csv; sequences rebuilt per user.

    The public release lacks the train CSV for most categories; then only the valid/test period (plus the up-to-10
    items of each user's first history) is recovered, and `stats` says so through the counts.
    """

    expects = "index/<Cat>.item.json + valid/ and test/ (and train/) <Cat>_*.csv (MiniOneRec)"

    def read(self, path: str | Path, *, category: str | None = None) -> RawDataset:
        root = Path(path)
        problems = Problems(strict=self.strict)
        item_path = find_one(root / "index", [f"{category or '*'}.item.json"], "MiniOneRec item (index/*.item.json)")
        category = category or item_path.name[: -len(".item.json")]
        csvs = [p for split in SPLITS for p in sorted((root / split).glob(f"{category}*.csv"))]
        if not csvs:
            raise DataFormatError(f"{root}: no sample CSVs under {', '.join(f'{s}/' for s in SPLITS)} for {category}.")
        if not any(p.parent.name == "train" for p in csvs):
            problems.skips.add("train_split_missing", str(root / "train"))
        sequences: dict[str, list[int]] = {}
        for csv_path in csvs:
            extend_sequences(csv_path, sequences, problems)
        catalog = read_item_file(item_path, problems)
        referenced = [i for items in sequences.values() for i in items]
        items, source_of = items_in_id_order(catalog, referenced, problems, where=str(item_path),
                                             require_metadata=self.require_metadata)
        interactions = to_interactions(sequences, source_of, problems, where=str(root))
        return RawDataset(items=items, interactions=interactions, skips=problems.skips, name=category)


def parse_id_list(text: str) -> list[int]:
    """"[3, 17]" → [3, 17]; ValueError for anything that is not a literal list of integers."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a list literal: {text[:60]!r}") from e
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"expected a list of integer item ids, got {text[:60]!r}")
    return list(value)


def extend_sequences(path: Path, sequences: dict[str, list[int]], problems: Problems) -> None:
    lines = iter_lines(path, problems)
    header_line = next(lines, None)
    if header_line is None:
        raise DataFormatError(f"{path}: empty file; expected a CSV header {','.join(REQUIRED_COLUMNS)},...")
    try:
        header = next(csv.reader([header_line[1]]))
    except csv.Error as e:
        raise DataFormatError(f"{path}:1: unreadable CSV header ({e}); "
                              f"expected {','.join(REQUIRED_COLUMNS)},...") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataFormatError(
            f"{path}:1: CSV header lacks column(s) {', '.join(missing)}; is this a MiniOneRec sample file?")
    col = {name: header.index(name) for name in REQUIRED_COLUMNS}
    # Quoted fields never span lines in these files, so parsing line by line keeps exact line numbers.
    for lineno, text in lines:
        try:
            row = next(csv.reader(io.StringIO(text)))
            user = row[col["user_id"]].strip()
            history = parse_id_list(row[col["history_item_id"]])
            target = int(row[col["item_id"]])
            if not user:
                raise ValueError("empty user_id")
        except (IndexError, ValueError, StopIteration, csv.Error) as e:
            problems.report("corrupt_line", where(path, lineno), f"bad sample row ({type(e).__name__}: {e})")
            continue
        sequence = sequences.get(user)
        if sequence is None:
            sequences[user] = [*history, target]
            continue
        if history and sequence[-len(history):] != history:
            problems.report("history_gap", where(path, lineno),
                            f"history of user {user} does not continue the sequence rebuilt so far (target appended)")
        sequence.append(target)
