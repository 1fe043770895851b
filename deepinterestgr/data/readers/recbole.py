"""RecBole atomic files as UniSRec / VQ-Rec / RecFormer release them: `<Cat>.{train,valid,test}.inter` +
`<Cat>.item2index` (+ `<Cat>.text`, `<Cat>.user2index`).

Each `.inter` row is one prediction target, `user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token`, with the
history cut to its last N items. Per-user sequences are rebuilt from the rows alone, in any row order: the rows whose
history is shorter than the longest seen are whole prefixes of the sequence, and the cut rows extend it one target at
a time (the row whose history equals the sequence's last N items). Rows that contradict the rebuilt sequence are
reported (`inconsistent_row`), never merged.
"""

from __future__ import annotations

from pathlib import Path

from deepinterestgr.data.readers.amazon_raw import find_one
from deepinterestgr.data.readers.base import DataFormatError, DatasetReader
from deepinterestgr.data.readers.letter import to_interactions
from deepinterestgr.data.readers.lines import Problems, iter_lines, text_field, where
from deepinterestgr.data.schema import Item, RawDataset

SPLITS = ("train", "valid", "test")
HEADER = ("user_id:token", "item_id_list:token_seq", "item_id:token")

Row = tuple[tuple[int, ...], int]  # (history, target)


class RecBoleReader(DatasetReader):
    """RecBole / UniSRec: `<Cat>.{train,valid,test}.inter` (integer ids), `<Cat>.item2index` (`ASIN<TAB>index`),
    optional `<Cat>.text` (`ASIN<TAB>text`: UniSRec's "title. categories. brand." string, kept as the item title)
    and `<Cat>.user2index` (user source ids). Sequences are rebuilt from the rows (module docstring); positions are
    the timestamps, so leave-one-out gives back the files' own valid and test targets.
    """

    expects = "<Cat>.{train,valid,test}.inter + <Cat>.item2index (+ <Cat>.text) (RecBole/UniSRec)"

    def read(self, path: str | Path, *, category: str | None = None) -> RawDataset:
        root = Path(path)
        problems = Problems(strict=self.strict)
        test_path = find_one(root, [f"{category or '*'}.test.inter"], "RecBole interactions (.test.inter)")
        category = category or test_path.name[: -len(".test.inter")]
        rows: dict[str, list[Row]] = {}
        for split in SPLITS:
            inter = root / f"{category}.{split}.inter"
            if not inter.is_file():
                raise DataFormatError(f"{inter}: file not found; a RecBole benchmark has {category}.train.inter, "
                                      f"{category}.valid.inter and {category}.test.inter side by side.")
            read_inter(inter, rows, problems)
        sequences = {user: rebuild_sequence(user_rows, problems, where=f"{root / category}.*.inter (user {user})")
                     for user, user_rows in rows.items()}
        sequences = {user: seq for user, seq in sequences.items() if seq}

        index_path = root / f"{category}.item2index"
        source_of = read_index(index_path, problems)
        text_path = root / f"{category}.text"
        texts = read_text(text_path, problems) if text_path.is_file() else {}
        if not texts:
            problems.skips.add("item_text_missing", str(text_path))
        items = [Item(item_id=-1, source_id=source_of[i], title=texts.get(source_of[i], "")) for i in sorted(source_of)]
        user_index = root / f"{category}.user2index"
        users = read_index(user_index, problems) if user_index.is_file() else {}
        named = {users.get(int(user), user): seq for user, seq in sequences.items()}
        interactions = to_interactions(named, source_of, problems, where=str(index_path))
        return RawDataset(items=items, interactions=interactions, skips=problems.skips, name=category)


