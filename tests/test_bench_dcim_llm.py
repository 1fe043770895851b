"""benchmarks/bench_dcim_llm.py's summary of a whole-catalog judge run, against another judge's run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dcim_llm", REPO / "benchmarks" / "bench_dcim_llm.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _judged_run(root: Path, quality: list[float], known: list[bool], catalog: str = "c" * 64) -> Path:
    (root / "evidence").mkdir(parents=True)
    save_file({"quality": torch.tensor(quality), "known": torch.tensor(known)},
              str(root / "evidence" / "quality.safetensors"))
    (root / "evidence" / "manifest.json").write_text(json.dumps({
        "catalog_sha256": catalog, "summary": {"failures": {"judge": known.count(False)}, "seconds": 1.5},
        "plugins": {"quality_judge": {"class_path": "X"}}}))
    return root


def test_catalog_judge_summary_counts_unknowns_and_compares_judges(tmp_path):
    bench = _bench()
    llm = _judged_run(tmp_path / "llm", [1.0, 1.0, 0.0, 0.6], [True, True, True, False])
    rule = _judged_run(tmp_path / "rule", [1.0, 0.0, 0.0, 0.0], [True] * 4)
    out = bench.catalog_judge_summary(llm, rule)
    assert out["items"] == 4 and out["unknown"] == 1 and out["judge_failed"] == 1
    assert out["accepted_share"] == 0.75 and out["quality_mean"] == pytest.approx(0.65)
    assert out["against"]["accepted_share"] == 0.25
    assert out["against"]["same_side_of_half"] == 0.5  # items 0 and 2 agree, 1 and 3 do not

    other = _judged_run(tmp_path / "other", [1.0] * 4, [True] * 4, catalog="d" * 64)
    with pytest.raises(SystemExit, match="another catalog"):
        bench.catalog_judge_summary(llm, other)
