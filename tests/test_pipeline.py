"""`dig pipeline` end to end on a tiny synthetic catalog: every stage runs, a rerun skips them all, an edited
artifact is caught, and `--from` reruns a stage and everything after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepinterestgr.cli.main import main
from deepinterestgr.pipeline import format_results_table

REPO = Path(__file__).resolve().parents[1]


def _experiment(tmp_path: Path) -> Path:
    exp = {
        "run_dir": str(tmp_path / "run"),
        "data": {"reader": "synthetic", "kcore": 0,
                 "reader_args": {"num_items": 60, "num_users": 80, "seed": 3, "render_images": False}},
        "evidence": {"text_encoder": {"class_path": "PackagedMiniLMEncoder"},
                     "intent_miner": {"class_path": "ZeroShotIntentMiner",
                                      "init_args": {"domain": "synthetic", "top_k": 3}},
                     "quality_judge": {"class_path": "RuleQualityJudge"}},
        "quantize": {"configs": [f"{REPO}/configs/trainer/cpu.yaml", f"{REPO}/configs/model/quantizer_rqkmeans.yaml",
                                 f"{REPO}/configs/data/embeddings.yaml"],
                     "overrides": ["--model.quantizer.init_args.codebook_size", "8", "--trainer.logger", "false",
                                   "--trainer.enable_progress_bar", "false"]},
        "generate": {"configs": [f"{REPO}/configs/trainer/cpu.yaml", f"{REPO}/configs/model/generator_t5_tiny.yaml",
                                 f"{REPO}/configs/data/sequences_tiny.yaml"],
                     "overrides": ["--trainer.max_epochs", "1", "--trainer.logger", "false",
                                   "--trainer.enable_progress_bar", "false"]},
        "baselines": ["most-popular"],
    }
    path = tmp_path / "experiment.yaml"
    import yaml

    path.write_text(yaml.safe_dump(exp))
    return path


def test_pipeline_runs_skips_detects_and_reruns(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    exp = _experiment(tmp_path)
    run = tmp_path / "run"
    assert main(["pipeline", "-c", str(exp)]) == 0
    first = capsys.readouterr().out
    for stage in ("data", "evidence", "quantize", "generate", "baselines"):
        assert f"[{stage}] done" in first
    assert "| generator" in first and "| most-popular" in first
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["generate"]["metrics"]["test/recall@10"] <= 1.0
    sids = (run / "quantize" / "sid_table.safetensors").read_bytes()

    assert main(["pipeline", "-c", str(exp)]) == 0
    second = capsys.readouterr().out
    assert second.count("up to date (skipped)") == 5

    # an edited artifact no longer matches its manifest: that stage reruns (and the SIDs come back identical)
    with open(run / "quantize" / "sid_table.json", "a") as f:
        f.write(" ")
    assert main(["pipeline", "-c", str(exp)]) == 0
    third = capsys.readouterr().out
    assert "[data] up to date" in third and "[evidence] up to date" in third and "[quantize] done" in third
    assert (run / "quantize" / "sid_table.safetensors").read_bytes() == sids

    assert main(["pipeline", "-c", str(exp), "--from", "generate"]) == 0
    fourth = capsys.readouterr().out
    assert "[quantize] up to date" in fourth and "[generate] done" in fourth and "[baselines] done" in fourth

    # --from quantize really retrains (the stage's own up-to-date check must not swallow the forced rerun)
    sid_json = run / "quantize" / "sid_table.json"
    before = sid_json.stat().st_mtime_ns
    assert main(["pipeline", "-c", str(exp), "--from", "quantize"]) == 0
    fifth = capsys.readouterr().out
    assert "[evidence] up to date" in fifth and "[quantize] done" in fifth
    assert sid_json.stat().st_mtime_ns != before


def test_same_config_and_seed_give_identical_sids_and_metrics(tmp_path, monkeypatch):
    """Two independent runs of one experiment (fresh run directories, one process): byte-identical data, embeddings
    and SID table, and identical test metrics. (Across processes and after SIGKILLs: tests/test_interruption.py.)"""
    import yaml

    monkeypatch.chdir(REPO)
    exp = yaml.safe_load(_experiment(tmp_path).read_text())
    exp["generate"]["overrides"] += ["--model.generator.init_args.dropout", "0.2"]  # RNG draws during training
    runs = []
    for name in ("a", "b"):
        exp["run_dir"] = str(tmp_path / name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(exp))
        assert main(["pipeline", "-c", str(path)]) == 0
        runs.append(tmp_path / name)
    a, b = runs
    for rel in ("data/sequences.jsonl", "evidence/text_embeddings.safetensors", "quantize/sid_table.safetensors"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    metrics = [json.loads((r / "generate" / "pipeline_metrics.json").read_text())["metrics"] for r in runs]
    assert metrics[0] == metrics[1] and metrics[0]


def test_generate_rerun_in_a_fresh_process_gives_the_same_metrics(tmp_path, monkeypatch):
    """The generator's seed is its own resolved config's, handed to its module and datamodule by the CLI: not what an
    earlier in-process stage left in PL_GLOBAL_SEED (quantize runs with another seed here), so `dig pipeline --from
    generate` in a new process reproduces the in-process result exactly."""
    import subprocess
    import sys

    import yaml

    monkeypatch.chdir(REPO)
    exp = yaml.safe_load(_experiment(tmp_path).read_text())
    exp["quantize"]["overrides"] += ["--seed_everything", "7"]
    exp["generate"]["configs"][0] = f"{REPO}/configs/trainer/generate_cpu.yaml"
    exp["generate"]["overrides"] += ["--model.generator.init_args.dropout", "0.2", "--data.val_max_users", "10"]
    exp["baselines"] = []
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["pipeline", "-c", str(path)]) == 0
    metrics_file = tmp_path / "run" / "generate" / "pipeline_metrics.json"
    in_process = json.loads(metrics_file.read_text())["metrics"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "deepinterestgr.cli.main", "pipeline", "-c", str(path), "--from", "generate"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    assert json.loads(metrics_file.read_text())["metrics"] == in_process and in_process


def test_manifests_record_resolved_config_seed_and_inputs_and_a_new_seed_or_edit_reruns(tmp_path, capsys,
                                                                                        monkeypatch):
    """quantize / generate / rl manifests record the resolved LightningCLI config (seed included) and the manifest
    hashes of the stages they read; that record is the whole up-to-date key: a new seed or an edited config fragment
    reruns that stage and the ones reading it, nothing else."""
    import shutil

    import yaml

    from deepinterestgr.artifacts import input_manifests, is_current, read_manifest, sha256_file
    from deepinterestgr.pipeline import READS

    monkeypatch.chdir(REPO)
    exp = yaml.safe_load(_experiment(tmp_path).read_text())
    model_cfg = tmp_path / "generator.yaml"
    shutil.copy(REPO / "configs/model/generator_t5_tiny.yaml", model_cfg)
    exp["generate"]["configs"][1] = str(model_cfg)
    exp["rl"] = {"configs": [f"{REPO}/configs/trainer/cpu.yaml", f"{REPO}/configs/model/policy_qarm.yaml",
                             f"{REPO}/configs/data/sequences_tiny.yaml"],
                 "overrides": ["--model.candidates", "sample", "--model.beam_size", "10", "--trainer.max_steps", "2",
                               "--trainer.val_check_interval", "2", "--trainer.logger", "false",
                               "--trainer.enable_progress_bar", "false"]}
    exp["baselines"] = []
    path = tmp_path / "exp.yaml"

    def pipeline() -> str:
        path.write_text(yaml.safe_dump(exp))
        assert main(["pipeline", "-c", str(path)]) == 0
        return capsys.readouterr().out

    pipeline()
    run = tmp_path / "run"
    manifests = {stage: read_manifest(run / stage) for stage in ("evidence", "quantize", "generate", "rl")}
    for stage in ("evidence", "quantize"):  # their floats (and so the SIDs) depend on it
        assert manifests[stage]["torch_num_threads"] == torch.get_num_threads(), stage
    for stage in ("quantize", "generate", "rl"):
        recorded = manifests[stage]
        assert recorded["config"]["seed_everything"] == 42, stage  # configs/trainer/cpu.yaml
        assert recorded["config"]["data"]["init_args"]["run_dir"] == "<run>", stage  # a moved run stays current
        assert "config" not in recorded["config"], "fragment paths are not part of the key, their values are"
        assert is_current(run / stage, stage, recorded["config"], recorded["inputs"])
        assert not is_current(run / stage, stage, {**recorded["config"], "seed_everything": 43}, recorded["inputs"])
    for stage in ("generate", "rl"):
        assert manifests[stage]["inputs"] == input_manifests(run, READS[stage]), stage
        assert all(manifests[stage]["inputs"].values()) and set(manifests[stage]["inputs"]) == set(READS[stage])
    assert manifests["rl"]["inputs"]["generate"] == sha256_file(run / "generate" / "manifest.json")
    assert manifests["quantize"]["inputs"]["evidence"] == sha256_file(run / "evidence" / "manifest.json")
    assert manifests["quantize"]["config"]["model"]["init_args"]["quantizer"]["init_args"]["codebook_size"] == 8
    assert manifests["generate"]["config"]["model"]["init_args"]["generator"]["init_args"]["d_ff"] == 64
    assert manifests["evidence"]["inputs"] == {"data": sha256_file(run / "data" / "manifest.json")}
    recorded_miner = manifests["evidence"]["config"]["plugins"]["intent_miner"]
    assert recorded_miner["init_args"]["domain"] == exp["evidence"]["intent_miner"]["init_args"]["domain"]
    from deepinterestgr.serve.items import _evidence_settings

    # the stage record is also what `dig items add` rebuilds the plugins from
    rebuilt = _evidence_settings(run)["options"]
    assert rebuilt["intent_miner"]["class_path"] == "deepinterestgr.evidence.miners.ZeroShotIntentMiner"
    assert rebuilt["intent_miner"]["init_args"]["domain"] == "synthetic"
    assert not (run / "pipeline_state.json").exists()

    # a new seed for the generator: generate reruns, and rl, which reads it; quantize stays
    exp["generate"]["overrides"] += ["--seed_everything", "43"]
    out = pipeline()
    assert "[quantize] up to date" in out and "[generate] done" in out and "[rl] done" in out
    assert read_manifest(run / "generate")["config"]["seed_everything"] == 43
    assert read_manifest(run / "rl")["config"]["seed_everything"] == 42
    assert read_manifest(run / "rl")["inputs"]["generate"] == sha256_file(run / "generate" / "manifest.json")
    assert (run / "generate" / "checkpoints.previous").is_dir(), "the fit of the old seed must not be resumed"

    # an edited config fragment: its stage and the later ones rerun
    model_cfg.write_text(model_cfg.read_text().replace("d_ff: 64", "d_ff: 48"))
    out = pipeline()
    assert "[evidence] up to date" in out and "[quantize] up to date" in out
    assert "[generate] done" in out and "[rl] done" in out
    assert read_manifest(run / "generate")["config"]["model"]["init_args"]["generator"]["init_args"]["d_ff"] == 48

    assert pipeline().count("up to date (skipped)") == 5


def test_unknown_from_stage_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["pipeline", "-c", str(_experiment(tmp_path)), "--from", "quantise"]) == 1
    assert "dig: error: --from 'quantise': not a stage" in capsys.readouterr().err


def test_results_table_reads_prefixed_metrics():
    table = format_results_table({"generate": {"metrics": {"test/recall@5": 0.5, "test/ndcg@10": 0.25}},
                                  "baselines": {"most-popular": {"test": {"recall@5": 0.1}}}})
    assert "| generator        |    0.5000 |" in table and "0.2500 |" in table
    assert "| most-popular     |    0.1000 |" in table


@pytest.mark.slow
def test_multi_process_trainer_runs_its_stage_as_dig_subprocesses(tmp_path, capsys, monkeypatch):
    """A DDP trainer inside the pipeline: Lightning re-runs the command line for rank 1, so the stage runs as
    `dig fit` / `dig test` subprocesses (2 CPU processes, gloo) and the pipeline reads their checkpoint and metrics."""
    import yaml

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp_path = _experiment(tmp_path)
    exp = yaml.safe_load(exp_path.read_text())
    exp["generate"]["overrides"] += ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    exp_path.write_text(yaml.safe_dump(exp))
    assert main(["pipeline", "-c", str(exp_path)]) == 0
    out = capsys.readouterr().out
    assert "[generate] multi-process trainer: running `dig fit` in a subprocess" in out
    assert "[generate] done" in out
    run = tmp_path / "run"
    written = json.loads((run / "generate" / "metrics_test.json").read_text())
    assert written["num_users_evaluated"] == written["num_users"] > 0
    summary = json.loads((run / "generate" / "pipeline_metrics.json").read_text())
    assert summary["metrics"]["test/ndcg@10"] == written["test/ndcg@10"]
    assert summary["checkpoint"].endswith(("best.ckpt", "last.ckpt"))


def test_a_moved_run_directory_stays_up_to_date(tmp_path, capsys, monkeypatch):
    """Stage records hold paths inside the run as `<run>/...`: moving or copying a run reruns nothing."""
    import shutil

    import yaml

    monkeypatch.chdir(REPO)
    exp = _experiment(tmp_path)
    assert main(["pipeline", "-c", str(exp)]) == 0
    capsys.readouterr()
    moved = tmp_path / "moved"
    shutil.move(str(tmp_path / "run"), str(moved))
    spec = yaml.safe_load(exp.read_text())
    spec["run_dir"] = str(moved)
    exp.write_text(yaml.safe_dump(spec))
    assert main(["pipeline", "-c", str(exp)]) == 0
    out = capsys.readouterr().out
    assert out.count("up to date (skipped)") == 5, out
