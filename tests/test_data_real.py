"""Real benchmark files from ../shared/data (skipped with the reason when absent): the counts the papers report."""

from __future__ import annotations

import json

import pytest

from deepinterestgr.data.io import load_catalog, load_sequences
from deepinterestgr.data.prepare import prepare_dataset

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def beauty_runs(shared_data, tmp_path_factory):
    runs = {}
    for reader in ("p5", "letter"):
        run = tmp_path_factory.mktemp(f"beauty_{reader}")
        stats = prepare_dataset(str(run), reader=reader, data_root=str(shared_data / "Beauty"), strict=True)
        runs[reader] = (run, stats)
    return runs


@pytest.mark.parametrize("reader", ["p5", "letter"])
def test_beauty_counts(beauty_runs, reader):
    _, stats = beauty_runs[reader]
    assert (stats["users"], stats["items"], stats["interactions"]) == (22_363, 12_101, 198_502)
    assert stats["text_coverage"]["title"]["items"] == 12_094
    assert stats["text_coverage"]["categories"]["items"] == 12_101
    assert stats["removed"] == {"users": 0, "users_too_short": 0, "items": 0, "interactions": 0}  # already 5-core
    assert stats["kcore_rounds"] == 0 and stats["skips"]["total"] == 0


def test_beauty_p5_and_letter_agree_and_keep_letter_ids(beauty_runs):
    p5_run, letter_run = beauty_runs["p5"][0], beauty_runs["letter"][0]
    p5_items, letter_items = load_catalog(p5_run), load_catalog(letter_run)
    assert p5_items == letter_items  # ASIN source ids: the same catalog whichever release is read
    assert p5_items[0].source_id == "B004756YJA"  # LETTER id 0 = P5 id 1, so dense ids equal LETTER ids
    p5_seqs, letter_seqs = load_sequences(p5_run), load_sequences(letter_run)
    assert [s.items for s in p5_seqs] == [s.items for s in letter_seqs]
    assert letter_seqs[0].items == [0, 1, 2, 3, 4]


def test_toys_counts(shared_data, tmp_path):
    stats = prepare_dataset(str(tmp_path), reader="p5", data_root=str(shared_data / "Toys"), strict=True)
    assert (stats["users"], stats["items"], stats["interactions"]) == (19_412, 11_924, 167_597)
    assert stats["text_coverage"]["title"]["items"] == 11_865


def test_industrial_minionerec_counts(shared_data, tmp_path):
    # valid+test only (the train CSV is not public): k-core would gut it, and the release is 5-core already
    root = shared_data / "Industrial_and_Scientific"
    stats = prepare_dataset(str(tmp_path), reader="minionerec", data_root=str(root), kcore=0, strict=True)
    assert (stats["users"], stats["items"], stats["interactions"]) == (3_285, 3_541, 22_743)
    assert stats["text_coverage"]["brand"]["items"] == 3_530
    assert stats["skips"]["by_reason"] == {"train_split_missing": 1, "item_without_interactions": 145}


def test_the_shipped_beauty_config_takes_data_root_as_the_pipeline_does(shared_data, tmp_path, capsys):
    """`--data-root` means the folder holding the datasets for `dig data prepare` and `dig pipeline` alike."""
    from deepinterestgr.cli.main import main

    assert main(["data", "prepare", "-c", "configs/data/prepare_beauty.yaml", "--data-root", str(shared_data),
                 "--run_dir", str(tmp_path / "run")]) == 0
    stats = json.loads((tmp_path / "run/data/stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
