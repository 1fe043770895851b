"""The evidence stage's inputs: the data stage's catalog, item ranges for shards, the item texts as plugins see
them, the item images, and the per-item report of what was computed, cached or wrong."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from deepinterestgr.artifacts import ArtifactError, read_jsonl, sha256_file
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.text import category_path, item_text


def load_catalog_items(run: Path) -> list[Item]:
    """The data stage's catalog, manifest-verified when the data stage wrote one (`dig data prepare`); a bare
    catalog.jsonl (hand-made or from another tool) is read with the same dense-id check."""
    if (run / "data" / "manifest.json").exists():
        from deepinterestgr.data.io import load_catalog

        return load_catalog(run)
    path = run / "data" / "catalog.jsonl"
    items = []
    for lineno, row in enumerate(read_jsonl(path, stage="data"), 1):
        try:
            item = Item.from_json(row)
        except TypeError as e:
            raise ArtifactError(f"{path}:{lineno}: not an Item ({e}). Rerun the `data` stage.") from e
        wrong = wrong_field_types(item)
        if wrong:
            raise ArtifactError(f"{path}:{lineno}: not an Item ({'; '.join(wrong)}). Rerun the `data` stage.")
        if type(item.item_id) is not int or item.item_id != len(items):
            raise ArtifactError(f"{path}:{lineno}: item_id {item.item_id!r}, expected {len(items)} (dense ids in file "
                                "order). Rerun the `data` stage.")
        items.append(item)
    return items


def wrong_field_types(item: Item) -> list[str]:
    """Type errors of a hand-made catalog row (a title of 5 would otherwise crash deep inside a text plugin)."""
    wrong = [f"{name} must be a string, got {getattr(item, name)!r}"
             for name in ("source_id", "title", "description", "brand") if not isinstance(getattr(item, name), str)]
    wrong += [f"{name} must be a list of strings, got {getattr(item, name)!r}"
              for name in ("categories", "images", "attributes")
              if not (isinstance(getattr(item, name), list) and all(isinstance(v, str) for v in getattr(item, name)))]
    return wrong


def shard_range(shard: str | None, n: int, align: int = 1) -> tuple[int, int]:
    """`"i/n"` -> the i-th (0-based) of n contiguous, near-equal item ranges whose bounds are multiples of
    `align` (the batch size: a shard then batches exactly like an unsharded run, see `branches.BranchRunner`)."""
    if shard is None:
        return 0, n
    try:
        index, count = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), got {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n")
    groups = -(-n // align)
    return min(n, index * groups // count * align), min(n, (index + 1) * groups // count * align)


class Report:
    """Per-branch counts (computed / cached / failed) and input problems, with a few item examples each."""

    def __init__(self) -> None:
        self.branches: dict[str, Counter] = {}
        self.problems: Counter = Counter()
        self.examples: dict[str, list] = {}
        self.torn_cache_lines = 0
        self._seen: set[tuple[str, int]] = set()

    def count(self, branch: str, what: str, n: int = 1) -> None:
        self.branches.setdefault(branch, Counter())[what] += n

    def problem(self, reason: str, item_id: int, detail: str = "") -> None:
        if (reason, item_id) in self._seen:  # e.g. one corrupt image met by both image branches counts once
            return
        self._seen.add((reason, item_id))
        self.problems[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append({"item_id": item_id, "detail": detail[:300]} if detail else {"item_id": item_id})

    def to_json(self) -> dict:
        return {"branches": {b: dict(c) for b, c in self.branches.items()},
                "failures": {b: c.get("failed", 0) for b, c in self.branches.items()},
                "problems": dict(self.problems), "examples": self.examples,
                "torn_cache_lines": self.torn_cache_lines}


def prepare_item(item: Item, max_chars: int, report: Report) -> Item:
    """The item as the plugins see it: text capped at `max_chars` (title first, then category path and description)."""
    if not (item.title.strip() or item.description.strip() or category_path(item)):
        report.problem("empty_text", item.item_id)
    full = item_text(item)
    if len(full) <= max_chars:
        return item
    report.problem("text_truncated", item.item_id, f"{len(full)} chars > {max_chars}")
    title = item.title[:max_chars]
    room = max(0, max_chars - len(title) - len(category_path(item)) - 2)
    return dataclasses.replace(item, title=title, description=item.description[:room])


@dataclasses.dataclass
class ImageRef:
    path: Path
    digest: str


def resolve_image(item: Item, data_dir: Path, report: Report) -> ImageRef | None:
    if not item.images:
        return None
    ref = item.images[0]
    if ref.startswith(("http://", "https://")):
        report.problem("image_url_not_fetched", item.item_id, ref)  # no network at run time: fetch in `data`
        return None
    path = Path(ref) if Path(ref).is_absolute() else data_dir / ref
    if not path.is_file():
        report.problem("image_missing", item.item_id, str(path))
        return None
    return ImageRef(path, sha256_file(path))


def open_images(refs: Sequence[ImageRef], ids: Sequence[int], report: Report) -> list:
    """Decoded RGB images; None (counted as image_corrupt) where the file does not decode."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for ref, item_id in zip(refs, ids):
        try:
            with Image.open(ref.path) as img:
                out.append(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            report.problem("image_corrupt", item_id, f"{ref.path}: {e}")
            out.append(None)
    return out
