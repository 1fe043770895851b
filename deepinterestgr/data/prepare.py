"""The data stage: read a dataset with a reader plugin, preprocess it, and write `<run>/data/` atomically."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from deepinterestgr.artifacts import (
    MANIFEST,
    atomic_write_json,
    atomic_write_jsonl,
    is_current,
    stable_hash,
    stage_record,
    write_manifest,
)
from deepinterestgr.data.preprocess import TEXT_FIELDS, dataset_stats, preprocess

log = logging.getLogger(__name__)

STAGE = "data"
#: bump when preprocessing changes what it writes for the same inputs, so old run dirs are rebuilt
#: (2: HTML entities unescaped, stringified description lists parsed)
PREPARE_VERSION = 2


def prepare_dataset(
    run_dir: str,
    reader: str = "synthetic",
    data_root: str | None = None,
    dataset: str | None = None,
    category: str | None = None,
    kcore: int = 5,
    min_interactions: int = 3,
    strict: bool = False,
    reader_args: dict | None = None,
) -> dict:
    """Read a dataset with a reader plugin and write `<run_dir>/data/` (catalog, sequences, stats, manifest).

    Preprocessing: dedupe (user, item, timestamp), drop users under `min_interactions`, iterative k-core, stable
    chronological order, dense item ids. The synthetic reader also writes truth.json and images/. Rerunning with
    the same config and unchanged input files does nothing.

    Args:
        run_dir: Run directory; the stage writes `<run_dir>/data/`.
        reader: Dataset reader plugin (`dig plugins list dataset_reader`): synthetic, amazon2014, amazon2018,
            amazon2023, letter, p5, minionerec.
        data_root: Folder holding the datasets (e.g. ../shared/data), as for `dig pipeline --data-root`; not needed
            for `synthetic`. Spelled `--data-root` too.
        dataset: The dataset's folder inside `data_root` (e.g. Beauty). Unset: `data_root` is that folder itself.
        category: Which category to read when the folder holds several (e.g. Beauty).
        kcore: Iterative k-core on users and items (5 in the paper); 0 disables it.
        min_interactions: Users with fewer interactions are dropped (leave-one-out needs 3).
        strict: Raise on the first malformed record instead of skipping and counting it.
        reader_args: Extra keyword arguments of the reader, e.g. {num_items: 600, num_users: 800, seed: 42}.

    Returns:
        The stats dict written to stats.json (print it with `format_stats`).
    """
    from deepinterestgr.registry import create

    started = time.perf_counter()
    data_dir = Path(run_dir) / STAGE
    if dataset and not data_root:
        raise ValueError(f"dataset {dataset!r} names a folder inside data_root: pass data_root (e.g. ../shared/data)")
    root = str((Path(data_root) / (dataset or "")).resolve()) if data_root else None
    config = {
        "reader": reader, "data_root": root, "category": category, "kcore": kcore,
        "min_interactions": min_interactions, "strict": strict, "reader_args": dict(reader_args or {}),
        "prepare_version": PREPARE_VERSION,
    }
    inputs = {"raw_files": stable_hash(input_fingerprint(root))}  # the data stage reads files, no upstream stage
    if is_current(data_dir, STAGE, config, inputs):
        log.info("%s is up to date (same config and inputs); nothing to do", data_dir)
        from deepinterestgr.data.io import load_stats

        return load_stats(run_dir)

    plugin = create("dataset_reader", reader, strict=strict, **(reader_args or {}))
    if root is None and plugin.needs_files:
        raise ValueError(f"reader {reader!r} reads files: pass data_root (the folder holding {type(plugin).expects}).")
    log.info("reading %s with reader %s", root or "(generated)", reader)
    raw = plugin.read(root, category=category)
    prepared = preprocess(raw, kcore=kcore, min_interactions=min_interactions, strict=strict)
    stats = dataset_stats(prepared, name=raw.name or category or reader)

    # A stale manifest must not vouch for files being replaced: remove it first, write it last.
    (data_dir / MANIFEST).unlink(missing_ok=True)
    atomic_write_jsonl(data_dir / "catalog.jsonl", (it.catalog_row() for it in prepared.items))
    atomic_write_jsonl(data_dir / "sequences.jsonl", (vars(s) for s in prepared.sequences))
    files = ["catalog.jsonl", "sequences.jsonl", "stats.json"]
    files += plugin.write_extras(data_dir, prepared.items)
    # stats.json stays a pure function of config and inputs (no timings), so identical reruns hash identically
    atomic_write_json(data_dir / "stats.json", stats)
    write_manifest(data_dir, STAGE, files, **stage_record(config, inputs),
                   counts={k: stats[k] for k in ("users", "items", "interactions")})
    seconds = time.perf_counter() - started
    log.info("wrote %s in %.1f s", data_dir, seconds)
    return {**stats, "prepare_seconds": round(seconds, 3)}


def input_fingerprint(root: str | None) -> list:
    """(relative path, size, mtime) of every file under `root`: cheap change detection without hashing gigabytes."""
    if root is None:
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            st = p.stat()
            out.append([str(p.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


def format_stats(stats: dict) -> str:
    """A short human-readable table of a stats dict (what `dig data prepare` prints)."""
    lines = [
        f"dataset       {stats.get('dataset', '')}",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}",
        f"interactions  {stats['interactions']:,}",
        f"density       {stats['density']:.6f}",
        "seq length    min {min} / median {median} / mean {mean} / max {max}".format(**stats["sequence_length"]),
        "text coverage " + ", ".join(
            f"{f} {stats['text_coverage'][f]['items']:,}/{stats['text_coverage'][f]['of']:,}"
            for f in (*TEXT_FIELDS, "attributes") if f in stats["text_coverage"]),
        f"removed       {stats['removed']}",
    ]
    skips = stats["skips"]
    lines.append(f"skipped       {skips['total']:,}" + (f" {skips['by_reason']}" if skips["total"] else ""))
    return "\n".join(lines)
