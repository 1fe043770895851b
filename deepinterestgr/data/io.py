"""Loaders of the data stage's artifacts. Each verifies the manifest first, so a truncated or edited file fails
here with its name instead of surfacing as a wrong result three stages later."""

from __future__ import annotations

import json
from pathlib import Path

from deepinterestgr.artifacts import ArtifactError, read_jsonl, verify_manifest
from deepinterestgr.data.schema import Item, UserSequence

STAGE = "data"
_FIX = " Rerun `dig data prepare` for this run directory."


def data_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / STAGE


def verify_data(run_dir: str | Path) -> dict:
    """The data manifest, after checking every file it lists; ArtifactError naming the file otherwise."""
    try:
        return verify_manifest(data_dir(run_dir), STAGE)
    except ArtifactError as e:
        raise ArtifactError(f"{e}{_FIX}") from e


def load_catalog(run_dir: str | Path) -> list[Item]:
    verify_data(run_dir)
    path = data_dir(run_dir) / "catalog.jsonl"
    items = [Item.from_json(row) for row in read_jsonl(path, stage=STAGE)]
    for k, item in enumerate(items):
        if item.item_id != k:
            raise ArtifactError(
                f"{path}:{k + 1}: item_id {item.item_id} but dense ids must equal the line index {k}.{_FIX}")
    return items


def load_sequences(run_dir: str | Path) -> list[UserSequence]:
    verify_data(run_dir)
    return [UserSequence.from_json(row) for row in read_jsonl(data_dir(run_dir) / "sequences.jsonl", stage=STAGE)]


def load_truth(run_dir: str | Path) -> dict | None:
    """Ground truth of a synthetic catalog (`truth["items"][item_id]`), or None for real datasets."""
    manifest = verify_data(run_dir)
    if "truth.json" not in manifest["files"]:
        return None
    return json.loads((data_dir(run_dir) / "truth.json").read_text(encoding="utf-8"))


def load_stats(run_dir: str | Path) -> dict:
    verify_data(run_dir)
    return json.loads((data_dir(run_dir) / "stats.json").read_text(encoding="utf-8"))
