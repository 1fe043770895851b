"""GeneratorModule through the `dig fit/test` LightningCLI with the shipped configs; checkpoints reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepinterestgr.generate.testing import write_tiny_run

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "model").glob("generator_*.yaml"))
TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
           "--trainer.logger", "false"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_shipped_model_configs_parse(config, tmp_path):
    from deepinterestgr.cli.lightning import run_lightning

    cli = run_lightning(["-c", str(config), "-c", str(REPO / "configs/data/sequences.yaml"),
                         "-c", str(REPO / "configs/trainer/generate_cpu.yaml"), "--data.run_dir", str(tmp_path)],
                        run=False)
    assert type(cli.model).__name__ == "GeneratorModule"
    assert type(cli.datamodule).__name__ == "SequenceDataModule"


def test_fast_dev_run_then_test_and_reload(tmp_path):
    from deepinterestgr.cli.lightning import run_lightning
    from deepinterestgr.generate.module import GeneratorModule

    run = write_tiny_run(tmp_path / "run")
    common = ["-c", str(REPO / "configs/trainer/generate_cpu.yaml"),
              "-c", str(REPO / "configs/model/generator_t5_tiny.yaml"),
              "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run), *TRAINER,
              "--trainer.default_root_dir", str(tmp_path / "root")]
    cli = run_lightning(["fit", *common, "--trainer.fast_dev_run", "2"])
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert cli.model.generator.vocab_size == cli.datamodule.tokenizer.vocab_size  # sized from the SID table

    # two real epochs: best/last checkpoints on val N@10, then `test` from the best one
    cli = run_lightning(["fit", *common, "--trainer.max_epochs", "2"])
    ckpt = run / "generate" / "checkpoints" / "best.ckpt"
    assert ckpt.exists() and (run / "generate" / "checkpoints" / "last.ckpt").exists()
    run_lightning(["test", *common, "--ckpt_path", str(ckpt), "--model.init_args.dump_test_results", "true"])
    metrics = json.loads((run / "generate" / "metrics_test.json").read_text())
    assert {"test/recall@5", "test/ndcg@5", "test/recall@10", "test/ndcg@10"} <= set(metrics)
    rows = [json.loads(line) for line in (run / "generate" / "results_test.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["num_users"] == metrics["num_users_evaluated"] and len(rows[0]["items"]) == 10
    assert {r["user"] for r in rows} == {f"u{i}" for i in range(30)}
    assert 0 < metrics["test/coverage@10"] <= 1 and 1 <= metrics["test/distinct_top1"] <= 30
    assert (metrics["beam_size"], metrics["rerank_weight"], metrics["exclude_history"]) == (10, 0.0, False)
    # the checkpoint records how it ranks (a policy started from it ranks the same way) and which SID table it read
    saved = torch.load(ckpt, weights_only=True)
    assert saved["ranking"]["beam_size"] == 10 and len(saved["sid_table_sha256"]) == 64

    # load_from_checkpoint rebuilds the generator (class_path in hparams) and its tokenizer without the run dir
    model = GeneratorModule.load_from_checkpoint(ckpt)
    assert type(model.generator).__name__ == "T5SIDGenerator" and model.tokenizer is not None
    model.beam_size = 12  # what a caller might have set; the checkpoint's own ranking is one call away
    assert model.use_recorded_ranking().beam_size == 10
    batch = cli.datamodule.make_batch("test", list(range(4)))
    model.eval()
    res = model.generate(batch["history"], batch["history_mask"], beam_size=5)
    assert (res.items >= 0).all()


def test_gpt_config_trains_one_step(tmp_path):
    from deepinterestgr.cli.lightning import run_lightning

    run = write_tiny_run(tmp_path / "run")
    cli = run_lightning(["fit", "-c", str(REPO / "configs/model/generator_gpt.yaml"),
                         "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run), *TRAINER,
                         "--model.init_args.generator.init_args.d_model", "32",
                         "--model.init_args.generator.init_args.num_layers", "1",
                         "--model.init_args.beam_size", "10",
                         "--trainer.default_root_dir", str(tmp_path / "root"), "--trainer.fast_dev_run", "1"])
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


def test_renormalized_loss_is_the_catalog_softmax_and_rl_inherits_it(tmp_path):
    from deepinterestgr.cli.lightning import run_lightning
    from deepinterestgr.rl.module import PolicyModule
    from deepinterestgr.rl.rewards import CompositeReward, ExactMatchReward

    run = write_tiny_run(tmp_path / "run")
    cli = run_lightning(["fit", "-c", str(REPO / "configs/model/generator_t5_tiny.yaml"),
                         "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run), *TRAINER,
                         "--model.init_args.renormalize", "true", "--trainer.max_epochs", "1",
                         "--trainer.default_root_dir", str(tmp_path / "root")])
    model, dm = cli.model.eval(), cli.datamodule
    batch = dm.make_batch("train", list(range(8)))
    with torch.no_grad():
        loss = model._loss(batch)
        logits = model.generator(batch["history"], batch["history_mask"], batch["target"])
    # by hand: per step, softmax over the tokens that continue the target's prefix to some catalog SID
    items = dm.tokenizer.item_tokens
    expected = []
    for row, target in enumerate(batch["target"]):
        for t in range(len(target)):
            same_prefix = (items[:, :t] == target[:t]).all(-1)
            allowed = torch.unique(items[same_prefix, t])
            expected.append(torch.logsumexp(logits[row, t, allowed], 0) - logits[row, t, target[t]])
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-5, atol=1e-5)

    policy = PolicyModule(init_checkpoint=str(run / "generate" / "checkpoints" / "last.ckpt"),
                          reward=CompositeReward(terms={"exact": ExactMatchReward()}))
    policy.load_policy(policy.hparams.init_checkpoint)
    assert policy.renormalize is True

    with pytest.raises(ValueError, match="label_smoothing"):
        type(model)(generator=model.generator, renormalize=True, label_smoothing=0.1)


@pytest.mark.slow
def test_ddp_two_cpu_processes_fit_and_test(tmp_path):
    """gloo DDP on CPU: training shards, validation/test see every user once, metrics summed over ranks."""
    import subprocess
    import sys

    run = write_tiny_run(tmp_path / "run", num_users=25)
    args = ["fit", "-c", str(REPO / "configs/trainer/generate_cpu.yaml"),
            "-c", str(REPO / "configs/model/generator_t5_tiny.yaml"),
            "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run), *TRAINER,
            "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path / "root")]
    # a script file, not `python -c`: Lightning's DDP launcher re-runs sys.argv for the other ranks
    script = tmp_path / "ddp_fit_test.py"
    script.write_text(
        "import sys\n"
        "from deepinterestgr.cli.lightning import run_lightning\n"
        "args = sys.argv[1:]\n"
        "run_lightning(args)\n"
        f"run_lightning(['test', *args[1:], '--ckpt_path', {str(run / 'generate/checkpoints/last.ckpt')!r}])\n"
    )
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "generate" / "metrics_test.json").read_text())
    assert metrics["num_users"] == metrics["num_users_evaluated"] == 25 and 0.0 <= metrics["test/recall@10"] <= 1.0

    # the checkpoint trained on 2 processes loads on 1, and `dig test` there gives the same metrics as on 2
    single = ["test", "-c", str(REPO / "configs/trainer/generate_cpu.yaml"),
              "-c", str(REPO / "configs/model/generator_t5_tiny.yaml"),
              "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run), *TRAINER,
              "--trainer.default_root_dir", str(tmp_path / "root1"),
              "--ckpt_path", str(run / "generate/checkpoints/last.ckpt")]
    proc = subprocess.run([sys.executable, "-m", "deepinterestgr.cli.main", *single], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((run / "generate" / "metrics_test.json").read_text())
    keys = [k for k in metrics if k.startswith("test/")]
    assert keys and {k: one[k] for k in keys} == {k: metrics[k] for k in keys}


def test_learns_a_deterministic_next_item_pattern(tmp_path):
    """Users walk item chains i -> i+1: training through the CLI must reach near-perfect constrained-search recall
    (catches off-by-one targets, leaked or shifted histories, and search/tokenizer mismatches end to end)."""
    from deepinterestgr.cli.lightning import run_lightning

    run = write_tiny_run(tmp_path / "run", num_users=60)
    cli = run_lightning(["fit", "-c", str(REPO / "configs/trainer/generate_cpu.yaml"),
                         "-c", str(REPO / "configs/model/generator_t5_tiny.yaml"),
                         "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run), *TRAINER,
                         "--trainer.enable_checkpointing", "false", "--trainer.max_epochs", "15",
                         "--trainer.default_root_dir", str(tmp_path / "root")])
    assert cli.trainer.callback_metrics["val/recall@5"] > 0.9


def test_a_generator_fits_and_validates_with_items_outside_its_sid_table(tmp_path):
    """Held-out (cold) items: sequences name items 40..43 that the 40-item SID table does not have."""
    from deepinterestgr.artifacts import atomic_write_jsonl, read_jsonl
    from deepinterestgr.cli.lightning import run_lightning

    run = write_tiny_run(tmp_path / "run")
    rows = list(read_jsonl(run / "data" / "sequences.jsonl"))
    for k, row in enumerate(rows[:8]):
        row["items"] = row["items"][:2] + [40 + k % 4] + row["items"][2:]  # a cold item in every split's reach
        row["items"][-1 - k % 2] = 40 + k % 4  # and as valid / test targets
    atomic_write_jsonl(run / "data" / "sequences.jsonl", rows)
    cli = run_lightning(["fit", "-c", str(REPO / "configs/model/generator_t5_tiny.yaml"),
                         "--model.init_args.renormalize", "true",
                         "-c", str(REPO / "configs/data/sequences_tiny.yaml"), "--data.run_dir", str(run),
                         "--data.unknown_items", "drop", *TRAINER, "--trainer.max_epochs", "1",
                         "--trainer.default_root_dir", str(tmp_path / "root")])
    assert cli.datamodule.unknown_counts["interactions"] >= 8
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    assert 0 <= float(cli.trainer.callback_metrics["val/ndcg@10"]) <= 1
