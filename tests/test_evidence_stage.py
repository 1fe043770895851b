"""The evidence stage end to end on a tiny catalog: artifacts, per-item problem reports, cache hits and misses,
sharding, and resuming after an interruption."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from deepinterestgr.artifacts import atomic_write_jsonl, read_jsonl, verify_manifest, write_manifest
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.cache import BranchCache
from deepinterestgr.evidence.stage import evidence_arguments, evidence_is_current, run_evidence, shard_range

#: the stage's options as a config file holds them (plugins by class_path / init_args)
PLUGINS = dict(
    text_encoder={"class_path": "PackagedMiniLMEncoder"},
    intent_miner={"class_path": "ZeroShotIntentMiner", "init_args": {"domain": "synthetic", "top_k": 3}},
    quality_judge={"class_path": "RuleQualityJudge", "init_args": {"embedding_grounding": False}},
    captioner={"class_path": "ImageNetLabelCaptioner", "init_args": {"image_size": 64, "min_probability": 0.0}},
    image_encoder={"class_path": "PackagedEfficientNetLite0Encoder", "init_args": {"image_size": 64}},
    batch_size=2,
)
_BUILT: dict = {}


def evidence(run: Path, config: dict = PLUGINS, **options) -> dict:
    """`run_evidence` with `config`'s plugins built once per module (loading the models is most of a small run)."""
    key = json.dumps(config, sort_keys=True)
    if key not in _BUILT:
        _BUILT[key] = {k: v for k, v in evidence_arguments(config, run_dir="unused").items() if k != "run_dir"}
    return run_evidence(str(run), **{**_BUILT[key], **options})


def make_run(root: Path) -> Path:
    data = root / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (40, 40), (220, 40, 40)).save(data / "images" / "0.png")
    Image.new("RGB", (40, 40), (40, 40, 220)).save(data / "images" / "1.jpg")
    (data / "images" / "2.png").write_bytes(b"\x89PNG but not really")
    items = [
        Item(0, "A", "Mama Bee Belly Butter", "Body butter for expecting mothers", categories=["Beauty", "Body"],
             images=["images/0.png"]),
        Item(1, "B", "Travel Size Shampoo 1 oz", categories=["Beauty", "Hair Care"], images=["images/1.jpg"]),
        Item(2, "C", "Festival Body Glitter Gel", images=["images/2.png"]),
        Item(3, "D", "", images=["images/gone.png"]),
        Item(4, "E", "Night Cream " + "very " * 200 + "rich", images=["https://example.com/e.jpg"]),
        Item(5, "F", "Sunscreen SPF 50 for the beach"),
    ]
    atomic_write_jsonl(data / "catalog.jsonl", [i.to_json() for i in items])
    return root


def outputs(run: Path) -> dict:
    ev = run / "evidence"
    return {"items": (ev / "items.jsonl").read_bytes(),
            **{name: (ev / name).read_bytes() for name in
               ("text_embeddings.safetensors", "quality.safetensors", "image_features.safetensors")}}


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def test_stage_writes_every_artifact_and_reports_each_problem(run):
    summary = evidence(run, max_text_chars=300)
    ev = run / "evidence"
    verify_manifest(ev, "evidence")
    manifest = json.loads((ev / "manifest.json").read_text())
    assert manifest["plugins"]["intent_miner"]["class_path"] == "deepinterestgr.evidence.miners.ZeroShotIntentMiner"
    recorded = manifest["config"]["plugins"]["intent_miner"]
    assert recorded["init_args"]["domain"] == "synthetic" and recorded["init_args"]["top_k"] == 3
    assert set(manifest["config"]["plugins"]) == {"text_encoder", "intent_miner", "quality_judge", "captioner",
                                                  "image_encoder"}
    assert manifest["summary"]["problems"] == summary["problems"]
    rows = list(read_jsonl(ev / "items.jsonl"))
    assert [r["item_id"] for r in rows] == list(range(6))
    emb = load_file(ev / "text_embeddings.safetensors")["embeddings"]
    assert emb.shape == (6, 384) and torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-4)
    quality = load_file(ev / "quality.safetensors")["quality"]
    assert quality.tolist() == pytest.approx([r["quality"] for r in rows])
    image = load_file(ev / "image_features.safetensors")
    assert image["features"].shape == (6, 1280) and image["mask"].tolist() == [1, 1, 0, 0, 0, 0]
    assert image["features"][2:].abs().sum() == 0
    assert summary["problems"] == {"image_corrupt": 1, "image_missing": 1, "empty_text": 1,
                                   "image_url_not_fetched": 1, "text_truncated": 1, "mining_failed": 1}
    assert rows[0]["caption"].startswith("product photo resembling") and rows[2]["caption"] == ""
    assert summary["branches"]["caption"]["no_caption"] == 4
    # the empty item: the zero-shot miner refuses it, the failure is kept in the row and q = 0
    assert rows[3]["descriptors"] == [] and "empty item text" in rows[3]["errors"]["mine"]["error"]
    assert rows[3]["quality"] == 0.0
    assert len(rows[4]["enriched_text"].split("\n")[0]) <= 300
    first = rows[0]
    assert len(first["descriptors"]) == 3 and len(first["labels"]) == 3
    confidences = [d["confidence"] for d in first["descriptors"]]
    assert confidences == sorted(confidences, reverse=True), "strongest first"
    assert first["enriched_text"].split("\n") == [
        "Mama Bee Belly Butter", "Beauty > Body", "Body butter for expecting mothers", first["caption"],
        "; ".join(d["descriptor"] for d in first["descriptors"])]


