"""Experiments that train several runs and compare them, each one sweep (dcgan/sweep.py). One so far:

    conditioning   mnist-cdcgan four ways: the label at every layer ("all") or only at the input
                   ("input"), for G (model.g_cond) and for D (model.d_cond); same budget, same seeds:
                   dcgan sweep mnist-cdcgan --grid model.g_cond=all,input --grid model.d_cond=all,input

The write-up behind mnist-cdcgan (DCGAN-tensorflow) claimed: injecting the label only at the input
adds noise; per-layer injection in G cleans the foreground, per-layer in D the background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

CONDITIONING_GRID = ["model.g_cond=all,input", "model.d_cond=all,input"]


def conditioning(out: str | Path, steps: int | None = None, seeds: int = 3, sets: list[str] = (),
                 n_eval: int = 2000, data_dir: str | None = None, preset: str = "mnist-cdcgan",
                 device: str | None = None, log: Callable[[str], None] | None = None, batch: int | None = None,
                 first_seed: int = 0) -> dict[str, Any]:
    """The conditioning sweep of `preset` (its own step count unless `steps`; `batch`: train.batch of
    every run; seeds first_seed, first_seed + 1, ...); see dcgan/sweep.py."""
    from .config import resolve
    from .sweep import sweep

    sets = list(sets) + ([f"train.batch={batch}"] if batch else [])
    steps = steps if steps is not None else resolve(preset, sets, {})[0].train.steps
    return sweep(preset, out, grid=CONDITIONING_GRID, seeds=seeds, steps=steps, n_eval=n_eval, sets=sets,
                 device=device, data_dir=data_dir, log=log, first_seed=first_seed)
