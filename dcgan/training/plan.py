"""`dcgan train ... --dry-run`: the resolved configuration and what the run will cost, writing nothing.

The output is the run's config.toml with the cost above it as TOML comments, so it can be saved and
given back to `dcgan train` as a TOML file:

    # dry run of runs/c1 (nothing was written)
    # steps       0 → 10,000 (10,000 steps), batch 64: 640,000 images, 10.7 epochs of 60,000
    # checkpoint  189.5 MB complete (the newest), 27.3 MB each older one; 244.1 MB for the 3 kept
    # time        unknown until it runs (the first progress line, 10 s after the first step, says it)
    [data]
    ...

What is known without touching the data: the steps and images; the models' sizes need the data's
shape and class count, read from its prepared cache entry when there is one (the models are then
built on the "meta" device, which allocates nothing); the time comes from the run's own
metrics.jsonl when it has trained before (a resume), since throughput depends on the machine.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint
from ..config import Config, to_toml
from ..data.prepare import prepared_meta
from ..files import read_metrics
from ..progress import duration
from .run import check_run, holds_run

RATE_TICKS = 5  # the time estimate uses the median img/s of the run's last this many ticks


def describe(cfg: Config, out: Path, *, resume: bool = False, data_dir: str | None = None,
             preset: str | None = None) -> str:
    """The dry run's text (see the module docstring). Refuses (exit 2) what the real run would refuse
    before any work: an existing run without --resume, a changed config on resume, an unwritable --out."""
    out = Path(out)
    check_run(out, cfg, resume)
    start = 0
    if resume:
        from .loop import latest_for_resume

        found = latest_for_resume(out, cfg)
        start = found[1]["step"] if found else 0
    t = cfg.train
    steps = max(t.steps - start, 0)
    lines = [f"dry run of {out}{' (resume)' if resume and holds_run(out) else ''}, from "
             f"{preset or 'a custom configuration'} (nothing was written)"]
    meta = prepared_meta(cfg.data, data_dir)
    images = steps * t.batch
    epochs = f", {images / meta['shape'][0]:.1f} epochs of {meta['shape'][0]:,}" if meta and meta["shape"][0] else ""
    lines.append(f"steps       {start:,} → {t.steps:,} ({steps:,} steps), batch {t.batch}: {images:,} images{epochs}")
    lines.append("checkpoint  " + _checkpoint_cost(cfg, meta))
    lines.append("time        " + _time_cost(out, images, resume))
    return "".join(f"# {line}\n" for line in lines) + to_toml(cfg.to_dict())


def _checkpoint_cost(cfg: Config, meta: dict[str, Any] | None) -> str:
    if meta is None:
        return (f"size unknown: the models' shapes come from the data, which is not prepared yet "
                f"('dcgan prepare {cfg.data.dataset}' prepares it)")
    from ..models import build_discriminator, build_generator

    shape = tuple(meta["shape"][1:])
    k = len(meta["class_names"]) if cfg.model.conditional else 0
    with torch.device("meta"):  # parameter counts without allocating the weights
        G, D = build_generator(cfg.model, shape, k), build_discriminator(cfg.model, shape, k)
    complete, slim = checkpoint.estimate_bytes(G, D, ema=cfg.train.ema_decay > 0)
    keep = cfg.train.keep_checkpoints
    return (f"{complete / 1e6:.1f} MB complete (the newest), {slim / 1e6:.1f} MB each older one; "
            f"{(complete + (keep - 1) * slim) / 1e6:.1f} MB for the {keep} kept")


def _time_cost(out: Path, images: int, resume: bool) -> str:
    """From the run's own tick lines when it has trained before, else unknown."""
    rates = [r["img_per_s"] for r in read_metrics(out / "metrics.jsonl")
             if r.get("kind", "train") == "train" and isinstance(r.get("img_per_s"), (int, float))] if resume else []
    if not rates:
        return "unknown until it runs (the first progress line, 10 s after the first step, says img/s and the ETA)"
    last = rates[-RATE_TICKS:]
    rate = statistics.median(last)
    ticks = f"the median of this run's last {len(last)} ticks" if len(last) > 1 else "this run's last tick"
    return f"about {duration(images / rate)} at {rate:.0f} img/s ({ticks})"
