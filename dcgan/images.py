"""Image grids and files, with numpy and Pillow only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def from_uint8(x):
    """uint8 images (torch tensor (N, C, H, W)) → float32 in [-1, 1], the scale the generators produce
    and the discriminators and classifiers read. A new tensor (the input is never changed)."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x):
    """Float images in [-1, 1] (torch tensor) → uint8 tensor of the same shape."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to("cpu").byte()


def make_grid(images: np.ndarray, nrow: int, pad: int = 2, fill: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) → one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) uint8 image, row-major."""
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = images[i].transpose(1, 2, 0)
    return grid


def save_image(array: np.ndarray, path: str | Path) -> None:
    """Save an (H, W, C) uint8 array (C = 1 or 3) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array[:, :, 0] if array.shape[2] == 1 else array
    Image.fromarray(img).save(path)


def save_grid(images: np.ndarray, path: str | Path, nrow: int) -> None:
    save_image(make_grid(images, nrow), path)
