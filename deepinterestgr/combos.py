"""Component combinations: a base experiment plus a named variant -> one concrete pipeline experiment.

A variant switches evidence branches off or on, appends quantize overrides and swaps the RL policy fragment, so
the grid in `benchmarks/combos.yaml` says only what differs from the base (no pasted copies of whole configs).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from deepinterestgr.pipeline import load_yaml


def apply_variant(base: dict, variant: dict, *, run_dir: str, seed: int | None = None) -> dict:
    """The experiment `base` (a parsed experiment YAML) with `variant` applied.

    variant keys:
      evidence:      mapping merged over the base's evidence options (a base given as a file path is loaded)
      quantize_overrides / generate_overrides / rl_overrides: LightningCLI overrides appended to that stage
      rl_policy:     model fragment replacing the base's `configs/model/policy_*.yaml` (null drops the RL stage)
      quantize_model: model fragment replacing the base's `configs/model/quantizer_*.yaml`
    """
    known = {"evidence", "quantize_overrides", "generate_overrides", "rl_overrides", "rl_policy", "quantize_model",
             "description"}
    unknown = set(variant) - known
    if unknown:
        raise ValueError(f"unknown variant keys {sorted(unknown)}; known: {sorted(known)}")
    exp = copy.deepcopy(base)
    exp["run_dir"] = run_dir
    evidence = exp.get("evidence") or {}
    if isinstance(evidence, str):
        evidence = {k: v for k, v in load_yaml(evidence).items() if k != "run_dir"}
    evidence = {**evidence, **(variant.get("evidence") or {})}
    exp["evidence"] = evidence
    if "quantize_model" in variant:
        _swap_fragment(exp["quantize"], "configs/model/quantizer_", variant["quantize_model"])
    if "rl_policy" in variant:
        if variant["rl_policy"] is None:
            exp.pop("rl", None)
        else:
            _swap_fragment(exp["rl"], "configs/model/policy_", variant["rl_policy"])
    for stage in ("quantize", "generate", "rl"):
        if exp.get(stage) is None:
            continue
        section = exp[stage]
        section["overrides"] = list(section.get("overrides") or []) + list(variant.get(f"{stage}_overrides") or [])
        if seed is not None:
            section["overrides"] += ["--seed_everything", str(seed)]
    return exp


def _swap_fragment(section: dict, prefix: str, replacement: str) -> None:
    configs = section["configs"]
    hits = [i for i, c in enumerate(configs) if c.startswith(prefix)]
    if len(hits) != 1:
        raise ValueError(f"expected exactly one {prefix}* fragment to replace in {configs}")
    configs[hits[0]] = replacement


def grid(path: str | Path) -> dict[str, Any]:
    """The parsed combo grid: {"datasets": {name: base experiment path}, "variants": {name: variant}}."""
    spec = load_yaml(path)
    for key in ("datasets", "variants"):
        if not isinstance(spec.get(key), dict) or not spec[key]:
            raise ValueError(f"{path}: needs a non-empty `{key}` mapping")
    return spec
