"""QARM: the q_i rule and the rule judge."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepinterestgr.data.schema import Item
from deepinterestgr.evidence.contracts import Descriptor
from deepinterestgr.evidence.judges import RuleQualityJudge
from deepinterestgr.evidence.quality import quality_score


def test_confidences_weight_the_labels():
    assert quality_score([0.9, 0.1], [1, 0]) == pytest.approx(0.9)
    assert quality_score([0.9, 0.1], [0, 1]) == pytest.approx(0.1)
    assert quality_score([0.5, 0.5, 1.0], [1, 1, 0]) == pytest.approx(0.5)


def test_uniform_weights_when_no_confidences():
    assert quality_score([None, None, None, None], [1, 0, 1, 1]) == pytest.approx(0.75)


def test_mixed_confidences_are_an_error():
    with pytest.raises(ValueError, match="mix"):
        quality_score([0.5, None], [1, 1])


def test_no_descriptors_scores_zero_and_bad_inputs_raise():
    assert quality_score([], []) == 0.0
    assert quality_score([0.0, 0.0], [1, 1]) == 0.0
    with pytest.raises(ValueError, match="pair up"):
        quality_score([0.5], [1, 0])
    with pytest.raises(ValueError, match="0 or 1"):
        quality_score([0.5], [2])


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=1, max_size=10))
def test_quality_is_a_weighted_share_in_unit_interval(pairs):
    conf, labels = [c for c, _ in pairs], [lab for _, lab in pairs]
    q = quality_score(conf, labels)
    assert 0.0 <= q <= 1.0 + 1e-12
    if all(lab == 1 for lab in labels) and sum(conf) > 0:
        assert math.isclose(q, 1.0)
    if all(lab == 0 for lab in labels):
        assert q == 0.0


def test_rule_judge_rejects_generic_and_ungrounded_descriptors():
    judge = RuleQualityJudge(embedding_grounding=False)
    item = Item(0, "A", "Travel Size Shampoo and Conditioner", categories=["Beauty", "Hair Care"])
    descs = [Descriptor("travel-size for carry-on"), Descriptor("good quality product"), Descriptor("shampoo"),
             Descriptor("festival party glitter"), Descriptor("hair care for hotel stays"),
             Descriptor("a travel descriptor that goes on for far too many words to be a usage intent")]
    labels = judge.judge([item], [descs])[0]
    # grounded+specific / generic only / one word / not grounded / grounded via "hair" / too long
    assert labels == [1, 0, 0, 0, 1, 0]


@pytest.mark.slow
def test_rule_judge_grounds_by_embedding_when_no_shared_word():
    from deepinterestgr.evidence.text_encoders import PackagedMiniLMEncoder

    judge = RuleQualityJudge(min_cosine=0.5, lexical=False, text_encoder=PackagedMiniLMEncoder())
    item = Item(0, "A", "Mama Bee Belly Butter", "Rich butter that keeps stretch marks away while you are pregnant.")
    labels = judge.judge([item], [[Descriptor("stretch mark care during pregnancy"),
                                   Descriptor("engine oil change kit")]])[0]
    assert labels == [1, 0]
