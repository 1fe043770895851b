"""What the three raw Amazon review dumps (2014, 2018, 2023) share: a reviews file and a metadata file per category,
one record per line. Each version's module says where its files are and what its fields are called."""

from __future__ import annotations

import ast
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from deepinterestgr.data.readers.base import DataFormatError, DatasetReader
from deepinterestgr.data.readers.lines import Problems, category_paths, iter_lines, text_field, where
from deepinterestgr.data.schema import Interaction, Item, RawDataset


def parse_record(text: str, *, python_literal: bool = False) -> dict:
    """One line → one record dict. `python_literal` parses Python-literal lines (Amazon 2014 metadata) with
    `ast.literal_eval`, which evaluates literals only and never runs code. Raises ValueError on anything else."""
    try:
        record = ast.literal_eval(text.strip()) if python_literal else json.loads(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        kind = "Python literal" if python_literal else "JSON"
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"not a valid {kind} record ({type(e).__name__}: {first_line})") from e
    if not isinstance(record, dict):
        raise ValueError(f"expected an object per line, got {type(record).__name__}")
    return record


def find_one(root: Path, patterns: list[str], what: str) -> Path:
    """The single file matching the first pattern that matches anything; an error listing candidates otherwise."""
    for pattern in patterns:
        hits = sorted(root.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(h.name for h in hits)
            raise DataFormatError(
                f"{root}: several {what} files match {pattern!r} ({names}); pass `category` to pick one.")
    raise DataFormatError(f"{root}: no {what} file found (looked for {', '.join(patterns)}).")


class AmazonRawReader(DatasetReader):
    """Reads `<reviews file>` + `<metadata file>` of one Amazon category (JSON lines, optionally gzip)."""

    #: parse metadata lines as Python literals (2014) instead of JSON
    meta_is_python_literal: ClassVar[bool] = False

    @abstractmethod
    def review_patterns(self, category: str | None) -> list[str]: ...

    def meta_patterns(self, category: str | None) -> list[str]:
        """`meta_<Cat>.json(.gz)`, the 2014 and 2018 dumps' metadata files."""
        cat = category or "*"
        return [f"meta_{cat}.json.gz", f"meta_{cat}.json"]

    def review_fields(self, record: dict) -> tuple[str, str, float]:
        """(user, item source id, timestamp in seconds); KeyError/ValueError/TypeError for a bad record. The 2014
        and 2018 dumps' fields: reviewerID, asin, unixReviewTime."""
        user, item = required_str(record, "reviewerID"), required_str(record, "asin")
        return user, item, required_number(record, "unixReviewTime")

    @abstractmethod
    def item_from_meta(self, record: dict) -> Item:
        """An Item (item_id -1) from one metadata record; KeyError for a missing id."""

    def read(self, path: str | Path, *, category: str | None = None) -> RawDataset:
        root = Path(path)
        if not root.is_dir():
            raise DataFormatError(f"{root}: not a directory; pass the folder holding the review and metadata files.")
        problems = Problems(strict=self.strict)
        reviews = find_one(root, self.review_patterns(category), "reviews")
        interactions = self._read_reviews(reviews, problems)
        if not interactions:
            raise DataFormatError(f"{reviews}: no usable review records; the dataset would be empty.")
        order = list(dict.fromkeys(i.item for i in interactions))
        try:
            meta = find_one(root, self.meta_patterns(category), "metadata")
        except DataFormatError:
            if self.strict:
                raise
            meta = None
            problems.skips.add("metadata_file_missing", str(root))
        by_id = self._read_meta(meta, set(order), problems) if meta else {}
        items = [by_id.get(asin) or Item(item_id=-1, source_id=asin) for asin in order]
        name = category or reviews.name.split(".")[0]
        return RawDataset(items=items, interactions=interactions, skips=problems.skips, name=name)

    def _read_reviews(self, path: Path, problems: Problems) -> list[Interaction]:
        seen: set[tuple[str, str, float]] = set()
        out: list[Interaction] = []
        for lineno, text in iter_lines(path, problems):
            try:
                record = parse_record(text)
            except ValueError as e:
                problems.report("corrupt_line", where(path, lineno), str(e))
                continue
            try:
                user, item, ts = self.review_fields(record)
            except (KeyError, ValueError, TypeError) as e:
                problems.report("missing_field", where(path, lineno), f"review record lacks a usable field ({e!s})")
                continue
            key = (user, item, ts)
            if key in seen:
                problems.report("duplicate_interaction", where(path, lineno), f"repeats review ({user}, {item}, {ts})")
                continue
            seen.add(key)
            out.append(Interaction(user=user, item=item, timestamp=ts))
        return out

    def _read_meta(self, path: Path, wanted: set[str], problems: Problems) -> dict[str, Item]:
        items: dict[str, Item] = {}
        for lineno, text in iter_lines(path, problems):
            try:
                record = parse_record(text, python_literal=self.meta_is_python_literal)
            except ValueError as e:
                problems.report("corrupt_line", where(path, lineno), str(e))
                continue
            try:
                item = self.item_from_meta(record)
            except (KeyError, ValueError, TypeError) as e:
                problems.report("missing_field", where(path, lineno), f"metadata record lacks its item id ({e!s})")
                continue
            if item.source_id not in wanted:
                continue  # metadata of items nobody reviewed: not part of this dataset
            if item.source_id in items:
                problems.report("duplicate_item", where(path, lineno), f"second metadata record for {item.source_id}")
                continue
            items[item.source_id] = item
        return items


def asin_item(record: dict, *, categories, images: list[str]) -> Item:
    """An Item (item_id -1) of a 2014/2018 metadata record: its asin, title, description, brand, and the category
    field and image list each dump names its own way."""
    return Item(
        item_id=-1,
        source_id=required_str(record, "asin"),
        title=text_field(record.get("title")),
        description=text_field(record.get("description")),
        brand=text_field(record.get("brand")),
        categories=category_paths(categories),
        images=images,
    )


def required_str(record: dict, key: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def required_number(record: dict, key: str) -> float:
    value: Any = record[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        # float() alone would say "could not convert string to float: 'five'" without naming the field
        raise ValueError(f"{key!r} must be a number, got {value!r}") from None
    return number
