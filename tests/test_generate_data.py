"""Leave-one-out split: hand-made case, no leakage of valid/test targets into training, clear errors."""

from __future__ import annotations

import pytest
import torch

from deepinterestgr.artifacts import ArtifactError, atomic_write_jsonl
from deepinterestgr.generate.data import SequenceDataModule
from deepinterestgr.generate.testing import random_sid_table


def _run(tmp_path, sequences, num_items=10):
    atomic_write_jsonl(tmp_path / "data" / "sequences.jsonl",
                       ({"user": f"u{i}", "items": s, "timestamps": []} for i, s in enumerate(sequences)))
    random_sid_table(num_items=num_items, num_levels=2, codebook_size=3, seed=1).save(tmp_path / "quantize")
    return tmp_path


def _examples(dm, split):
    n = len(dm.split.examples[split])
    batch = dm.make_batch(split, list(range(n)))
    tok = dm.tokenizer
    hist_items = tok.tokens_to_items(batch["history"])
    hist_items[~batch["history_mask"]] = -1
    rows = []
    for u, h, t in zip(batch["user_index"].tolist(), hist_items.tolist(), batch["target_item"].tolist()):
        rows.append((u, [i for i in h if i >= 0], t))
    return rows, batch


def test_leave_one_out_hand_made(tmp_path):
    dm = SequenceDataModule(str(_run(tmp_path, [[1, 2, 3, 4, 5], [6, 7, 8], [9, 0]])), max_history=3, batch_size=4)
    dm.setup("fit")
    assert dm.skipped_users == 1  # [9, 0] is too short for leave-one-out
    train, batch = _examples(dm, "train")
    assert sorted(train) == [(0, [1], 2), (0, [1, 2], 3)]  # u1 has no train target: [6] is its only train item
    assert _examples(dm, "valid")[0] == [(0, [1, 2, 3], 4), (1, [6], 7)]
    assert _examples(dm, "test")[0] == [(0, [2, 3, 4], 5), (1, [6, 7], 8)]  # last 3 items only (max_history=3)
    assert torch.equal(batch["target"], dm.tokenizer.items_to_tokens(batch["target_item"]))


def test_no_leakage_on_random_sequences(tmp_path):
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 50, (int(torch.randint(3, 15, (1,), generator=g)),), generator=g).tolist()
            for _ in range(40)]
    dm = SequenceDataModule(str(_run(tmp_path, seqs, num_items=50)), max_history=20)
    dm.setup("fit")
    train, _ = _examples(dm, "train")
    for u, hist, target in train:
        s = seqs[u]
        pos = len(hist)
        assert s[:pos] == hist and s[pos] == target and pos <= len(s) - 3  # never the valid/test positions
    assert len(train) == sum(len(s) - 3 for s in seqs)


def test_batches_trim_common_padding_without_changing_content(tmp_path):
    dm = SequenceDataModule(str(_run(tmp_path, [[1, 2, 3, 4, 5, 6], [7, 8, 9]])), max_history=8)
    dm.setup("fit")
    batch = dm.make_batch("test", [0, 1])
    assert batch["history"].shape[1] == 5 and batch["history_mask"][0].all()  # longest history is 5
    assert batch["history_mask"][1].tolist() == [False, False, False, True, True]


def test_length_bucketed_sampler_covers_every_example_once(tmp_path):
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 10, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(30)]
    dm = SequenceDataModule(str(_run(tmp_path, seqs)), batch_size=7)
    dm.setup("fit")
    seen = sorted(i for b in dm.train_dataloader().batch_sampler for i in b)
    assert seen == list(range(len(dm.split.examples["train"])))


def test_item_outside_sid_table_names_file_and_line(tmp_path):
    dm = SequenceDataModule(str(_run(tmp_path, [[1, 2, 3], [1, 2, 99]])))
    with pytest.raises(ArtifactError, match=r"sequences.jsonl:2: item id 99"):
        dm.setup("fit")


