"""Fuzzing every file reader (issue #8): the existing fuzz tests cover the line parsers (`parse_record`,
`parse_id_list`); these mutate whole fixture datasets — cut a file short, splice in random bytes, replace a line
with random text, flip a byte — and read them with each registered file reader.

The contract under any corruption: strict mode returns a valid dataset or raises `DataFormatError`; lenient mode
does the same (it raises only for problems no skip can fix, e.g. nothing usable left). Never another exception
type, never a dataset that breaks the schema; what is returned then goes through preprocessing (which may raise
`DataFormatError` too, e.g. for a dataset left without interactions).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepinterestgr.data.preprocess import preprocess
from deepinterestgr.data.readers.base import DataFormatError
from deepinterestgr.data.testing import check_raw_dataset
from deepinterestgr.registry import create, get_registry
from deepinterestgr.registry.host import BUILTIN_SOURCE

FIXTURES = Path(__file__).parent / "fixtures" / "data"
# reader -> fixture folder; stored names that differ from what the reader looks for are renamed on copy
READER_FIXTURES = {
    "amazon2014": "amazon2014", "amazon2018": "amazon2018", "amazon2023": "amazon2023", "letter": "letter",
    "p5": "p5", "minionerec": "minionerec", "recbole": "recbole",
}
RENAMES = {"Mini.inter.fixture": "Mini.inter.json"}


def test_every_file_reader_is_fuzzed():
    file_readers = {s.name for s in get_registry().specs("dataset_reader") if s.cls.needs_files}
    builtin = {s.name for s in get_registry().specs("dataset_reader") if s.source == BUILTIN_SOURCE} & file_readers
    assert {"amazon2014", "letter", "p5"} <= builtin
    assert builtin <= set(READER_FIXTURES), f"add a fixture for {sorted(builtin - set(READER_FIXTURES))}"


def fixture_files(folder: str) -> list[Path]:
    return sorted(p.relative_to(FIXTURES / folder) for p in (FIXTURES / folder).rglob("*") if p.is_file())


@st.composite
def mutations(draw, data: bytes):
    """(kind, new bytes) for one file."""
    kind = draw(st.sampled_from(["truncate", "splice", "replace_line", "flip_byte"]))
    if kind == "truncate":
        return kind, data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        return kind, data[:at] + draw(st.binary(min_size=1, max_size=12)) + data[at:]
    if kind == "replace_line":
        lines = data.splitlines(keepends=True) or [b""]
        k = draw(st.integers(0, len(lines) - 1))
        text = draw(st.one_of(st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
                              st.sampled_from([b"{}", b"[]", b"null", b'"x"', b"{'a': 1}", b"1 2 three", b"\xff\xfe"])))
        lines[k] = text + b"\n"
        return kind, b"".join(lines)
    at = draw(st.integers(0, max(0, len(data) - 1)))
    if not data:
        return kind, data
    return kind, data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]


def read_mutated(reader: str, folder: str, target: Path, mutated: bytes, strict: bool):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / folder
        shutil.copytree(FIXTURES / folder, root)
        for old, new in RENAMES.items():
            for p in list(root.rglob(old)):
                p.rename(p.with_name(new))
        path = root / target
        path = path.with_name(RENAMES.get(path.name, path.name))
        path.write_bytes(mutated)
        try:
            raw = create("dataset_reader", reader, strict=strict).read(root)
        except DataFormatError:
            return None
        check_raw_dataset(raw)
        return raw


@pytest.mark.parametrize("reader", sorted(READER_FIXTURES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), strict=st.booleans())
def test_mutated_dataset_is_read_or_rejected_with_data_format_error(reader, data, strict):
    folder = READER_FIXTURES[reader]
    target = data.draw(st.sampled_from(fixture_files(folder)), label="file")
    kind, mutated = data.draw(mutations((FIXTURES / folder / target).read_bytes()), label="mutation")
    raw = read_mutated(reader, folder, target, mutated, strict)
    if raw is not None:  # what a reader lets through, preprocessing turns into a dataset or a DataFormatError
        try:
            prepared = preprocess(raw, kcore=0, min_interactions=1, strict=strict)
        except DataFormatError:
            return
        assert prepared.items and prepared.sequences


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("where", ["header", "row"])
def test_minionerec_stray_carriage_return_is_a_data_error_not_a_csv_crash(where, strict):
    """Found by the fuzzer above: a bare '\\r' inside an unquoted CSV field made csv raise its own error."""
    target = Path("test/Mini_5_2016-10-2018-11.csv")
    lines = (FIXTURES / "minionerec" / target).read_bytes().split(b"\n")
    k = 0 if where == "header" else 1
    lines[k] = lines[k].rstrip(b"\r") + b"\r\x00"
    raw = read_mutated("minionerec", "minionerec", target, b"\n".join(lines), strict)  # None: DataFormatError
    if where == "header" or strict:
        assert raw is None
    else:  # a corrupt row is counted and skipped
        assert raw is not None and raw.skips.counts["corrupt_line"] == 1
