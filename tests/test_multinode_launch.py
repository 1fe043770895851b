"""Beyond one machine the trainable stages run under Lightning's DDP launched by torchrun (or SLURM): here one
node with 2 CPU processes (gloo) fits a tiny generator through `dig fit` and writes a checkpoint that loads in a
single process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_fit_tiny_generator(tmp_path):
    from deepinterestgr.generate.module import GeneratorModule
    from deepinterestgr.generate.testing import write_tiny_run

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    run = write_tiny_run(tmp_path / "run")
    cmd = [
        str(torchrun), "--nnodes", "1", "--nproc-per-node", "2", "--master-port", "29533",
        "-m", "deepinterestgr.cli.main", "fit",
        "-c", "configs/trainer/ddp_cpu.yaml", "-c", "configs/model/generator_t5_tiny.yaml",
        "-c", "configs/data/sequences_tiny.yaml",
        "--data.run_dir", str(run), "--trainer.default_root_dir", str(run / "generate"),
        "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpts = sorted((run / "generate" / "checkpoints").glob("*.ckpt"))
    assert ckpts, "the DDP fit wrote no checkpoint"
    module = GeneratorModule.load_from_checkpoint(ckpts[0], map_location="cpu", weights_only=True)
    assert module.generator.is_built
