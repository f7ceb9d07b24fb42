"""GAN objectives on logits (never Sigmoid + BCELoss: unsafe under autocast).

Each loss gives D's loss from its logits on real and fake images, and G's loss from D's logits
on fakes. All are computed in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .config import LossConfig
from .registry import Registry


@dataclass(frozen=True)
class GanLoss:
    d: Callable[[torch.Tensor, torch.Tensor, LossConfig], torch.Tensor]  # (real (N,), fake (N,), cfg) -> scalar
    g: Callable[[torch.Tensor, LossConfig], torch.Tensor]  # (fake (N,), cfg) -> scalar


LOSSES: Registry[GanLoss] = Registry("loss")


def _ns_d(real: torch.Tensor, fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    real, fake = real.float(), fake.float()
    # BCE(real, t) with t = real_label: one-sided smoothing when t < 1
    if cfg.real_label == 1.0:
        loss_real = F.softplus(-real).mean()
    else:
        loss_real = F.binary_cross_entropy_with_logits(real, torch.full_like(real, cfg.real_label))
    return loss_real + F.softplus(fake).mean()


def _ns_g(fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return F.softplus(-fake.float()).mean()  # -log D(G(z)): the non-saturating generator loss


def _hinge_d(real: torch.Tensor, fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()


def _hinge_g(fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return -fake.float().mean()


LOSSES.register("nonsaturating")(GanLoss(d=_ns_d, g=_ns_g))
LOSSES.register("hinge")(GanLoss(d=_hinge_d, g=_hinge_g))
