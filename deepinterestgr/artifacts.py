"""Run-directory artifacts: atomic writes, content hashes and per-stage manifests.

Every stage writes its files through `atomic_write*` (temp file + `os.replace`, so a killed process never leaves a
half-written artifact) and records them in `<stage>/manifest.json` with their SHA-256. `verify_manifest` is called
on load: a truncated or edited artifact fails with the file name and the stage to rerun. The manifest also records how
the stage was made (`stage_record`: resolved config and input manifest hashes), which is all `is_current` compares.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
#: the stages whose artifacts each stage reads: their manifest hashes are its recorded `inputs` (`input_manifests`;
#: quantize also hashes the embedding files it reads)
READS = {"evidence": ("data",), "generate": ("data", "quantize"), "rl": ("data", "evidence", "quantize", "generate"),
         "baselines": ("data",)}


class ArtifactError(RuntimeError):
    """An artifact is missing, corrupt or from an incompatible version. The message names the file and the fix."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _weights_digest(path: str, stamp: tuple) -> str:
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def weights_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a weights file, or of every file of a model folder (names + contents): the identity of local
    weights in cache keys, so two fine-tunes of one architecture never share a key. Memoised per process on the
    files' sizes and mtimes (a 90 MB model hashes in ~0.3 s, once)."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _weights_digest(str(root.resolve()), stamp)


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-serialisable value, independent of dict order (cache keys, config fingerprints)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the same directory; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike, *, stage: str | None = None) -> Iterator[dict]:
    """Yield rows of a JSONL artifact; a bad line raises ArtifactError naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(_missing(path, stage))
    # bytes, decoded per line: a bad byte then names its line instead of escaping as a bare UnicodeDecodeError
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ArtifactError(
                    f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start}).{_rerun(stage)}") from e
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{path}:{lineno}: invalid JSON ({e.msg}).{_rerun(stage)}") from e


def _rerun(stage: str | None) -> str:
    return f" Rerun the `{stage}` stage (e.g. `dig pipeline ... --from {stage}`)." if stage else ""


def _missing(path: Path, stage: str | None) -> str:
    return f"{path}: artifact not found.{_rerun(stage)}"


MANIFEST = "manifest.json"


def write_manifest(stage_dir: str | os.PathLike, stage: str, files: Iterable[str], **meta: Any) -> dict:
    """Record `files` (relative to `stage_dir`) with sizes and SHA-256, plus free-form metadata (config, plugins)."""
    stage_dir = Path(stage_dir)
    entries = {}
    for rel in sorted(set(files)):
        p = stage_dir / rel
        entries[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest = {"stage": stage, "schema_version": SCHEMA_VERSION, "files": entries, **meta}
    atomic_write_json(stage_dir / MANIFEST, manifest)
    return manifest


def read_manifest(stage_dir: str | os.PathLike, stage: str | None = None) -> dict:
    path = Path(stage_dir) / MANIFEST
    if not path.exists():
        raise ArtifactError(_missing(path, stage))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: corrupt manifest ({e.msg}).{_rerun(stage)}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{path}: corrupt manifest (not an object with a \"files\" map).{_rerun(stage)}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema version {manifest.get('schema_version')} but this deepinterestgr reads "
            f"{SCHEMA_VERSION}.{_rerun(stage or manifest.get('stage'))}"
        )
    return manifest


def verify_manifest(stage_dir: str | os.PathLike, stage: str | None = None) -> dict:
    """Check every file listed in the manifest against its recorded hash; raise ArtifactError on any mismatch."""
    stage_dir = Path(stage_dir)
    manifest = read_manifest(stage_dir, stage)
    stage = stage or manifest.get("stage")
    for rel, entry in manifest["files"].items():
        p = stage_dir / rel
        if not p.exists():
            raise ArtifactError(_missing(p, stage))
        if p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            raise ArtifactError(f"{p}: content does not match its manifest (truncated or edited).{_rerun(stage)}")
    return manifest


def stage_record(config: Any, inputs: dict[str, str | None]) -> dict:
    """What a stage's manifest records about how it was made -- its resolved `config` (seed included) and `inputs`,
    the manifest hashes of the stages it read (`input_manifests`) -- plus `config_hash`, the hash of both: the one
    key that says whether a stage is current (`is_current`) and whether an interrupted fit may resume
    (`training.resumable_checkpoint`). Values go through JSON, so the recorded and the recomputed key agree."""
    record = json.loads(json.dumps({"config": config, "inputs": dict(inputs)}, sort_keys=True, default=str))
    return {**record, "config_hash": stable_hash(record)}


def input_manifests(run_dir: str | os.PathLike, stages: Iterable[str]) -> dict[str, str | None]:
    """{stage: SHA-256 of `<run>/<stage>/manifest.json`, None when absent} for the stages a stage reads: any rewrite
    of an upstream stage makes its readers stale."""
    paths = {s: Path(run_dir) / s / MANIFEST for s in stages}
    return {s: sha256_file(p) if p.exists() else None for s, p in paths.items()}


def is_current(stage_dir: str | os.PathLike, stage: str, config: Any, inputs: dict[str, str | None]) -> bool:
    """True when `stage_dir` holds a finished `stage` whose files verify and whose manifest records this very config
    and these inputs. The only up-to-date check: every stage and the pipeline ask it."""
    try:
        manifest = verify_manifest(stage_dir, stage)
    except ArtifactError:
        return False
    return manifest.get("stage") == stage and manifest.get("config_hash") == stage_record(config, inputs)["config_hash"]


def record_stage(stage_dir: str | os.PathLike, stage: str, config: Any, inputs: dict[str, str | None]) -> dict:
    """Add the stage record to a manifest written by code that does not know the resolved config (the quantizer
    module's `on_fit_end`)."""
    manifest = {**verify_manifest(stage_dir, stage), **stage_record(config, inputs)}
    atomic_write_json(Path(stage_dir) / MANIFEST, manifest)
    return manifest
