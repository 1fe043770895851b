"""The embedded synthetic catalog: deterministic, truth consistent with the data, intents only partly in the text,
visual attributes only in the images, users shopping by intent."""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from deepinterestgr.data.io import load_catalog, load_sequences, load_truth
from deepinterestgr.data.prepare import prepare_dataset
from deepinterestgr.data.synthetic import _PROFILES, COLOURS, INTENTS, PATTERNS, SHAPES, generate_synthetic

BRIEF_INTENTS = [
    "gift for a new mother", "travel-size for carry-on", "gentle care for sensitive skin", "long-lasting evening look",
    "everyday natural look", "summer sun protection", "men's grooming routine", "anti-aging night routine",
    "budget starter kit", "salon-quality results at home", "kids bath time fun", "festival party glitter",
    "vegan and cruelty-free choice", "fragrance lover's treat", "quick morning routine", "spa relaxation evening",
]


@pytest.fixture(scope="module")
def default_catalog():
    return generate_synthetic(num_items=600, num_users=800, seed=42, render_images=False)


def test_intent_vocabulary_is_the_shared_one():
    assert INTENTS == BRIEF_INTENTS


def test_same_seed_same_data_other_seed_other_data():
    a_raw, a_truth = generate_synthetic(num_items=200, num_users=100, seed=7)
    b_raw, b_truth = generate_synthetic(num_items=200, num_users=100, seed=7)
    c_raw, _ = generate_synthetic(num_items=200, num_users=100, seed=8)
    assert a_raw.items == b_raw.items and a_raw.interactions == b_raw.interactions and a_truth == b_truth
    assert a_raw.items != c_raw.items and a_raw.interactions != c_raw.interactions


def test_truth_is_consistent_with_the_items(default_catalog):
    raw, truth = default_catalog
    assert truth["intent_names"] == INTENTS and len(truth["items"]) == len(raw.items) == 600
    for item, t in zip(raw.items, truth["items"]):
        assert 1 <= len(t["intents"]) <= 2 and len(set(t["intents"])) == len(t["intents"])
        assert all(0 <= k < len(INTENTS) for k in t["intents"])
        for name, value in t["attributes"].items():
            assert value in truth["attribute_names"][name]
        assert item.title.endswith(t["attributes"]["product_type"]) and item.brand in item.title
    assert set(truth["user_intents"]) == {x.user for x in raw.interactions}


def test_text_reveals_intents_only_partly_and_never_the_look(default_catalog):
    raw, truth = default_catalog
    cue_shown = []
    for item, t in zip(raw.items, truth["items"]):
        cues = _PROFILES[t["intents"][0]][2]
        shown = any(c in item.description for c in cues)
        assert shown == t["intent_cue_in_text"][0]
        cue_shown.append(shown)
        text = f"{item.title} {item.description}".lower()
        for word in [*COLOURS, *PATTERNS, *SHAPES]:
            assert not re.search(rf"\b{word}\b", text), (word, text)
    assert 0.4 < np.mean(cue_shown) < 0.6  # about half: the description alone cannot recover every intent


def test_the_look_follows_the_main_intent(default_catalog):
    _, truth = default_catalog
    same = [t["attributes"]["colour"] == _PROFILES[t["intents"][0]][0][0] for t in truth["items"]]
    assert np.mean(same) > 0.7  # chance level is 1/10


def test_users_shop_by_their_intents(default_catalog):
    raw, truth = default_catalog
    intents_of = {item.source_id: set(t["intents"]) for item, t in zip(raw.items, truth["items"])}
    on_intent = [bool(intents_of[x.item] & set(truth["user_intents"][x.user])) for x in raw.interactions]
    assert np.mean(on_intent) > 0.8
    by_user: dict[str, list[float]] = {}
    for x in raw.interactions:
        by_user.setdefault(x.user, []).append(x.timestamp)
    assert all(5 <= len(ts) <= 20 and all(a < b for a, b in zip(ts, ts[1:])) for ts in by_user.values())


def test_prepare_synthetic_writes_truth_and_images(tmp_path):
    args = {"num_items": 120, "num_users": 150, "seed": 3, "image_size": 48}
    stats = prepare_dataset(str(tmp_path), reader="synthetic", kcore=0, reader_args=args)
    items, seqs, truth = load_catalog(tmp_path), load_sequences(tmp_path), load_truth(tmp_path)
    assert stats["items"] == len(items) == len(truth["items"])
    assert stats["text_coverage"]["images"]["items"] == len(items)
    raw, raw_truth = generate_synthetic(120, 150, 3)
    index = {it.source_id: k for k, it in enumerate(raw.items)}
    for item in items:  # truth.json is indexed by dense item_id
        assert truth["items"][item.item_id] == raw_truth["items"][index[item.source_id]]
    assert sum(len(s.items) for s in seqs) == stats["interactions"]
    for item in items[:20]:
        image = Image.open(tmp_path / "data" / item.images[0]).convert("RGB")
        assert image.size == (48, 48)
        pixels = Counter(map(tuple, np.asarray(image).reshape(-1, 3)))
        colour = COLOURS[truth["items"][item.item_id]["attributes"]["colour"]]
        assert pixels[colour] > 48 * 48 * 0.1  # the item's colour fills a real part of the picture
    again = tmp_path / "again"
    prepare_dataset(str(again), reader="synthetic", kcore=0, reader_args=args)
    first = items[0].images[0]
    assert (again / "data" / first).read_bytes() == (tmp_path / "data" / first).read_bytes()


def test_scales_linearly_to_large_catalogs():
    start = time.perf_counter()
    raw, truth = generate_synthetic(num_items=50_000, num_users=200, seed=1, render_images=False)
    assert len(raw.items) == 50_000 and len(truth["items"]) == 50_000
    assert time.perf_counter() - start < 30  # ~1-2 s here; a million items is ~20x that


@pytest.mark.slow
def test_a_million_items():
    start = time.perf_counter()
    raw, _ = generate_synthetic(num_items=1_000_000, num_users=1000, seed=1, render_images=False)
    assert len(raw.items) == 1_000_000 and len({it.source_id for it in raw.items}) == 1_000_000
    assert time.perf_counter() - start < 120
