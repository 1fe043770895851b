"""Item-level scores of the T5 generator (user vector · tied item vector), their loss, and beam re-ranking."""

from __future__ import annotations

import pytest
import torch

from deepinterestgr.generate.module import GeneratorModule
from deepinterestgr.generate.rerank import rerank
from deepinterestgr.generate.search import SearchResult
from deepinterestgr.generate.t5 import T5SIDGenerator
from deepinterestgr.generate.testing import random_sid_table
from deepinterestgr.generate.tokenizer import SIDTokenizer

torch.set_num_threads(1)


def _module(**kwargs) -> GeneratorModule:
    generator = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                               dropout=0.0, item_buckets=64, item_scores=True)
    module = GeneratorModule(generator=generator, renormalize=True, **kwargs)
    module.set_tokenizer(SIDTokenizer(random_sid_table(num_items=30, codebook_size=4, seed=1)))
    return module


def _batch(module: GeneratorModule, histories: list[list[int]], targets: list[int]) -> dict:
    hist = torch.tensor([[-1] * (4 - len(h)) + h for h in histories])
    encoded = module.tokenizer.encode_history(hist)
    target_item = torch.tensor(targets)
    return {"history": encoded.tokens, "history_mask": encoded.mask,
            "target": module.tokenizer.items_to_tokens(target_item), "target_item": target_item}


def test_item_vectors_are_the_history_input_without_recency():
    module = _module(item_loss_weight=1.0)
    gen, tokens = module.generator, module.item_tokens
    vectors = gen.item_vectors(tokens)
    assert vectors.shape == (30, 16)
    with torch.no_grad():
        one_row = gen.history_embedding(tokens[:, None, :])[:, 0]  # a one-item history: recency row 0 added
        torch.testing.assert_close(one_row - gen.history_embedding.recency.weight[0], vectors)
    # items whose codes collide still get different vectors (the hashed identity rows differ)
    assert torch.cdist(vectors, vectors).add(torch.eye(30)).min() > 0


def test_item_loss_learns_a_transition_the_codes_cannot_express():
    torch.manual_seed(0)
    module = _module(item_loss_weight=1.0, lr=1e-2)
    # 3 -> 7 and 5 -> 11 for every user: item-level scores must rank those targets first after a short fit
    batch = _batch(module, [[1, 3], [2, 3], [4, 5], [6, 5]] * 8, [7, 7, 11, 11] * 8)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = module._losses(batch)
    assert set(losses) == {"loss", "sid_loss", "item_loss"}
    assert torch.isclose(losses["loss"], losses["sid_loss"] + losses["item_loss"])
    first = float(losses["item_loss"].detach())
    module.train()
    for _ in range(150):
        opt.zero_grad()
        module._losses(batch)["loss"].backward()
        opt.step()
    module.eval()
    assert float(module._losses(batch)["item_loss"]) < first / 5
    top = module.item_log_probs(batch["history"][:4], batch["history_mask"][:4]).argmax(-1)
    assert top.tolist() == [7, 7, 11, 11]


def test_rerank_orders_by_beam_plus_weighted_item_score_and_keeps_padding_last():
    result = SearchResult(tokens=torch.arange(8).view(1, 4, 2),
                          scores=torch.tensor([[-1.0, -2.0, -3.0, float("-inf")]]),
                          items=torch.tensor([[0, 1, 2, -1]]))
    item_logp = torch.log(torch.tensor([[0.05, 0.05, 0.9]]))
    assert rerank(result, item_logp, 0.0) is result
    out = rerank(result, item_logp, 1.0)
    # -1 + ln .05 = -4.0, -2 + ln .05 = -5.0, -3 + ln .9 = -3.1: item 2 moves to the top
    assert out.items.tolist() == [[2, 0, 1, -1]]
    assert out.tokens[0, 0].tolist() == [4, 5] and out.scores[0, -1] == float("-inf")
    torch.testing.assert_close(out.scores[0, 0], torch.tensor(-3.0) + item_logp[0, 2])


def test_generate_reranks_with_the_module_weight():
    torch.manual_seed(0)
    module = _module(item_loss_weight=1.0, rerank_weight=1.0).eval()
    batch = _batch(module, [[1, 3], [4, 5]], [7, 11])
    plain = module.generate(batch["history"], batch["history_mask"], beam_size=10, rerank_weight=0.0)
    mixed = module.generate(batch["history"], batch["history_mask"], beam_size=10)
    assert sorted(plain.items[0].tolist()) == sorted(mixed.items[0].tolist())  # same candidates, new order
    logp = module.item_log_probs(batch["history"], batch["history_mask"])
    expected = plain.scores + logp.gather(1, plain.items)
    assert torch.allclose(mixed.scores, expected.sort(dim=1, descending=True).values, atol=1e-5)


