"""Download the public Amazon review dumps (2014 / 2018 / 2023) with resume and size checks, standard library only.

Each file streams into `<name>.part`; an interrupted download resumes from the part's size with an HTTP Range
request, and the file is renamed to its final name only when its size equals the server's Content-Length, so a
half-downloaded file never looks finished.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

#: version -> (default base URL, review file name, metadata file name); `{cat}` is the category as the dump spells it
SOURCES: dict[str, tuple[str, str, str]] = {
    "2014": ("http://snap.stanford.edu/data/amazon/productGraph/categoryFiles",
             "reviews_{cat}_5.json.gz", "meta_{cat}.json.gz"),
    "2018": ("https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
             "categoryFilesSmall/{cat}_5.json.gz", "metaFiles2/meta_{cat}.json.gz"),
    "2023": ("https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw",
             "review_categories/{cat}.jsonl.gz", "meta_categories/meta_{cat}.jsonl.gz"),
}
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that could not complete; the `.part` file is kept so the next call resumes."""


def download_amazon(version: str, category: str, out_dir: str, base_url: str | None = None,
                    timeout: float = 60.0) -> list[Path]:
    """Fetch the review and metadata files of one Amazon category into `out_dir` (skipping finished ones).

    Args:
        version: "2014", "2018" or "2023" (reader names amazon2014 / amazon2018 / amazon2023 read the result).
        category: Category as the dump names it, e.g. Beauty (2014), Luxury_Beauty (2018), All_Beauty (2023).
        out_dir: Destination folder; pass it as `data_root` to `dig data prepare`.
        base_url: Mirror to use instead of the public host (files at the same relative paths).
    Returns:
        The two local file paths.
    """
    if version not in SOURCES:
        raise ValueError(f"version must be one of {sorted(SOURCES)}, got {version!r}")
    default_base, review, meta = SOURCES[version]
    base = (base_url or default_base).rstrip("/")
    out = []
    for rel in (review.format(cat=category), meta.format(cat=category)):
        out.append(fetch(f"{base}/{rel}", Path(out_dir) / Path(rel).name, timeout=timeout))
    return out


def fetch(url: str, dest: str | Path, *, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming a previous partial download when the server allows."""
    dest = Path(dest)
    if dest.exists():
        log.info("%s exists; skipping", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part already holds the whole file
            return _finish(part, dest, expected=_total_from_range(e.headers.get("Content-Range")) or have)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: {e.reason}. Check the URL or your connection; rerun to resume.") from e
    with response:
        resumed = response.status == 206
        if have and not resumed:
            log.warning("%s: server ignored the Range request; restarting from byte 0", url)
            have = 0
        length = response.headers.get("Content-Length")
        expected = _total_from_range(response.headers.get("Content-Range")) if resumed else None
        if expected is None and length is not None:
            expected = have + int(length)
        from tqdm import tqdm

        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=expected, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=None
        ) as bar:
            try:
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.IncompleteRead, OSError) as e:
                raise DownloadError(f"{url}: connection broke after {f.tell()} bytes ({e!r}); "
                                    f"{part} is kept — rerun to resume.") from e
    return _finish(part, dest, expected=expected)


def _total_from_range(content_range: str | None) -> int | None:
    match = re.match(r"bytes \S+/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


def _finish(part: Path, dest: Path, *, expected: int | None) -> Path:
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise DownloadError(
            f"{dest}: received {size} of {expected} bytes; the partial file {part} is kept — rerun to resume."
        )
    os.replace(part, dest)
    log.info("downloaded %s (%d bytes)", dest, size)
    return dest
