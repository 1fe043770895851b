"""Baselines: hand-made sequences whose answers are known, the metric values, a tiny SASRec fit, run_baselines I/O."""

from __future__ import annotations

import json
import math

import pytest
import torch

from deepinterestgr.artifacts import atomic_write_jsonl, write_manifest
from deepinterestgr.baselines import METHODS, run_baselines, run_baselines_on_sequences
from deepinterestgr.baselines.cooccurrence import CoOccurrence, cooccurrence_counts, transition_counts
from deepinterestgr.baselines.evaluation import score_top_k, split_view
from deepinterestgr.baselines.popularity import MostPopular
from deepinterestgr.data.schema import Item, UserSequence


def _seqs(*rows: list[int]) -> list[UserSequence]:
    return [UserSequence(user=str(u), items=list(r)) for u, r in enumerate(rows)]


# ---------------------------------------------------------------- most popular


def test_most_popular_ranks_by_count_ties_by_id():
    model = MostPopular().fit([[3, 1, 3], [3, 2], [2, 0]], num_items=5)
    top = model.recommend([[0], [1, 2]], k=5)
    # counts: 3 -> 3, 2 -> 2, 0 and 1 -> 1 (tie: smaller id first), 4 -> 0
    assert top.tolist() == [[3, 2, 0, 1, 4]] * 2


def test_most_popular_rejects_ids_outside_catalog():
    with pytest.raises(ValueError, match=r"row 1 holds item id 7.*\[0, 5\)"):
        MostPopular().fit([[0, 1], [7]], num_items=5)


def test_split_view_fits_every_split_on_the_train_part_by_default():
    seqs = _seqs([0, 1, 2, 3, 4], [5, 6, 7])
    valid, test = split_view(seqs, "valid", max_history=2), split_view(seqs, "test", max_history=2)
    assert valid.fit_sequences == [[0, 1, 2], [5]] and valid.targets == [3, 6] and valid.histories == [[1, 2], [5]]
    # TIGER's protocol: the test history reads the valid item, but nothing is fitted on it
    assert test.fit_sequences == [[0, 1, 2], [5]] and test.targets == [4, 7] and test.histories == [[2, 3], [5, 6]]


def test_split_view_train_plus_valid_protocol_refits_test_on_everything_before_the_target():
    seqs = _seqs([0, 1, 2, 3, 4], [5, 6, 7])
    valid = split_view(seqs, "valid", max_history=2, protocol="train+valid")
    test = split_view(seqs, "test", max_history=2, protocol="train+valid")
    assert valid.fit_sequences == [[0, 1, 2], [5]]
    assert test.fit_sequences == [[0, 1, 2, 3], [5, 6]] and test.histories == [[2, 3], [5, 6]]
    with pytest.raises(ValueError, match="protocol must be one of"):
        split_view(seqs, "test", protocol="everything")


# ---------------------------------------------------------------- co-occurrence


def test_transition_and_cooccurrence_counts():
    seqs = [[0, 1, 2], [0, 1]]
    t = transition_counts(seqs, 3).to_dense()
    assert t.tolist() == [[0, 2, 0], [0, 0, 1], [0, 0, 0]]
    c = cooccurrence_counts(seqs, 3).to_dense()
    assert c.tolist() == [[0, 2, 1], [2, 0, 1], [1, 1, 0]]  # symmetric, no self-pairs
    assert cooccurrence_counts(seqs, 3, window=1).to_dense()[0, 2] == 0  # 0 and 2 are two positions apart


def test_cooccurrence_predicts_the_transition_over_a_more_popular_item():
    # 9 is by far the most popular item, but 4 always follows 3
    train = [[3, 4], [3, 4], [1, 3, 4]] + [[9, 8]] * 5 + [[9]] * 3
    model = CoOccurrence(cooccurrence_weight=0.0).fit(train, num_items=10)
    top = model.recommend([[0, 3], [5]], k=3)
    assert top[0, 0].item() == 4
    assert top[1].tolist() == [9, 8, 3]  # no neighbours: popularity, then the smaller id (3 and 4 tie)


def test_cooccurrence_recency_weighting_prefers_the_newest_items_neighbour():
    train = [[1, 2], [5, 6]]
    near = CoOccurrence(recency_decay=0.5, cooccurrence_weight=0.0).fit(train, num_items=7)
    assert near.recommend([[1, 5]], k=2).tolist() == [[6, 2]]  # 5 is newest: its successor ranks first
    assert near.recommend([[5, 1]], k=2).tolist() == [[2, 6]]
    # only the last `last_n` items count
    last_one = CoOccurrence(last_n=1, cooccurrence_weight=0.0).fit(train, num_items=7)
    assert last_one.scores([[1, 5]])[0, 2] < 1e-3


