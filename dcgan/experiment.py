"""Experiments that train several runs and compare them. One so far:

    conditioning   mnist-cdcgan four ways: the label at every layer ("all") or only at the input
                   ("input"), for G (model.g_cond) and for D (model.d_cond); same budget, same seeds.
                   Writes DIR/table.md (FID and label accuracy of each run's EMA generator from
                   dcgan.metrics.evaluate, mean ± std over seeds), DIR/table.json (every number) and
                   DIR/grid.png (one block per variant, side by side: one row per digit, same noise).

The write-up behind mnist-cdcgan (DCGAN-tensorflow) claimed: injecting the label only at the input
adds noise; per-layer injection in G cleans the foreground, per-layer in D the background.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import UserError

VARIANTS = [("all", "all"), ("all", "input"), ("input", "all"), ("input", "input")]  # (g_cond, d_cond)


def variant_name(g: str, d: str) -> str:
    return f"G-{g}_D-{d}"


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "–"
    m = statistics.fmean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.3f} ± {s:.3f}" if m < 10 else f"{m:.1f} ± {s:.1f}"


def conditioning(out: str | Path, steps: int | None = None, seeds: int = 3, sets: list[str] = (),
                 n_eval: int = 2000, data_dir: str | None = None, preset: str = "mnist-cdcgan",
                 log: Callable[[str], None] | None = None, device: str | None = None, batch: int | None = None,
                 first_seed: int = 0) -> dict[str, Any]:
    """Train `preset` in the four (g_cond, d_cond) variants × `seeds` seeds (first_seed, first_seed + 1,
    ...) under `out`, evaluate each run, write table.md / table.json / grid.png. Finished runs (a
    checkpoint at the full step count) are reused, so an interrupted experiment continues where it
    stopped. `device` / `batch`: train.device / train.batch of every run (None: the preset's)."""
    from . import checkpoint
    from .config import resolve
    from .device import pick_device
    from .images import class_grid, save_image
    from .metrics.evaluate import evaluate
    from .sampling import generate, parse_labels
    from .training import train

    log = log or (lambda m: print(m, file=sys.stderr))
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    rows: dict[str, dict[str, Any]] = {}
    blocks = []
    flags = {"train.steps": steps, "train.device": device, "train.batch": batch}
    pick_device(device)  # a device that is not here: exit 2 before the first run
    seed_list = list(range(first_seed, first_seed + seeds))
    for g, d in VARIANTS:
        name = variant_name(g, d)
        rows[name] = {"g_cond": g, "d_cond": d, "runs": []}
        for s in seed_list:
            cfg, _ = resolve(preset, list(sets) + [f"model.g_cond={g}", f"model.d_cond={d}"],
                             {**flags, "train.seed": s})
            run = out / f"{name}-s{s}"
            found = checkpoint.latest(run) if run.is_dir() else None
            t0 = time.perf_counter()
            if not (found and found[1]["step"] >= cfg.train.steps):
                log(f"[{name} seed {s}] training {cfg.train.steps} steps → {run}")
                train(cfg, run, resume=found is not None, data_dir=data_dir, log=lambda m: None, preset=preset)
            wall = time.perf_counter() - t0
            res = evaluate(run, n=n_eval, metrics="fid,label_accuracy", data_dir=data_dir, log=lambda m: None,
                           device=device or "auto")
            r = {"seed": s, "run": str(run), "fid": float(res["fid"]), "label_accuracy": float(res["label_accuracy"]["accuracy"]),
                 "train_wall_s": round(wall, 1)}
            rows[name]["runs"].append(r)
            log(f"[{name} seed {s}] FID {r['fid']:.2f}  label accuracy {r['label_accuracy']:.3f}  ({wall:.0f} s)")
            if s == seed_list[0]:  # the grid: the first seed of each variant, one row per digit x 8 noises
                G, _ = checkpoint.load_generator(run)
                k = G.num_classes
                labels = parse_labels("all", 8 * k, k)
                blocks.append((generate(G, 8 * k, labels, seed=0).numpy(), labels.numpy()))
    # one block per variant, side by side with a white gap
    grids = [class_grid(images, labels) for images, labels in blocks]
    h = max(x.shape[0] for x in grids)
    gap = np.full((h, 12, grids[0].shape[2]), 255, dtype=np.uint8)
    parts = []
    for i, x in enumerate(grids):
        parts += ([gap] if i else []) + [x]
    save_image(np.concatenate(parts, 1), out / "grid.png")

    lines = [f"Conditioning experiment: {preset}, {cfg.train.steps} steps, batch {cfg.train.batch}, "
             f"seeds {seed_list[0]}..{seed_list[-1]}, "
             f"overrides {list(sets) or 'none'}; metrics of the EMA generator on n = {n_eval} images vs MNIST test "
             f"(dcgan.metrics.evaluate), mean ± std over seeds.", "",
             "| variant (G label / D label) | FID ↓ | label accuracy ↑ | per seed (FID / acc) |",
             "|---|---|---|---|"]
    for name, row in rows.items():
        fids = [r["fid"] for r in row["runs"]]
        accs = [r["label_accuracy"] for r in row["runs"]]
        row["fid_mean"], row["acc_mean"] = statistics.fmean(fids), statistics.fmean(accs)
        per = ", ".join(f"{r['fid']:.1f} / {r['label_accuracy']:.3f}" for r in row["runs"])
        lines.append(f"| {row['g_cond']} / {row['d_cond']} | {_mean_std(fids)} | {_mean_std(accs)} | {per} |")
    lines += ["", "grid.png: blocks left to right = " + ", ".join(rows)
              + f" (seed {seed_list[0]}; one row per digit, 8 columns of noise, the same noise in every block)."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    summary = {"preset": preset, "steps": cfg.train.steps, "batch": cfg.train.batch, "seeds": seeds,
               "sets": list(sets), "n_eval": n_eval, "variants": rows}
    (out / "table.json").write_text(json.dumps(summary, indent=1))
    return {"out": str(out), "table": str(out / "table.md"), "grid": str(out / "grid.png"),
            "variants": {k: {"fid": v["fid_mean"], "label_accuracy": v["acc_mean"]} for k, v in rows.items()}}