def test_rerun_hits_the_cache_everywhere_and_writes_identical_artifacts(run):
    evidence(run)
    before = outputs(run)
    summary = evidence(run)
    assert all(branch.get("computed", 0) == 0 for branch in summary["branches"].values()), summary["branches"]
    assert summary["branches"]["text"]["cached"] == 6
    assert outputs(run) == before


def test_changed_item_recomputes_only_that_item(run):
    evidence(run)
    catalog = run / "data" / "catalog.jsonl"
    rows = list(read_jsonl(catalog))
    rows[5]["title"] = "Kids bubble bath with rubber duck"
    atomic_write_jsonl(catalog, rows)
    summary = evidence(run)
    b = summary["branches"]
    assert (b["mine"]["computed"], b["judge"]["computed"], b["text"]["computed"]) == (1, 1, 1)
    assert b["caption"]["computed"] == 0 and b["image"]["computed"] == 0


def test_changed_setting_recomputes_only_its_branch_and_what_depends_on_it(run):
    evidence(run)
    args = json.loads(json.dumps(PLUGINS))
    args["intent_miner"]["init_args"]["top_k"] = 2
    summary = evidence(run, args)
    b = summary["branches"]
    assert b["caption"].get("computed", 0) == 0 and b["image"].get("computed", 0) == 0
    assert b["mine"]["computed"] >= 5 and b["text"]["computed"] >= 5


def test_shards_fill_the_cache_and_a_plain_run_merges_them(run, tmp_path):
    for shard in ("0/2", "1/2"):
        s = evidence(run, shard=shard)
        assert s["shard"] == shard and not (run / "evidence" / "items.jsonl").exists()
    merged = evidence(run)
    assert all(branch.get("computed", 0) == 0 for branch in merged["branches"].values())
    reference = make_run(tmp_path / "reference")
    evidence(reference)
    assert outputs(run) == outputs(reference)


def test_shard_ranges_cover_every_item_once_on_batch_boundaries():
    spans = [shard_range(f"{i}/3", 10) for i in range(3)]
    assert spans == [(0, 3), (3, 6), (6, 10)]
    aligned = [shard_range(f"{i}/3", 10, align=4) for i in range(3)]
    assert aligned == [(0, 4), (4, 8), (8, 10)]
    assert shard_range("0/2", 5, align=2) == (0, 2) and shard_range("1/2", 5, align=2) == (2, 5)
    with pytest.raises(ValueError, match="i/n"):
        shard_range("2", 10)
    with pytest.raises(ValueError, match="0 <= i < n"):
        shard_range("3/3", 10)


