"""Append-only evidence cache: one directory per branch, one JSONL file per writing process.

Why this shape: each process appends only to its own file (`<host>-<pid>-<random>.jsonl`), so two processes
(shards, or a rerun racing a stale one) never write the same file and need no lock. Every batch is ONE line
(`{"entries": {key: value, ...}}`) written with one `write` + flush + fsync: a `kill -9` can only leave a partial
*last* line, which readers skip (and count), so a batch is committed whole or not at all. That keeps batch
composition, and with it the last bits of batched model outputs, identical between an interrupted-and-resumed
run and an uninterrupted one. Values are keyed by content hashes, so a key written twice holds the same value
and the first one read wins.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import uuid
from pathlib import Path

import numpy as np
import torch

from deepinterestgr.artifacts import weights_digest

log = logging.getLogger(__name__)


def encode_tensor(t: torch.Tensor) -> str:
    return base64.b64encode(t.detach().cpu().to(torch.float32).contiguous().numpy().tobytes()).decode("ascii")


def decode_tensor(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.float32).copy())


class BranchCache:
    """Key -> JSON value store of one evidence branch under `root/branch/`."""

    def __init__(self, root: str | os.PathLike, branch: str) -> None:
        self.dir = Path(root) / branch
        self.dir.mkdir(parents=True, exist_ok=True)
        self.torn_lines = 0
        self._values: dict[str, object] = {}
        self._writer = None
        self._load()

    def _load(self) -> None:
        for path in sorted(self.dir.glob("*.jsonl")):
            # bytes, decoded per line: a torn last line can end inside a multi-byte character
            with open(path, "rb") as f:
                for line in f:
                    try:
                        row = json.loads(line.decode("utf-8"))
                        # {"k", "v"} lines: the one-entry-per-line format of earlier development builds
                        entries = {row["k"]: row["v"]} if "k" in row else row["entries"]
                        if not isinstance(entries, dict):
                            raise TypeError("entries must be an object")
                    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                        # only a killed writer leaves these (a torn last line); the batch is recomputed
                        self.torn_lines += 1
                        continue
                    for key, value in entries.items():
                        self._values.setdefault(key, value)
        if self.torn_lines:
            log.warning("%s: ignored %d torn cache lines from interrupted runs", self.dir, self.torn_lines)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str):
        return self._values.get(key)

    def put_many(self, values: dict[str, object]) -> None:
        if not values:
            return
        if self._writer is None:
            name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._writer = open(self.dir / name, "a", encoding="utf-8")
        self._writer.write(json.dumps({"entries": values}, ensure_ascii=False) + "\n")
        self._writer.flush()
        os.fsync(self._writer.fileno())
        for k, v in values.items():
            self._values.setdefault(k, v)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def model_identity(model_id: str) -> str:
    """The identity of a model in cache keys (every plugin that loads weights records it in `describe`). A hub id or
    a packaged name stays as given; a local folder is recorded by its name and the content hash of its files: the key
    survives a moved virtualenv and changes with the weights (two fine-tunes in folders of one name and size never
    share a key)."""
    if os.path.isdir(model_id):
        return f"local:{os.path.basename(os.path.normpath(model_id))}:sha256:{weights_digest(model_id)[:16]}"
    return model_id