def test_cooccurrence_scores_equal_the_formula():
    train = [[0, 1, 2, 3], [2, 1, 0], [3, 0]]
    w, d = 0.3, 0.5
    model = CoOccurrence(recency_decay=d, cooccurrence_weight=w).fit(train, num_items=4)
    t, c = transition_counts(train, 4).to_dense(), cooccurrence_counts(train, 4).to_dense()
    hist = [3, 0, 1, 2]  # last 3: 2 (newest), 1, 0
    expected = (t[2] + w * c[2]) + d * (t[1] + w * c[1]) + d**2 * (t[0] + w * c[0])
    torch.testing.assert_close(model.scores([hist])[0], expected, atol=1e-5, rtol=0)


def test_cooccurrence_rejects_bad_parameters():
    with pytest.raises(ValueError, match="recency_decay"):
        CoOccurrence(recency_decay=0.0)
    with pytest.raises(ValueError, match="last_n"):
        CoOccurrence(last_n=0)


# ---------------------------------------------------------------- metrics


def test_score_top_k_values():
    top = torch.tensor([[7, 1, 2, 3, 4, 5, 6, 8, 9, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],
                        [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]])
    targets = [7, 7, 7]  # ranks 0, 6, absent
    m = score_top_k(top, targets)
    assert m["recall@5"] == pytest.approx(1 / 3) and m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx(1 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(8)) / 3)
    with pytest.raises(ValueError, match="recall/ndcg@10"):
        score_top_k(top[:, :5], targets)


# ---------------------------------------------------------------- SASRec


def test_sasrec_attention_sees_no_future_and_no_padding():
    from deepinterestgr.baselines.sasrec import SASRec

    model = SASRec(num_items=10, max_len=4, hidden_size=8, num_blocks=1, dropout=0.0).eval()
    a = torch.tensor([[0, 0, 3, 5]])
    b = torch.tensor([[0, 7, 3, 5]])  # differs only at a padding position of `a`... and in length
    c = torch.tensor([[0, 0, 3, 9]])  # differs only in the future of position 2
    with torch.no_grad():
        ha, hc = model(a), model(c)
        torch.testing.assert_close(ha[:, 2], hc[:, 2])  # causal: position 2 cannot see position 3
        assert not torch.allclose(model(b)[:, 3], ha[:, 3])  # a real item changes the output
        assert torch.isfinite(model(torch.zeros(1, 4, dtype=torch.long))).all()  # empty history: no NaN


def test_sasrec_few_steps_lower_the_loss():
    from deepinterestgr.baselines.sasrec import SASRec, TrainSequences, _collate

    torch.manual_seed(0)
    seqs = [[i % 6, (i + 1) % 6, (i + 2) % 6, (i + 3) % 6] for i in range(24)]  # deterministic successor rule
    data = _collate([TrainSequences(seqs, max_len=4)[i] for i in range(24)])
    model = SASRec(num_items=6, max_len=4, hidden_size=16, num_blocks=1, dropout=0.0, lr=1e-2)
    opt = model.configure_optimizers()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model.item_logits(model(data.inputs)).flatten(0, 1), data.targets.flatten(), ignore_index=-100
        )
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_sasrec_train_rows_are_left_padded_next_item_pairs():
    from deepinterestgr.baselines.sasrec import TrainSequences

    row = TrainSequences([[4, 5, 6]], max_len=4)[0]
    assert row.inputs.tolist() == [0, 0, 5, 6]  # shifted ids (item + 1), PAD = 0
    assert row.targets.tolist() == [-100, -100, 5, 6]  # item ids of the next item


def test_fit_sasrec_under_lightning_learns_a_successor_rule(tmp_path):
    from deepinterestgr.baselines.sasrec import SASRec, fit_sasrec, sasrec_top_k

    # every user walks the cycle 0 -> 1 -> ... -> 7 -> 0 from a different start
    seqs = [[(s + j) % 8 for j in range(6)] for s in range(8)] * 4
    valid = ([s[:-2] for s in seqs], [s[-2] for s in seqs])
    test = ([s[:-1] for s in seqs], [s[-1] for s in seqs])
    result = fit_sasrec(train_sequences=[s[:-2] for s in seqs], valid=valid, test=test, num_items=8, out_dir=tmp_path,
                        max_epochs=40, patience=40, batch_size=16, hidden_size=16, num_blocks=1, dropout=0.0, lr=1e-2)
    assert result.test["recall@5"] == pytest.approx(1.0) and result.test["ndcg@10"] > 0.9
    assert set(result.valid) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert result.stopped_by in ("early stopping", "max_epochs")
    model = SASRec.load_from_checkpoint(result.best_checkpoint)
    assert sasrec_top_k(model, [[2, 3, 4]], k=1).tolist() == [[5]]


# ---------------------------------------------------------------- run_baselines


def _write_run(run_dir, sequences: list[UserSequence], num_items: int) -> None:
    data = run_dir / "data"
    atomic_write_jsonl(data / "catalog.jsonl", (Item(item_id=i, source_id=f"s{i}").to_json() for i in range(num_items)))
    atomic_write_jsonl(data / "sequences.jsonl", (s.to_json() for s in sequences))
    write_manifest(data, "data", ["catalog.jsonl", "sequences.jsonl"])