def test_item_options_need_a_generator_with_item_scores():
    plain = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32)
    with pytest.raises(ValueError, match="item_scores: true"):
        GeneratorModule(generator=plain, item_loss_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        _module(item_loss_weight=-1.0)
    with pytest.raises(ValueError, match="dense_candidates needs a generator with item-level scores"):
        GeneratorModule(generator=plain, dense_candidates=10)
    with pytest.raises(ValueError, match="dense_candidates must be >= 0"):
        _module(dense_candidates=-1)
    assert _module(item_loss_weight=1.0, dense_candidates=5).ranker.options()["dense_candidates"] == 5


def test_exclude_items_moves_history_items_behind_the_rest():
    from deepinterestgr.generate.rerank import exclude_items

    result = SearchResult(tokens=torch.arange(8).view(1, 4, 2), scores=torch.tensor([[-1.0, -2.0, -3.0, -4.0]]),
                          items=torch.tensor([[0, 1, 2, 3]]))
    out = exclude_items(result, torch.tensor([[1, -1, 3]]))
    assert out.items.tolist() == [[0, 2, -1, -1]] and out.tokens[0, 1].tolist() == [4, 5]
    assert out.scores[0, :2].tolist() == [-1.0, -3.0] and torch.isinf(out.scores[0, 2:]).all()


def test_generate_with_exclude_history_never_returns_a_history_item():
    torch.manual_seed(0)
    module = _module(item_loss_weight=1.0).eval()
    batch = _batch(module, [[1, 3], [4, 5]], [7, 11])
    res = module.generate(batch["history"], batch["history_mask"], beam_size=10, exclude_history=True)
    for row, hist in zip(res.items.tolist(), ([1, 3], [4, 5])):
        assert not set(row) & set(hist)


def test_items_added_after_training_get_no_untrained_identity_vector():
    tok = SIDTokenizer(random_sid_table(num_items=30, num_levels=3, codebook_size=5, seed=3))
    gen = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                         item_buckets=64, item_scores=True)
    gen.build(vocab_size=tok.vocab_size, sid_length=tok.sid_length)
    tokens = tok.item_tokens
    before = gen.item_vectors(tokens).detach()
    codes_only = gen.history_embedding.token_embedding(tokens).sum(-2).detach()
    assert not torch.allclose(before, codes_only)
    gen.set_unseen_items(tokens[25:])
    after = gen.item_vectors(tokens).detach()
    assert torch.allclose(after[25:], codes_only[25:]) and torch.allclose(after[:25], before[:25])
    # the history input uses the same vectors (plus recency)
    history = tokens[[0, 27]].unsqueeze(0)
    emb = gen.history_embedding(history).detach()
    recency = gen.history_embedding.recency(torch.tensor([1, 0])).detach()
    assert torch.allclose(emb[0], after[[0, 27]] + recency)
    gen.set_unseen_items(None)
    assert torch.allclose(gen.item_vectors(tokens).detach(), before)


def test_rank_reuses_the_search_encoder_pass_and_given_item_vectors_without_changing_the_ranking():
    """Ranker.rank encodes once for the search and the user vectors, and a caller's cached item vectors (a server's)
    give the same ranking as vectors computed per batch; both equal the plain search re-ranked by item_log_probs."""
    from deepinterestgr.generate.search import constrained_beam_search

    torch.manual_seed(3)
    module = _module(item_loss_weight=1.0, rerank_weight=2.0, beam_size=10).eval()
    gen, ranker = module.generator, module.ranker
    batch = _batch(module, [[1, 3], [2, 9, 4], [5], [6, 7, 8, 10]], [0, 0, 0, 0])
    history, mask = batch["history"], batch["history_mask"]
    with torch.no_grad():
        state = gen.encode(history, mask)
        torch.testing.assert_close(gen.user_vectors_from_state(state, history, mask), gen.user_vectors(history, mask))
        calls = []
        encode = gen.encode
        gen.encode = lambda *a: calls.append(1) or encode(*a)
        fresh = ranker.rank(gen, history, mask)
        assert len(calls) == 1, "one encoder pass for the search and the user vectors"
        del gen.encode
        cached = ranker.rank(gen, history, mask, item_vectors=ranker.item_vectors(gen, history.device))
        plain = constrained_beam_search(gen, ranker.trie(history.device), history, mask, beam_size=10,
                                        renormalize=True)
        expected = rerank(plain, ranker.item_log_probs(gen, history, mask), 2.0)
    for got in (fresh, cached):
        assert torch.equal(got.items, expected.items)
        torch.testing.assert_close(got.scores, expected.scores)
    assert not torch.equal(plain.items, expected.items), "the re-ranking changed some order (else this checks little)"


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_score_sids_gives_each_beam_its_own_search_score(renormalize, training):
    """Scoring given SIDs through the incremental decoding reproduces the constrained search's scores of the same
    SIDs (catalog-renormalised or not; the cached inference decoder and the transformers one)."""
    from deepinterestgr.generate.search import constrained_beam_search, score_sids

    torch.manual_seed(5)
    module = _module(item_loss_weight=1.0)
    module.train(training)
    gen, trie = module.generator, module.trie
    batch = _batch(module, [[1, 3], [2, 9, 4], [5]], [0, 0, 0])
    with torch.no_grad():
        state = gen.encode(batch["history"], batch["history_mask"])
        found = constrained_beam_search(gen, trie, batch["history"], batch["history_mask"], beam_size=12,
                                        renormalize=renormalize, state=state)
        scored = score_sids(gen, trie, state, found.tokens, renormalize=renormalize)
    assert torch.isfinite(found.scores).all()
    torch.testing.assert_close(scored, found.scores, atol=1e-5, rtol=1e-5)


