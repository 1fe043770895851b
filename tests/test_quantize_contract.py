"""Every registered quantizer (built-in or third-party) passes the same contract checks."""

from __future__ import annotations

import pytest

from deepinterestgr.quantize.testing import check_quantizer_contract, small_kwargs
from deepinterestgr.registry import get_registry

SPECS = get_registry().specs("quantizer")


def test_builtin_quantizers_registered():
    assert {"rqvae", "rqkmeans"} <= {s.name for s in SPECS}
    assert not get_registry().get("quantizer", "rqkmeans").cls.trainable


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_quantizer_contract(spec):
    check_quantizer_contract(spec.cls(**small_kwargs(spec.cls)))
