"""The evidence stage's artifacts: items.jsonl (captions, descriptors, labels, q_i, enriched text, errors per
item) and the safetensors files quantize and RL read."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from deepinterestgr.artifacts import atomic_path, atomic_write_jsonl
from deepinterestgr.evidence.quality import quality_score

log = logging.getLogger(__name__)

ITEMS_FILE = "items.jsonl"
TEXT_EMBEDDINGS_FILE = "text_embeddings.safetensors"
IMAGE_FEATURES_FILE = "image_features.safetensors"
QUALITY_FILE = "quality.safetensors"
COLLAB_EMBEDDINGS_FILE = "collab_embeddings.safetensors"
ATTRIBUTE_EMBEDDINGS_FILE = "attribute_embeddings.safetensors"


def write_artifacts(out_dir, items, captions, mined, judged, descriptors, texts, embeddings, features, mask,
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

