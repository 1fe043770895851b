"""Shared plumbing for readers: line iteration over plain or gzip files, and the strict-or-count policy.

Every reader funnels its problems through `Problems.report`, so "strict raises, otherwise count with an example
location" is decided in one place and no record is ever dropped silently.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.schema import SkipReport


class Problems:
    """Raise (strict) or count in `skips` (lenient) each recoverable input problem."""

    def __init__(self, *, strict: bool, skips: SkipReport | None = None) -> None:
        self.strict = strict
        self.skips = skips if skips is not None else SkipReport()

    def report(self, reason: str, where: str, detail: str, fix: str = "") -> None:
        if self.strict:
            hint = f" {fix}" if fix else " Fix the record, or run without `strict` to skip and count such records."
            raise DataFormatError(f"{where}: {detail} [{reason}].{hint}")
        self.skips.add(reason, where)


def where(path: str | Path, lineno: int | None = None) -> str:
    return f"{path}:{lineno}" if lineno is not None else str(path)


def iter_lines(path: str | Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of a UTF-8 text file, gzip-compressed when the name ends in `.gz`.

    Blank lines are skipped. A line that is not valid UTF-8 is reported (`invalid_utf8`); a truncated or corrupt gzip
    stream is reported once (`truncated_gzip`) and ends the file — the lines read before it are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found.")
    opener = gzip.open if path.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    problems.report("invalid_utf8", where(path, lineno),
                                    f"not valid UTF-8 ({e.reason} at byte {e.start})")
                    continue
                if text.strip():
                    yield lineno, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        problems.report(
            "truncated_gzip",
            where(path, lineno + 1),
            f"compressed stream ends early or is corrupt ({type(e).__name__}: {e})",
            fix="Download the file again (`dig data download` resumes partial downloads).",
        )


def load_json_document(path: str | Path, problems: Problems | None = None) -> Any:
    """Parse a whole-file JSON document. A duplicate object key (json.load would silently keep the last) is a
    `duplicate_record` problem; the first occurrence is kept. Without `problems` it always raises."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found.")
    problems = problems or Problems(strict=True)

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                problems.report("duplicate_record", f"{path} (key {key!r})", "the key appears twice; the first is kept",
                                fix="Each record must appear once: remove the duplicate.")
                continue
            out[key] = value
        return out

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataFormatError(f"{path}:{line}: not valid UTF-8 ({e.reason}). Re-export the file as UTF-8.") from e
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno}). Fix or re-download the file.") from e


def text_field(value: Any) -> str:
    """Amazon text fields come as a string, a list of strings (2018/2023 descriptions), a *stringified* list of
    strings (MiniOneRec's descriptions: "['first', 'second']") or absent."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                parsed = None
            if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
                return text_field(parsed)
        # the dumps keep HTML entities ("Tom &amp; Jerry"); text encoders should see the characters
        return html.unescape(text).strip()
    if isinstance(value, (list, tuple)):
        return "\n".join(t for t in (text_field(v) for v in value) if t)
    return str(value).strip()


def category_paths(value: Any) -> list[str]:
    """Flatten Amazon categories (a list of paths, one path, or a string) into ' > '-joined path strings."""
    if not value:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if all(isinstance(v, str) for v in value):
        return [" > ".join(v.strip() for v in value if v.strip())] if any(v.strip() for v in value) else []
    out = []
    for path in value:
        out.extend(category_paths(path))
    return out
