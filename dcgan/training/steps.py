"""One discriminator step and one generator step."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import LossConfig
from ..losses import GanLoss


def d_step(G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor, y_fake: torch.Tensor | None):
    """Update D on a real batch x (B, C, H, W) and fakes G(z, y_fake).

    Returns (fake (B, C, H, W) with G's graph kept for the G step, d_loss, mean D(x), mean D(G(z))),
    the statistics as detached 0-d tensors so nothing waits for the device.
    """
    fake = G(z, y_fake)  # (B, C, H, W)
    real_logits = D(x, y)  # (B,)
    fake_logits = D(fake.detach(), y_fake)  # (B,)
    d_loss = loss.d(real_logits, fake_logits, cfg)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    with torch.no_grad():
        d_real, d_fake = torch.sigmoid(real_logits.float()).mean(), torch.sigmoid(fake_logits.float()).mean()
    return fake, d_loss.detach(), d_real, d_fake


def g_step(D: nn.Module, opt_g: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           fake: torch.Tensor, y_fake: torch.Tensor | None) -> torch.Tensor:
    """Update G so that D scores `fake` (B, C, H, W), still attached to G's graph, as real."""
    D.requires_grad_(False)  # no gradients for D's weights in G's step
    try:
        g_loss = loss.g(D(fake, y_fake), cfg)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    finally:
        D.requires_grad_(True)
    return g_loss.detach()
