"""Tick hooks: what the training loop records and draws at every tick besides the losses,
chosen from the kind of data.

    images  ImageGrids: a grid of the evaluation generator's images from fixed noise (one row
            per class when conditional); no extra metrics
    points  toy.monitor.PointsMonitor: D's accuracy, mode coverage / moment errors, a scatter
            over D's decision surface; progress.gif at the end

A hook has tick(step, G, G_eval, D) -> extra metrics for the tick's metrics.jsonl line (it may
draw no randomness from the training's generators), summary(extra) -> text for the log line,
and finish() at the end of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data.prepare import Dataset
from ..data.sources import SOURCES
from ..images import class_grid, make_grid, save_image
from ..sampling import generate, noise

GRID_COLUMNS = 10


class ImageGrids:
    def __init__(self, num_classes: int, z_dim: int, seed: int, run_dir: Path):
        # fixed noise for the grids: one row per class when conditional, else 10x10
        rows = num_classes or GRID_COLUMNS
        self.z = noise(GRID_COLUMNS, z_dim, seed + 2).repeat(rows, 1) if num_classes else \
            noise(rows * GRID_COLUMNS, z_dim, seed + 2)
        self.y = torch.arange(num_classes).repeat_interleave(GRID_COLUMNS) if num_classes else None
        self.run_dir = Path(run_dir)

    def tick(self, step: int, G: torch.nn.Module, G_eval: torch.nn.Module, D: torch.nn.Module) -> dict[str, Any]:
        images = generate(G_eval, len(self.z), self.y, z=self.z)
        # one row per class (GRID_COLUMNS noises each), else GRID_COLUMNS x GRID_COLUMNS
        grid = class_grid(images.numpy(), self.y.numpy()) if self.y is not None else make_grid(images.numpy(), GRID_COLUMNS)
        save_image(grid, self.run_dir / "grids" / f"step-{step:09d}.png")
        return {}

    def summary(self, record: dict[str, Any]) -> str:
        return ""

    def finish(self) -> None:
        pass


def make_monitor(cfg: Config, data: Dataset, num_classes: int, run_dir: Path, device: torch.device):
    if data.kind == "images":
        return ImageGrids(num_classes, cfg.model.z_dim, cfg.train.seed, run_dir)
    from ..toy.monitor import PointsMonitor

    return PointsMonitor(data.images, data.labels, SOURCES.get(cfg.data.dataset).target, num_classes,
                         cfg.model.z_dim, cfg.train.seed, run_dir, device)
