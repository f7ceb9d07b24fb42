"""What a dataset source returns, and the shape rule that tells images from points: the types the
sources (sources.py) and the decoders they use (folder.py, lsun.py) share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def kind_of(shape: tuple[int, ...]) -> str:
    """"images" for an example shape (C, H, W), "points" for (D,)."""
    return "images" if len(shape) == 3 else "points"


@dataclass
class RawData:
    images: np.ndarray  # the examples: (N, C, H, W) uint8 images, or (N, D) float32 points
    labels: np.ndarray  # (N,) int64; all zeros when the source has no labels
    class_names: list[str] = field(default_factory=list)  # empty: unlabelled
    files: list[Path] = field(default_factory=list)  # the source files, for the cache key
    skipped: list[str] = field(default_factory=list)  # image folders: unreadable files left out (data.strict=false)


@dataclass(frozen=True)
class DecodeTarget:
    """Where a decoding source (image folders, lmdb) puts its images: the .npy file `path`
    (written memory-mapped, so a dataset larger than memory can be prepared), decoded by
    `workers` processes."""
    path: Path
    workers: int = 1
