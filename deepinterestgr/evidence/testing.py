"""Reusable contract checks for evidence plugins: every registered plugin (built-in or third-party) is run
through these by tests/test_evidence_contracts.py. A plugin class can offer `for_contract_test()` (a classmethod
returning a cheap instance, e.g. a tiny model); otherwise it is built with no arguments."""

from __future__ import annotations

import json
import math

import torch

from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.contracts import (
    AttributeSource,
    Captioner,
    CollaborativeSource,
    Descriptor,
    ImageEncoder,
    IntentMiner,
    JudgeResult,
    MiningResult,
    QualityJudge,
    TextEncoder,
)

SAMPLE_ITEMS = [
    Item(0, "S0", "Mama Bee Belly Butter", "Rich body butter for expecting mothers",
         categories=["Beauty", "Skin Care", "Body"]),
    Item(1, "S1", "Travel Size Shampoo 1 oz", categories=["Beauty", "Hair Care"]),
    Item(2, "S2", "Holographic Festival Body Glitter"),
]


def instantiate(cls: type):
    factory = getattr(cls, "for_contract_test", None)
    return factory() if callable(factory) else cls()


def sample_images(n: int = 2):
    from PIL import Image

    return [Image.new("RGB", (48 + 8 * i, 40), (40 * i % 256, 120, 200)) for i in range(n)]


def check_describe(plugin) -> None:
    d = plugin.describe()
    assert isinstance(d, dict) and d.get("class") == type(plugin).__name__, d
    assert json.loads(json.dumps(d)) == d, "describe() must be JSON-serialisable (it keys the cache)"
    assert plugin.describe() == d, "describe() must be stable between calls (it keys the cache)"


def check_text_encoder(enc: TextEncoder) -> None:
    assert isinstance(enc, TextEncoder)
    check_describe(enc)
    texts = ["gift for a new mother", "", "a longer product title " * 5]
    emb = enc.encode(texts)
    assert emb.dtype == torch.float32 and tuple(emb.shape) == (3, enc.dim), emb.shape
    assert torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-4), "embeddings must be L2-normalised"
    again = enc.encode(texts[:1])
    assert torch.allclose(again[0], emb[0], atol=1e-5), "encoding must not depend on the batch"


def check_intent_miner(miner: IntentMiner) -> None:
    assert isinstance(miner, IntentMiner)
    check_describe(miner)
    results = miner.mine(SAMPLE_ITEMS, ["", "", ""])
    assert len(results) == len(SAMPLE_ITEMS)
    for r in results:
        assert isinstance(r, MiningResult)
        if r.error:
            assert not r.descriptors, "a failed item carries no descriptors"
        for d in r.descriptors:
            assert isinstance(d, Descriptor) and isinstance(d.descriptor, str) and d.descriptor.strip()
            assert d.confidence is None or (0.0 <= d.confidence <= 1.0 and math.isfinite(d.confidence))
        present = [d.confidence is not None for d in r.descriptors]
        assert all(present) or not any(present), "confidences are all given or all absent"


def check_quality_judge(judge: QualityJudge) -> None:
    assert isinstance(judge, QualityJudge)
    check_describe(judge)
    descriptors = [[Descriptor("gift for a new mother", 0.9), Descriptor("good product", 0.2)], [],
                   [Descriptor("festival party glitter", 0.7)]]
    results = judge.judge_detailed(SAMPLE_ITEMS, descriptors, ["", "", ""])
    assert len(results) == 3
    for r, d in zip(results, descriptors):
        assert isinstance(r, JudgeResult)
        if r.labels is None:
            assert r.error, "a failed judgement says why"
        else:
            assert len(r.labels) == len(d) and all(v in (0, 1) for v in r.labels)
    assert results[1].labels == [], "an item without descriptors has no labels (and q = 0)"


def check_captioner(captioner: Captioner) -> None:
    assert isinstance(captioner, Captioner)
    check_describe(captioner)
    captions = captioner.caption(sample_images(2), SAMPLE_ITEMS[:2])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def check_image_encoder(encoder: ImageEncoder) -> None:
    assert isinstance(encoder, ImageEncoder)
    check_describe(encoder)
    feats = encoder.encode(sample_images(2))
    assert tuple(feats.shape) == (2, encoder.num_features) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


