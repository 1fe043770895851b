"""The evidence branches — CMSA captions, DCIM descriptors, QARM labels, text embeddings, image features — each a
`Branch` (a cache key per item and a plugin call on a batch) run by one cached runner."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from deepinterestgr.artifacts import stable_hash
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.cache import BranchCache, decode_tensor, encode_tensor
from deepinterestgr.evidence.contracts import (
    Captioner,
    Descriptor,
    ImageEncoder,
    IntentMiner,
    QualityJudge,
    TextEncoder,
)
from deepinterestgr.evidence.inputs import ImageRef, Report, open_images
from deepinterestgr.evidence.text import item_text

log = logging.getLogger(__name__)


@dataclass
class Branch:
    """One branch over the selected items.

    `keys[i]` is item i's cache key (its inputs and the plugin's `describe()`); None means the item has no input for
    this branch (no image): its value is None and is never cached. `call(positions)` runs the plugin on a batch of
    positions and returns one JSON value per position (None: that item failed, reported, not cached)."""

    name: str  # cache folder and report key
    desc: str  # progress-bar label
    keys: list[str | None]
    call: Callable[[list[int]], list]


@dataclass
class BranchRunner:
    """Looks up every key, computes the misses in batches and appends each batch to the cache as one record.

    Batches are the misses of each aligned block of `batch_size` catalog positions (`offset` = the shard's first
    item), so a shard, a resumed run and a fresh run put the same items in the same batch: batched models (padding,
    left-padded greedy decoding) then give bit-identical results."""

    cache_root: Path
    batch_size: int
    report: Report
    offset: int = 0

    def run(self, branch: Branch) -> list:
        keys, report = branch.keys, self.report
        cache = BranchCache(self.cache_root, branch.name)
        report.torn_cache_lines += cache.torn_lines
        values = [cache.get(k) if k is not None else None for k in keys]
        todo = [i for i, k in enumerate(keys) if k is not None and values[i] is None]
        report.count(branch.name, "cached", sum(1 for k, v in zip(keys, values) if k is not None and v is not None))
        report.count(branch.name, "no_input", sum(1 for k in keys if k is None))
        blocks: dict[int, list[int]] = {}
        for i in todo:
            blocks.setdefault((self.offset + i) // self.batch_size, []).append(i)
        try:
            with tqdm(total=len(todo), desc=branch.desc, unit="item", disable=not todo, dynamic_ncols=True) as bar:
                for batch in blocks.values():
                    fresh = {}
                    for i, value in zip(batch, self._guarded(branch, batch)):
                        values[i] = value
                        if value is not None:
                            fresh[keys[i]] = value
                    cache.put_many(fresh)
                    report.count(branch.name, "computed", len(fresh))
                    bar.update(len(batch))
        finally:
            cache.close()
        return values

    def _guarded(self, branch: Branch, ids: list[int]) -> list:
        """The plugin on a batch; if it raises, retried item by item so one bad item cannot sink the batch. Items
        that still raise get None (reported, not cached: the error may be transient, e.g. out of memory)."""
        try:
            return _checked(branch, ids, branch.call(ids))
        except Exception as batch_error:  # noqa: BLE001 - plugin code is third-party; isolate, report, continue
            log.warning("%s: batch failed (%s); retrying items one by one", branch.name, batch_error)
            out = []
            for i in ids:
                try:
                    out.extend(_checked(branch, [i], branch.call([i])))
                except Exception as e:  # noqa: BLE001
                    # positions are item ids from the shard's first one (the catalog's ids are dense)
                    self.report.problem(f"{branch.name}_exception", self.offset + i, f"{type(e).__name__}: {e}")
                    self.report.count(branch.name, "failed")
                    out.append(None)
            return out


def _checked(branch: Branch, ids: list[int], values: list) -> list:
    if len(values) != len(ids):
        raise RuntimeError(f"{branch.name}: the plugin returned {len(values)} results for {len(ids)} items")
    return values


def _on_images(images: Sequence[ImageRef | None], ids: Sequence[int], report: Report,
               plugin_call: Callable[[list, list[int]], list]) -> Callable[[list[int]], list]:
    """A branch call that decodes the batch's images and runs `plugin_call(decoded, positions)` on those that
    decode; an image that does not is None (counted as image_corrupt in `open_images`)."""

    def call(batch: list[int]) -> list:
        decoded = open_images([images[i] for i in batch], [ids[i] for i in batch], report)
        usable = [i for i, img in zip(batch, decoded) if img is not None]
        results = plugin_call([img for img in decoded if img is not None], usable) if usable else []
        if len(results) != len(usable):
            raise RuntimeError(f"the plugin returned {len(results)} results for {len(usable)} images")
        done = dict(zip(usable, results))
        return [done.get(i) for i in batch]

    return call


def run_captions(plugin: Captioner, items: list[Item], images: list[ImageRef | None], runner: BranchRunner
                 ) -> list[str]:
    describe = plugin.describe()
    keys = [stable_hash(["caption", ref.digest, item_text(item), describe]) if ref else None
            for item, ref in zip(items, images)]

    def caption(decoded: list, idx: list[int]) -> list:
        return [{"caption": str(c)} for c in plugin.caption(decoded, [items[i] for i in idx])]

    call = _on_images(images, [item.item_id for item in items], runner.report, caption)
    values = runner.run(Branch("caption", "CMSA captions", keys, call))
    for ref, v in zip(images, values):
        if ref is None or v is None:
            runner.report.count("caption", "no_caption")
        elif not v["caption"]:
            runner.report.count("caption", "empty_caption")
    return [v["caption"] if v else "" for v in values]


def run_mining(plugin: IntentMiner, items: list[Item], captions: list[str], runner: BranchRunner) -> list[dict]:
    describe = plugin.describe()
    keys = [stable_hash(["mine", item_text(item), cap, describe]) for item, cap in zip(items, captions)]

    def call(idx: list[int]) -> list:
        return [{"descriptors": [[d.descriptor, d.confidence] for d in r.descriptors], "error": r.error,
                 "raw": r.raw if r.error else None}
                for r in plugin.mine([items[i] for i in idx], [captions[i] for i in idx])]

    out = []
    for item, v in zip(items, runner.run(Branch("mine", "DCIM descriptors", keys, call))):
        v = v or {"descriptors": [], "error": "miner raised (see problems)", "raw": None}
        if v["error"]:
            runner.report.count("mine", "failed")
            runner.report.problem("mining_failed", item.item_id, v["error"])
        elif not v["descriptors"]:
            runner.report.count("mine", "no_descriptors")
        out.append(v)
    return out


def run_judging(plugin: QualityJudge, items: list[Item], captions: list[str], mined: list[dict],
                runner: BranchRunner) -> list[dict | None]:
    describe = plugin.describe()
    keys = [stable_hash(["judge", item_text(item), cap, m["descriptors"], describe])
            for item, cap, m in zip(items, captions, mined)]

    def call(idx: list[int]) -> list:
        descs = [[Descriptor(d, c) for d, c in mined[i]["descriptors"]] for i in idx]
        out = []
        for r, d in zip(plugin.judge_detailed([items[i] for i in idx], descs, [captions[i] for i in idx]), descs):
            if r.labels is not None and len(r.labels) != len(d):
                out.append({"labels": None, "error": f"{len(r.labels)} labels for {len(d)} descriptors", "raw": r.raw})
            else:
                out.append({"labels": r.labels, "error": r.error, "raw": r.raw if r.error else None})
        return out

    values = runner.run(Branch("judge", "QARM labels", keys, call))
    for item, v in zip(items, values):
        if v is None or v["error"]:
            runner.report.count("judge", "failed")
            runner.report.problem("judge_failed", item.item_id, v["error"] if v else "judge raised (see problems)")
    return values


def run_text(plugin: TextEncoder, texts: list[str], runner: BranchRunner) -> torch.Tensor:
    describe = plugin.describe()
    keys = [stable_hash(["text", t, describe]) for t in texts]

    def call(idx: list[int]) -> list:
        emb = plugin.encode([texts[i] for i in idx])
        if tuple(emb.shape) != (len(idx), plugin.dim):
            raise RuntimeError(f"text encoder returned shape {tuple(emb.shape)}, expected {(len(idx), plugin.dim)}")
        return [{"embedding": encode_tensor(row)} for row in emb]

    values = runner.run(Branch("text", "text embeddings", keys, call))
    if any(v is None for v in values):
        failed = sum(v is None for v in values)
        raise RuntimeError(f"text encoder failed on {failed} items (see the problems above); every item needs an "
                           "embedding for quantization, so no artifacts were written. Rerun to retry them.")
    return torch.stack([decode_tensor(v["embedding"]) for v in values]) if values else torch.empty(0, plugin.dim)


def run_images(plugin: ImageEncoder, items: list[Item], images: list[ImageRef | None], runner: BranchRunner
               ) -> tuple[torch.Tensor, torch.Tensor]:
    describe = plugin.describe()
    keys = [stable_hash(["image", ref.digest, describe]) if ref else None for ref in images]

    def encode(decoded: list, idx: list[int]) -> list:
        return [{"features": encode_tensor(row)} for row in plugin.encode(decoded)]

    call = _on_images(images, [item.item_id for item in items], runner.report, encode)
    values = runner.run(Branch("image", "image features", keys, call))
    features = torch.zeros(len(images), plugin.num_features)
    mask = torch.zeros(len(images), dtype=torch.uint8)
    for i, v in enumerate(values):
        if v is not None:
            features[i] = decode_tensor(v["features"])
            mask[i] = 1
    runner.report.count("image", "without_features", int((mask == 0).sum()))
    return features, mask
