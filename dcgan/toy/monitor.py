"""The tick hook for point data (toy GANs): D's accuracy, the target's measures, a scatter picture.

At every tick, with no effect on training (its randomness comes from its own generators, seeded
by (train.seed, step), so a resumed run writes the same lines):
  * D's accuracy on N_ACC real points drawn afresh from the dataset and on N_ACC fakes of the
    training G (the generator D is trained against), threshold logit 0;
  * on N_EVAL samples of the evaluation generator (EMA when enabled) from fixed noise: mode
    coverage and high-quality fraction for a mixture target, moment errors for a Gaussian one
    (see measures.py); a conditional G is asked for every class in turn;
  * grids/step-<step>.png: N_PLOT real and N_PLOT of those samples over sigmoid(D) (a
    conditional D shows the largest sigmoid(D(x, y)) over the classes y).
At the end of training, progress.gif animates all the tick pictures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..sampling import generate, noise
from .distributions import LinearGaussian, Mixture
from .measures import d_accuracy, mode_coverage, moment_errors
from .plot import SURFACE_RES, bounds_of, grid_points, save_gif, scatter

N_ACC = 2_000  # real and fake points for D's accuracy
N_EVAL = 10_000  # generated points for coverage / moments
N_PLOT = 1_000  # real and generated points drawn in a picture


class PointsMonitor:
    def __init__(self, points: np.ndarray, labels: np.ndarray, target: Any, num_classes: int, z_dim: int,
                 seed: int, run_dir: Path, device: torch.device):
        self.points, self.labels = points, labels  # (N, 2) float32 (memory-mapped), (N,) int64
        self.target, self.K, self.z_dim, self.seed, self.device = target, num_classes, z_dim, seed, device
        self.run_dir = Path(run_dir)
        self.z = noise(N_EVAL, z_dim, seed + 2)  # fixed across ticks, so the pictures animate smoothly
        self.y = torch.arange(N_EVAL) % num_classes if num_classes else None
        self.bounds = bounds_of(np.asarray(points))
        pick = np.random.default_rng([seed % 2**32, 3]).choice(len(points), min(N_PLOT, len(points)), replace=False)
        self.real_plot = np.asarray(points[np.sort(pick)])
        self.grid = torch.from_numpy(grid_points(self.bounds, SURFACE_RES)).to(device)  # (res², 2)

    @torch.no_grad()
    def tick(self, step: int, G: torch.nn.Module, G_eval: torch.nn.Module, D: torch.nn.Module) -> dict[str, Any]:
        was_training = D.training
        D.eval()  # measuring must not change D (e.g. the running state of a normalisation layer)
        try:
            return self._tick(step, G, G_eval, D)
        finally:
            D.train(was_training)

    def _tick(self, step: int, G: torch.nn.Module, G_eval: torch.nn.Module, D: torch.nn.Module) -> dict[str, Any]:
        record: dict[str, Any] = {}
        rng = np.random.default_rng([self.seed % 2**32, step])  # a fresh batch each tick, the same on resume
        n = min(N_ACC, len(self.points))
        idx = np.sort(rng.choice(len(self.points), n, replace=False))
        real = torch.from_numpy(np.asarray(self.points[idx], np.float32)).to(self.device)
        z = torch.from_numpy(rng.standard_normal((n, self.z_dim)).astype(np.float32))
        y_real = torch.from_numpy(np.asarray(self.labels[idx])).to(self.device) if self.K else None
        y_fake = torch.from_numpy(rng.integers(0, self.K, n)) if self.K else None
        fake = generate(G, n, y_fake, z=z).to(self.device)
        record.update(d_accuracy(D, real, fake, y_real, y_fake.to(self.device) if self.K else None))

        samples = generate(G_eval, N_EVAL, self.y, z=self.z).numpy()  # (N_EVAL, 2) float32
        if isinstance(self.target, Mixture):
            record.update(mode_coverage(samples, np.asarray(self.target.centres), self.target.sigma,
                                        self.y.numpy() if self.K else None))
        elif isinstance(self.target, LinearGaussian):
            record.update(moment_errors(samples, self.target.mean, self.target.cov))

        scatter(self.run_dir / "grids" / f"step-{step:09d}.png", self.bounds, self.real_plot, samples[:N_PLOT],
                self.surface(D), title=f"step {step}  " + "\n".join(summary_parts(record)))
        return record

    def surface(self, D: torch.nn.Module) -> np.ndarray:
        """sigmoid(D) on the picture's grid, (res, res); for a conditional D the max over classes."""
        if self.K:
            logits = torch.stack([D(self.grid, torch.full((len(self.grid),), k, device=self.device))
                                  for k in range(self.K)]).amax(0)
        else:
            logits = D(self.grid)
        return torch.sigmoid(logits.float()).cpu().numpy().reshape(SURFACE_RES, SURFACE_RES)

    def summary(self, record: dict[str, Any]) -> str:
        return summary(record)

    def finish(self) -> None:
        save_gif(sorted((self.run_dir / "grids").glob("step-*.png")), self.run_dir / "progress.gif")


def summary(record: dict[str, Any]) -> str:
    """The key figures of a tick record, for the log line."""
    return "  ".join(summary_parts(record))


def summary_parts(record: dict[str, Any]) -> list[str]:
    """[D's accuracies, the target's measures]: the picture's title has one line each."""
    parts = [f"D acc {record['d_acc']:.2f} (real {record['d_acc_real']:.2f} fake {record['d_acc_fake']:.2f})"]
    if "modes_covered" in record:
        parts.append(f"modes {record['modes_covered']}/{record['num_modes']}  hq {record['hq_frac']:.2f}" +
                     (f"  label match {record['label_match']:.2f}" if "label_match" in record else ""))
    if "mean_err" in record:
        parts.append("mean err " + " ".join(f"{e:.3f}" for e in record["mean_err"]) +
                     f"  cov err {record['cov_rel_err']:.3f}")
    return parts
