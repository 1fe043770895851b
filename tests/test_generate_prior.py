"""The item-to-item prior of a hybrid ranking: the co-occurrence floor as a next-item distribution, added to the
generator's candidate scores at test/serve, fitted on the training targets and carried by the checkpoint."""

from __future__ import annotations

import random

import pytest
import torch

from deepinterestgr.artifacts import atomic_write_jsonl
from deepinterestgr.baselines.cooccurrence import CoOccurrence
from deepinterestgr.generate.data import SequenceDataModule
from deepinterestgr.generate.evaluation import Candidates, ranks
from deepinterestgr.generate.module import CHECKPOINT_PRIOR_KEY, GeneratorModule
from deepinterestgr.generate.prior import CooccurrencePrior, train_sequences
from deepinterestgr.generate.rerank import rerank
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import random_sid_table
from deepinterestgr.generate.tokenizer import SIDTokenizer

torch.set_num_threads(1)

SEQUENCES = [[0, 1, 2, 3], [1, 2, 4], [0, 2, 3, 5], [5, 6, 7], [2, 3, 1]]


def _prior(**kwargs) -> CooccurrencePrior:
    return CooccurrencePrior(**kwargs).fit(SEQUENCES, num_items=9)


def test_log_probs_are_a_distribution_in_the_floor_s_order():
    prior = _prior()
    history = torch.tensor([[-1, 0, 1, 2], [-1, -1, 5, 6]])
    logp = prior.log_probs(history)
    assert logp.shape == (2, 9)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(2))
    floor = CoOccurrence(last_n=3, recency_decay=0.3, cooccurrence_weight=0.1).fit(SEQUENCES, num_items=9)
    counts = floor.neighbour_scores([[0, 1, 2], [5, 6]]).float()
    for row in range(2):  # a larger count always means a larger prior, equal counts equal priors
        diff_counts = counts[row, :, None] - counts[row, None, :]
        diff_logp = logp[row, :, None] - logp[row, None, :]
        assert torch.equal(diff_counts > 1e-9, diff_logp > 1e-6)
    # 2 -> 3 is the most frequent transition from item 2, the newest history item of the first row
    assert int(logp[0].argmax()) == 3


def test_a_history_without_neighbours_leaves_every_item_equal():
    logp = _prior().log_probs(torch.tensor([[-1, -1, -1, 8], [-1, -1, -1, -1]]))
    assert torch.allclose(logp, torch.full_like(logp, -torch.log(torch.tensor(9.0))))


def test_items_added_after_fitting_get_the_smoothing_floor_and_point_nowhere():
    prior = _prior()
    history = torch.tensor([[0, 1, 2], [0, 1, 10]])  # item 10: added to the catalog after the prior was fitted
    grown = prior.log_probs(history, num_items=12)
    assert grown.shape == (2, 12)
    torch.testing.assert_close(grown.exp().sum(1), torch.ones(2))
    assert grown[0, 10] == grown[0, 11] == grown[0, 8], "a new item ranks with the items no history points to"
    with pytest.raises(ValueError, match="fitted on 9 items"):
        prior.log_probs(history, num_items=5)


def test_candidate_log_probs_gather_per_user_and_padding_is_minus_infinity():
    prior = _prior()
    history = torch.tensor([[0, 1, 2], [-1, 5, 6]])
    items = torch.tensor([[3, -1, 4], [7, 0, -1]])
    got = prior.candidate_log_probs(history, items, batch_size=1)
    full = prior.log_probs(history)
    assert got[0, 0] == full[0, 3] and got[0, 2] == full[0, 4] and got[1, 0] == full[1, 7]
    assert got[0, 1] == float("-inf") and got[1, 2] == float("-inf")


def test_state_round_trip_gives_the_same_prior():
    prior = _prior(recency_decay=0.5, smoothing=0.01)
    state = prior.state()
    assert state["indices"].dtype == torch.int32
    again = CooccurrencePrior.from_state(state)
    assert again.config() == prior.config()
    history = torch.tensor([[0, 2, 3], [-1, 1, 2]])
    torch.testing.assert_close(again.log_probs(history), prior.log_probs(history))


