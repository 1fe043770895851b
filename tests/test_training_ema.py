"""`deepinterestgr.training.EMA` (configs/trainer/ema.yaml): checkpoints hold the running average of the weights, and
the test that follows a fit in the same process ranks with that average, not with the raw weights."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from deepinterestgr.artifacts import atomic_write_jsonl
from deepinterestgr.generate.data import SequenceDataModule
from deepinterestgr.generate.module import GeneratorModule
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import random_sid_table
from deepinterestgr.training import EMA

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, n_users: int = 40, num_items: int = 30) -> Path:
    rng = random.Random(0)
    sequences = [[rng.randrange(num_items) for _ in range(rng.randint(4, 12))] for _ in range(n_users)]
    atomic_write_jsonl(tmp_path / "data" / "sequences.jsonl",
                       ({"user": f"u{i}", "items": s, "timestamps": []} for i, s in enumerate(sequences)))
    random_sid_table(num_items=num_items, num_levels=3, codebook_size=4, seed=1).save(tmp_path / "quantize")
    return tmp_path


def _module() -> GeneratorModule:
    generator = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                               dropout=0.0, item_buckets=64, item_scores=True)
    return GeneratorModule(generator=generator, renormalize=True, item_loss_weight=1.0, beam_size=10, lr=0.05,
                           warmup_steps=0, early_stopping_patience=0)


class _RawWeights(Callback):
    """The raw parameters after every optimiser step, and a checkpoint saved mid-fit at `save_at` steps (as the best
    checkpoint is: after the fit, Lightning copies the average into the module)."""

    def __init__(self, path: Path, save_at: int) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.path, self.save_at = path, save_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})
        if trainer.global_step == self.save_at:
            trainer.save_checkpoint(self.path)


def _fit(tmp_path: Path, *, decay: float = 0.5, steps: int = 5, save_at: int = 5, name: str = "m.ckpt",
         resume: Path | None = None) -> tuple[GeneratorModule, Trainer, _RawWeights, EMA]:
    dm = SequenceDataModule(str(_run(tmp_path)), max_history=8, batch_size=8, eval_batch_size=16)
    raw, ema = _RawWeights(tmp_path / name, save_at), EMA(decay=decay)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                      default_root_dir=str(tmp_path), callbacks=[ema, raw])
    seed_everything(0)  # the same initial weights, and StepSeed's per-step draws, in every fit
    module = _module()
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)
    return module, trainer, raw, ema


def test_the_checkpoint_holds_the_running_average_and_the_raw_weights_beside_it(tmp_path):
    decay = 0.5
    _, _, raw, _ = _fit(tmp_path, decay=decay)
    saved = torch.load(tmp_path / "m.ckpt", weights_only=False)

    assert len(raw.steps) == 5
    expected = dict(raw.steps[0])  # the first update copies the weights; then avg <- decay*avg + (1-decay)*w
    for step in raw.steps[1:]:
        expected = {n: decay * expected[n] + (1 - decay) * w for n, w in step.items()}
    for name, want in expected.items():
        torch.testing.assert_close(saved["state_dict"][name], want)
        assert torch.equal(saved["current_model_state"][name], raw.steps[-1][name])
    moved = [n for n in expected if not torch.equal(expected[n], raw.steps[-1][n])]
    assert moved, "five steps at lr 0.05 leave the average behind the raw weights"

    # what every later stage loads: the average
    loaded = GeneratorModule.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    for name, want in expected.items():
        torch.testing.assert_close(dict(loaded.named_parameters())[name], want)


def test_a_test_after_the_fit_in_the_same_process_ranks_with_the_average(tmp_path):
    """Lightning's own callback would load `current_model_state` (the raw weights) over the average here."""
    module, trainer, _, _ = _fit(tmp_path, steps=6, save_at=5)  # the checkpoint is a mid-fit one, as best.ckpt is
    saved = torch.load(tmp_path / "m.ckpt", weights_only=False)
    trainer.test(module, datamodule=trainer.datamodule, ckpt_path=str(tmp_path / "m.ckpt"))
    weights = module.state_dict()
    assert all(torch.equal(weights[n], v) for n, v in saved["state_dict"].items())
    assert any(not torch.equal(weights[n], v) for n, v in saved["current_model_state"].items())


def test_an_interrupted_fit_resumes_both_the_raw_weights_and_the_average(tmp_path):
    _fit(tmp_path, steps=5, save_at=3, name="step3.ckpt")
    _fit(tmp_path, steps=5, save_at=5, name="whole.ckpt")
    _fit(tmp_path, steps=5, save_at=5, name="resumed.ckpt", resume=tmp_path / "step3.ckpt")
    whole, resumed = (torch.load(tmp_path / n, weights_only=False) for n in ("whole.ckpt", "resumed.ckpt"))
    for key in ("state_dict", "current_model_state"):
        for name, value in whole[key].items():
            torch.testing.assert_close(resumed[key][name], value)


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)

    class Counted(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)
            self.register_buffer("seen", torch.zeros(2, dtype=torch.long))

    with pytest.raises(ValueError, match="ema.yaml"):
        EMA().setup(None, Counted(), "fit")


def test_the_shipped_fragment_adds_the_callback(tmp_path, monkeypatch):
    from deepinterestgr.cli.lightning import run_lightning

    monkeypatch.chdir(REPO)
    cli = run_lightning(["-c", "configs/trainer/generate_cpu.yaml", "-c", "configs/trainer/ema.yaml",
                         "-c", "configs/model/generator_t5_items.yaml", "-c", "configs/data/sequences.yaml",
                         "--data.run_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)], run=False)
    ema = [c for c in cli.trainer.callbacks if isinstance(c, EMA)]
    assert len(ema) == 1 and cli.model.beam_size == 50
