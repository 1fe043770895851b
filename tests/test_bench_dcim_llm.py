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


def _row(method: str, variant: str, split: str, ndcg10: float, seeds=(42,)) -> dict:
    return {"method": method, "variant": variant, "split": split, "seeds": list(seeds), "recall@5": 0.1,
            "ndcg@5": 0.05, "recall@10": 0.2, "ndcg@10": ndcg10, "std": {"ndcg@10": 0.001}, "fit_s": 60}


def test_ablation_summary_copies_the_selected_rows_and_lists_what_is_missing(tmp_path):
    bench = _bench()
    base, llm = "t5-items-collab-2threads", "t5-items-collab-llm-dcim-2threads"
    rows = []
    for split, n in (("valid", 0.06), ("test", 0.046)):
        rows += [_row("generator", f"{base} (beam 50 + 50 dense, rerank w=2, no repeats)", split, n),
                 _row("generator", f"{base} (beam 50, rerank w=2, no repeats, no dense)", split, n - 0.001),
                 _row("generator", f"{base} (beam 50, no rerank, no repeats)", split, n - 0.006),
                 _row("hybrid: generator + co-occurrence prior", f"{base} (beam 50 + 20 prior, prior c=3)", split,
                      n + 0.01),
                 _row("generator", f"{llm} (beam 50, rerank w=1, no repeats)", split, n + 0.002),
                 _row("generator, mean over seeds", f"{base} (selected on valid per seed)", split, n - 0.001,
                      seeds=(42, 2333, 6666))]
    boot = {"a": f"generator {llm}", "b": f"generator {base}", "mean_diff": 0.00213, "ci95": [-0.0005, 0.004],
            "users": 100}
    quality = tmp_path / "beauty_quality.json"
    quality.write_text(json.dumps({"rows": rows, "bootstrap": {"ablations": {llm: boot}}}))
    policy = {"ndcg@10": 0.045}
    (tmp_path / "rl_beauty-llm-dcim-rulejudge_grpo.json").write_text(json.dumps({
        "quality_file": "q.safetensors", "start": {"ndcg@10": 0.044},
        "settings": [{"setting": "q", "policy": {"ndcg@10": 0.0451}}, {"setting": "noq", "policy": policy}],
        "qarm_effect": [{"qarm": "q", "without": "noq", "seeds": [42], "delta_ndcg@10": 0.0001,
                         "ci95": [-0.001, 0.001], "users": 100}]}))

    out = bench.ablation_summary(quality, tmp_path)
    text, llm_row = out["sources"]["rows"]
    assert text["evidence"].startswith("text only") and "+ 50 dense" in text["variant"]  # not no-dense/no-rerank
    assert text["test"]["ndcg@10"] == 0.046 and text["valid"]["ndcg@10"] == 0.06
    assert text["hybrid_test_ndcg@10"] == 0.056 and text["vs_text_only"] is None
    assert text["mean_over_seeds"]["seeds"] == [42, 2333, 6666]
    assert llm_row["vs_text_only"] == {"mean_diff": 0.0021, "ci95": [-0.0005, 0.004], "users": 100}
    assert llm_row["mean_over_seeds"] is None and llm_row["hybrid_test_ndcg@10"] is None
    assert [q["judge"] for q in out["qarm"]] == ["rule judge"]
    assert out["qarm"][0]["ndcg@10_with_qarm"] == 0.0451 and out["qarm"][0]["ndcg@10_without"] == 0.045
    missing = " ".join(out["missing"])  # the two sources and the LLM judge's RL file were never measured here
    assert len(out["missing"]) == 3 and "t5-items-collab-dcim-2threads" in missing and "llmjudge" in missing
