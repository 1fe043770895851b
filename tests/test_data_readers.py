"""Each dataset reader on small fixture files with known counts, plus the contract test over every registered reader."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from deepinterestgr.data.readers.amazon2014 import Amazon2014Reader
from deepinterestgr.data.readers.amazon2018 import Amazon2018Reader
from deepinterestgr.data.readers.amazon2023 import Amazon2023Reader
from deepinterestgr.data.readers.letter import LetterReader
from deepinterestgr.data.readers.minionerec import MiniOneRecReader
from deepinterestgr.data.readers.p5 import P5Reader
from deepinterestgr.data.testing import check_raw_dataset, check_reader_contract
from deepinterestgr.registry import get_registry

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def gzipped_copy(src: Path, dst: Path) -> Path:
    """Copy a fixture folder, gzip-compressing every file (the form the real dumps come in)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        with open(f, "rb") as fin, gzip.open(dst / (f.name + ".gz"), "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dst


@pytest.mark.parametrize("spec", get_registry().specs("dataset_reader"), ids=lambda s: s.name)
def test_reader_contract(spec, tmp_path):
    raw = check_reader_contract(spec.cls, tmp_path)
    if raw is not None:  # generating readers produce data from nothing
        assert raw.items and raw.interactions


def test_builtin_readers_registered():
    names = set(get_registry().list("dataset_reader"))
    assert {"amazon2014", "amazon2018", "amazon2023", "letter", "p5", "minionerec", "recbole", "synthetic"} <= names


# The Amazon fixtures hold 12 reviews of 5 items (A-E) by 4 users; the metadata has A-D plus F (never reviewed).
@pytest.mark.parametrize("reader_cls, folder", [
    (Amazon2014Reader, "amazon2014"), (Amazon2018Reader, "amazon2018"), (Amazon2023Reader, "amazon2023"),
])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_amazon_raw_readers(reader_cls, folder, compressed, tmp_path):
    root = FIXTURES / folder
    if compressed:
        root = gzipped_copy(root, tmp_path / folder)
    raw = reader_cls(strict=True).read(root)
    check_raw_dataset(raw)
    assert [it.source_id for it in raw.items] == ["A", "B", "C", "D", "E"]  # first-appearance order; F unreviewed
    assert len(raw.interactions) == 12 and raw.skips.total == 0
    by_id = {it.source_id: it for it in raw.items}
    assert by_id["A"].title == "Rose Lip Balm" and by_id["A"].brand == "Aurelle"
    assert by_id["A"].description == "Soft lips all day."
    assert by_id["A"].categories == ["Beauty > Skin Care > Lips"]
    assert by_id["A"].images and by_id["A"].images[0].startswith("http://img/A")
    assert by_id["E"].title == "" and by_id["E"].categories == []  # reviewed but no metadata: kept, empty text
    assert {x.timestamp for x in raw.interactions if x.user == "u1"} == {100.0, 200.0, 300.0}  # 2023: ms → s


def test_amazon2014_meta_is_parsed_as_python_literal_without_eval(tmp_path):
    root = tmp_path / "a14"
    shutil.copytree(FIXTURES / "amazon2014", root)
    with open(root / "meta_Mini.json", "a") as f:
        f.write("__import__('os').system('echo pwned')\n")
    raw = Amazon2014Reader().read(root)
    assert raw.skips.counts["corrupt_line"] == 1
    assert raw.skips.examples["corrupt_line"] == [f"{root / 'meta_Mini.json'}:6"]


def test_amazon2014_multi_category_folder_needs_category(tmp_path):
    root = tmp_path / "two"
    shutil.copytree(FIXTURES / "amazon2014", root)
    shutil.copy(root / "reviews_Mini_5.json", root / "reviews_Other_5.json")
    with pytest.raises(Exception, match="several reviews files"):
        Amazon2014Reader().read(root)
    assert len(Amazon2014Reader().read(root, category="Mini").items) == 5


@pytest.mark.parametrize("value, text", [
    ("  Tom &amp; Jerry&#39;s ", "Tom & Jerry's"),
    (["first &lt;b&gt;", " ", "second"], "first <b>\nsecond"),
    ("['one &quot;x&quot;', 'two']", 'one "x"\ntwo'),  # MiniOneRec's stringified list
    ("[Pack of 2] Glue", "[Pack of 2] Glue"),
    ("['']", ""),
    (None, ""),
])
def test_text_fields_are_normalised(value, text):
    from deepinterestgr.data.readers.lines import text_field

    assert text_field(value) == text


def test_letter_reader(letter_root):
    raw = LetterReader(strict=True).read(letter_root)
    check_raw_dataset(raw)
    assert [it.source_id for it in raw.items] == ["0", "1", "2", "3", "4"]  # no ASIN in LC-Rec item files
    assert raw.items[2].title == "Night Serum" and raw.items[4].title == ""  # id 4 absent from the item file
    assert len(raw.interactions) == 3 + 4 + 3 + 2
    user1 = [(x.item, x.timestamp) for x in raw.interactions if x.user == "1"]
    assert user1 == [("0", 0.0), ("1", 1.0), ("2", 2.0), ("3", 3.0)]  # no timestamps: position


def test_letter_reader_without_item_file(letter_root):
    (letter_root / "Mini.item.json").unlink()
    raw = LetterReader(strict=True).read(letter_root)
    assert len(raw.items) == 5 and all(not it.title for it in raw.items)
    assert raw.skips.counts["item_file_missing"] == 1


def test_p5_reader_beauty_layout_keys_by_letter_id():
    raw = P5Reader(strict=True).read(FIXTURES / "p5")
    check_raw_dataset(raw)
    # P5 id 1 = LETTER id 0 = ASIN A: the ASIN is the source id, so p5 and letter readers agree on items
    assert [it.source_id for it in raw.items] == ["A", "B", "C", "D", "5"]  # no record: the P5 id
    assert raw.items[0].title == "Rose Lip Balm"
    assert [x.item for x in raw.interactions if x.user == "2"] == ["A", "B", "C", "D"]


def test_p5_reader_toys_layout_prefers_sequential_data():
    raw = P5Reader(strict=True).read(FIXTURES / "p5_toys")
    assert [it.source_id for it in raw.items] == ["A", "B", "C", "D", "5"]
    assert len(raw.interactions) == 12  # from sequential_data.txt, not the 7-item decoy Mini.txt
    assert [x.item for x in raw.interactions if x.user == "3"] == ["C", "D", "5"]


def test_minionerec_reader_rebuilds_sequences():
    raw = MiniOneRecReader(strict=True).read(FIXTURES / "minionerec")
    check_raw_dataset(raw)
    seqs: dict[str, list[str]] = {}
    for x in raw.interactions:
        seqs.setdefault(x.user, []).append(x.item)
    assert seqs == {"A1": ["0", "1", "2", "3", "1"], "A2": ["3", "0", "1"], "A3": ["2", "4"]}
    assert raw.items[0].brand == "Stanley" and raw.items[4].title == ""  # id 4 is not in the item file
    assert raw.items[0].description == "Heavy duty"  # MiniOneRec stores descriptions as stringified lists
    assert raw.skips.counts["train_split_missing"] == 1


def test_amazon_reviews_without_metadata_file(tmp_path):
    shutil.copy(FIXTURES / "amazon2018" / "Mini_5.json", tmp_path)
    raw = Amazon2018Reader().read(tmp_path)
    assert len(raw.items) == 5 and not any(it.title for it in raw.items)  # kept, with empty text
    assert raw.skips.counts["metadata_file_missing"] == 1
    with pytest.raises(Exception, match="no metadata file found"):
        Amazon2018Reader(strict=True).read(tmp_path)
