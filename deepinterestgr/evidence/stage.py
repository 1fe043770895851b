"""The evidence stage: CMSA captions and image features, DCIM descriptors, QARM labels and quality, the
enriched-text embeddings of every catalog item (cached per item and branch), collaborative item embeddings from the
training sequences and attribute embeddings. Its plugins are typed arguments (`class_path` / `init_args`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from deepinterestgr.artifacts import READS, input_manifests, is_current, sha256_file, stage_record, write_manifest
from deepinterestgr.evidence.branches import BranchRunner, run_captions, run_images, run_judging, run_mining, run_text
from deepinterestgr.evidence.contracts import (
    AttributeSource,
    Captioner,
    CollaborativeSource,
    Descriptor,
    EvidencePlugin,
    ImageEncoder,
    IntentMiner,
    QualityJudge,
    SharesTextEncoder,
    TextEncoder,
)
from deepinterestgr.evidence.inputs import (
    Report,
    load_catalog_items,
    prepare_item,
    resolve_image,
    shard_range,
    wrong_field_types,
)
from deepinterestgr.evidence.outputs import (
    ATTRIBUTE_EMBEDDINGS_FILE,
    COLLAB_EMBEDDINGS_FILE,
    IMAGE_FEATURES_FILE,
    ITEMS_FILE,
    QUALITY_FILE,
    TEXT_EMBEDDINGS_FILE,
    write_artifacts,
)
from deepinterestgr.evidence.text import enriched_text

__all__ = ["ROLES", "evidence_arguments", "evidence_is_current", "load_catalog_items", "run_evidence", "shard_range",
           "wrong_field_types"]

log = logging.getLogger(__name__)

STAGE = "evidence"
#: the plugin arguments of `run_evidence`, in the order the stage runs them
ROLES = ("collaborative", "attributes", "captioner", "intent_miner", "quality_judge", "text_encoder", "image_encoder")
ROLE_TYPES = {"collaborative": CollaborativeSource, "attributes": AttributeSource, "captioner": Captioner,
              "intent_miner": IntentMiner, "quality_judge": QualityJudge, "text_encoder": TextEncoder,
              "image_encoder": ImageEncoder}


def run_evidence(
    run_dir: str,
    text_encoder: TextEncoder | None = None,
    intent_miner: IntentMiner | None = None,
    quality_judge: QualityJudge | None = None,
    captioner: Captioner | None = None,
    image_encoder: ImageEncoder | None = None,
    collaborative: CollaborativeSource | None = None,
    attributes: AttributeSource | None = None,
    batch_size: int = 64,
    shard: str | None = None,
    max_text_chars: int = 2000,
    cache_dir: str | None = None,
) -> dict:
    """Extract item evidence for `<run_dir>/data/catalog.jsonl` into `<run_dir>/evidence/`.

    Per item: a CMSA caption of the main image (`captioner`), DCIM intent descriptors (`intent_miner`), QARM 0/1
    labels and quality q_i (`quality_judge`), the enriched text `title / category path / description / caption /
    descriptors` embedded by `text_encoder`, and frozen image features (`image_encoder`). Each plugin is given as
    `class_path` + `init_args` (a short class name works: `class_path: ZeroShotIntentMiner`; `dig plugins list`
    shows them all); an omitted or null plugin skips its branch. A miner or judge that embeds text and has no
    `text_encoder` of its own shares the stage's. Shipped settings: configs/evidence/*.yaml.

    `collaborative` (e.g. CooccurrenceSVD) embeds every item from the training part (items[:-2]) of
    `<run_dir>/data/sequences.jsonl`, never the valid/test targets; quantize fuses it with the text embeddings when
    `data.use_collaborative` is true. `attributes` (e.g. AttributeSVD) embeds every item's attribute ids
    (`Item.attributes`); quantize fuses it when `data.use_attributes` is true. A catalog without item text gets SIDs
    from either; at least one of text_encoder, collaborative and attributes must be set.

    Every result is cached per item and branch under `<run_dir>/evidence/cache/` (or `cache_dir`, which runs may
    share), keyed by the item content and the plugin's `describe()`: a rerun computes nothing new, a changed item or
    setting recomputes only what changed, and an interrupted run resumes. `shard="i/n"` (0-based) fills the cache
    for the i-th of n contiguous item ranges and writes no artifacts; a run without `shard` then assembles them.
    Texts longer than `max_text_chars` are truncated; missing or corrupt images, empty texts, malformed model
    output are reported per item and counted in the returned summary (also in evidence/manifest.json).

    Writes evidence/items.jsonl, text_embeddings.safetensors ("embeddings" [N, D], L2-normalised, row = item_id),
    quality.safetensors ("quality" [N], "known" [N], when a judge ran), image_features.safetensors ("features"
    [N, F], "mask" [N]), collab_embeddings.safetensors and attribute_embeddings.safetensors ("embeddings" [N, D],
    zero rows for items without signal) and manifest.json, whose `config` records every plugin's `class_path` /
    `init_args` with the options that shape the outputs, and `inputs` the data manifest's hash (`evidence_is_current`
    compares them).

    Args:
        run_dir: the run directory (reads `data/`, writes `evidence/`).
        text_encoder: embeds the enriched item texts (e.g. PackagedMiniLMEncoder); null writes no text embeddings.
        intent_miner: DCIM descriptors (ZeroShotIntentMiner, LLMIntentMiner, JsonlIntentMiner); null to skip.
        quality_judge: QARM labels and q_i (RuleQualityJudge, LLMQualityJudge); needs an intent_miner.
        captioner: CMSA caption branch (ImageNetLabelCaptioner, VLMCaptioner); null to skip.
        image_encoder: CMSA image branch (PackagedEfficientNetLite0Encoder, TimmImageEncoder); null to skip.
        collaborative: collaborative source over the training sequences (CooccurrenceSVD); null to skip.
        attributes: attribute source over the items' attribute ids (AttributeSVD); null to skip.
        batch_size: items per plugin call (and per cache record).
        shard: "i/n" fills the cache for one item range and writes no artifacts (collaborative does not run).
        max_text_chars: item texts are truncated to this many characters.
        cache_dir: per-item cache folder (default `<run_dir>/evidence/cache`); runs may share one.
    """
    started = time.time()
    run = Path(run_dir)
    given = {"text_encoder": text_encoder, "intent_miner": intent_miner, "quality_judge": quality_judge,
             "captioner": captioner, "image_encoder": image_encoder, "collaborative": collaborative,
             "attributes": attributes}
    plugins = {role: given[role] for role in ROLES if given[role] is not None}
    _check_plugins(plugins)
    items = load_catalog_items(run)
    lo, hi = shard_range(shard, len(items), align=batch_size)
    selected = items[lo:hi]

    collab = attr = None
    summary: dict = {}
    if collaborative is not None and shard is None:  # first: cheap, and bad sequences fail before the models run
        from deepinterestgr.evidence.collaborative import embed_run

        collab, summary["collaborative"] = embed_run(collaborative, run, len(items))
    if attributes is not None and shard is None:
        from deepinterestgr.evidence.attributes import embed_catalog

        attr, summary["attributes"] = embed_catalog(attributes, items)

    report = Report()
    runner = BranchRunner(Path(cache_dir) if cache_dir else run / STAGE / "cache", batch_size, report, lo)
    prepared = [prepare_item(item, max_text_chars, report) for item in selected]
    images = [resolve_image(item, run / "data", report) for item in selected]
    captions = run_captions(captioner, prepared, images, runner) if captioner else [""] * len(selected)
    mined = (run_mining(intent_miner, prepared, captions, runner) if intent_miner
             else [{"descriptors": [], "error": None, "raw": None}] * len(selected))
    judged = (run_judging(quality_judge, prepared, captions, mined, runner) if quality_judge
              else [None] * len(selected))
    descriptors = [[Descriptor(d, c) for d, c in m["descriptors"]] for m in mined]
    texts = [enriched_text(item, cap, descs) for item, cap, descs in zip(prepared, captions, descriptors)]
    embeddings = run_text(text_encoder, texts, runner) if text_encoder else None
    features, mask = run_images(image_encoder, prepared, images, runner) if image_encoder else (None, None)

    described = {role: {"class_path": p.init_config()["class_path"], "describe": p.describe()}
                 for role, p in plugins.items()}
    summary = {"items": len(items), "processed": len(selected), "shard": shard, "item_range": [lo, hi],
               "plugins": described, **report.to_json(), **summary}
    if shard is None:
        quality = write_artifacts(run / STAGE, prepared, captions, mined, judged, descriptors, texts, embeddings,
                                  features, mask, report, collab, attr)
        summary.update(report.to_json())
        summary["quality_mean"] = float(quality.mean()) if quality is not None and len(quality) else None
        summary["seconds"] = round(time.time() - started, 2)
        written = {ITEMS_FILE: True, TEXT_EMBEDDINGS_FILE: embeddings is not None, QUALITY_FILE: quality is not None,
                   IMAGE_FEATURES_FILE: features is not None, COLLAB_EMBEDDINGS_FILE: collab is not None,
                   ATTRIBUTE_EMBEDDINGS_FILE: attr is not None}
        extra = {"sequences_sha256": sha256_file(run / "data" / "sequences.jsonl")} if collab is not None else {}
        # the record `is_current` compares, and what `dig items add` rebuilds the plugins from
        record = stage_record(stage_config({role: p.init_config() for role, p in plugins.items()}, batch_size,
                                           max_text_chars), input_manifests(run, READS[STAGE]))
        # BLAS reductions differ with the thread count, and so do the embeddings' low bits and the SIDs built on
        # them: a rebuild reproduces these bytes only under the same count
        write_manifest(run / STAGE, STAGE, [f for f, ok in written.items() if ok],
                       catalog_sha256=sha256_file(run / "data" / "catalog.jsonl"), **extra, **record,
                       torch_num_threads=torch.get_num_threads(),
                       plugins=described, summary={k: v for k, v in summary.items() if k != "plugins"})
    else:
        summary["seconds"] = round(time.time() - started, 2)
    log.info("evidence: %d items in %.1fs; failures %s", len(selected), summary["seconds"], summary["failures"])
    return summary


def _check_plugins(plugins: dict[str, EvidencePlugin]) -> None:
    """Wrong combinations fail before any model runs; text-embedding miners and judges get the stage's encoder."""
    for role, plugin in plugins.items():
        if not isinstance(plugin, ROLE_TYPES[role]):
            raise TypeError(f"{role}: expected a {ROLE_TYPES[role].__name__}, got {type(plugin).__name__}")
    if "quality_judge" in plugins and "intent_miner" not in plugins:
        raise ValueError("quality_judge needs an intent_miner (it judges the mined descriptors)")
    if not {"text_encoder", "collaborative", "attributes"} & set(plugins):
        raise ValueError("text_encoder, collaborative and attributes are all null: quantize needs item embeddings. "
                         "Set text_encoder (class_path: PackagedMiniLMEncoder), collaborative (CooccurrenceSVD) or "
                         "attributes (AttributeSVD); configs/evidence/*.yaml are ready-made settings")
    for role, plugin in plugins.items():
        if isinstance(plugin, SharesTextEncoder):
            plugin.share_text_encoder(plugins.get("text_encoder"))
            if plugin.needs_text_encoder() and "text_encoder" not in plugins:
                raise ValueError(f"{role}: {type(plugin).__name__} embeds text but has no text_encoder, and the "
                                 "stage has none to share: set the stage's text_encoder or the plugin's "
                                 "init_args.text_encoder")


