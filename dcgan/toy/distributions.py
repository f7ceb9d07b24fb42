"""The synthetic 2-D targets. Pure numpy; every draw is a function of its seed.

gaussian  z ~ N(0, I2), x = z·A + b with A = [[1, 2], [-0.1, 0.5]], b = [1, 2]:
          mean b = (1, 2), covariance AᵀA = [[1.01, 1.95], [1.95, 4.25]]. No labels.
ring8     8 Gaussians evenly spaced on a circle of radius 2 (the first at angle 0), σ = 0.02.
grid25    25 Gaussians on {-4, -2, 0, 2, 4}², σ = 0.05 (row-major: label = 5·row + column).

For the mixtures every component is equally likely and the label is the component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearGaussian:
    A: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]

    num_classes = 0

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.b, dtype=np.float64)

    @property
    def cov(self) -> np.ndarray:
        A = np.asarray(self.A, dtype=np.float64)
        return A.T @ A

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2) float32 points and (n,) int64 labels (all zero)."""
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, len(self.b)))
        x = z @ np.asarray(self.A) + np.asarray(self.b)
        return x.astype(np.float32), np.zeros(n, dtype=np.int64)

    def describe(self) -> str:
        return f"linear-gaussian A={self.A} b={self.b}"


@dataclass(frozen=True)
class Mixture:
    centres: tuple[tuple[float, float], ...]  # (K, 2) component means
    sigma: float  # isotropic standard deviation of every component

    @property
    def num_classes(self) -> int:
        return len(self.centres)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2) float32 points and (n,) int64 component labels, components uniform."""
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, self.num_classes, n)
        x = np.asarray(self.centres)[labels] + self.sigma * rng.standard_normal((n, 2))
        return x.astype(np.float32), labels.astype(np.int64)

    def describe(self) -> str:
        return f"mixture centres={self.centres} sigma={self.sigma}"


def ring(k: int = 8, radius: float = 2.0, sigma: float = 0.02) -> Mixture:
    angles = 2 * np.pi * np.arange(k) / k
    return Mixture(tuple((round(radius * np.cos(a), 12), round(radius * np.sin(a), 12)) for a in angles), sigma)


def grid(values=(-4.0, -2.0, 0.0, 2.0, 4.0), sigma: float = 0.05) -> Mixture:
    return Mixture(tuple((x, y) for y in values for x in values), sigma)


TARGETS: dict[str, LinearGaussian | Mixture] = {
    "gaussian": LinearGaussian(A=((1.0, 2.0), (-0.1, 0.5)), b=(1.0, 2.0)),
    "ring8": ring(8, 2.0, 0.02),
    "grid25": grid((-4.0, -2.0, 0.0, 2.0, 4.0), 0.05),
}

# Points per split, and the fixed data seed of each split: the dataset is the same in every run
# (the run's train.seed only decides the batch order).
SPLITS = {"train": (100_000, 20_240_601), "test": (10_000, 20_240_602)}
