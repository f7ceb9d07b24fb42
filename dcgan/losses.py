"""GAN objectives on logits (never Sigmoid + BCELoss: unsafe under autocast), and the gradient
penalties D's loss may add.

Each loss gives D's loss from its outputs on real and fake images, and G's loss from D's outputs
on fakes. All are computed in fp32.

    nonsaturating  BCE on one logit per image; loss.real_label < 1 is one-sided label smoothing
    hinge          the hinge loss of SAGAN / BigGAN
    lsgan          least squares (Mao et al. 2017): D pulls real scores to real_label and fake ones to 0,
                   G pulls fake scores to real_label; halved, as the paper writes it
    wgan-gp        the Wasserstein critic (Gulrajani et al. 2017): D maximises D(x) - D(G(z)), G maximises
                   D(G(z)), plus loss.gp_weight * E[(|grad D(x_hat)| - 1)^2] on random interpolates x_hat
                   of real and fake images (`gradient_penalty`; drawn by the training step)
    nplus1         the "K+1 classes" discriminator of the MNIST cDCGAN write-up (Salimans et al.
                   2016 for the semi-supervised form): D gives K+1 logits (N, K+1); softmax
                   cross-entropy with real → its class y, fake → class K; G wants D(G(z, y)) = y.
                   Needs model.d_head = "classes" (and labels: `labels=True` below).

Losses with `labels=True` also take the labels: d(real, fake, cfg, y_real, y_fake), g(fake, cfg, y_fake).
Any loss can add R1 (loss.r1_gamma), the zero-centred penalty on real images (`r1_penalty`).
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
    labels: bool = False  # True: d and g also take the labels (y_real, y_fake) / (y_fake)
    interpolates: bool = False  # True: D's loss adds the WGAN-GP penalty on real/fake interpolates


def real_probability(logits: torch.Tensor) -> torch.Tensor:
    """D's probability that an image is real: sigmoid of one logit (N,), or 1 - p(fake) for
    K+1-class logits (N, K+1) whose last class is "fake". Returns (N,) fp32."""
    logits = logits.float()
    if logits.dim() == 2:
        return 1.0 - torch.softmax(logits, 1)[:, -1]
    return torch.sigmoid(logits)


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


def _nplus1_d(real: torch.Tensor, fake: torch.Tensor, cfg: LossConfig, y_real: torch.Tensor,
              y_fake: torch.Tensor) -> torch.Tensor:
    real, fake = real.float(), fake.float()  # (N, K+1) logits each
    fake_class = torch.full((fake.shape[0],), fake.shape[1] - 1, dtype=torch.long, device=fake.device)
    return F.cross_entropy(real, y_real) + F.cross_entropy(fake, fake_class)


def _nplus1_g(fake: torch.Tensor, cfg: LossConfig, y_fake: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(fake.float(), y_fake)  # G wants D to read its image as the label it was asked for


def _ls_d(real: torch.Tensor, fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return 0.5 * ((real.float() - cfg.real_label).square().mean() + fake.float().square().mean())


def _ls_g(fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return 0.5 * (fake.float() - cfg.real_label).square().mean()


def _wgan_d(real: torch.Tensor, fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return fake.float().mean() - real.float().mean()  # the penalty is added by the step (gradient_penalty)


def _wgan_g(fake: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    return -fake.float().mean()


def input_gradient(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d(sum of outputs)/d(inputs), kept in the graph (the penalty's own gradient flows to D): (N, ...)"""
    (grad,) = torch.autograd.grad(outputs.float().sum(), inputs, create_graph=True)
    return grad


def r1_penalty(real_out: torch.Tensor, real_in: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): (gamma / 2) * E[|grad_x D(x)|^2] on real images x (N, ...)."""
    grad = input_gradient(real_out, real_in).float()
    return 0.5 * gamma * grad.square().flatten(1).sum(1).mean()


def gradient_penalty(out_hat: torch.Tensor, x_hat: torch.Tensor, weight: float) -> torch.Tensor:
    """WGAN-GP: weight * E[(|grad D(x_hat)|_2 - 1)^2] on the interpolates x_hat (N, ...)."""
    grad = input_gradient(out_hat, x_hat).float()
    return weight * (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


LOSSES.register("nonsaturating")(GanLoss(d=_ns_d, g=_ns_g))
LOSSES.register("hinge")(GanLoss(d=_hinge_d, g=_hinge_g))
LOSSES.register("lsgan")(GanLoss(d=_ls_d, g=_ls_g))
LOSSES.register("wgan-gp")(GanLoss(d=_wgan_d, g=_wgan_g, interpolates=True))
LOSSES.register("nplus1")(GanLoss(d=_nplus1_d, g=_nplus1_g, labels=True))
