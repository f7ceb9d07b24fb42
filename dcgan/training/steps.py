"""One discriminator step and one generator step."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import LossConfig
from ..losses import GanLoss, real_probability


def d_step(G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor, y_fake: torch.Tensor | None):
    """Update D on a real batch x (B, C, H, W) and fakes G(z, y_fake).

    Returns (fake (B, C, H, W) with G's graph kept for the G step, d_loss, mean D(x), mean D(G(z))),
    the statistics as detached 0-d tensors so nothing waits for the device.
    """
    fake = G(z, y_fake)  # (B, C, H, W)
    real_logits = D(x, y)  # (B,)
    fake_logits = D(fake.detach(), y_fake)  # (B,)
    if loss.labels:  # e.g. the K+1-class loss: real → its class, fake → class K
        d_loss = loss.d(real_logits, fake_logits, cfg, y, y_fake)
    else:
        d_loss = loss.d(real_logits, fake_logits, cfg)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    with torch.no_grad():
        d_real, d_fake = real_probability(real_logits).mean(), real_probability(fake_logits).mean()
    return fake, d_loss.detach(), d_real, d_fake


def g_step(D: nn.Module, opt_g: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           fake: torch.Tensor, y_fake: torch.Tensor | None) -> torch.Tensor:
    """Update G so that D scores `fake` (B, C, H, W), still attached to G's graph, as real."""
    D.requires_grad_(False)  # no gradients for D's weights in G's step
    try:
        logits = D(fake, y_fake)
        g_loss = loss.g(logits, cfg, y_fake) if loss.labels else loss.g(logits, cfg)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    finally:
        D.requires_grad_(True)
    return g_loss.detach()


def train_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               loss: GanLoss, cfg: LossConfig, x: torch.Tensor, y: torch.Tensor | None,
               gen: torch.Generator, z_dim: int, num_classes: int, g_steps: int = 1) -> torch.Tensor:
    """One iteration: a D step on the real batch x (B, ...) and g_steps G steps.

    Noise and fake labels come from `gen` (on x's device). Returns the 0-d statistics stacked as
    (4,) = [d_loss, g_loss, D(x), D(G(z))], still on the device.
    """
    B, device = x.shape[0], x.device
    z = torch.randn(B, z_dim, device=device, generator=gen)  # (B, z_dim)
    y_fake = torch.randint(num_classes, (B,), device=device, generator=gen) if num_classes else None
    fake, d_loss, d_real, d_fake = d_step(G, D, opt_d, loss, cfg, x, y if num_classes else None, z, y_fake)
    g_loss = g_step(D, opt_g, loss, cfg, fake, y_fake)
    for _ in range(g_steps - 1):  # extra G steps on fresh noise
        z = torch.randn(B, z_dim, device=device, generator=gen)
        g_loss = g_step(D, opt_g, loss, cfg, G(z, y_fake), y_fake)
    return torch.stack([d_loss, g_loss, d_real, d_fake])
