"""The evidence stage: CMSA captions and image features, DCIM descriptors, QARM labels and quality, the
enriched-text embeddings of every catalog item (cached per item and branch), and optionally collaborative item
embeddings from the training sequences."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from deepinterestgr.artifacts import (
    ArtifactError,
    atomic_path,
    atomic_write_jsonl,
    read_jsonl,
    sha256_file,
    stable_hash,
    write_manifest,
)
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.cache import BranchCache, decode_tensor, encode_tensor
from deepinterestgr.evidence.contracts import Descriptor
from deepinterestgr.evidence.quality import quality_score
from deepinterestgr.evidence.text import category_path, enriched_text, item_text

log = logging.getLogger(__name__)

STAGE = "evidence"
ITEMS_FILE = "items.jsonl"
TEXT_EMBEDDINGS_FILE = "text_embeddings.safetensors"
IMAGE_FEATURES_FILE = "image_features.safetensors"
QUALITY_FILE = "quality.safetensors"
COLLAB_EMBEDDINGS_FILE = "collab_embeddings.safetensors"
ATTRIBUTE_EMBEDDINGS_FILE = "attribute_embeddings.safetensors"
ROLES = ("text_encoder", "intent_miner", "quality_judge", "captioner", "image_encoder", "collaborative", "attributes")
ROLE_KIND = {"text_encoder": "text_encoder", "intent_miner": "intent_miner", "quality_judge": "quality_judge",
             "captioner": "cmsa_branch", "image_encoder": "cmsa_branch", "collaborative": "collaborative_source",
             "attributes": "attribute_source"}
#: roles added after runs existed: off, they stay out of the config hash so those runs stay up to date
LATER_ROLES = ("collaborative", "attributes")


def run_evidence(
    run_dir: str,
    text_encoder: str | None = "minilm-packaged",
    intent_miner: str | None = "zero-shot-miner",
    quality_judge: str | None = "rule-judge",
    captioner: str | None = None,
    image_encoder: str | None = None,
    collaborative: str | None = None,
    attributes: str | None = None,
    plugin_args: dict | None = None,
    batch_size: int = 64,
    shard: str | None = None,
    max_text_chars: int = 2000,
    cache_dir: str | None = None,
) -> dict:
    """Extract item evidence for `<run_dir>/data/catalog.jsonl` into `<run_dir>/evidence/`.

    Per item: a CMSA caption of the main image (`captioner`, a cmsa_branch plugin such as label-captioner or
    vlm-captioner), DCIM intent descriptors (`intent_miner`), QARM 0/1 labels and quality q_i (`quality_judge`),
    the enriched text `title / category path / description / caption / descriptors` embedded by `text_encoder`,
    and frozen image features (`image_encoder`, e.g. efficientnet-lite0-packaged). Set a plugin to null to skip
    that branch. `plugin_args` maps a role (text_encoder, intent_miner, quality_judge, captioner, image_encoder,
    collaborative) to the plugin's constructor arguments.

    `collaborative` (a collaborative_source plugin such as cooccurrence-svd) embeds every item from the training
    part (items[:-2]) of `<run_dir>/data/sequences.jsonl`, never the valid/test targets; quantize fuses it with the
    text embeddings when `data.use_collaborative` is true. `text_encoder` may be null when `collaborative` is set
    (a catalog without item text still gets SIDs). `attributes` (an attribute_source plugin such as attribute-svd)
    embeds every item's attribute ids (`Item.attributes`, e.g. the P5 reader's `attribute_file`); quantize fuses it
    when `data.use_attributes` is true. At least one of text_encoder, collaborative and attributes must be set.

    Every result is cached per item and branch under `<run_dir>/evidence/cache/` (or `cache_dir`, which runs may
    share), keyed by the item content and the plugin's settings: a rerun computes nothing new, a changed item or
    setting recomputes only what changed, and an interrupted run resumes. `shard="i/n"` (0-based) fills the cache
    for the i-th of n contiguous item ranges and writes no artifacts; a run without `shard` then assembles them.
    Texts longer than `max_text_chars` are truncated; missing or corrupt images, empty texts, malformed model
    output are reported per item and counted in the returned summary (also in evidence/manifest.json).

    Writes evidence/items.jsonl, text_embeddings.safetensors ("embeddings" [N, D], L2-normalised, row = item_id),
    quality.safetensors ("quality" [N], when a judge ran), image_features.safetensors ("features" [N, F], "mask"
    [N], when an image encoder ran), collab_embeddings.safetensors ("embeddings" [N, D], row = item_id, zero rows
    for items without training co-occurrence, when `collaborative` ran), attribute_embeddings.safetensors (the same
    for `attributes`) and manifest.json. Returns the summary dict.

    Args:
        run_dir: the run directory (reads `data/`, writes `evidence/`).
        text_encoder: text_encoder plugin for the enriched item texts; null to write no text embeddings.
        intent_miner: intent_miner plugin (DCIM descriptors); null to skip.
        quality_judge: quality_judge plugin (QARM labels, q_i); needs an intent_miner; null to skip.
        captioner: caption branch (cmsa_branch plugin); null to skip.
        image_encoder: image branch (cmsa_branch plugin); null to skip.
        collaborative: collaborative_source plugin (e.g. cooccurrence-svd) over the training sequences; null to skip.
        attributes: attribute_source plugin (e.g. attribute-svd) over the items' attribute ids; null to skip.
        plugin_args: role -> constructor arguments, e.g. {collaborative: {dim: 64, window: 3}}.
        batch_size: items per plugin call (and per cache record).
        shard: "i/n" fills the cache for one item range and writes no artifacts (collaborative does not run).
        max_text_chars: item texts are truncated to this many characters.
        cache_dir: per-item cache folder (default `<run_dir>/evidence/cache`); runs may share one.
    """
    started = time.time()
    run = Path(run_dir)
    out_dir = run / STAGE
    catalog_path = run / "data" / "catalog.jsonl"
    items = load_catalog_items(run)
    lo, hi = shard_range(shard, len(items), align=batch_size)
    selected = items[lo:hi]
    roles = {"text_encoder": text_encoder, "intent_miner": intent_miner, "quality_judge": quality_judge,
             "captioner": captioner, "image_encoder": image_encoder, "collaborative": collaborative,
             "attributes": attributes}
    plugin_args = dict(plugin_args or {})
    unknown = set(plugin_args) - set(ROLES)
    if unknown:
        raise ValueError(f"plugin_args has unknown roles {sorted(unknown)}; roles are {list(ROLES)}")
    if quality_judge and not intent_miner:
        raise ValueError("quality_judge needs an intent_miner (it judges the mined descriptors)")
    if not (text_encoder or collaborative or attributes):
        raise ValueError("text_encoder, collaborative and attributes are all null: quantize needs item embeddings; "
                         "set text_encoder (e.g. minilm-packaged), collaborative (e.g. cooccurrence-svd) or "
                         "attributes (e.g. attribute-svd)")
    plugins = {role: _create(role, name, plugin_args.get(role, {})) for role, name in roles.items() if name}
    for role, kind_branch in (("captioner", "caption"), ("image_encoder", "image")):
        if role in plugins and getattr(plugins[role], "branch", None) != kind_branch:
            raise ValueError(f"{role}={roles[role]!r} is a {plugins[role].branch!r} branch, expected {kind_branch!r}")

    collab = collab_summary = None
    if "collaborative" in plugins and shard is None:  # first: cheap, and bad sequences fail before the models run
        from deepinterestgr.evidence.collaborative import embed_run

        collab, collab_summary = embed_run(plugins["collaborative"], run, len(items))
    attr = attr_summary = None
    if "attributes" in plugins and shard is None:
        from deepinterestgr.evidence.attributes import embed_catalog

        attr, attr_summary = embed_catalog(plugins["attributes"], items)

    cache_root = Path(cache_dir) if cache_dir else out_dir / "cache"
    report = Report()
    prepared = [_prepare_item(item, max_text_chars, report) for item in selected]
    images = [_resolve_image(item, run / "data", report) for item in selected]

    captions = [""] * len(selected)
    if "captioner" in plugins:
        captions = _run_caption_branch(plugins["captioner"], prepared, images, cache_root, batch_size, report, lo)

    mined: list[dict] = [{"descriptors": [], "error": None, "raw": None}] * len(selected)
    if "intent_miner" in plugins:
        mined = _run_mining_branch(plugins["intent_miner"], prepared, captions, cache_root, batch_size, report, lo)

    judged: list[dict | None] = [None] * len(selected)
    if "quality_judge" in plugins:
        judged = _run_judge_branch(plugins["quality_judge"], prepared, captions, mined, cache_root, batch_size,
                                   report, lo)

    descriptors = [[Descriptor(d, c) for d, c in m["descriptors"]] for m in mined]
    texts = [enriched_text(item, cap, descs) for item, cap, descs in zip(prepared, captions, descriptors)]
    embeddings = None
    if "text_encoder" in plugins:
        embeddings = _run_text_branch(plugins["text_encoder"], texts, cache_root, batch_size, report, lo)

    features = mask = None
    if "image_encoder" in plugins:
        features, mask = _run_image_branch(plugins["image_encoder"], images, cache_root, batch_size, report, lo)

    summary = {
        "items": len(items), "processed": len(selected), "shard": shard, "item_range": [lo, hi],
        "plugins": {role: {"name": roles[role], "describe": p.describe()} for role, p in plugins.items()},
        **report.to_json(),
        **({"collaborative": collab_summary} if collab_summary is not None else {}),
        **({"attributes": attr_summary} if attr_summary is not None else {}),
    }
    if shard is None:
        quality = _write_artifacts(out_dir, prepared, captions, mined, judged, descriptors, texts, embeddings,
                                   features, mask, report, collab, attr)
        summary.update(report.to_json())
        summary["quality_mean"] = float(quality.mean()) if quality is not None and len(quality) else None
        summary["seconds"] = round(time.time() - started, 2)
        files = [ITEMS_FILE]
        files += [TEXT_EMBEDDINGS_FILE] if embeddings is not None else []
        files += [QUALITY_FILE] if quality is not None else []
        files += [IMAGE_FEATURES_FILE] if features is not None else []
        files += [COLLAB_EMBEDDINGS_FILE] if collab is not None else []
        files += [ATTRIBUTE_EMBEDDINGS_FILE] if attr is not None else []
        hashed = [r for r in ROLES if r not in LATER_ROLES or r in plugins]
        extra = {"sequences_sha256": sha256_file(run / "data" / "sequences.jsonl")} if collab is not None else {}
        write_manifest(out_dir, STAGE, files, catalog_sha256=sha256_file(catalog_path), **extra,
                       config={"max_text_chars": max_text_chars, "plugin_args": plugin_args},
                       config_hash=stable_hash({r: summary["plugins"].get(r) for r in hashed}
                                               | {"max": max_text_chars}),
                       plugins=summary["plugins"], summary={k: v for k, v in summary.items() if k != "plugins"})
    else:
        summary["seconds"] = round(time.time() - started, 2)
    log.info("evidence: %d items in %.1fs; failures %s", len(selected), summary["seconds"], summary["failures"])
    return summary


# --------------------------------------------------------------------------------------------------- inputs
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
        wrong = _wrong_field_types(item)
        if wrong:
            raise ArtifactError(f"{path}:{lineno}: not an Item ({'; '.join(wrong)}). Rerun the `data` stage.")
        if type(item.item_id) is not int or item.item_id != len(items):
            raise ArtifactError(f"{path}:{lineno}: item_id {item.item_id!r}, expected {len(items)} (dense ids in file "
                                "order). Rerun the `data` stage.")
        items.append(item)
    return items


def _wrong_field_types(item: Item) -> list[str]:
    """Type errors of a hand-made catalog row (a title of 5 would otherwise crash deep inside a text plugin)."""
    wrong = [f"{name} must be a string, got {getattr(item, name)!r}"
             for name in ("source_id", "title", "description", "brand") if not isinstance(getattr(item, name), str)]
    wrong += [f"{name} must be a list of strings, got {getattr(item, name)!r}"
              for name in ("categories", "images", "attributes")
              if not (isinstance(getattr(item, name), list) and all(isinstance(v, str) for v in getattr(item, name)))]
    return wrong


def shard_range(shard: str | None, n: int, align: int = 1) -> tuple[int, int]:
    """`"i/n"` -> the i-th (0-based) of n contiguous, near-equal item ranges whose bounds are multiples of
    `align` (the batch size: a shard then batches exactly like an unsharded run, see `_run_cached`)."""
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


def _prepare_item(item: Item, max_chars: int, report: Report) -> Item:
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


def _resolve_image(item: Item, data_dir: Path, report: Report) -> ImageRef | None:
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


def _open_images(refs: Sequence[ImageRef], ids: Sequence[int], report: Report) -> list:
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


# -------------------------------------------------------------------------------------------------- plugins
_SHARED: dict[str, object] = {}


def _create(role: str, name: str, args: dict):
    from deepinterestgr.registry import create

    # one instance per (role, name, args) per process: a benchmark or a test calling the stage twice loads once
    if role == "text_encoder":
        from deepinterestgr.evidence.text_encoders import shared_text_encoder

        return shared_text_encoder(name, args)
    key = stable_hash([role, name, args])
    if key not in _SHARED:
        _SHARED[key] = create(ROLE_KIND[role], name, **args)
    return _SHARED[key]


def clear_plugin_instances() -> None:
    _SHARED.clear()


def _run_cached(branch: str, keys: list[str | None], cache_root: Path, batch_size: int, report: Report,
                compute: Callable[[list[int]], list], desc: str, offset: int = 0) -> list:
    """Look up every key; compute the misses in batches and append each batch to the cache as one record.
    Batches are the misses of each aligned block of `batch_size` catalog positions (`offset` = the shard's first
    item), so a shard, a resumed run and a fresh run put the same items in the same batch: batched models (padding,
    left-padded greedy decoding) then give bit-identical results.
    A key of None means the item has no input for this branch (no image): its value is None, never cached.
    `compute(indices)` returns one JSON value per index, or None for an item that failed transiently (not cached)."""
    cache = BranchCache(cache_root, branch)
    report.torn_cache_lines += cache.torn_lines
    values = [cache.get(k) if k is not None else None for k in keys]
    todo = [i for i, k in enumerate(keys) if k is not None and values[i] is None]
    report.count(branch, "cached", sum(1 for k, v in zip(keys, values) if k is not None and v is not None))
    report.count(branch, "no_input", sum(1 for k in keys if k is None))
    try:
        with tqdm(total=len(todo), desc=desc, unit="item", disable=not todo, dynamic_ncols=True) as bar:
            blocks: dict[int, list[int]] = {}
            for i in todo:
                blocks.setdefault((offset + i) // batch_size, []).append(i)
            for batch in blocks.values():
                computed = compute(batch)
                fresh = {}
                for i, value in zip(batch, computed):
                    values[i] = value
                    if value is not None:
                        fresh[keys[i]] = value
                cache.put_many(fresh)
                report.count(branch, "computed", len(fresh))
                bar.update(len(batch))
    finally:
        cache.close()
    return values


def _guarded(branch: str, report: Report, ids: list[int], call: Callable[[list[int]], list]) -> list:
    """Run a plugin on a batch; if it raises, retry item by item so one bad item cannot sink the batch. Items
    that still raise get None (reported, not cached: the error may be transient, e.g. out of memory)."""
    try:
        return call(ids)
    except Exception as batch_error:  # noqa: BLE001 - plugin code is third-party; isolate, report, continue
        log.warning("%s: batch failed (%s); retrying items one by one", branch, batch_error)
        out = []
        for i in ids:
            try:
                out.extend(call([i]))
            except Exception as e:  # noqa: BLE001
                report.problem(f"{branch}_exception", i, f"{type(e).__name__}: {e}")
                report.count(branch, "failed")
                out.append(None)
        return out


def _run_caption_branch(plugin, items, images, cache_root, batch_size, report, offset) -> list[str]:
    describe = plugin.describe()
    keys = [stable_hash(["caption", ref.digest, item_text(item), describe]) if ref else None
            for item, ref in zip(items, images)]

    def compute(batch: list[int]) -> list:
        decoded = _open_images([images[i] for i in batch], [items[i].item_id for i in batch], report)
        usable = [i for i, img in zip(batch, decoded) if img is not None]
        by_index = dict(zip(batch, decoded))

        def call(idx: list[int]) -> list:
            caps = plugin.caption([by_index[i] for i in idx], [items[i] for i in idx])
            if len(caps) != len(idx):
                raise RuntimeError(f"captioner returned {len(caps)} captions for {len(idx)} images")
            return [{"caption": str(c)} for c in caps]

        done = dict(zip(usable, _guarded("caption", report, usable, call))) if usable else {}
        return [done.get(i) for i in batch]

    values = _run_cached("caption", keys, cache_root, batch_size, report, compute, "CMSA captions", offset)
    for item, ref, v in zip(items, images, values):
        if ref is None or v is None:
            report.count("caption", "no_caption")
        elif not v["caption"]:
            report.count("caption", "empty_caption")
    return [v["caption"] if v else "" for v in values]


def _run_mining_branch(plugin, items, captions, cache_root, batch_size, report, offset) -> list[dict]:
    describe = plugin.describe()
    keys = [stable_hash(["mine", item_text(item), cap, describe]) for item, cap in zip(items, captions)]

    def call(idx: list[int]) -> list:
        results = plugin.mine([items[i] for i in idx], [captions[i] for i in idx])
        if len(results) != len(idx):
            raise RuntimeError(f"intent miner returned {len(results)} results for {len(idx)} items")
        return [{"descriptors": [[d.descriptor, d.confidence] for d in r.descriptors], "error": r.error,
                 "raw": r.raw if r.error else None} for r in results]

    values = _run_cached("mine", keys, cache_root, batch_size, report,
                         lambda b: _guarded("mine", report, b, call), "DCIM descriptors", offset)
    out = []
    for item, v in zip(items, values):
        v = v or {"descriptors": [], "error": "miner raised (see problems)", "raw": None}
        if v["error"]:
            report.count("mine", "failed")
            report.problem("mining_failed", item.item_id, v["error"])
        elif not v["descriptors"]:
            report.count("mine", "no_descriptors")
        out.append(v)
    return out


def _run_judge_branch(plugin, items, captions, mined, cache_root, batch_size, report, offset) -> list[dict | None]:
    describe = plugin.describe()
    keys = [stable_hash(["judge", item_text(item), cap, m["descriptors"], describe])
            for item, cap, m in zip(items, captions, mined)]

    def call(idx: list[int]) -> list:
        descs = [[Descriptor(d, c) for d, c in mined[i]["descriptors"]] for i in idx]
        results = plugin.judge_detailed([items[i] for i in idx], descs, [captions[i] for i in idx])
        if len(results) != len(idx):
            raise RuntimeError(f"quality judge returned {len(results)} results for {len(idx)} items")
        out = []
        for r, d in zip(results, descs):
            if r.labels is not None and len(r.labels) != len(d):
                out.append({"labels": None, "error": f"{len(r.labels)} labels for {len(d)} descriptors", "raw": r.raw})
            else:
                out.append({"labels": r.labels, "error": r.error, "raw": r.raw if r.error else None})
        return out

    values = _run_cached("judge", keys, cache_root, batch_size, report,
                         lambda b: _guarded("judge", report, b, call), "QARM labels", offset)
    for item, v in zip(items, values):
        if v is None or v["error"]:
            report.count("judge", "failed")
            report.problem("judge_failed", item.item_id, v["error"] if v else "judge raised (see problems)")
    return values


def _run_text_branch(plugin, texts, cache_root, batch_size, report, offset) -> torch.Tensor:
    describe = plugin.describe()
    keys = [stable_hash(["text", t, describe]) for t in texts]

    def call(idx: list[int]) -> list:
        emb = plugin.encode([texts[i] for i in idx])
        if tuple(emb.shape) != (len(idx), plugin.dim):
            raise RuntimeError(f"text encoder returned shape {tuple(emb.shape)}, expected {(len(idx), plugin.dim)}")
        return [{"embedding": encode_tensor(row)} for row in emb]

    values = _run_cached("text", keys, cache_root, batch_size, report,
                         lambda b: _guarded("text", report, b, call), "text embeddings", offset)
    if any(v is None for v in values):
        failed = sum(v is None for v in values)
        raise RuntimeError(f"text encoder failed on {failed} items (see the problems above); every item needs an "
                           "embedding for quantization, so no artifacts were written. Rerun to retry them.")
    return torch.stack([decode_tensor(v["embedding"]) for v in values]) if values else torch.empty(0, plugin.dim)


def _run_image_branch(plugin, images, cache_root, batch_size, report, offset) -> tuple[torch.Tensor, torch.Tensor]:
    describe = plugin.describe()
    keys = [stable_hash(["image", ref.digest, describe]) if ref else None for ref in images]

    def compute(batch: list[int]) -> list:
        decoded = _open_images([images[i] for i in batch], batch, report)
        usable = [i for i, img in zip(batch, decoded) if img is not None]
        by_index = dict(zip(batch, decoded))

        def call(idx: list[int]) -> list:
            feats = plugin.encode([by_index[i] for i in idx])
            return [{"features": encode_tensor(row)} for row in feats]

        done = dict(zip(usable, _guarded("image", report, usable, call))) if usable else {}
        return [done.get(i) for i in batch]

    values = _run_cached("image", keys, cache_root, batch_size, report, compute, "image features", offset)
    features = torch.zeros(len(images), plugin.num_features)
    mask = torch.zeros(len(images), dtype=torch.uint8)
    for i, v in enumerate(values):
        if v is not None:
            features[i] = decode_tensor(v["features"])
            mask[i] = 1
    report.count("image", "without_features", int((mask == 0).sum()))
    return features, mask


# ------------------------------------------------------------------------------------------------- artifacts
def _write_artifacts(out_dir, items, captions, mined, judged, descriptors, texts, embeddings, features, mask,
                     report, collab=None, attr=None) -> torch.Tensor | None:
    from safetensors.torch import save_file

    quality = None
    rows = []
    unknown: list[int] = []  # items whose judgment failed: q_i unknown
    if any(j is not None for j in judged):
        quality = torch.zeros(len(items), dtype=torch.float32)
    for i, item in enumerate(items):
        errors = {}
        if mined[i]["error"]:
            errors["mine"] = {"error": mined[i]["error"], "raw": mined[i]["raw"]}
        labels, q = None, None
        if quality is not None:
            j = judged[i]
            if j is None or j["error"]:
                # unknown, not bad: a failed judgment must not read as q = 0 (it would mark the item low-quality)
                errors["judge"] = {"error": j["error"] if j else "judge raised", "raw": j["raw"] if j else None}
                unknown.append(i)
            else:
                labels = j["labels"]
                try:
                    q = quality_score([d.confidence for d in descriptors[i]], labels)
                except ValueError as e:
                    errors["quality"] = str(e)
                    report.problem("quality_invalid", item.item_id, str(e))
                    q = 0.0
                if not labels:
                    report.count("judge", "no_descriptors_q0")
            if q is not None:
                quality[i] = q
        rows.append({"item_id": item.item_id, "source_id": item.source_id, "caption": captions[i],
                     "descriptors": [{"descriptor": d.descriptor, "confidence": d.confidence} for d in descriptors[i]],
                     "labels": labels, "quality": q, "enriched_text": texts[i], "errors": errors})
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out_dir / ITEMS_FILE, rows)
    # quantize picks its input by which embedding files exist: one this run did not write must not linger
    for name, tensor in ((TEXT_EMBEDDINGS_FILE, embeddings), (COLLAB_EMBEDDINGS_FILE, collab),
                         (ATTRIBUTE_EMBEDDINGS_FILE, attr)):
        if tensor is None:
            (out_dir / name).unlink(missing_ok=True)
        else:
            _save(save_file, {"embeddings": tensor.contiguous()}, out_dir / name)
    if quality is not None:
        known = torch.ones(len(items), dtype=torch.bool)
        known[unknown] = False
        # QARM needs a number for every target: an unknown item gets the judged items' mean (a neutral prior, not
        # a verdict); `known` says which q_i were judged, items.jsonl keeps quality null for the others
        fill = float(quality[known].mean()) if bool(known.any()) else 0.0
        quality[~known] = fill
        if unknown:
            report.count("judge", "unknown_quality", len(unknown))
            log.warning("evidence: %d of %d items could not be judged; their q_i is unknown (null in %s, filled "
                        "with the judged mean %.3f in %s for QARM; `known` marks them)", len(unknown), len(items),
                        ITEMS_FILE, fill, QUALITY_FILE)
        _save(save_file, {"quality": quality, "known": known}, out_dir / QUALITY_FILE)
    if features is not None:
        _save(save_file, {"features": features.contiguous(), "mask": mask}, out_dir / IMAGE_FEATURES_FILE)
    return quality


def _save(save_file, tensors: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))

