"""Reusable contract checks for quantizer plugins (built-in and third-party): the contract test runs them over
every registered quantizer, and a plugin package can call them from its own tests."""

from __future__ import annotations

import torch

from deepinterestgr.quantize.base import Quantizer


def small_kwargs(cls: type[Quantizer]) -> dict:
    """Constructor overrides that make a plugin small enough for a unit test, where it accepts them."""
    import inspect

    wanted = {"num_levels": 2, "codebook_size": 8, "hidden_dims": (32,), "latent_dim": 8, "iters": 5, "kmeans_iters": 5}
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in wanted.items() if k in params}


def check_quantizer_contract(quantizer: Quantizer, *, input_dim: int = 24, num_items: int = 64, seed: int = 0) -> None:
    """Build, fit, forward: shapes, codes in range, no NaN, eval round trip `decode_codes(codes) == quantized`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(num_items, input_dim, generator=gen), dim=-1)
    quantizer.build(input_dim)
    assert quantizer.input_dim == input_dim
    quantizer.fit(x)
    quantizer.train()
    out = quantizer(x)
    L, K = quantizer.num_levels, quantizer.codebook_size
    assert out.codes.shape == (num_items, L), f"codes shape {tuple(out.codes.shape)} != {(num_items, L)}"
    assert out.codes.dtype == torch.long
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < K, "codes outside [0, codebook_size)"
    assert out.quantized.ndim == 2 and out.quantized.shape[0] == num_items
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.isfinite(out.quantized).all()
    for name, value in out.metrics.items():
        assert torch.is_tensor(value) and value.ndim == 0 and torch.isfinite(value), (
            f"metric {name} not a finite scalar")
    if quantizer.trainable:
        out.loss.backward()
        grads = [p.grad for p in quantizer.parameters() if p.requires_grad]
        assert grads and any(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
                             for g in grads), "no gradient"
    quantizer.eval()
    with torch.no_grad():
        out = quantizer(x)
        assert torch.equal(quantizer.encode(x), out.codes), "encode() is not deterministic in eval mode"
        assert torch.allclose(out.quantized, quantizer.decode_codes(out.codes), atol=1e-6), (
            "decode_codes round trip failed")
