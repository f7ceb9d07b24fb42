"""An exponential moving average of the generator's weights, used for every sample and metric."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    def __init__(self, G: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(G).eval().requires_grad_(False)

    def update(self, G: nn.Module, step: int) -> None:
        """ema ← d·ema + (1−d)·G, with d ramped up early on ((1+step)/(10+step)) so that a short run's
        average is not dominated by the random initial weights. Buffers (batch-norm running
        statistics) are copied from G."""
        # no_grad as a block, not a decorator: the same, and mutation testing (docs/MUTATION.md) skips decorated functions
        with torch.no_grad():
            d = min(self.decay, (1.0 + step) / (10.0 + step))
            torch._foreach_lerp_(list(self.model.parameters()), list(G.parameters()), 1.0 - d)
            buffers = list(self.model.buffers())
            if buffers:
                torch._foreach_copy_(buffers, list(G.buffers()))
