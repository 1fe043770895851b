"""Non-LLM intent miners: descriptor files, vocabularies, the zero-shot ranker."""

from __future__ import annotations

import pytest

from deepinterestgr.artifacts import ArtifactError
from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.miners import (
    JsonlIntentMiner,
    ZeroShotIntentMiner,
    read_vocabulary,
    segment_text,
    vocabulary_path,
)

ITEMS = [Item(0, "B001", "Belly Butter"), Item(1, "B002", "Travel Shampoo"), Item(2, "B003", "Glitter")]


def test_jsonl_miner_reads_by_item_or_source_id_and_reports_missing(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"item_id": 0, "descriptors": [{"descriptor": "gift for a new mother", "confidence": 0.9}]}\n'
        '\n'
        '{"source_id": "B002", "descriptors": [{"descriptor": "travel-size for carry-on", "confidence": null}]}\n'
        '{"item_id": 2, "descriptors": [{"descriptor": "party", "confidence": 1.5}]}\n'
        'not json\n', encoding="utf-8")
    miner = JsonlIntentMiner(path=str(path))
    assert len(miner.bad_lines) == 2 and miner.bad_lines[0].endswith("outside [0, 1]")
    assert ":4:" in miner.bad_lines[0] and ":5:" in miner.bad_lines[1]
    first, second, third = miner.mine(ITEMS)
    assert first.descriptors[0].descriptor == "gift for a new mother" and first.descriptors[0].confidence == 0.9
    assert second.descriptors[0].confidence is None
    assert third.error == "item 2 (B003) not in d.jsonl" and not third.descriptors
    with pytest.raises(ArtifactError, match=r"d.jsonl:4: .*outside \[0, 1\]"):
        JsonlIntentMiner(path=str(path), strict=True)


def test_jsonl_miner_cache_identity_follows_the_file_content(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"item_id": 0, "descriptors": []}\n', encoding="utf-8")
    before = JsonlIntentMiner(path=str(path)).describe()
    path.write_text('{"item_id": 0, "descriptors": [{"descriptor": "x y", "confidence": 1}]}\n', encoding="utf-8")
    assert JsonlIntentMiner(path=str(path)).describe() != before


def test_shipped_vocabularies():
    from deepinterestgr.data.synthetic import INTENTS

    synthetic = read_vocabulary(vocabulary_path("synthetic"))
    assert synthetic[:16] == INTENTS and 30 <= len(synthetic) <= 40
    beauty = read_vocabulary(vocabulary_path("beauty"))
    assert 60 <= len(beauty) <= 100


def test_vocabulary_rejects_duplicates_and_empty(tmp_path):
    dup = tmp_path / "dup.txt"
    dup.write_text("# c\ngift idea\n\nGift idea\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup.txt:4: duplicate .* line 2"):
        read_vocabulary(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_vocabulary(empty)


def test_segment_text_splits_lines_and_sentences():
    assert segment_text("Mini shampoo\nBeauty > Hair\nLight. Slips into a cabin bag!") == [
        "Mini shampoo", "Beauty > Hair", "Light.", "Slips into a cabin bag!"]
    assert segment_text("one line only") == []


def test_zero_shot_miner_finds_the_intent_stated_in_one_sentence():
    from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder

    miner = ZeroShotIntentMiner(domain="synthetic", top_k=3, text_encoder=PackagedMiniLMEncoder())
    item = Item(0, "A", "Cresora Mini shampoo", "Apply a small amount and massage gently. Lightweight texture "
                "absorbs quickly. Slips easily into a cabin bag for trips.", categories=["Beauty", "shampoo"])
    result = miner.mine([item])[0]
    assert result.error is None and len(result.descriptors) == 3
    assert result.descriptors[0].descriptor == "travel-size for carry-on"
    confidences = [d.confidence for d in result.descriptors]
    assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1.0
