"""Every registered evidence plugin (built-in or third-party) goes through its kind's contract check."""

from __future__ import annotations

import pytest

from deepinterestgr.evidence.testing import CHECKS, instantiate
from deepinterestgr.registry import get_registry


def _specs():
    registry = get_registry()
    return [pytest.param(spec, id=f"{kind}:{spec.name}") for kind in CHECKS for spec in registry.specs(kind)]


@pytest.mark.parametrize("spec", _specs())
def test_plugin_honours_its_contract(spec):
    CHECKS[spec.kind](instantiate(spec.cls))


def test_every_builtin_evidence_plugin_is_registered():
    registry = get_registry()
    assert set(registry.list("text_encoder")) >= {"hf-text-encoder", "minilm-packaged"}
    assert set(registry.list("intent_miner")) >= {"llm-miner", "zero-shot-miner", "jsonl-miner"}
    assert set(registry.list("quality_judge")) >= {"llm-judge", "rule-judge"}
    assert set(registry.list("captioner")) >= {"vlm-captioner", "label-captioner"}
    assert set(registry.list("image_encoder")) >= {"timm-image-encoder", "efficientnet-lite0-packaged"}
    assert set(registry.list("collaborative_source")) >= {"cooccurrence-svd"}
