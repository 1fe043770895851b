"""Every-position training: windows that cover each train target once, a causal encoder whose row t reads only rows
<= t, and training that scores each row as inference scores the prefix ending there."""

from __future__ import annotations

import random

import pytest
import torch

from deepinterestgr.artifacts import atomic_write_jsonl
from deepinterestgr.generate.data import SequenceDataModule
from deepinterestgr.generate.module import GeneratorModule
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import random_sid_table

torch.set_num_threads(1)


def _run(tmp_path, sequences, num_items=30):
    atomic_write_jsonl(tmp_path / "data" / "sequences.jsonl",
                       ({"user": f"u{i}", "items": s, "timestamps": []} for i, s in enumerate(sequences)))
    random_sid_table(num_items=num_items, num_levels=3, codebook_size=4, seed=1).save(tmp_path / "quantize")
    return tmp_path


def _sequences(n_users=40, num_items=30, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(num_items) for _ in range(rng.randint(3, 17))] for _ in range(n_users)]


@pytest.mark.parametrize("max_history", [1, 3, 5, 20])
def test_windows_cover_every_train_target_once_with_the_item_after_each_row(tmp_path, max_history):
    sequences = _sequences()
    run = _run(tmp_path, sequences)
    prefix = SequenceDataModule(str(run), max_history=max_history)
    prefix.setup()
    windows = SequenceDataModule(str(run), max_history=max_history, all_positions=True)
    windows.setup()
    batch = windows.make_batch("train", list(range(len(windows.split.examples["train"]))))
    hist = windows.tokenizer.tokens_to_items(batch["history"]).masked_fill(~batch["history_mask"], -1)
    seen = []
    ends = windows.split.examples["train"][:, 1].tolist()
    for u, end, rows, targets in zip(batch["user_index"].tolist(), ends, hist.tolist(),
                                     batch["position_target_items"].tolist()):
        train = sequences[u][:-2]
        real = [(i, t) for i, t in zip(rows, targets) if i >= 0]
        assert all(t == -1 for i, t in zip(rows, targets) if i < 0)
        # the rows are the train items before `end`, and each row's target is the item after it
        start = end - len(real)
        assert [i for i, _ in real] == train[start:end] and [t for _, t in real] == train[start + 1:end + 1]
        assert 1 <= len(real) <= max_history and end < len(train)
        seen += [(u, start + 1 + k) for k in range(len(real))]
    expected = [(int(u), int(p)) for u, p in prefix.split.examples["train"].tolist()]
    assert sorted(seen) == sorted(expected), "every train target exactly once, and no valid/test target"
    assert torch.equal(batch["position_targets"], windows.tokenizer.items_to_tokens(batch["position_target_items"]))


def _generator(causal=True, **kwargs) -> GeneratorModule:
    torch.manual_seed(0)
    gen = T5SIDGenerator(d_model=16, num_layers=2, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32, dropout=0.0,
                         item_buckets=64, item_scores=True, causal=causal)
    return GeneratorModule(generator=gen, renormalize=True, item_loss_weight=1.0, **kwargs)


def test_each_row_is_trained_as_inference_scores_the_prefix_ending_there(tmp_path):
    """The logits and user vector of row t in a window equal those of a plain (inference-shaped) forward pass over
    the items up to t: no row reads a later item, and positions do not depend on how many rows follow."""
    run = _run(tmp_path, _sequences())
    dm = SequenceDataModule(str(run), max_history=6, all_positions=True)
    dm.setup()
    module = _generator()
    module.set_tokenizer(dm.tokenizer)
    module.eval()
    batch = dm.make_batch("train", list(range(12)))
    gen = module.generator
    with torch.no_grad():
        logits, users, (b, t) = gen.teacher_forced_positions(batch["history"], batch["history_mask"],
                                                             batch["position_targets"])
        assert len(b) == int(batch["history_mask"].sum())
        for k in range(len(b)):
            i, row = int(b[k]), int(t[k])
            history, mask = batch["history"][i:i + 1, : row + 1], batch["history_mask"][i:i + 1, : row + 1]
            target = batch["position_targets"][i:i + 1, row]
            torch.testing.assert_close(logits[k:k + 1], gen(history, mask, target), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(users[k:k + 1], gen.user_vectors(history, mask), atol=1e-5, rtol=1e-5)


def test_every_position_fit_learns_and_a_bidirectional_generator_is_refused(tmp_path):
    run = _run(tmp_path, _sequences(n_users=60))
    dm = SequenceDataModule(str(run), max_history=8, batch_size=16, all_positions=True)
    dm.setup()
    module = _generator(lr=1e-2)
    module.set_tokenizer(dm.tokenizer)
    batch = dm.make_batch("train", list(range(16)))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = float(module._losses(batch)["loss"])
    for _ in range(60):
        opt.zero_grad()
        module._losses(batch)["loss"].backward()
        opt.step()
    assert float(module._losses(batch)["loss"]) < first / 2
    bidirectional = _generator(causal=False)
    bidirectional.set_tokenizer(dm.tokenizer)
    with pytest.raises(ValueError, match="causal: true"):
        bidirectional._losses(batch)


def test_all_positions_refuses_what_it_cannot_align(tmp_path):
    run = _run(tmp_path, _sequences())
    with pytest.raises(ValueError, match="num_user_buckets"):
        SequenceDataModule(str(run), all_positions=True, num_user_buckets=4)
    with pytest.raises(ValueError, match="unknown_items"):
        SequenceDataModule(str(run), all_positions=True, unknown_items="drop")


def test_a_lightning_fit_on_windows_validates_on_the_usual_prefix_examples(tmp_path):
    from lightning.pytorch import Trainer

    run = _run(tmp_path, _sequences(n_users=50))
    dm = SequenceDataModule(str(run), max_history=8, batch_size=8, eval_batch_size=16, all_positions=True)
    module = _generator(beam_size=10, early_stopping_patience=0)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=6, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      val_check_interval=3)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 6
    assert trainer.callback_metrics["val/num_users"] == 50, "validation scores every user's valid target"
