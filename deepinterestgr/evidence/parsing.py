"""Strict parsing of LLM output: the first JSON object in the text, validated field by field.

A model's answer is accepted only when it is exactly what the prompt asked for; anything else raises
`LLMOutputError` with a message that says what was wrong (it goes into the per-item error record and the repair
prompt). Nothing is silently coerced: a confidence of 1.3 or "high" is an error, not a clamp.
"""

from __future__ import annotations

import json
import math

from deepinterestgr.evidence.contracts import Descriptor


class LLMOutputError(ValueError):
    """The model's text is not the requested JSON. The message says why (used in the repair prompt)."""


def first_json_object(text: str) -> dict:
    """Decode the first balanced `{...}` in `text` (models often add prose or code fences around it)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    last_error = "no JSON object found"
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            last_error = f"invalid JSON ({e.msg} at char {e.pos})"
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    raise LLMOutputError(last_error)


def parse_descriptors(text: str, *, max_descriptors: int | None = None) -> list[Descriptor]:
    """`{"descriptors": [{"descriptor": str, "confidence": number in [0,1]}, ...]}` -> descriptors, order kept.

    Strongest first is the model's job (the prompt says so); we keep its order. Duplicate descriptors (case-
    insensitive) keep their first occurrence. An empty list is valid (the item has no clear intent)."""
    return descriptors_from_obj(first_json_object(text), max_descriptors=max_descriptors)


def descriptors_from_obj(obj: dict, *, max_descriptors: int | None = None,
                         allow_missing_confidence: bool = False) -> list[Descriptor]:
    """Validate an already-decoded `{"descriptors": [...]}`; `allow_missing_confidence` accepts null confidences
    (descriptor files from miners that give none; QARM then weighs them uniformly)."""
    if "descriptors" not in obj:
        raise LLMOutputError('missing key "descriptors"')
    rows = obj["descriptors"]
    if not isinstance(rows, list):
        raise LLMOutputError('"descriptors" must be a list')
    out: list[Descriptor] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise LLMOutputError(f"descriptors[{i}] must be an object")
        name = row.get("descriptor")
        if not isinstance(name, str) or not name.strip():
            raise LLMOutputError(f"descriptors[{i}].descriptor must be a non-empty string")
        conf = row.get("confidence")
        if conf is None and allow_missing_confidence:
            pass
        elif isinstance(conf, bool) or not isinstance(conf, (int, float)) or not math.isfinite(conf):
            raise LLMOutputError(f"descriptors[{i}].confidence must be a number, got {conf!r}")
        elif not 0.0 <= conf <= 1.0:
            raise LLMOutputError(f"descriptors[{i}].confidence {conf} is outside [0, 1]")
        key = name.strip().lower()
        if key not in seen:
            seen.add(key)
            out.append(Descriptor(name.strip(), None if conf is None else float(conf)))
    return out[:max_descriptors] if max_descriptors else out


def parse_labels(text: str, *, expected: int) -> list[int]:
    """`{"labels": [0 or 1, ...]}` with exactly `expected` entries (one per descriptor, same order)."""
    obj = first_json_object(text)
    labels = obj.get("labels")
    if not isinstance(labels, list):
        raise LLMOutputError('missing list "labels"')
    if len(labels) != expected:
        raise LLMOutputError(f'"labels" has {len(labels)} entries, expected {expected} (one per descriptor)')
    for i, v in enumerate(labels):
        if isinstance(v, bool) or v not in (0, 1):
            raise LLMOutputError(f"labels[{i}] must be 0 or 1, got {v!r}")
    return [int(v) for v in labels]