#: training sequences over 7 items; item 6 never occurs (it must get a zero row)
SAMPLE_TRAIN_SEQUENCES = [[0, 1, 2, 0, 1], [1, 2, 3], [4, 5, 4], [0, 1, 5], [2, 3]]


def check_collaborative_source(source: CollaborativeSource) -> None:
    assert isinstance(source, CollaborativeSource)
    check_describe(source)
    seqs = [list(s) for s in SAMPLE_TRAIN_SEQUENCES]
    emb = source.embed(seqs, 7)
    assert seqs == SAMPLE_TRAIN_SEQUENCES, "embed() must not modify the sequences it is given"
    assert isinstance(emb, torch.Tensor) and emb.dtype == torch.float32, type(emb)
    assert tuple(emb.shape) == (7, source.dim), emb.shape
    assert torch.isfinite(emb).all()
    assert emb[6].abs().sum() == 0, "an item without training interactions gets a zero row"
    assert emb[:6].abs().sum(dim=1).gt(0).any(), "items that co-occur must get some signal"
    assert torch.equal(source.embed(seqs, 7), emb), "embed() must be deterministic (SIDs are built from it)"


#: attribute ids of 6 items; item 5 has none (it must get a zero row); items 0 and 1 share every attribute
SAMPLE_ATTRIBUTES = [["brand:1", "cat:2"], ["brand:1", "cat:2"], ["brand:3", "cat:2", "cat:4"], ["cat:4"],
                     ["brand:3"], []]


def check_attribute_source(source: AttributeSource) -> None:
    assert isinstance(source, AttributeSource)
    check_describe(source)
    attributes = [list(a) for a in SAMPLE_ATTRIBUTES]
    emb = source.embed(attributes)
    assert attributes == SAMPLE_ATTRIBUTES, "embed() must not modify the attributes it is given"
    assert isinstance(emb, torch.Tensor) and emb.dtype == torch.float32, type(emb)
    assert tuple(emb.shape) == (len(SAMPLE_ATTRIBUTES), source.dim), emb.shape
    assert torch.isfinite(emb).all()
    assert emb[5].abs().sum() == 0, "an item without attributes gets a zero row"
    assert emb[:5].abs().sum(dim=1).gt(0).all(), "every item with attributes must get some signal"
    assert torch.allclose(emb[0], emb[1]), "items with the same attributes get the same vector"
    assert torch.equal(source.embed(attributes), emb), "embed() must be deterministic (SIDs are built from it)"
    if type(source).embed_new is not AttributeSource.embed_new:  # optional: items added after the catalog
        new = [list(SAMPLE_ATTRIBUTES[2]), ["brand:never-seen"], [], ["brand:1", "cat:2", "brand:never-seen"]]
        added = source.embed_new(attributes, new)
        assert attributes == SAMPLE_ATTRIBUTES, "embed_new() must not modify the catalog it is given"
        assert isinstance(added, torch.Tensor) and added.dtype == torch.float32, type(added)
        assert tuple(added.shape) == (len(new), source.dim), added.shape
        assert torch.allclose(added[0], emb[2], atol=1e-4), "a new item with a catalog item's attributes lands on it"
        assert added[1].abs().sum() == 0 and added[2].abs().sum() == 0, \
            "a new item without attributes the catalog knows gets a zero row"
        assert torch.allclose(added[3], emb[0], atol=1e-4), "attribute ids the catalog never held are ignored"
        assert tuple(source.embed_new(attributes, []).shape) == (0, source.dim)


CHECKS = {
    "text_encoder": check_text_encoder,
    "intent_miner": check_intent_miner,
    "quality_judge": check_quality_judge,
    "captioner": check_captioner,
    "image_encoder": check_image_encoder,
    "collaborative_source": check_collaborative_source,
    "attribute_source": check_attribute_source,
}