def read_inter(path: Path, rows: dict[str, list[Row]], problems: Problems) -> None:
    """Append each `(history, target)` row of a `.inter` file to `rows[user]`."""
    lines = iter_lines(path, problems)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(f"{path}: empty file; expected the header {' / '.join(HEADER)}")
    header = tuple(first[1].rstrip("\r\n").split("\t"))
    if header != HEADER:
        raise DataFormatError(f"{path}:1: header {header} is not RecBole's sequential one {HEADER}")
    for lineno, text in lines:
        fields = text.rstrip("\r\n").split("\t")
        try:
            if len(fields) != 3:
                raise ValueError(f"{len(fields)} tab-separated fields, expected 3")
            history = tuple(int(i) for i in fields[1].split())
            target = int(fields[2])
            int(fields[0])
            if target < 0 or any(i < 0 for i in history):
                raise ValueError("negative item id")
        except ValueError as e:
            problems.report("corrupt_record", where(path, lineno), f"not a RecBole row ({e})")
            continue
        rows.setdefault(fields[0], []).append((history, target))


def rebuild_sequence(rows: list[Row], problems: Problems, *, where: str) -> list[int]:
    """The chronological item sequence all of one user's rows are windows of ([] when none is whole)."""
    cut = max(len(h) for h, _ in rows)  # histories of this length may have been truncated
    whole = sorted((r for r in rows if len(r[0]) < cut), key=lambda r: len(r[0]))
    if not whole:  # every history is at the cut: the shortest one is the oldest prefix we can trust
        whole = [min(rows, key=lambda r: len(r[0]))]
    sequence = list(whole[-1][0]) + [whole[-1][1]]
    placed = {id(whole[-1])}
    for row in whole[:-1]:
        history, target = row
        if sequence[:len(history) + 1] != [*history, target]:
            problems.report("inconsistent_row", where, f"row {list(history)} -> {target} is not a prefix of the "
                            "user's other rows")
            return []
        placed.add(id(row))
    extends = {}
    for row in rows:
        if id(row) not in placed and len(row[0]) == cut:
            extends.setdefault(row[0], []).append(row)
    while True:
        nxt = extends.get(tuple(sequence[-cut:])) if len(sequence) >= cut else None
        if not nxt:
            break
        row = nxt.pop()
        sequence.append(row[1])
        placed.add(id(row))
    left = [r for r in rows if id(r) not in placed and not _inside(r, sequence)]
    if left:
        problems.report("inconsistent_row", where, f"{len(left)} rows (e.g. {list(left[0][0][-3:])}... -> "
                        f"{left[0][1]}) are not windows of the rebuilt sequence")
        return []
    return sequence


def _inside(row: Row, sequence: list[int]) -> bool:
    """Whether `row` is a window of `sequence` already (a duplicated row, or a cut row among the whole prefix)."""
    history, target = row
    window = [*history, target]
    return any(sequence[i:i + len(window)] == window for i in range(len(sequence) - len(window) + 1))


def read_index(path: Path, problems: Problems) -> dict[int, str]:
    """{index: source id} of a `<source id><TAB><index>` file (`item2index`, `user2index`)."""
    out: dict[int, str] = {}
    seen: set[str] = set()
    for lineno, text in iter_lines(path, problems):
        fields = text.rstrip("\r\n").split("\t")
        try:
            if len(fields) != 2 or not fields[0].strip():
                raise ValueError(f"{len(fields)} tab-separated fields, expected '<source id><TAB><index>'")
            index = int(fields[1])
        except ValueError as e:
            problems.report("corrupt_record", where(path, lineno), str(e))
            continue
        if index in out or fields[0] in seen:
            problems.report("duplicate_record", where(path, lineno), f"index {index} or id {fields[0]!r} repeats")
            continue
        out[index] = fields[0]
        seen.add(fields[0])
    if not out:
        raise DataFormatError(f"{path}: no '<source id><TAB><index>' rows")
    return out


def read_text(path: Path, problems: Problems) -> dict[str, str]:
    """{source id: text} of a UniSRec `.text` file (header `item_id:token<TAB>text:token_seq`)."""
    out: dict[str, str] = {}
    for lineno, text in iter_lines(path, problems):
        if lineno == 1 and text.startswith("item_id:token"):
            continue
        source, sep, body = text.rstrip("\r\n").partition("\t")
        if not sep or not source:
            problems.report("corrupt_record", where(path, lineno), "expected '<item id><TAB><text>'")
            continue
        out[source] = text_field(body)
    return out
