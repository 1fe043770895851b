"""`deepinterestgr.training.ValidationSnapshots` (configs/trainer/snapshots.yaml): the weights of every validation
are kept beside the stages' best/last checkpoints, and each one reloads as the module that validation ranked."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from deepinterestgr.generate.data import SequenceDataModule
from deepinterestgr.generate.module import GeneratorModule
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import write_tiny_run
from deepinterestgr.training import ValidationSnapshots, snapshot_steps


class _WeightsAtValidation(Callback):
    def __init__(self) -> None:
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.seen[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_every_validation_leaves_a_snapshot_that_reloads_its_weights(tmp_path):
    run = write_tiny_run(tmp_path, num_items=30, num_users=40, codebook_size=4)
    dm = SequenceDataModule(str(run), max_history=8, batch_size=8, eval_batch_size=16)
    seen = _WeightsAtValidation()
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=6, val_check_interval=2, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                      default_root_dir=str(tmp_path / "generate"), callbacks=[seen, ValidationSnapshots()])
    seed_everything(0)
    generator = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                               dropout=0.0, item_buckets=64, item_scores=True)
    trainer.fit(GeneratorModule(generator=generator, renormalize=True, item_loss_weight=1.0, beam_size=10,
                                lr=0.05, warmup_steps=0, early_stopping_patience=0), datamodule=dm)

    snapshots = snapshot_steps(tmp_path / "generate" / "snapshots")
    assert sorted(snapshots) == sorted(seen.seen) == [2, 4, 6]  # no snapshot of the sanity check
    assert (tmp_path / "generate" / "checkpoints" / "best.ckpt").exists()  # the module's own checkpoints stay
    for step, path in snapshots.items():
        reloaded = GeneratorModule.load_from_checkpoint(path, map_location="cpu")
        for name, want in seen.seen[step].items():
            assert torch.equal(reloaded.state_dict()[name], want), (step, name)
        assert torch.load(path, weights_only=False)["global_step"] == step
    assert not torch.equal(seen.seen[2]["generator.history_embedding.item_hash.weight"],
                           seen.seen[6]["generator.history_embedding.item_hash.weight"])


def test_snapshot_steps_reads_only_snapshot_names(tmp_path):
    for name in ("step10.ckpt", "step7.ckpt", "best.ckpt", "stepx.ckpt", "step3.pt"):
        (tmp_path / name).write_bytes(b"")
    assert snapshot_steps(tmp_path) == {7: tmp_path / "step7.ckpt", 10: tmp_path / "step10.ckpt"}
