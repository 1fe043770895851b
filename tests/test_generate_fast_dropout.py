"""FastDropout: nn.Dropout's distribution and scaling, seeded draws, identity in eval, and the T5 swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepinterestgr.generate.fast_dropout import FastDropout, use_fast_dropout
from deepinterestgr.generate.t5 import T5SIDGenerator


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drops_a_share_p_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = FastDropout(p).train()(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 0.005  # binomial sd ~0.0008
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)), rtol=1e-4)
    assert abs(float(y.mean()) - 1.0) < 0.01


def test_masks_are_independent_across_positions_and_follow_the_seed():
    x = torch.ones(64, 32, 16)
    torch.manual_seed(3)
    a = FastDropout(0.5).train()(x)
    torch.manual_seed(3)
    b = FastDropout(0.5).train()(x)
    c = FastDropout(0.5).train()(x)
    assert torch.equal(a, b) and not torch.equal(b, c)
    kept = (a != 0).float()
    # neighbouring elements come from the same int64 draw: their masks must still be uncorrelated
    corr = torch.corrcoef(torch.stack([kept.flatten()[:-1], kept.flatten()[1:]]))[0, 1]
    assert abs(float(corr)) < 0.02


def test_gradients_flow_through_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(1000, requires_grad=True)
    y = FastDropout(0.25).train()(x)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.75))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))


def test_eval_mode_and_zero_p_are_the_identity_and_bad_p_is_refused():
    x = torch.randn(10)
    assert FastDropout(0.5).eval()(x) is x and FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(1.0)


def test_the_t5_generator_swaps_every_dropout_layer_and_keeps_its_weights():
    torch.manual_seed(0)
    plain = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                           dropout=0.2, vocab_size=20, sid_length=3)
    torch.manual_seed(0)
    fast = T5SIDGenerator(d_model=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, d_ff=32,
                          dropout=0.2, fast_dropout=True, vocab_size=20, sid_length=3)
    assert not any(type(m) is nn.Dropout for m in fast.modules())
    assert {m.p for m in fast.modules() if isinstance(m, FastDropout)} == {0.2}
    assert plain.state_dict().keys() == fast.state_dict().keys()
    assert all(torch.equal(v, fast.state_dict()[k]) for k, v in plain.state_dict().items())
    assert fast.init_config()["init_args"]["fast_dropout"] is True  # a checkpoint rebuilds it the same way
    assert use_fast_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))) == 1
