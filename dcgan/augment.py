"""DiffAugment (Zhao et al. 2020): random, differentiable changes applied to every image D sees, real
and fake alike, so that D cannot memorise a small training set and G still learns through them.

    translation  shift by up to 1/8 of the side in x and y, the uncovered border filled with 0
    cutout       a square of half the side set to 0 at a random place
    color        brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the pixel's channel mean) and
                 contrast (x U(0.5, 1.5) around the image mean)

The randomness is a tensor of uniform numbers (B, PARAMS) drawn by the training step from the run's
noise generator, outside any CUDA graph and in a fixed order, so augmented steps replay from a graph,
resume exactly and repeat for a seed. Images are (B, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import torch

from .config import augment_policies

PARAMS = 7  # uniform numbers per image: translation x, y; cutout x, y; brightness, saturation, contrast


def augment(x: torch.Tensor, u: torch.Tensor, policies: list[str]) -> torch.Tensor:
    """x (B, C, H, W) changed by `policies` in the order translation, cutout, color, driven by the
    uniform numbers u (B, PARAMS) in [0, 1)."""
    if "color" in policies:
        x = color(x, u[:, 4], u[:, 5], u[:, 6])
    if "translation" in policies:
        x = translation(x, u[:, 0], u[:, 1])
    if "cutout" in policies:
        x = cutout(x, u[:, 2], u[:, 3])
    return x


def color(x: torch.Tensor, ub: torch.Tensor, us: torch.Tensor, uc: torch.Tensor) -> torch.Tensor:
    b = ub.to(x.dtype).view(-1, 1, 1, 1)
    x = x + (b - 0.5)
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W): per pixel over the channels
    x = (x - mean) * (us.to(x.dtype).view(-1, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (uc.to(x.dtype).view(-1, 1, 1, 1) + 0.5) + mean


def _shift(u: torch.Tensor, side: int) -> torch.Tensor:
    """An integer shift in [-s, s] for s = side / 8 (rounded), from u in [0, 1): (B,) int64."""
    s = int(side * 0.125 + 0.5)
    return (u * (2 * s + 1)).floor().long().clamp_(0, 2 * s) - s


def translation(x: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    dy, dx = _shift(uy, h), _shift(ux, w)  # (B,) each
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # (B, H): the source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]  # (B, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): a gather, differentiable
    return (out * inside[..., None].to(x.dtype)).permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    sh, sw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)  # the square's size
    top = (uy * (h - sh + 1)).floor().long().clamp_(0, h - sh)  # (B,) its first row
    left = (ux * (w - sw + 1)).floor().long().clamp_(0, w - sw)
    r = torch.arange(h, device=x.device)[None, :]
    q = torch.arange(w, device=x.device)[None, :]
    in_rows = (r >= top[:, None]) & (r < (top + sh)[:, None])  # (B, H)
    in_cols = (q >= left[:, None]) & (q < (left + sw)[:, None])  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


class Augment:
    """train.augment for the training step: `draws` uniform tensors per iteration (one per batch D sees),
    `apply(x, u)` the change. Empty policies: no draws, and apply is the identity."""

    def __init__(self, spec: str):
        self.policies = augment_policies(spec)

    def __bool__(self) -> bool:
        return bool(self.policies)

    def apply(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return augment(x, u, self.policies) if self.policies else x
