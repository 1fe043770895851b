"""The package works as a wheel, outside the source tree: configs ship inside it, no stage reads the repo layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel built from this checkout, installed with --no-deps into its own folder (the dependencies come from
    the test environment; torch is never reinstalled), and an environment that imports it from there."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(REPO)], check=True, timeout=300)
    wheel = next((root / "dist").glob("deepinterestgr-*.whl"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    workdir = root / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {"target": target, "cwd": workdir, "env": env}


def _dig(installed: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepinterestgr.cli.main", *args], cwd=installed["cwd"],
                          env=installed["env"], capture_output=True, text=True, timeout=timeout)


def test_the_installed_wheel_is_what_runs_and_carries_its_configs(installed):
    code = ("import deepinterestgr.config_files as c, deepinterestgr; "
            "print(deepinterestgr.__file__); print(c.PACKAGE_CONFIGS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=installed["cwd"], env=installed["env"], capture_output=True,
                         text=True, check=True, timeout=300).stdout.splitlines()
    assert out[0].startswith(str(installed["target"])), "the source tree's package was imported, not the wheel's"
    configs = Path(out[1])
    assert (configs / "experiment" / "synthetic.yaml").exists() and (configs / "trainer" / "cpu.yaml").exists()
    assert (installed["target"] / "deepinterestgr" / "evidence" / "vocab" / "synthetic.txt").exists()


def test_quantize_help_from_outside_the_source_tree(installed):
    proc = _dig(installed, "quantize", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: dig quantize")


def test_the_synthetic_pipeline_runs_from_the_wheel_with_packaged_config_paths(installed):
    """Config fragments are named `configs/...` as in the README; the working directory has no configs/ folder."""
    exp = {
        "run_dir": "run",
        "data": {"reader": "synthetic", "kcore": 0,
                 "reader_args": {"num_items": 60, "num_users": 80, "seed": 3, "render_images": False}},
        "evidence": {"text_encoder": {"class_path": "PackagedMiniLMEncoder"},
                     "intent_miner": {"class_path": "ZeroShotIntentMiner",
                                      "init_args": {"domain": "synthetic", "top_k": 3}},
                     "quality_judge": {"class_path": "RuleQualityJudge"}},
        "quantize": {"configs": ["configs/trainer/cpu.yaml", "configs/model/quantizer_rqkmeans.yaml",
                                 "configs/data/embeddings.yaml"],
                     "overrides": ["--model.quantizer.init_args.codebook_size", "8", "--trainer.logger", "false",
                                   "--trainer.enable_progress_bar", "false"]},
        "generate": {"configs": ["configs/trainer/cpu.yaml", "configs/model/generator_t5_tiny.yaml",
                                 "configs/data/sequences_tiny.yaml"],
                     "overrides": ["--trainer.max_epochs", "1", "--trainer.logger", "false",
                                   "--trainer.enable_progress_bar", "false"]},
        "baselines": ["most-popular"],
    }
    (installed["cwd"] / "experiment.yaml").write_text(yaml.safe_dump(exp))
    proc = _dig(installed, "pipeline", "-c", "experiment.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = installed["cwd"] / "run"
    for artifact in ("data/catalog.jsonl", "evidence/text_embeddings.safetensors", "quantize/sid_table.safetensors",
                     "generate/metrics_test.json", "results.json"):
        assert (run / artifact).exists(), artifact