def test_run_baselines_writes_one_json_per_method(tmp_path):
    # users walk the cycles 0->1->2->3->4->0 (each rotation twice) and 5->...->9->5 (each rotation once): every
    # test transition is seen in other users' histories, and items 0..4 are twice as popular as 5..9
    cycle_a = [[(r + j) % 5 for j in range(5)] for r in range(5)] * 2
    cycle_b = [[5 + (r + j) % 5 for j in range(5)] for r in range(5)]
    _write_run(tmp_path, _seqs(*(cycle_a + cycle_b)), num_items=10)
    records = run_baselines(str(tmp_path))
    assert set(records) == {"most-popular", "cooccurrence"}
    for method, record in records.items():
        on_disk = json.loads((tmp_path / "baselines" / f"{method}.json").read_text())
        assert on_disk["valid"] == record["valid"] and on_disk["test"] == record["test"]
        assert on_disk["wall_time_s"] >= 0 and on_disk["users"] == 15 and on_disk["items"] == 10
    assert records["cooccurrence"]["test"]["recall@5"] == 1.0 and records["cooccurrence"]["test"]["ndcg@5"] == 1.0
    # popularity top 5 = items 0..4 in id order; cycle-a test targets 4, 0, 1, 2, 3 (ranks 4, 0, 1, 2, 3), twice each
    plain = records["most-popular"]["by_exclude_history"]["false"]
    chosen = records["most-popular"]["params"]["exclude_history"]
    assert (records["most-popular"]["valid"]
            == records["most-popular"]["by_exclude_history"][str(chosen).lower()]["valid"])
    popular = plain["test"]
    assert popular["recall@5"] == pytest.approx(10 / 15)
    assert popular["ndcg@5"] == pytest.approx(2 * sum(1 / math.log2(r + 2) for r in range(5)) / 15)


def test_run_baselines_rejects_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['bpr'\]; known"):
        run_baselines_on_sequences(_seqs([0, 1, 2]), num_items=3, out_dir=tmp_path, methods=["bpr"])
    assert set(METHODS) == {"most-popular", "cooccurrence", "sasrec"}


def test_run_baselines_refuses_a_tampered_run(tmp_path):
    from deepinterestgr.artifacts import ArtifactError

    _write_run(tmp_path, _seqs([0, 1, 2], [2, 1, 0]), num_items=3)
    with open(tmp_path / "data" / "sequences.jsonl", "a") as f:
        f.write('{"user": "x", "items": [0, 1, 2]}\n')
    with pytest.raises(ArtifactError, match="sequences.jsonl"):
        run_baselines(str(tmp_path))
    assert not (tmp_path / "baselines").exists()


def test_sasrec_trimmed_batches_score_like_padded_ones():
    from deepinterestgr.baselines.sasrec import EvalExamples, SASRec, _collate

    model = SASRec(num_items=10, max_len=6, hidden_size=8, num_blocks=2, dropout=0.0).eval()
    batch = _collate([EvalExamples([[1, 2], [3, 4, 5]], [0, 0], max_len=6)[i] for i in range(2)])
    assert batch.inputs.shape == (2, 3)  # three leading all-padding columns dropped
    padded = torch.tensor([[0, 0, 0, 0, 2, 3], [0, 0, 0, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(model(batch.inputs)[:, -1], model(padded)[:, -1])


def test_drop_history_items_skips_seen_items_and_pads():
    from deepinterestgr.baselines.evaluation import drop_history_items

    top = torch.tensor([[3, 1, 2, 0], [5, 4, 6, 7]])
    assert drop_history_items(top, [[1, 3], []], 2).tolist() == [[2, 0], [5, 4]]
    assert drop_history_items(top, [[3, 1, 2], [5]], 3).tolist() == [[0, -1, -1], [4, 6, 7]]


def test_exclude_history_is_selected_on_valid_for_the_count_baselines(tmp_path):
    # every user's next item is never one it has seen, and popularity alone would repeat the history
    seqs = _seqs(*([[0, 1, 2, 3]] * 6 + [[0, 1, 4, 5]] * 2))
    records = run_baselines_on_sequences(seqs, num_items=12, out_dir=tmp_path)
    assert records["most-popular"]["params"]["exclude_history"] is True
    assert all("exclude_history" in t["params"] for t in records["cooccurrence"]["tuning"])
    assert records["most-popular"]["test"]["recall@5"] > 0


def test_sasrec_top_k_with_exclude_history_never_returns_a_history_item():
    from deepinterestgr.baselines.sasrec import SASRec, sasrec_top_k

    torch.manual_seed(0)
    model = SASRec(num_items=12, max_len=4, hidden_size=8, num_blocks=1, dropout=0.0)
    histories = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]  # the last one is longer than max_len: only its last 4 are read
    plain = sasrec_top_k(model, histories, k=12)
    assert sorted(plain[0].tolist()) == list(range(12))
    top = sasrec_top_k(model, histories, k=6, exclude_history=True)
    for row, hist in zip(top.tolist(), histories):
        assert not set(row) & set(hist[-4:]) and len(set(row)) == 6
    # the remaining items keep the model's order
    assert top[1].tolist() == [i for i in plain[1].tolist() if i != 4][:6]
