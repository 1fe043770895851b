"""Interrupted pipelines resume exactly: a real SIGKILL of the `dig pipeline` process in the middle of each stage,
then a rerun, ends with the same artifacts as an uninterrupted run with the same seed.

The kill is injected from inside the child (it sends itself SIGKILL at a chosen training step or right after a chosen
file is written), so it lands at the same point on every machine, never after the stage already finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

#: a child that runs `dig pipeline` and SIGKILLs itself at DIG_KILL="<where>:<when>":
#:   "data:sequences.jsonl"        right after the data stage wrote that file (before its manifest)
#:   "<Module>:<global step>"      before that training step of QuantizerModule / GeneratorModule / PolicyModule
CHILD = textwrap.dedent("""
    import os, signal, sys
    where, _, when = os.environ.get("DIG_KILL", "").partition(":")

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    import deepinterestgr.artifacts as artifacts
    _write_jsonl = artifacts.atomic_write_jsonl
    def write_jsonl(path, rows):
        n = _write_jsonl(path, rows)
        if where == "data" and os.path.basename(str(path)) == when:
            die()
        return n
    artifacts.atomic_write_jsonl = write_jsonl

    from deepinterestgr import training
    _step = training.StepSeed.on_train_batch_start
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if type(pl_module).__name__ == where and trainer.global_step == int(when):
            die()
        return _step(self, trainer, pl_module, batch, batch_idx)
    training.StepSeed.on_train_batch_start = on_train_batch_start

    from deepinterestgr.cli.main import main
    sys.exit(main(["pipeline", "-c", sys.argv[1]]))
""")


def _experiment(tmp_path: Path, run: Path) -> Path:
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    exp = {
        "run_dir": str(run),
        "data": {"reader": "synthetic", "kcore": 0,
                 "reader_args": {"num_items": 60, "num_users": 80, "seed": 3, "render_images": False}},
        "evidence": {"text_encoder": {"class_path": "PackagedMiniLMEncoder"},
                     "intent_miner": {"class_path": "ZeroShotIntentMiner",
                                      "init_args": {"domain": "synthetic", "top_k": 3}},
                     "quality_judge": {"class_path": "RuleQualityJudge"}},
        # 4 batches per epoch, dead-code restarts every 2 epochs: the kill at step 10 lands mid-epoch 2
        "quantize": {"configs": [f"{REPO}/configs/trainer/cpu.yaml", f"{REPO}/configs/model/quantizer_rqvae.yaml",
                                 f"{REPO}/configs/data/embeddings.yaml"],
                     "overrides": ["--model.quantizer.init_args.codebook_size", "8",
                                   "--model.quantizer.init_args.hidden_dims", "[64, 32]",
                                   "--model.quantizer.init_args.latent_dim", "16",
                                   "--model.quantizer.init_args.kmeans_iters", "5",
                                   "--model.refresh_every_n_epochs", "2",
                                   "--data.batch_size", "16", "--trainer.max_epochs", "6", *quiet]},
        # 50 batches per epoch, dropout on: the kill at step 75 resumes from the end of epoch 0
        # and must draw the same masks
        "generate": {"configs": [f"{REPO}/configs/trainer/cpu.yaml", f"{REPO}/configs/model/generator_t5_tiny.yaml",
                                 f"{REPO}/configs/data/sequences_tiny.yaml"],
                     "overrides": ["--model.generator.init_args.dropout", "0.2", "--trainer.max_epochs", "3", *quiet]},
        # validation (hence last.ckpt) every 4 steps inside the first epoch: the rl kill resumes mid-epoch
        "rl": {"configs": [f"{REPO}/configs/trainer/cpu.yaml", f"{REPO}/configs/model/policy_qarm.yaml",
                           f"{REPO}/configs/data/sequences_tiny.yaml"],
               "overrides": ["--model.candidates", "sample", "--model.beam_size", "10", "--model.lr", "0.001",
                             "--trainer.max_steps", "12", "--trainer.val_check_interval", "4", *quiet]},
        "baselines": ["most-popular"],
    }
    path = tmp_path / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def _pipeline(exp: Path, kill: str | None, tmp_path: Path) -> subprocess.CompletedProcess:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIG_KILL": kill or ""}
    return subprocess.run([sys.executable, str(child), str(exp)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _metrics(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "pipeline_metrics.json").read_text())["metrics"]


def test_sigkill_in_every_stage_then_rerun_equals_an_uninterrupted_run(tmp_path):
    clean_run, killed_run = tmp_path / "clean", tmp_path / "killed"
    done = _pipeline(_experiment(tmp_path, clean_run), None, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    exp = _experiment(tmp_path, killed_run)
    kills = [("data:sequences.jsonl", "data"), ("QuantizerModule:10", "quantize"),
             ("GeneratorModule:75", "generate"), ("PolicyModule:6", "rl")]
    outputs = []
    for kill, stage in kills:
        proc = _pipeline(exp, kill, tmp_path)
        assert proc.returncode == -signal.SIGKILL, (
            f"{kill}: expected a SIGKILL, got {proc.returncode}\n{proc.stderr[-3000:]}")
        # the stage was cut short: no manifest says it finished
        assert not (killed_run / stage / "manifest.json").exists(), f"{stage} finished before the kill at {kill}"
        outputs.append(proc.stdout)
    # the run after each kill continued the killed fit from its last checkpoint
    assert "[quantize] resuming the interrupted fit" in outputs[2]
    assert "[generate] resuming the interrupted fit" in outputs[3]
    proc = _pipeline(exp, None, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # every trainable stage continued from the checkpoint its killed fit left behind (rl mid-epoch)
    assert "[rl] resuming the interrupted fit" in out
    assert "[data] up to date" in out and "[quantize] up to date" in out and "[generate] up to date" in out

    for rel in ("data/catalog.jsonl", "data/sequences.jsonl", "evidence/text_embeddings.safetensors",
                "evidence/quality.safetensors", "quantize/sid_table.safetensors"):
        assert (killed_run / rel).read_bytes() == (clean_run / rel).read_bytes(), rel
    for stage in ("generate", "rl"):
        assert _metrics(killed_run, stage) == _metrics(clean_run, stage), stage
        clean_w = _weights(clean_run / stage / "checkpoints" / "last.ckpt")
        killed_w = _weights(killed_run / stage / "checkpoints" / "last.ckpt")
        assert clean_w.keys() == killed_w.keys()
        for name in clean_w:
            assert torch.equal(clean_w[name], killed_w[name]), f"{stage}: {name} differs after the resumed fit"
