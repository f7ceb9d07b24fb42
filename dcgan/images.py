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


def class_grid(images: np.ndarray, labels: np.ndarray, pad: int = 2, fill: int = 0) -> np.ndarray:
    """uint8 (N, C, H, W) with their labels (N,) → one grid with one row per class, the classes in the
    order they first appear and each row that class's images in order; a shorter row ends in blank
    cells. Rows are classes in every class grid dcgan draws (training grids, `dcgan sample`, the hf
    export's sample.png, the experiment's grid, the report), so they all read the same way."""
    labels = np.asarray(labels)
    rows = [np.flatnonzero(labels == c) for c in dict.fromkeys(labels.tolist())]
    width = max(len(r) for r in rows)
    cells = np.full((len(rows) * width, *images.shape[1:]), fill, dtype=np.uint8)
    for i, r in enumerate(rows):
        cells[i * width : i * width + len(r)] = images[r]
    return make_grid(cells, nrow=width, pad=pad, fill=fill)


def sample_grid(images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The default picture of samples: one row per class when they show more than one class
    (class_grid), else a square-ish grid (ceil(sqrt(N)) columns)."""
    if labels is not None and len(np.unique(labels)) > 1:
        return class_grid(images, labels)
    return make_grid(images, nrow=int(np.ceil(np.sqrt(len(images)))))
