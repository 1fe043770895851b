"""The dataset-reader contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from deepinterestgr.data.schema import Item, RawDataset


class DataFormatError(ValueError):
    """Malformed input. The message names the file, the line (when there is one) and what to do."""


class DatasetReader(ABC):
    """Reads one on-disk dataset format into the common schema.

    `strict=True` turns every recoverable problem (a corrupt line, a missing field, a duplicate record) into a
    `DataFormatError` naming file and line; otherwise it is skipped and counted in `RawDataset.skips`.
    """

    #: one line for `dig plugins list` and error messages: what files the reader expects
    expects: ClassVar[str] = ""
    #: False for readers that generate their data (synthetic): `prepare_dataset` then needs no data_root
    needs_files: ClassVar[bool] = True

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict

    @abstractmethod
    def read(self, path: str | Path, *, category: str | None = None) -> RawDataset:
        """Read the dataset rooted at `path` (a directory). `category` picks one when several are present."""

    def write_extras(self, data_dir: Path, items: list[Item]) -> list[str]:
        """Write reader-specific artifacts next to the catalog (e.g. the synthetic reader's truth.json and images)
        after preparation; `items` are the kept items with their dense ids. Returns paths relative to `data_dir`
        for the manifest. Called after `read`; most readers have nothing to add."""
        return []
