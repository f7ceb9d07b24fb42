"""What the toy monitors measure. Plain functions of arrays; results are JSON-ready floats/ints/lists.

d_accuracy      D's accuracy on real and on fake points at threshold logit 0 (sigmoid 0.5).
                At the GAN equilibrium D cannot tell them apart: both drift to 0.5.
mode_coverage   for a mixture of K isotropic Gaussians (centres, σ): a sample is "high quality"
                when it lies within 3σ of its nearest centre; a mode is covered when it holds
                at least 1% of all the samples within 3σ of it (the VEEGAN / PacGAN measure).
moment_errors   for a Gaussian target: |sample mean − mean| per coordinate, and the relative
                Frobenius error of the sample covariance ‖Ĉ − C‖_F / ‖C‖_F.
"""

from __future__ import annotations

import numpy as np
import torch

HQ_SIGMAS = 3.0  # a sample within this many σ of a centre is high quality
COVERED_FRACTION = 0.01  # a mode holding at least this fraction of the samples is covered


@torch.no_grad()
def d_accuracy(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
               y_real: torch.Tensor | None = None, y_fake: torch.Tensor | None = None) -> dict[str, float]:
    """real, fake: (N, *shape) on D's device; labels (N,) for a conditional D."""
    acc_real = (D(real, y_real) > 0).float().mean().item()
    acc_fake = (D(fake, y_fake) < 0).float().mean().item()
    return {"d_acc_real": acc_real, "d_acc_fake": acc_fake, "d_acc": (acc_real + acc_fake) / 2}


def mode_coverage(points: np.ndarray, centres: np.ndarray, sigma: float,
                  labels: np.ndarray | None = None) -> dict[str, float | int]:
    """points (N, 2); centres (K, 2). With `labels` (N,) (a conditional G's requested modes) also
    `label_match`: the fraction of samples that are high quality and nearest their requested mode."""
    points, centres = np.asarray(points, np.float64), np.asarray(centres, np.float64)
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (N, K)
    nearest = d2.argmin(1)
    hq = np.sqrt(d2[np.arange(len(points)), nearest]) <= HQ_SIGMAS * sigma  # (N,)
    per_mode = np.bincount(nearest[hq], minlength=len(centres))  # high-quality samples per mode
    out: dict[str, float | int] = {
        "modes_covered": int((per_mode >= COVERED_FRACTION * len(points)).sum()),
        "num_modes": len(centres),
        "hq_frac": float(hq.mean()) if len(points) else 0.0,
    }
    if labels is not None:
        out["label_match"] = float((hq & (nearest == np.asarray(labels))).mean())
    return out


def moment_errors(points: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> dict[str, float | list[float]]:
    points = np.asarray(points, np.float64)
    m, c = points.mean(0), np.cov(points, rowvar=False)
    return {
        "sample_mean": m.tolist(),
        "mean_err": np.abs(m - mean).tolist(),
        "cov_rel_err": float(np.linalg.norm(c - cov) / np.linalg.norm(cov)),
    }