def evidence_arguments(config: dict | str | None, **given) -> dict:
    """`run_evidence`'s keyword arguments from a mapping or YAML file of its options (plugins as `class_path` /
    `init_args`), instantiated exactly as `dig evidence -c FILE` does; `given` fills options such as run_dir."""
    from deepinterestgr.config_files import function_arguments

    return function_arguments(run_evidence, config if config is not None else {}, **given)


def stage_config(plugins: dict[str, dict | None], batch_size: int, max_text_chars: int) -> dict:
    """The evidence manifest's `config`: each plugin's `class_path` / `init_args` and the options that shape the
    outputs (`shard` writes no artifacts and `cache_dir` changes none, so neither is part of it)."""
    return {"plugins": {role: plugins[role] for role in ROLES if plugins.get(role) is not None},
            "batch_size": batch_size, "max_text_chars": max_text_chars}


def evidence_is_current(run_dir: str | Path, config: dict | str) -> bool:
    """Whether `<run_dir>/evidence` was made from these options (a mapping or YAML file, as `dig evidence -c`
    takes) and the run's current data. The options are parsed, not built: no model loads to find nothing changed
    (a parsed plugin reads as its built `init_config()`, which the stage records)."""
    from deepinterestgr.config_files import parse_function_options, resolved_options

    options = resolved_options(parse_function_options(run_evidence, config, run_dir=str(run_dir))[1])
    record = stage_config({role: options.get(role) for role in ROLES}, options["batch_size"], options["max_text_chars"])
    run = Path(run_dir)
    return is_current(run / STAGE, STAGE, record, input_manifests(run, READS[STAGE]))