def test_dense_candidates_join_the_item_top_m_the_beam_missed_scored_as_the_beam_scores():
    from deepinterestgr.generate.search import constrained_beam_search, score_sids

    torch.manual_seed(4)
    module = _module(item_loss_weight=1.0, beam_size=10).eval()
    gen = module.generator
    batch = _batch(module, [[1, 3], [2, 9, 4], [5], [6, 7, 8, 10]], [0, 0, 0, 0])
    history, mask = batch["history"], batch["history_mask"]
    plain = module.generate(history, mask, rerank_weight=0.0)
    joined = module.generate(history, mask, rerank_weight=0.0, dense_candidates=8)
    assert joined.items.shape == (4, 18) and joined.tokens.shape == (4, 18, module.tokenizer.sid_length)
    logp = module.item_log_probs(history, mask)
    for u in range(4):
        real = joined.items[u][joined.items[u] >= 0].tolist()
        top = set(logp[u].topk(8).indices.tolist())
        assert len(real) == len(set(real)), "an item the beam found is not listed twice"
        assert set(real) == set(plain.items[u].tolist()) | top
        # every candidate carries its SID and the generator's own SID log-probability, whatever proposed it
        live = joined.items[u] >= 0
        torch.testing.assert_close(joined.tokens[u][live], module.tokenizer.items_to_tokens(joined.items[u][live]))
        with torch.no_grad():
            expected = score_sids(gen, module.trie, gen.encode(history[u:u + 1], mask[u:u + 1]),
                                  joined.tokens[u][live].unsqueeze(0), renormalize=True)[0]
        torch.testing.assert_close(joined.scores[u][live], expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(joined.scores[u], joined.scores[u].sort(descending=True).values)
    # a beam that already holds the whole catalog leaves the dense candidates nothing to add
    whole = module.generate(history, mask, beam_size=30, rerank_weight=0.0, dense_candidates=8)
    assert (whole.items[:, 30:] == -1).all() and torch.isinf(whole.scores[:, 30:]).all()
    full = constrained_beam_search(gen, module.trie, history, mask, beam_size=30, renormalize=True)
    assert torch.equal(whole.items[:, :30], full.items)
    # re-ranking and the no-repeat rule apply to the joined candidates like to the beam's
    mixed = module.generate(history, mask, rerank_weight=2.0, exclude_history=True, dense_candidates=8)
    for row, hist in zip(mixed.items.tolist(), ([1, 3], [2, 9, 4], [5], [6, 7, 8, 10])):
        assert not set(row) & set(hist)


def test_validation_ranks_the_beam_alone_and_test_joins_the_dense_candidates():
    """Checkpoint selection pays no dense-candidate pass at every validation; test and serving rank as configured."""
    module = _module(item_loss_weight=1.0, beam_size=10, dense_candidates=6).eval()
    batch = _batch(module, [[1, 3], [4, 5]], [7, 11])
    batch["user_index"] = torch.arange(2)
    widths = []
    rank = module.ranker.rank
    module.ranker.rank = lambda *a, **kw: (lambda r: widths.append(r.items.shape[1]) or r)(rank(*a, **kw))
    with torch.no_grad():
        module.validation_step(batch, 0)
        module.test_step(batch, 0)
    assert widths == [10, 16]


def test_item_vectors_equal_the_masked_sum_of_their_rows_values_and_gradients():
    """`embedding_bag` item vectors (one kernel, no [..., S, d] intermediate) equal the gathered, PAD-masked sum of
    code rows plus two identity rows, in value and in the gradients they send to both tables."""
    from deepinterestgr.generate.t5 import HistoryItemEmbedding
    from deepinterestgr.generate.tokenizer import PAD

    torch.manual_seed(0)
    codes = torch.nn.Embedding(50, 16)
    embedding = HistoryItemEmbedding(codes, max_positions=8, item_buckets=97)
    tokens = torch.randint(1, 50, (3, 5, 4))
    tokens[0, :2] = PAD  # padded history rows
    tokens[1, 3, 3] = PAD  # a SID without a suffix
    got = embedding.item_vectors(tokens)
    present = (tokens != PAD).unsqueeze(-1)
    want = ((codes(tokens) * present).sum(-2)
            + embedding.item_hash(embedding.hash_rows(tokens)).sum(-2) * present.any(-2))
    torch.testing.assert_close(got, want)
    assert torch.equal(got[0, :2], torch.zeros(2, 16))

    upstream = torch.randn_like(got)
    grads = []
    for out in (got, want):
        codes.zero_grad()
        embedding.item_hash.zero_grad()
        (out * upstream).sum().backward()
        grads.append((codes.weight.grad.clone(), embedding.item_hash.weight.grad.clone()))
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.equal(grads[0][0][PAD], torch.zeros(16))  # PAD tokens add nothing, so learn nothing
