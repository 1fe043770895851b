"""The one catalog schema and one interaction schema every reader produces.

Run-directory layout written by `dig data prepare` (stage `data`):
  data/catalog.jsonl     one `Item` per line, `item_id` = 0..N-1 (dense, the id every later stage uses)
  data/sequences.jsonl   one `UserSequence` per line: chronological dense item ids (+ timestamps)
  data/stats.json        users / items / interactions / density / text coverage / skipped records by reason
  data/manifest.json     hashes, schema version, the config that produced them
  data/truth.json        synthetic catalogs only: latent intents and attributes per item (ground truth)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class Item:
    item_id: int  # dense 0..N-1 after preparation; readers may leave -1
    source_id: str  # ASIN or the source dataset's own id
    title: str = ""
    description: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # local paths or URLs, main image first
    #: attribute ids without names (S3-Rec's brand + category ids); written only when present, so catalogs
    #: without them keep the bytes (and hashes) they had before the field existed
    attributes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        row = asdict(self)
        if not row["attributes"]:
            del row["attributes"]
        return row

    def catalog_row(self) -> dict:
        """`to_json()` without its deep copies (3x faster on Beauty), for writing catalog.jsonl."""
        row = dict(vars(self))
        if not row["attributes"]:
            del row["attributes"]
        return row

    @classmethod
    def from_json(cls, row: dict) -> "Item":
        return cls(**row)


@dataclass
class Interaction:
    user: str
    item: str  # source id
    timestamp: float = 0.0  # ties keep file order (stable sort)


@dataclass
class UserSequence:
    user: str
    items: list[int]  # dense item ids, chronological
    timestamps: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> "UserSequence":
        return cls(**row)


@dataclass
class SkipReport:
    """Records a reader or preprocessing step dropped, by reason, with a few examples (file:line) for the report."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def add(self, reason: str, where: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        ex = self.examples.setdefault(reason, [])
        if where and len(ex) < self.max_examples:
            ex.append(where)

    def merge(self, other: "SkipReport") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            ex = self.examples.setdefault(reason, [])
            ex.extend(other.examples.get(reason, [])[: max(0, self.max_examples - len(ex))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": self.examples}


@dataclass
class RawDataset:
    """What a reader returns: items and interactions keyed by source ids, plus what it skipped."""

    items: list[Item]
    interactions: list[Interaction]
    skips: SkipReport = field(default_factory=SkipReport)
    name: str = ""
