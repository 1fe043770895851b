"""Preprocessing rules (dedupe, k-core, chronology, dense ids), leave-one-out, the run-dir artifacts and their
loaders, and the table of bad inputs: each must fail naming file and line (strict) or be counted (lenient)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinterestgr.artifacts import ArtifactError
from deepinterestgr.data.io import load_catalog, load_sequences, load_stats, load_truth
from deepinterestgr.data.prepare import format_stats, prepare_dataset
from deepinterestgr.data.preprocess import kcore_filter, preprocess
from deepinterestgr.data.readers.amazon_raw import parse_record
from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.readers.minionerec import parse_id_list
from deepinterestgr.data.schema import Interaction, Item, RawDataset, UserSequence
from deepinterestgr.data.split import eval_examples, leave_one_out, train_examples
from deepinterestgr.data.testing import copy_dataset, replace_line
from deepinterestgr.registry import create

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def raw_of(rows, items=None) -> RawDataset:
    names = items or sorted({i for _, i, _ in rows})
    return RawDataset(items=[Item(item_id=-1, source_id=s, title=f"t{s}") for s in names],
                      interactions=[Interaction(u, i, t) for u, i, t in rows], name="hand")


# ------------------------------------------------------------------------------------------------ k-core & order
def test_kcore_cascades_until_stable():
    pairs = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c")]
    keep, rounds = kcore_filter(pairs, k=2, min_user=1)
    # c has 1 user → dropped; then u3 has 1 item → dropped; a keeps 2 users
    assert keep == [True, True, True, True, False, False] and rounds == 2


def test_kcore_zero_applies_only_the_user_minimum():
    pairs = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b")]
    keep, _ = kcore_filter(pairs, k=0, min_user=3)
    assert keep == [True, True, True, False, False]


def test_already_kcore_data_is_untouched():
    pairs = [(f"u{u}", f"i{i}") for u in range(3) for i in range(3)]
    keep, rounds = kcore_filter(pairs, k=3, min_user=3)
    assert all(keep) and rounds == 0


def test_preprocess_dedupes_sorts_stably_and_assigns_dense_ids_in_catalog_order():
    rows = [("u", "y", 5.0), ("u", "x", 5.0), ("u", "z", 1.0), ("u", "y", 5.0), ("v", "x", 2.0), ("v", "w", 1.0),
            ("v", "y", 3.0)]
    prepared = preprocess(raw_of(rows, items=["w", "x", "y", "z", "unused"]), kcore=0, min_interactions=3)
    assert [it.source_id for it in prepared.items] == ["w", "x", "y", "z"]
    assert [it.item_id for it in prepared.items] == [0, 1, 2, 3]
    seqs = {s.user: s for s in prepared.sequences}
    assert seqs["u"].items == [3, 2, 1]  # z (t=1) then y, x: the tie at t=5 keeps file order
    assert seqs["u"].timestamps == [1.0, 5.0, 5.0]
    assert seqs["v"].items == [0, 1, 2]
    assert prepared.skips.counts["duplicate_interaction"] == 1
    assert prepared.skips.counts["item_without_interactions"] == 1


def test_preprocess_counts_short_users():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1), ("b", "y", 2)]
    prepared = preprocess(raw_of(rows), kcore=0, min_interactions=3)
    assert [s.user for s in prepared.sequences] == ["a"]
    assert prepared.skips.counts["user_too_short"] == 1 and prepared.removed["users"] == 1
    assert prepared.skips.examples["user_too_short"] == ["user b (2 interactions)"]


# ------------------------------------------------------------------------------------------------ leave-one-out
def test_leave_one_out_rules():
    seq = UserSequence("u", [1, 2, 3, 4, 5], [0, 1, 2, 3, 4])
    split = leave_one_out(seq)
    assert split.train == [1, 2, 3]
    assert (split.valid.history, split.valid.target) == ([1, 2, 3], 4)
    assert (split.test.history, split.test.target) == ([1, 2, 3, 4], 5)
    assert [(e.history, e.target) for e in train_examples([seq])] == [([1], 2), ([1, 2], 3)]
    assert [e.target for e in eval_examples([seq], "test")] == [5]
    with pytest.raises(ValueError, match="needs >= 3"):
        leave_one_out(UserSequence("v", [1, 2]))


# ------------------------------------------------------------------------------------------------ run-dir artifacts
def test_prepare_writes_artifacts_and_loaders_read_them(tmp_path):
    stats = prepare_dataset(str(tmp_path), reader="amazon2014", data_root=str(FIXTURES / "amazon2014"), kcore=0)
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 5, 10)  # u4 (2 reviews) dropped
    assert stats["text_coverage"]["title"]["items"] == 4 and stats["items_without_text"] == 1
    assert stats["skips"]["by_reason"]["user_too_short"] == 1
    items, seqs = load_catalog(tmp_path), load_sequences(tmp_path)
    assert [it.item_id for it in items] == list(range(5))
    assert {s.user: [items[i].source_id for i in s.items] for s in seqs} == {
        "u1": ["A", "B", "C"], "u2": ["A", "B", "C", "D"], "u3": ["C", "D", "E"]}
    assert all(it.catalog_row() == it.to_json() for it in items)  # the writer's fast path = to_json
    assert load_stats(tmp_path)["interactions"] == 10 and load_truth(tmp_path) is None
    assert "interactions  10" in format_stats(stats)


def test_prepare_kcore_on_files(tmp_path):
    stats = prepare_dataset(str(tmp_path), reader="amazon2014", data_root=str(FIXTURES / "amazon2014"), kcore=2)
    # E (1 user) goes, then u3 (2 < 3 items), then D (1 user): u1 and u2 keep A, B, C
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 6)


def test_prepare_rerun_is_a_noop_until_config_or_inputs_change(tmp_path, letter_root):
    root = letter_root
    run = tmp_path / "run"
    prepare_dataset(str(run), reader="letter", data_root=str(root), kcore=0)
    catalog = run / "data" / "catalog.jsonl"
    first = catalog.stat().st_mtime_ns
    manifest = (run / "data" / "manifest.json").read_bytes()
    prepare_dataset(str(run), reader="letter", data_root=str(root), kcore=0)
    assert catalog.stat().st_mtime_ns == first  # same config, same inputs: nothing rewritten
    shutil.rmtree(run / "data")
    prepare_dataset(str(run), reader="letter", data_root=str(root), kcore=0)
    assert (run / "data" / "manifest.json").read_bytes() == manifest  # rebuilt from scratch: byte-identical
    stats = prepare_dataset(str(run), reader="letter", data_root=str(root), kcore=0, min_interactions=4)
    assert catalog.stat().st_mtime_ns != first and stats["users"] == 1
    second = catalog.stat().st_mtime_ns
    (root / "Mini.inter.json").write_text(json.dumps({"0": [0, 1, 2, 3], "1": [1, 2, 3, 4]}))
    stats = prepare_dataset(str(run), reader="letter", data_root=str(root), kcore=0, min_interactions=4)
    assert catalog.stat().st_mtime_ns != second and stats["users"] == 2


def test_loaders_reject_a_truncated_artifact(tmp_path, letter_root):
    prepare_dataset(str(tmp_path), reader="letter", data_root=str(letter_root), kcore=0)
    path = tmp_path / "data" / "sequences.jsonl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"sequences\.jsonl.*dig data prepare"):
        load_sequences(tmp_path)
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_catalog(tmp_path / "nowhere")


def test_prepare_needs_data_root_for_file_readers(tmp_path):
    with pytest.raises(ValueError, match="data_root"):
        prepare_dataset(str(tmp_path), reader="p5")


@pytest.mark.parametrize("name", ["prepare_synthetic", "prepare_beauty"])
def test_shipped_configs_parse_as_prepare_dataset_arguments(name):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("-c", "--config", action=ActionConfigFile)
    parser.add_function_arguments(prepare_dataset)
    cfg = parser.parse_args(["-c", str(Path(__file__).parents[1] / "configs" / "data" / f"{name}.yaml")])
    assert cfg.reader == ("synthetic" if name == "prepare_synthetic" else "p5") and cfg.kcore == 5


# ------------------------------------------------------------------------------------------------ bad inputs
def _copy(folder: str, tmp_path: Path, gz: bool = False) -> Path:
    return copy_dataset(FIXTURES / folder, tmp_path / folder, gz=gz)


def _truncated_gzip(tmp_path):
    root = _copy("amazon2014", tmp_path, gz=True)
    f = root / "reviews_Mini_5.json.gz"
    f.write_bytes(f.read_bytes()[:-30])
    return "amazon2014", root, {}, r"reviews_Mini_5\.json\.gz:\d+"


def _invalid_utf8(tmp_path):
    root = _copy("p5", tmp_path)
    replace_line(root / "Mini.txt", 3, b"3 3 \xff\xfe 5\n")
    return "p5", root, {}, r"Mini\.txt:3"


def _corrupt_json_line(tmp_path):
    root = _copy("amazon2018", tmp_path)
    replace_line(root / "Mini_5.json", 4, b'{"reviewerID": "u2", "asin"\n')
    return "amazon2018", root, {}, r"Mini_5\.json:4"


def _missing_field(tmp_path):
    root = _copy("amazon2023", tmp_path)
    replace_line(root / "Mini.jsonl", 2, json.dumps({"parent_asin": "A", "timestamp": 1}).encode() + b"\n")
    return "amazon2023", root, {}, r"Mini\.jsonl:2"


def _duplicate_review(tmp_path):
    root = _copy("amazon2014", tmp_path)
    f = root / "reviews_Mini_5.json"
    f.write_bytes(f.read_bytes() + f.read_bytes().splitlines(keepends=True)[0])
    return "amazon2014", root, {}, r"reviews_Mini_5\.json:13"


def _duplicate_item_record(tmp_path):
    root = _copy("amazon2018", tmp_path)
    f = root / "meta_Mini.json"
    f.write_bytes(f.read_bytes() + f.read_bytes().splitlines(keepends=True)[0])
    return "amazon2018", root, {}, r"meta_Mini\.json:6"


def _duplicate_user_key(tmp_path):
    root = _copy("letter", tmp_path)
    (root / "Mini.inter.json").write_text('{"0": [0, 1, 2], "1": [0, 1, 2, 3], "0": [2, 3, 4]}')
    return "letter", root, {}, r"Mini\.inter\.json \(key '0'\)"


def _unknown_item(tmp_path):
    root = _copy("letter", tmp_path)
    (root / "Mini.inter.json").write_text('{"0": [0, 1, 2], "1": [0, 1, 9, 3]}')
    return "letter", root, {"require_metadata": True}, r"Mini\.inter\.json"


def _corrupt_csv_row(tmp_path):
    root = _copy("minionerec", tmp_path)
    f = next((root / "valid").glob("*.csv"))
    f.write_text(f.read_text() + 'A9,"[\'x\']",x,"[1, oops",2,"[]",<a_1>\n')
    return "minionerec", root, {}, r"Mini_5_2016-10-2018-11\.csv:5"


def _non_integer_p5_item(tmp_path):
    root = _copy("p5", tmp_path)
    replace_line(root / "Mini.txt", 2, b"2 1 2 three 4\n")
    return "p5", root, {}, r"Mini\.txt:2"


BAD_INPUTS = {
    "truncated_gzip": (_truncated_gzip, "truncated_gzip"),
    "invalid_utf8": (_invalid_utf8, "invalid_utf8"),
    "corrupt_json_line": (_corrupt_json_line, "corrupt_line"),
    "missing_field": (_missing_field, "missing_field"),
    "duplicate_review": (_duplicate_review, "duplicate_interaction"),
    "duplicate_item_record": (_duplicate_item_record, "duplicate_item"),
    "duplicate_user_key": (_duplicate_user_key, "duplicate_record"),
    "unknown_item": (_unknown_item, "unknown_item"),
    "corrupt_csv_row": (_corrupt_csv_row, "corrupt_line"),
    "non_integer_p5_item": (_non_integer_p5_item, "corrupt_line"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_strict_names_file_and_line(case, tmp_path):
    make, reason = BAD_INPUTS[case]
    reader, root, kwargs, location = make(tmp_path)
    with pytest.raises(DataFormatError, match=location + r".*" + re.escape(f"[{reason}]")):
        create("dataset_reader", reader, strict=True, **kwargs).read(root)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_lenient_is_counted_with_its_location(case, tmp_path):
    make, reason = BAD_INPUTS[case]
    reader, root, kwargs, location = make(tmp_path)
    raw = create("dataset_reader", reader, strict=False, **kwargs).read(root)
    assert raw.skips.counts[reason] == 1
    assert re.search(location, raw.skips.examples[reason][0])
    stats = preprocess(raw, kcore=0, min_interactions=1).skips.to_json()
    assert stats["by_reason"][reason] == 1  # carried into the stats report


def test_unknown_item_in_prepare_is_an_error_when_strict():
    raw = raw_of([("u", "a", 1), ("u", "b", 2), ("u", "ghost", 3)], items=["a", "b"])
    with pytest.raises(DataFormatError, match=r"interaction 2 .*ghost.*\[unknown_item\]"):
        preprocess(raw, kcore=0, min_interactions=1, strict=True)
    assert preprocess(raw, kcore=0, min_interactions=1).skips.counts["unknown_item"] == 1


@pytest.mark.parametrize("strict", [True, False])
def test_empty_catalog_is_always_an_error(strict, tmp_path):
    (tmp_path / "Mini.inter.json").write_text("{}")
    with pytest.raises(DataFormatError, match="catalog is empty"):
        prepare_dataset(str(tmp_path / "run"), reader="letter", data_root=str(tmp_path), strict=strict)
    assert not (tmp_path / "run" / "data" / "manifest.json").exists()


def test_nothing_survives_filtering_is_an_error():
    raw = raw_of([("u", "a", 1), ("u", "b", 2)])
    with pytest.raises(DataFormatError, match="kcore=0 disables"):
        preprocess(raw, kcore=5, min_interactions=3)


# ------------------------------------------------------------------------------------------------ fuzzing
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_record_only_ever_raises_value_error(text):
    for python_literal in (False, True):
        try:
            record = parse_record(text, python_literal=python_literal)
        except ValueError:
            continue
        assert isinstance(record, dict)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_parse_record_round_trips_json_and_python_literals(record):
    assert parse_record(json.dumps(record)) == record
    assert parse_record(repr(record), python_literal=True) == record


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.integers()).map(str)))
def test_parse_id_list_accepts_only_integer_lists(text):
    try:
        ids = parse_id_list(text)
    except ValueError:
        return
    assert isinstance(ids, list) and all(type(i) is int for i in ids)


def test_data_root_is_the_folder_holding_the_datasets_and_dataset_the_folder_inside(tmp_path, letter_root):
    direct = prepare_dataset(str(tmp_path / "a"), reader="letter", data_root=str(letter_root), kcore=0)
    held = prepare_dataset(str(tmp_path / "b"), reader="letter", data_root=str(letter_root.parent),
                           dataset=letter_root.name, kcore=0)
    assert {k: v for k, v in held.items() if k != "prepare_seconds"} == {
        k: v for k, v in direct.items() if k != "prepare_seconds"}
    assert (tmp_path / "a/data/catalog.jsonl").read_bytes() == (tmp_path / "b/data/catalog.jsonl").read_bytes()
    with pytest.raises(ValueError, match="pass data_root"):
        prepare_dataset(str(tmp_path / "c"), reader="letter", dataset=letter_root.name)