def test_bad_settings_and_an_unfitted_prior_are_refused():
    with pytest.raises(ValueError, match="smoothing"):
        CooccurrencePrior(smoothing=0)
    with pytest.raises(RuntimeError, match="before fit"):
        CooccurrencePrior().log_probs(torch.tensor([[0]]))
    with pytest.raises(RuntimeError, match="no state"):
        CooccurrencePrior().state()


def test_train_sequences_are_items_without_the_valid_and_test_targets():
    items = torch.tensor([0, 1, 2, 3, 4, 5, 6, 99, 7, 8])
    starts, lengths = torch.tensor([0, 4, 6]), torch.tensor([4, 2, 4])
    assert train_sequences(items, starts, lengths, num_items=50) == [[0, 1], [], [6]]  # 99: not in the SID table


def test_evaluation_ranks_add_the_weighted_prior():
    c = Candidates(items=torch.tensor([[4, 5, -1]]), beam_scores=torch.tensor([[-1.0, -1.5, float("-inf")]]),
                   item_logp=torch.tensor([[-2.0, -2.0, 0.0]]), item_top=None, targets=torch.tensor([5]),
                   users=torch.tensor([0]), history_items=torch.tensor([[1, 2]]))
    prior = torch.tensor([[-3.0, -1.0, float("-inf")]])
    assert int(ranks(c, 1.0)[0]) == 1
    assert int(ranks(c, 1.0, prior_logp=prior, prior_weight=0.2)[0]) == 1  # -1-2-0.6 = -3.6 vs -1.5-2-0.2 = -3.7
    assert int(ranks(c, 1.0, prior_logp=prior, prior_weight=1.0)[0]) == 0  # -6.0 vs -4.5
    with pytest.raises(ValueError, match="prior_logp"):
        ranks(c, 1.0, prior_weight=1.0)


# ---------------------------------------------------------------------------------------------------- the module
def _run(tmp_path, n_users=40, num_items=30, seed=0):
    rng = random.Random(seed)
    sequences = [[rng.randrange(num_items) for _ in range(rng.randint(4, 12))] for _ in range(n_users)]
    atomic_write_jsonl(tmp_path / "data" / "sequences.jsonl",
                       ({"user": f"u{i}", "items": s, "timestamps": []} for i, s in enumerate(sequences)))
    random_sid_table(num_items=num_items, num_levels=3, codebook_size=4, seed=1).save(tmp_path / "quantize")
    return tmp_path, sequences


def _module(**kwargs) -> GeneratorModule:
    generator = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                               dropout=0.0, item_buckets=64, item_scores=True)
    return GeneratorModule(generator=generator, renormalize=True, item_loss_weight=1.0, beam_size=10,
                           early_stopping_patience=0, **kwargs)


def test_prior_weight_without_a_prior_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="cooccurrence_prior.yaml"):
        _module(prior_weight=1.0)


def test_a_fit_fits_the_prior_on_train_targets_and_the_checkpoint_carries_it(tmp_path):
    from lightning.pytorch import Trainer

    run, sequences = _run(tmp_path)
    dm = SequenceDataModule(str(run), max_history=8, batch_size=8, eval_batch_size=16)
    module = _module(prior=CooccurrencePrior(), prior_weight=3.0, rerank_weight=1.0)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    prior = module.ranker.prior
    assert prior.fitted
    expected = CooccurrencePrior().fit([s[:-2] for s in sequences], num_items=30)  # never a valid or test target
    assert torch.equal(prior.state()["values"], expected.state()["values"])

    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert CHECKPOINT_PRIOR_KEY in saved and saved["ranking"]["prior_weight"] == 3.0
    loaded = GeneratorModule.load_from_checkpoint(path, map_location="cpu").eval()
    assert loaded.prior_weight == 0.0, "a loaded module ranks as the command says until it adopts the record"
    assert loaded.use_recorded_ranking().prior_weight == 3.0
    batch = next(iter(dm.test_dataloader()))
    module.eval()
    with torch.no_grad():
        want = module.generate(batch["history"], batch["history_mask"])
        got = loaded.generate(batch["history"], batch["history_mask"])
        plain = loaded.generate(batch["history"], batch["history_mask"], prior_weight=0.0)
        # the hybrid re-ranks the generator's own candidates by the formula, nothing else
        hist = loaded.history_items(batch["history"], batch["history_mask"])
        by_formula = rerank(plain, loaded.item_log_probs(batch["history"], batch["history_mask"]), 0.0,
                            loaded.ranker.prior.log_probs(hist), 3.0)
    assert torch.equal(got.items, want.items)
    assert not torch.equal(got.items, plain.items), "a prior weight of 3 changes some user's order"
    torch.testing.assert_close(got.scores, by_formula.scores)
    assert torch.equal(got.items, by_formula.items)


