"""Released Semantic IDs (LETTER / LC-Rec `<Cat>.index.json`) imported as the quantize stage's artifacts.

The generator then trains on someone else's SIDs exactly as on ours, so SID sources can be compared on one
generator. The file maps an item key to its code tokens, `{"<item>": ["<a_128>", "<b_241>", "<c_146>", "<d_235>"]}`;
`<x_n>` is code n of level x (a = level 0, ...). Items whose released codes collide get our suffix level, as SIDs
built here do (`assign_sids`). Every catalog item must have codes (a generator cannot recommend an item without an
SID); released entries for items the catalog does not hold (removed by k-core filtering) are counted and reported.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from deepinterestgr.artifacts import (
    ArtifactError,
    atomic_write_json,
    input_manifests,
    is_current,
    sha256_file,
    stage_record,
)
from deepinterestgr.quantize.artifacts import STAGE, write_quantize_artifacts

log = logging.getLogger(__name__)

TOKEN = re.compile(r"<([a-z])_(\d+)>")
KEYS = ("source_id", "item_id")
IMPORT_FILE = "import.json"


def read_released_sids(path: str | Path, item_keys: list[str]) -> tuple[torch.Tensor, dict]:
    """Codes [N, L] for the catalog items whose keys (in item-id order) are `item_keys`, plus a summary.

    Raises ArtifactError naming the file and the entry on a malformed entry, a level out of order, entries of
    different lengths, or a catalog item without codes."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: released SID file not found (e.g. LETTER's <Cat>.index.json). Check the path.")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}:{e.colno}: not JSON ({e.msg}).") from e
    if not isinstance(document, dict) or not document:
        raise ArtifactError(f"{path}: expected a non-empty object {{\"<item>\": [\"<a_1>\", \"<b_2>\", ...]}}.")
    parsed: dict[str, list[int]] = {}
    levels = None
    for key, tokens in document.items():
        codes = _parse_entry(path, key, tokens)
        if levels is None:
            levels = len(codes)
        elif len(codes) != levels:
            raise ArtifactError(f"{path}: entry {key!r} has {len(codes)} codes, the first entry had {levels}; every "
                                "item needs the same number of levels.")
        parsed[key] = codes
    missing = [k for k in item_keys if k not in parsed]
    if missing:
        raise ArtifactError(f"{path}: {len(missing)} catalog items have no released SID (e.g. key {missing[0]!r}). "
                            "The file must come from the same processing as the catalog; `key` chooses whether "
                            "entries are matched by source_id or by item_id.")
    codes = torch.tensor([parsed[k] for k in item_keys], dtype=torch.long)
    unused = len(parsed) - len(set(item_keys))
    if unused:
        log.warning("quantize import: %d released entries of %s name items the catalog does not hold (skipped)",
                    unused, path.name)
    return codes, {"entries": len(parsed), "unused_entries": unused, "levels": levels}


def _parse_entry(path: Path, key: str, tokens) -> list[int]:
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ArtifactError(f"{path}: entry {key!r} must be a non-empty list of code tokens like \"<a_12>\", "
                            f"got {tokens!r}.")
    codes = []
    for level, token in enumerate(tokens):
        match = TOKEN.fullmatch(token.strip())
        if match is None or ord(match.group(1)) - ord("a") != level:
            raise ArtifactError(f"{path}: entry {key!r}, token {level + 1} is {token!r}; expected "
                                f"\"<{chr(ord('a') + level)}_N>\" (level letters in order from a).")
        codes.append(int(match.group(2)))
    return codes


def import_sids(run_dir: str, sids_file: str, *, key: str = "source_id", codebook_size: int | None = None) -> dict:
    """Write `<run>/quantize/` from released SIDs instead of training a quantizer; returns the quantize metrics.

    Args:
        run_dir: a run whose `data` stage ran (`<run>/data/catalog.jsonl`).
        sids_file: the released SIDs, e.g. ../shared/data/Instruments/Instruments.index.json (LETTER's 4 levels).
        key: match entries to catalog items by `source_id` (the release's own item id; default) or `item_id`.
        codebook_size: codes per level; default the largest code + 1 (LETTER's files use 256).

    Skipped (metrics from disk) when `<run>/quantize` already holds this import of the same file content and data
    stage (`is_current`).
    """
    from deepinterestgr.data.io import load_catalog

    if key not in KEYS:
        raise ValueError(f"key must be one of {KEYS}, got {key!r}")
    run, out_dir = Path(run_dir), Path(run_dir) / STAGE
    catalog = load_catalog(run)
    config = {"sids_file": str(sids_file), "key": key, "codebook_size": codebook_size}
    released = sha256_file(sids_file) if Path(sids_file).is_file() else None  # a missing file fails below, named
    inputs = {**input_manifests(run, ["data"]), "sids_file": released}
    if is_current(out_dir, STAGE, config, inputs):
        log.info("quantize: %s already holds this import, skipping", out_dir)
        return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    keys = [str(getattr(item, key)) for item in catalog]
    codes, summary = read_released_sids(sids_file, keys)
    size = int(codes.max()) + 1 if codebook_size is None else int(codebook_size)
    if int(codes.max()) >= size:
        raise ArtifactError(f"{sids_file}: code {int(codes.max())} does not fit codebook_size {size}; raise it.")
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {"source": str(Path(sids_file).resolve()), "sha256": released, "key": key, **summary}
    atomic_write_json(out_dir / IMPORT_FILE, provenance)
    metrics = write_quantize_artifacts(out_dir, codes, codebook_size=size, record=stage_record(config, inputs),
                                       extra_files=[IMPORT_FILE], meta={"imported_from": provenance["source"]})
    log.info("quantize: imported %d items x %d levels from %s (collision rate %.4f: those items got a suffix)",
             len(catalog), summary["levels"], sids_file, metrics["collision_rate"])
    return metrics
