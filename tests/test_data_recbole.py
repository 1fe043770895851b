"""The RecBole / UniSRec reader: sequences rebuilt from per-target rows with cut histories, in any row order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.readers.recbole import RecBoleReader

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write_recbole(root: Path, sequences: dict[int, list[int]], *, cut: int, shuffle: bool = True,
                  extra_rows: tuple[str, ...] = ()) -> Path:
    """RecBole files of `sequences` as UniSRec writes them: a train row per target from the 2nd to the third-to-last
    item, one valid and one test row per user, histories cut to their last `cut` items."""
    root.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "valid": [], "test": []}
    for user, seq in sequences.items():
        for p in range(1, len(seq)):
            split = "test" if p == len(seq) - 1 else "valid" if p == len(seq) - 2 else "train"
            history = " ".join(map(str, seq[max(0, p - cut):p]))
            splits[split].append(f"{user}\t{history}\t{seq[p]}\n")
    rng = random.Random(0)
    for split, rows in splits.items():
        if shuffle:
            rng.shuffle(rows)
        rows += list(extra_rows) if split == "train" else []
        (root / f"Cat.{split}.inter").write_text(HEADER + "".join(rows))
    items = sorted({i for seq in sequences.values() for i in seq})
    (root / "Cat.item2index").write_text("".join(f"ASIN{i}\t{i}\n" for i in items))
    (root / "Cat.user2index").write_text("".join(f"reviewer{u}\t{u}\n" for u in sequences))
    (root / "Cat.text").write_text("item_id:token\ttext:token_seq\n"
                                   + "".join(f"ASIN{i}\tThing {i}. Tools &amp; Parts. Brand {i % 3}. \n"
                                             for i in items if i != 0))
    return root


def rebuilt(raw) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for it in sorted(raw.interactions, key=lambda x: x.timestamp):
        out.setdefault(it.user, []).append(it.item)
    return out


def test_sequences_longer_than_the_history_cut_are_rebuilt_whole_from_shuffled_rows(tmp_path):
    rng = random.Random(1)
    sequences = {u: rng.sample(range(1, 40), k=rng.randint(5, 25)) for u in range(12)}
    sequences[0].insert(3, 0)  # item 0 has no text line
    root = write_recbole(tmp_path / "raw", sequences, cut=6)  # most users longer than the cut

    raw = RecBoleReader(strict=True).read(root)

    assert rebuilt(raw) == {f"reviewer{u}": [f"ASIN{i}" for i in seq] for u, seq in sequences.items()}
    assert raw.name == "Cat" and raw.skips.total == 0
    by_source = {it.source_id: it for it in raw.items}
    assert by_source["ASIN5"].title == "Thing 5. Tools & Parts. Brand 2."
    assert by_source["ASIN0"].title == ""  # no text line: the item is kept, with empty text


def test_a_row_that_is_no_window_of_the_users_sequence_is_an_error_or_a_counted_skip(tmp_path):
    sequences = {0: [1, 2, 3, 4, 5, 6, 7], 1: [3, 4, 5, 6, 7, 8]}
    root = write_recbole(tmp_path / "raw", sequences, cut=10, extra_rows=("0\t1 9\t4\n",))
    with pytest.raises(DataFormatError, match=r"Cat\.\*\.inter \(user 0\).*inconsistent_row"):
        RecBoleReader(strict=True).read(root)
    raw = RecBoleReader(strict=False).read(root)
    assert dict(raw.skips.counts) == {"inconsistent_row": 1}
    assert set(rebuilt(raw)) == {"reviewer1"}  # the contradicted user is dropped, counted, never guessed


def test_bad_files_name_the_file_and_the_line(tmp_path):
    root = write_recbole(tmp_path / "raw", {0: [1, 2, 3, 4, 5]}, cut=10)
    with (root / "Cat.valid.inter").open("a") as f:
        f.write("0\t1 x 3\t4\n")
    with pytest.raises(DataFormatError, match=r"Cat\.valid\.inter:3: not a RecBole row"):
        RecBoleReader(strict=True).read(root)
    (root / "Cat.valid.inter").write_text("user\titems\n")
    with pytest.raises(DataFormatError, match=r"Cat\.valid\.inter:1: header"):
        RecBoleReader(strict=True).read(root)
    (root / "Cat.valid.inter").unlink()
    with pytest.raises(DataFormatError, match=r"Cat\.valid\.inter: file not found"):
        RecBoleReader(strict=True).read(root)


def test_scientific_unisrec_counts_and_its_own_split(shared_data, tmp_path):
    """The real UniSRec Scientific release: published counts, and leave-one-out gives back its valid/test targets."""
    from deepinterestgr.data.io import load_catalog, load_sequences
    from deepinterestgr.data.prepare import prepare_dataset

    root = shared_data / "Scientific_UniSRec"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    stats = prepare_dataset(str(tmp_path), reader="recbole", data_root=str(root), kcore=0, strict=True)
    assert (stats["users"], stats["items"], stats["interactions"]) == (8_442, 4_385, 59_427)
    assert stats["text_coverage"]["title"]["items"] == 4_385 and stats["skips"]["total"] == 0
    source = {it.item_id: it.source_id for it in load_catalog(str(tmp_path))}
    asin = dict(reversed(line.split("\t")) for line in (root / "Scientific.item2index").read_text().splitlines())
    reviewer = dict(reversed(line.split("\t")) for line in (root / "Scientific.user2index").read_text().splitlines())
    sequences = {s.user: s.items for s in load_sequences(str(tmp_path))}
    for split, position in (("test", -1), ("valid", -2)):
        rows = (root / f"Scientific.{split}.inter").read_text().splitlines()[1:]
        for row in rows:
            user, _, target = row.split("\t")
            assert source[sequences[reviewer[user]][position]] == asin[target]
    assert max(map(len, sequences.values())) > 52  # histories cut at 50 were stitched back together