def test_validation_ranks_without_the_prior():
    module = _module(prior=_prior(), prior_weight=5.0)
    weights = []
    rank = module.ranker.rank
    module.ranker.rank = lambda *a, **kw: weights.append(kw.get("prior_weight")) or rank(*a, **kw)
    module.set_tokenizer(SIDTokenizer(random_sid_table(num_items=9, codebook_size=4, seed=1)))
    hist = torch.tensor([[-1, 0, 1, 2]])
    encoded = module.tokenizer.encode_history(hist)
    batch = {"history": encoded.tokens, "history_mask": encoded.mask, "target_item": torch.tensor([3]),
             "target": module.tokenizer.items_to_tokens(torch.tensor([3])), "user_index": torch.tensor([0])}
    with torch.no_grad():
        module.eval().validation_step(batch, 0)
        module.test_step(batch, 0)
    assert weights == [0.0, None]  # None: the module's own weight (5) at test


def test_the_shipped_prior_fragment_stacks_on_a_generator_config(tmp_path, monkeypatch):
    from pathlib import Path

    from deepinterestgr.cli.lightning import run_lightning

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cli = run_lightning(["-c", "configs/trainer/generate_cpu.yaml", "-c", "configs/model/generator_t5_items.yaml",
                         "-c", "configs/data/sequences.yaml", "-c", "configs/model/cooccurrence_prior.yaml",
                         "--data.run_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)], run=False)
    prior = cli.model.ranker.prior
    assert isinstance(prior, CooccurrencePrior) and not prior.fitted
    assert prior.config() == {"last_n": 3, "recency_decay": 0.3, "cooccurrence_weight": 0.1, "smoothing": 0.001}
    assert (cli.model.prior_weight, cli.model.prior_candidates, cli.model.rerank_weight) == (3.0, 20, 2.0)
    assert cli.model.beam_size == 50, "the generator config's other options are kept"


def test_prior_candidates_join_the_prior_s_top_non_history_items_scored_as_the_beam_scores():
    from deepinterestgr.generate.search import score_sids

    torch.manual_seed(0)
    rng = random.Random(1)
    sequences = [[rng.randrange(30) for _ in range(8)] for _ in range(60)]
    module = _module(prior=CooccurrencePrior().fit(sequences, num_items=30), prior_candidates=6).eval()
    module.set_tokenizer(SIDTokenizer(random_sid_table(num_items=30, num_levels=3, codebook_size=4, seed=1)))
    hist = torch.tensor([[1, 2, 3, 4], [-1, 5, 6, 7]])
    encoded = module.tokenizer.encode_history(hist)
    with torch.no_grad():
        plain = module.generate(encoded.tokens, encoded.mask, prior_candidates=0)
        joined = module.generate(encoded.tokens, encoded.mask)
        state = module.generator.encode(encoded.tokens, encoded.mask)
    assert joined.items.shape[1] == plain.items.shape[1] + 6
    logp = module.ranker.prior.log_probs(module.history_items(encoded.tokens, encoded.mask))
    for row in range(2):
        history = set(hist[row][hist[row] >= 0].tolist())
        top = [i for i in logp[row].argsort(descending=True, stable=True).tolist() if i not in history][:6]
        got = set(joined.items[row][joined.items[row] >= 0].tolist())
        assert got == set(plain.items[row].tolist()) | set(top), "beam + the prior's top non-history items"
    # a joined item's score is its SID log-probability under the generator, as a beam's
    extra = [[k for k in range(joined.items.shape[1])
              if joined.items[r, k] >= 0 and joined.items[r, k] not in plain.items[r]] for r in range(2)]
    assert any(extra), "some prior candidate was not already in the beam"
    cols = torch.tensor([e[0] if e else 0 for e in extra])
    with torch.no_grad():
        want = score_sids(module.generator, module.trie, state, joined.tokens[torch.arange(2), cols][:, None],
                          renormalize=True)
    torch.testing.assert_close(joined.scores[torch.arange(2), cols], want[:, 0])


def test_without_items_masks_each_row_s_items_and_padding_never_unmasks_item_0():
    from deepinterestgr.generate.rerank import without_items

    scores = torch.zeros(2, 5)
    items = torch.tensor([[0, -1, -1, 3], [-1, -1, -1, -1]])
    out = without_items(scores, items)
    assert torch.equal(torch.isinf(out), torch.tensor([[True, False, False, True, False], [False] * 5]))


def test_one_search_collects_every_candidate_setting_as_each_alone(tmp_path):
    from deepinterestgr.generate.evaluation import collect_candidate_sets, collect_candidates

    torch.manual_seed(0)
    run, sequences = _run(tmp_path)
    dm = SequenceDataModule(str(run), max_history=8, batch_size=8, eval_batch_size=16)
    dm.setup("test")
    module = _module(prior=CooccurrencePrior().fit([s[:-2] for s in sequences], num_items=30))
    module.set_tokenizer(dm.tokenizer)
    joins = [(0, 0), (5, 0), (0, 4), (5, 4)]
    calls = []
    search = module.ranker.candidate_sets
    module.ranker.candidate_sets = lambda *a, **kw: calls.append(kw["joins"]) or search(*a, **kw)
    sets = collect_candidate_sets(module, dm, "test", beam_size=6, joins=joins, progress=False)
    assert len(calls) == len(list(dm.test_dataloader())), "one search per batch serves the four settings"
    assert [sets[j].items.shape[1] for j in joins] == [6, 11, 10, 15]
    for m, p in joins:
        alone = collect_candidates(module, dm, "test", beam_size=6, dense_candidates=m, prior_candidates=p,
                                   progress=False)
        for field in alone._fields:
            want, got = getattr(alone, field), getattr(sets[m, p], field)
            assert (want is None and got is None) or torch.equal(want, got), (m, p, field)
    # what each setting adds, as sets: the beam, its item-level top-5 and the prior's top-4 non-history items
    plain, both = sets[0, 0], sets[5, 4]
    history = plain.history_items
    logp = module.ranker.prior.log_probs(history, num_items=30)
    for row in range(len(plain.items)):
        seen = set(history[row][history[row] >= 0].tolist())
        fourth = sorted((float(logp[row, i]) for i in range(30) if i not in seen), reverse=True)[3]
        above = {i for i in range(30) if i not in seen and float(logp[row, i]) > fourth}  # ties at the 4th: any
        dense = set(sets[5, 0].items[row][sets[5, 0].items[row] >= 0].tolist())
        got = set(both.items[row][both.items[row] >= 0].tolist())
        added = got - dense
        assert above - dense <= added and not added & seen
        assert len(added) <= 4 and all(float(logp[row, i]) >= fourth for i in added)
        assert set(plain.items[row][plain.items[row] >= 0].tolist()) <= dense
    # items added after training: the item-level best of them per user, for with_cold_slots
    cold = torch.tensor([3, 7, 9, 12])
    with_cold = collect_candidates(module, dm, "test", beam_size=6, cold_items=cold, top_k=2, progress=False)
    batch = next(iter(dm.test_dataloader()))
    logp = module.item_log_probs(batch["history"], batch["history_mask"])
    want = cold[logp[:, cold].topk(2, dim=-1).indices]
    assert torch.equal(with_cold.cold_top[: len(want)], want)