def test_interrupted_run_resumes_to_the_uninterrupted_result(run, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = BranchCache.put_many

    def put_then_die(self, values):
        if self.dir.name == "text":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("simulated kill after one text batch")
        original(self, values)

    monkeypatch.setattr(BranchCache, "put_many", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        evidence(run)
    assert not (run / "evidence" / "items.jsonl").exists(), "no half-written artifacts"
    monkeypatch.setattr(BranchCache, "put_many", original)
    resumed = evidence(run)
    assert resumed["branches"]["text"] == {"cached": 2, "no_input": 0, "computed": 4}
    assert resumed["branches"]["mine"].get("computed", 0) == 0
    reference = make_run(tmp_path / "reference")
    evidence(reference)
    assert outputs(run) == outputs(reference)


def test_bad_arguments_fail_with_a_clear_message(run):
    from jsonargparse import ArgumentError

    from deepinterestgr.evidence.judges import RuleQualityJudge
    from deepinterestgr.evidence.miners import ZeroShotIntentMiner
    from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder
    from deepinterestgr.registry import RegistryError

    with pytest.raises(ArgumentError, match="miner"):
        evidence_arguments({"miner": {"class_path": "ZeroShotIntentMiner"}}, run_dir=str(run))
    with pytest.raises(RegistryError, match="captioner: no Captioner class named 'PackagedEfficientNetLite0Encoder'"):
        evidence_arguments({"captioner": {"class_path": "PackagedEfficientNetLite0Encoder"}}, run_dir=str(run))
    with pytest.raises(TypeError, match="captioner: expected a Captioner"):
        run_evidence(str(run), text_encoder=PackagedMiniLMEncoder(), captioner=PackagedMiniLMEncoder())
    with pytest.raises(ValueError, match="needs an intent_miner"):
        run_evidence(str(run), text_encoder=PackagedMiniLMEncoder(), quality_judge=RuleQualityJudge())
    with pytest.raises(ValueError, match="all null"):
        run_evidence(str(run))
    with pytest.raises(ValueError, match="intent_miner: ZeroShotIntentMiner embeds text but has no text_encoder"):
        run_evidence(str(run), intent_miner=ZeroShotIntentMiner(), collaborative=_collab())


def _collab():
    from deepinterestgr.evidence.collaborative import CooccurrenceSVD

    return CooccurrenceSVD(dim=2)


def test_a_miner_without_an_encoder_shares_the_stage_encoder_and_one_with_its_own_keeps_it(run):
    from deepinterestgr.evidence.miners import ZeroShotIntentMiner
    from deepinterestgr.evidence.text_encoders import HFTextEncoder, PackagedMiniLMEncoder

    stage_encoder = PackagedMiniLMEncoder()
    shared = ZeroShotIntentMiner(domain="synthetic")
    run_evidence(str(run), text_encoder=stage_encoder, intent_miner=shared)
    assert shared.encoder is stage_encoder, "one model for the stage and the miner"
    own = HFTextEncoder(model=PackagedMiniLMEncoder().model_id)
    keeps = ZeroShotIntentMiner(domain="synthetic", text_encoder=own)
    run_evidence(str(run), text_encoder=stage_encoder, intent_miner=keeps)
    assert keeps.encoder is own
    assert keeps.init_config()["init_args"]["text_encoder"]["class_path"].endswith("HFTextEncoder")


def test_cache_skips_torn_lines_and_merges_writers(tmp_path):
    a, b = BranchCache(tmp_path, "mine"), BranchCache(tmp_path, "mine")
    a.put_many({"k1": {"v": 1}})
    b.put_many({"k2": {"v": 2}, "k1": {"v": 1}})
    a.close()
    b.close()
    files = sorted((tmp_path / "mine").glob("*.jsonl"))
    assert len(files) == 2, "each writer appends to its own file"
    with open(files[0], "a") as f:
        f.write('{"entries": {"k3": {"v": 3}, "k4": {"v"')  # what a kill -9 mid-write leaves behind
    c = BranchCache(tmp_path, "mine")
    assert c.torn_lines == 1 and len(c) == 2 and c.get("k2") == {"v": 2} and "k3" not in c


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_uninterrupted(run, tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, json, torch
        torch.set_num_threads(1)
        from deepinterestgr.evidence import stage
        from deepinterestgr.evidence.cache import BranchCache
        original, calls = BranchCache.put_many, {{"n": 0}}
        def put(self, values):
            if self.dir.name == "mine":
                calls["n"] += 1
                if calls["n"] == 2:
                    original(self, {{}})  # opens this process's cache file
                    self._writer.write('{{"entries": {{"torn')  # the batch's line cut short by the kill
                    self._writer.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                    self._writer.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            original(self, values)
        BranchCache.put_many = put
        stage.run_evidence(**stage.evidence_arguments(json.loads({json.dumps(json.dumps(PLUGINS))}),
                                                      run_dir={str(run)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = evidence(run)
    assert resumed["torn_cache_lines"] == 1
    assert resumed["branches"]["mine"]["cached"] == 2 and resumed["branches"]["mine"]["computed"] == 4
    assert resumed["branches"]["caption"]["cached"] == 2
    reference = make_run(tmp_path / "reference")
    evidence(reference)
    assert outputs(run) == outputs(reference)


@pytest.mark.parametrize("name", ["synthetic", "beauty", "beauty_llm", "collab", "text_collab", "attributes_collab"])
def test_shipped_configs_parse_into_typed_plugins(name):
    from jsonargparse import ArgumentParser

    from deepinterestgr.evidence.contracts import EvidencePlugin
    from deepinterestgr.registry import get_registry

    get_registry()  # short class names resolve among the registered plugins
    parser = ArgumentParser()
    parser.add_argument("-c", "--config", action="config")
    parser.add_function_arguments(run_evidence)
    config_path = Path(__file__).resolve().parents[1] / "configs" / "evidence" / f"{name}.yaml"
    cfg = parser.parse_args(["-c", str(config_path), "--run_dir", "/tmp/x"])  # unknown keys / init_args fail here
    plugins = {role: cfg[role] for role in ("text_encoder", "intent_miner", "quality_judge", "captioner",
                                            "image_encoder", "collaborative", "attributes") if cfg[role]}
    assert plugins, "every shipped evidence config embeds items somehow"
    for role, spec in plugins.items():
        module, _, attr = spec.class_path.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), attr), EvidencePlugin), role
    if name in ("synthetic", "beauty"):
        assert cfg.intent_miner.init_args.domain == name
    # what the up-to-date check parses (no model loads) is what the stage records from the built plugins
    from deepinterestgr.config_files import function_arguments, parse_function_options, resolved_options

    parsed = resolved_options(parse_function_options(run_evidence, str(config_path), run_dir="/tmp/x")[1])
    built = function_arguments(run_evidence, str(config_path), run_dir="/tmp/x")
    for role in plugins:
        assert json.loads(json.dumps(built[role].init_config(), default=str)) == parsed[role], role


def test_a_bare_stage_run_leaves_the_record_the_up_to_date_check_compares(run):
    evidence(run)
    manifest = json.loads((run / "evidence" / "manifest.json").read_text())
    assert manifest["inputs"] == {"data": None} and manifest["config"]["batch_size"] == 2
    assert evidence_is_current(run, PLUGINS)
    assert evidence_is_current(run, {**PLUGINS, "cache_dir": str(run / "elsewhere")}), "the cache's place is no input"
    assert not evidence_is_current(run, {**PLUGINS, "max_text_chars": 300})
    changed_miner = {**PLUGINS["intent_miner"], "init_args": {"domain": "synthetic", "top_k": 2}}
    assert not evidence_is_current(run, {**PLUGINS, "intent_miner": changed_miner})
    assert not evidence_is_current(run, {k: v for k, v in PLUGINS.items() if k != "captioner"})
    write_manifest(run / "data", "data", ["catalog.jsonl"])  # the data stage rewrote its artifacts
    assert not evidence_is_current(run, PLUGINS)


def test_a_failed_judgment_is_unknown_quality_not_zero(run, monkeypatch):
    from deepinterestgr.evidence.contracts import JudgeResult
    from deepinterestgr.evidence.judges import RuleQualityJudge

    original = RuleQualityJudge.judge_detailed

    def fails_on_travel(self, items, descriptors, captions=None):
        results = original(self, items, descriptors, captions)
        return [JudgeResult(error="judge timed out", raw="...") if "Travel" in it.title else r
                for it, r in zip(items, results)]

    monkeypatch.setattr(RuleQualityJudge, "judge_detailed", fails_on_travel)
    summary = evidence(run, {k: v for k, v in PLUGINS.items() if k not in ("captioner", "image_encoder")})
    rows = list(read_jsonl(run / "evidence" / "items.jsonl"))
    saved = load_file(run / "evidence" / "quality.safetensors")
    assert rows[1]["quality"] is None and rows[1]["errors"]["judge"]["error"] == "judge timed out"
    assert saved["known"].tolist() == [True, False, True, True, True, True]
    judged = [r["quality"] for r in rows if r["quality"] is not None]
    assert saved["quality"][1].item() == pytest.approx(sum(judged) / len(judged)), "the judged mean, not 0"
    assert summary["branches"]["judge"]["unknown_quality"] == 1 and summary["problems"]["judge_failed"] == 1