def test_strict_rejects_short_users(tmp_path):
    dm = SequenceDataModule(str(_run(tmp_path, [[1, 2, 3], [1, 2]])), strict=True)
    with pytest.raises(ArtifactError, match=r"sequences.jsonl:2"):
        dm.setup("fit")


def test_missing_sid_table_says_which_stage(tmp_path):
    atomic_write_jsonl(tmp_path / "data" / "sequences.jsonl", [{"user": "a", "items": [1, 2, 3]}])
    with pytest.raises(ArtifactError, match="quantize"):
        SequenceDataModule(str(tmp_path)).setup("fit")


def test_val_max_users_is_a_seeded_random_sample_not_the_first_users(tmp_path):
    from deepinterestgr.data.split import validation_sample

    sequences = [[u % 10, (u + 1) % 10, (u + 2) % 10, (u + 3) % 10] for u in range(40)]
    run = str(_run(tmp_path, sequences))

    def served(**kwargs) -> list[int]:
        dm = SequenceDataModule(run, max_history=3, eval_batch_size=4, val_max_users=10, **kwargs)
        dm.setup("fit")
        return sorted(u for b in dm.val_dataloader() for u in b["user_index"].tolist())

    users = served()
    assert len(users) == 10 and users != list(range(10))
    assert users == served() == validation_sample(40, 10)  # the same users for every method and every run
    assert served(val_sample_seed=1) != users
    dm = SequenceDataModule(run, max_history=3, eval_batch_size=4, val_max_users=10)
    dm.setup("fit")
    assert sorted(u for b in dm.test_dataloader() for u in b["user_index"].tolist()) == list(range(40))  # test: all
    assert validation_sample(40, None) is None and validation_sample(40, 40) is None


def test_unknown_items_drop_removes_them_from_histories_and_train_targets_but_keeps_eval_targets(tmp_path):
    """Items 10 and 11 are outside the 10-item SID table (held out, added later with `dig items add`)."""
    run = _run(tmp_path, [[1, 10, 2, 3, 4, 5], [6, 7, 11, 8, 10], [2, 3, 11]])
    with pytest.raises(ArtifactError, match="item id 10 is outside"):
        SequenceDataModule(str(run), max_history=4).setup("fit")
    dm = SequenceDataModule(str(run), max_history=4, unknown_items="drop")
    dm.setup("fit")
    assert dm.unknown_counts == {"interactions": 4, "train_examples_dropped": 2}
    train, batch = _examples(dm, "train")
    # u0 train part [1, 10, 2, 3]: target 10 dropped, 10 never in a history; u1 [6, 7, 11]: target 11 dropped
    assert sorted(train) == [(0, [1], 2), (0, [1, 2], 3), (1, [6], 7)]
    assert _examples(dm, "valid")[0] == [(0, [1, 2, 3], 4), (1, [6, 7], 8), (2, [2], 3)]
    test, batch = _examples(dm, "test")
    assert test == [(0, [2, 3, 4], 5), (1, [6, 7, 8], 10), (2, [2, 3], 11)]  # cold targets kept: no ranking hits them
    assert (batch["target"][1:] == 0).all(), "a target outside the table has no SID: PAD tokens"
    with pytest.raises(ValueError, match="unknown_items must be"):
        SequenceDataModule(str(run), unknown_items="skip")


def test_evaluation_under_ddp_serves_every_user_exactly_once_over_the_ranks(tmp_path, monkeypatch):
    run = _run(tmp_path, [[1, 2, 3, 4], [5, 6, 7], [8, 9, 1, 2], [3, 4, 5], [6, 7, 8, 9, 0]])
    dm = SequenceDataModule(str(run), max_history=3, eval_batch_size=2)
    dm.setup("test")
    seen = []
    for rank in range(3):
        monkeypatch.setattr(dm, "_world", lambda rank=rank: (rank, 3))
        seen += [u for batch in dm.test_dataloader() for u in batch["user_index"].tolist()]
    assert sorted(seen) == [0, 1, 2, 3, 4]
