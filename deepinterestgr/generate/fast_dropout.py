"""Dropout whose mask costs a quarter of the random draws of `nn.Dropout` on CPU.

`nn.Dropout` draws one Bernoulli sample per element (`bernoulli_`), and on CPU that draw was 23% of a Beauty
generator training step (torch profiler, 3 steps of 256 random prefixes, 2 threads; `benchmarks/
bench_train_step_parts.py` times the step with both). Here each int64 draw of torch's
generator supplies four 16-bit uniforms, and an element is kept when its uniform clears `round(p * 65536)`: the drop
probability is p to within 1/65,536, and the draws follow torch's seeded generator as `nn.Dropout`'s do (so
`StepSeed`'s exact resume holds).
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16


class FastDropout(nn.Module):
    """`nn.Dropout(p)` in distribution (p rounded to a multiple of 1/65,536), with a cheaper mask on CPU."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * _LEVELS)  # uniforms below it are dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        bits = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        uniform = bits.view(torch.int16)[:n].view(x.shape)  # 16-bit uniforms in [-32768, 32767]
        keep = uniform >= self.threshold - _LEVELS // 2
        return torch.where(keep, x, 0.0) * (_LEVELS / (_LEVELS - self.threshold))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(module: nn.Module) -> int:
    """Replace every `nn.Dropout` inside `module` by a `FastDropout` of the same p; returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                replaced += 1
    return replaced
