"""`dig items add`: give new items Semantic IDs with a run's trained quantizer, without retraining anything.

New items go through the run's own evidence plugins (read from `<run>/evidence/manifest.json`; the per-item cache
is reused), are embedded and fused exactly as the quantize stage's data module fused the catalog, and are encoded
by the trained quantizer. Old items keep their SIDs. A new item takes its nearest codes for the first L-1 levels
and, at the last level, the nearest code no item under that prefix holds (the quantizer's distinct-last-level rule,
one item at a time); only when that prefix is full does it share its codes and get a suffix, and only within the
suffix vocabulary the generator was trained with (the model's vocabulary cannot grow). Items without interactions
have no collaborative signal: their collaborative part is zero, as for the training items that had none. Their
attribute ids (catalogs without text, e.g. Sports) are folded into the trained catalog's attribute space by the
run's own attribute source (`AttributeSource.embed_new`), so the attribute vectors of the old items stay put.

The result is a new complete version under `<run>/items/` (`deepinterestgr.serve.versions`), picked up by a
running `dig serve` without a restart.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from deepinterestgr.artifacts import ArtifactError, atomic_write_jsonl
from deepinterestgr.data.schema import Item
from deepinterestgr.quantize.sid import NO_SUFFIX, SIDTable
from deepinterestgr.serve.versions import ITEMS_DIR, ItemsVersion, load_current, write_version

log = logging.getLogger(__name__)

EVIDENCE_ROLES = ("text_encoder", "intent_miner", "quality_judge", "captioner", "image_encoder")


def read_new_items(path: Path, known_ids: set[str]) -> tuple[list[Item], list[dict]]:
    """Valid new catalog rows and the skipped ones ({"line", "reason", "raw"}), never silently dropped."""
    from deepinterestgr.evidence.inputs import wrong_field_types

    items, skipped, seen = [], [], set(known_ids)
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue

        def skip(reason: str) -> None:
            skipped.append({"line": lineno, "reason": reason, "raw": raw})

        try:
            row = json.loads(raw)
        except ValueError as e:
            skip(f"not JSON ({e})")
            continue
        if not isinstance(row, dict):
            skip(f"expected a JSON object, got {type(row).__name__}")
            continue
        row = {k: v for k, v in row.items() if k != "item_id"}  # ids are assigned here
        try:
            item = Item(item_id=-1, **row)
        except TypeError as e:
            skip(f"not a catalog row ({e}); fields are source_id, title, description, brand, categories, images, "
                 "attributes")
            continue
        wrong = wrong_field_types(item)
        if wrong:
            skip("; ".join(wrong))
        elif not item.source_id.strip():
            skip("source_id is empty")
        elif item.source_id in seen:
            skip(f"source_id {item.source_id!r} is already in the catalog (or earlier in this file)")
        else:
            seen.add(item.source_id)
            items.append(item)
    return items, skipped


def _evidence_settings(run: Path) -> dict:
    """The run's evidence options as recorded in its manifest: each plugin's class_path / init_args (the
    collaborative source is left out: new items have no training interactions, they get zero rows)."""
    path = run / "evidence" / "manifest.json"
    if not path.exists():
        raise ArtifactError(f"{path}: not found; `dig items add` embeds new items with the plugins of the run's "
                            "`evidence` stage, so run that stage in this run directory first")
    config = json.loads(path.read_text(encoding="utf-8")).get("config", {})
    if "plugins" not in config:
        raise ArtifactError(f"{path}: written by an older evidence stage (no plugin configs); rerun the `evidence` "
                            "stage of this run (`dig pipeline ... --from evidence`: its cache makes that cheap)")
    plugins = config["plugins"]
    return {"options": {role: cfg for role, cfg in plugins.items() if role in EVIDENCE_ROLES},
            "attributes": plugins.get("attributes"), "max_text_chars": int(config.get("max_text_chars", 2000))}


def _new_attribute_embeddings(run: Path, settings: dict, catalog: list[Item], new: list[Item]) -> torch.Tensor:
    """The new items' attribute vectors in the space of the trained catalog's (the run's own attribute source,
    `AttributeSource.embed_new`), with the count of new items whose attribute ids the catalog never held logged."""
    from deepinterestgr.evidence.stage import evidence_arguments

    if settings["attributes"] is None:
        raise ArtifactError(f"{run / 'evidence' / 'manifest.json'}: the SIDs fuse attribute embeddings "
                            "(data.use_attributes) but the evidence record names no attribute source; rerun the "
                            "`evidence` stage of this run")
    source = evidence_arguments({"attributes": settings["attributes"]}, run_dir=str(run))["attributes"]
    known = {a for item in catalog for a in item.attributes}
    unknown = sum(1 for item in new if item.attributes and not set(item.attributes) & known)
    without = sum(1 for item in new if not item.attributes)
    if unknown or without:
        log.warning("items add: %d new items have no attributes and %d only attribute ids the trained catalog never "
                    "held: their attribute part is zero", without, unknown)
    try:
        return source.embed_new([list(item.attributes) for item in catalog], [list(item.attributes) for item in new])
    except NotImplementedError as e:
        raise ArtifactError(f"{run}: its SIDs fuse attribute embeddings (data.use_attributes) and {e}; rebuild the "
                            "SIDs with the new items in the catalog, or use an attribute source with embed_new "
                            "(AttributeSVD has it)") from e


def _quantizer_inputs(run: Path, scratch: Path, datamodule_options: dict, num_new: int,
                      attributes: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
    """The new items' quantizer input, built by the quantize stage's own data module (with the options its
    checkpoint recorded) on the scratch evidence; `attributes()` gives their attribute vectors when it fuses them."""
    from safetensors.torch import load_file, save_file

    from deepinterestgr.quantize.datamodule import (
        ATTRIBUTE_FILE,
        ATTRIBUTE_KEY,
        COLLAB_FILE,
        COLLAB_KEY,
        EmbeddingDataModule,
    )

    dm_args = {k: v for k, v in datamodule_options.items()
               if k in ("use_image_features", "use_collaborative", "collaborative_weight", "use_attributes",
                        "attribute_weight")}
    (scratch / "evidence").mkdir(parents=True, exist_ok=True)
    if dm_args.get("use_collaborative"):
        width = load_file(str(run / "evidence" / COLLAB_FILE))[COLLAB_KEY].shape[1]
        save_file({COLLAB_KEY: torch.zeros(num_new, width)}, str(scratch / "evidence" / COLLAB_FILE))
    if dm_args.get("use_attributes"):
        save_file({ATTRIBUTE_KEY: attributes().contiguous()}, str(scratch / "evidence" / ATTRIBUTE_FILE))
    dm = EmbeddingDataModule(run_dir=str(scratch), **dm_args)
    dm.setup("predict")
    return dm.table()


def place(table: SIDTable, prefix: torch.Tensor, dist: torch.Tensor, *, distinct: bool,
          suffix_capacity: int) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
    """Codes [M, L] and suffixes [M] for new items (prefix [M, L-1], last-level distances [M, K]), given the SIDs
    taken in `table`; a reason (else None) per item that found no SID within the trained vocabulary."""
    full = table.full().tolist()
    taken: dict[tuple, set[int]] = {}
    suffixes: dict[tuple, int] = Counter()
    for row in full:
        taken.setdefault(tuple(row[:-2]), set()).add(row[-2])
        suffixes[tuple(row[:-1])] = max(suffixes[tuple(row[:-1])], row[-1] + 1)
    m = prefix.shape[0]
    codes = torch.zeros(m, table.num_levels, dtype=torch.long)
    suffix = torch.full((m,), NO_SUFFIX, dtype=torch.long)
    problems: list[str | None] = [None] * m
    for i in range(m):
        p = tuple(prefix[i].tolist())
        used = taken.setdefault(p, set())
        order = dist[i].argsort().tolist()
        free = [c for c in order if c not in used] if distinct else []
        code = free[0] if free else order[0]
        key = (*p, code)
        if code in used:  # shares all L codes: the next suffix of that group, if the vocabulary has it
            next_suffix = suffixes[key]
            if next_suffix >= suffix_capacity:
                problems[i] = (f"codes {list(key)} are taken and the generator's vocabulary has {suffix_capacity} "
                               "suffix tokens; retrain (quantize + generate) to add it")
                continue
            suffix[i] = next_suffix
            suffixes[key] = next_suffix + 1
        else:
            suffixes[key] = max(suffixes[key], 0)
        used.add(code)
        codes[i] = torch.tensor(key)
    return codes, suffix, problems


def add_items(run_dir: str, items: str, batch_size: int = 64, cache_dir: str | None = None) -> dict:
    """Add new items to a trained run: evidence with the run's plugins, the trained quantizer's SIDs (no
    retraining), and a new version of the catalog and SID table under `<run>/items/`, which `dig serve` picks up.

    Every line of `items` is a catalog row (`{"source_id": "B00X", "title": ..., "description": ..., "brand": ...,
    "categories": [...], "images": [...]}`). Rows that are not JSON, have wrong field types, an empty source_id or
    one already in the catalog are skipped, counted by reason and kept verbatim in `<version>/skipped.jsonl`.

    Args:
        run_dir: a run directory with `data/`, `evidence/`, `quantize/` (and a trained generator to serve).
        items: JSONL file of new catalog rows.
        batch_size: items per evidence plugin call.
        cache_dir: evidence cache folder (default `<run>/evidence/cache`, where the evidence stage keeps it).
    """
    from deepinterestgr.evidence.stage import evidence_arguments, run_evidence
    from deepinterestgr.quantize.module import QuantizerModule

    started = time.time()
    run, items_path = Path(run_dir), Path(items)
    if not items_path.exists():
        raise ArtifactError(f"{items_path}: file not found (the new items, one JSON catalog row per line)")
    base_table = SIDTable.load(run / "quantize")
    previous = load_current(run, base_table)
    new, skipped = read_new_items(items_path, {it.source_id for it in previous.catalog})
    ckpt_path = run / "quantize" / "checkpoints" / "quantizer.ckpt"
    if not ckpt_path.exists():
        raise ArtifactError(f"{ckpt_path}: the trained quantizer is missing; run the `quantize` stage in this run")
    settings = _evidence_settings(run)

    scratch = run / ITEMS_DIR / f".work-v{previous.version + 1:04d}"
    shutil.rmtree(scratch, ignore_errors=True)
    placed: list[Item] = []
    codes = suffix = None
    try:
        if new:
            atomic_write_jsonl(scratch / "data" / "catalog.jsonl",
                               (Item(**{**it.to_json(), "item_id": k}).to_json() for k, it in enumerate(new)))
            evidence = {}
            if "text_encoder" in settings["options"]:  # catalogs without text (attribute + collaborative SIDs) skip it
                evidence = run_evidence(**evidence_arguments(
                    settings["options"], run_dir=str(scratch), batch_size=batch_size,
                    max_text_chars=settings["max_text_chars"], cache_dir=cache_dir or str(run / "evidence" / "cache")))
            for reason, count in (evidence.get("failures") or {}).items():
                if count:
                    log.warning("items add: evidence branch %s failed on %d new items (see %s)", reason, count,
                                scratch / "evidence" / "manifest.json")
            # the datamodule's options only: memory-mapped, so the weights are read once, by load_from_checkpoint
            datamodule_options = torch.load(ckpt_path, map_location="cpu", weights_only=True,
                                            mmap=True).get("datamodule_hyper_parameters") or {}
            module = QuantizerModule.load_from_checkpoint(str(ckpt_path), map_location="cpu", weights_only=True).eval()
            with torch.no_grad():
                prefix, dist = module.quantizer.last_level_candidates(
                    module.fuse(_quantizer_inputs(
                        run, scratch, datamodule_options, len(new),
                        lambda: _new_attribute_embeddings(run, settings, previous.catalog[:previous.trained_items],
                                                          new))))
            codes, suffix, problems = place(previous.table, prefix, dist,
                                            distinct=bool(getattr(module.quantizer, "distinct_last_level", False)),
                                            suffix_capacity=base_table.num_suffix)
            keep = [i for i, p in enumerate(problems) if p is None]
            skipped += [{"line": None, "reason": p, "raw": json.dumps(new[i].to_json())}
                        for i, p in enumerate(problems) if p is not None]
            placed = [Item(**{**new[i].to_json(), "item_id": previous.num_items + j}) for j, i in enumerate(keep)]
            codes, suffix = codes[keep], suffix[keep]
        if not placed:
            return _summary(previous, 0, skipped, started, None)
        table = SIDTable(torch.cat([previous.table.codes, codes]), torch.cat([previous.table.suffix, suffix]),
                         previous.table.codebook_size, previous.table.meta)
        table.check_unique()

        def keep_evidence(directory: Path) -> None:
            shutil.copytree(scratch / "evidence", directory / "evidence", ignore=shutil.ignore_patterns("cache"))
            if skipped:
                atomic_write_jsonl(directory / "skipped.jsonl", skipped)

        version = write_version(run, table, previous.catalog + placed, previous=previous, before_pointer=keep_evidence)
        return _summary(version, len(placed), skipped, started, int((suffix != NO_SUFFIX).sum()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _summary(version: ItemsVersion, added: int, skipped: list[dict], started: float, with_suffix: int | None) -> dict:
    reasons = Counter(s["reason"].split(" (")[0] for s in skipped)
    out = {"version": version.version, "added": added, "num_items": version.num_items,
           "trained_items": version.trained_items, "with_suffix": with_suffix, "skipped": len(skipped),
           "skipped_by_reason": dict(reasons), "path": str(version.path) if version.path else None,
           "seconds": round(time.time() - started, 2)}
    if skipped and not added:
        out["skipped_rows"] = skipped[:20]  # no version written: show them here
    log.info("items add: %d added (version %d, %d items), %d skipped", added, version.version, version.num_items,
             len(skipped))
    return out
