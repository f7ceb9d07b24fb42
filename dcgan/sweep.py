"""`dcgan sweep`: train every combination of a grid of config values over several seeds, measure each
run, and tabulate mean ± std over the seeds.

    dcgan sweep mnist-cdcgan --grid loss.r1_gamma=0,0.1 --grid optim.lr_decay=0,0.5 --seeds 3 --kimg 256 --out DIR

DIR/<variant>-s<seed>/ is an ordinary run folder (resumable, reportable); DIR/grids/<variant>-s<seed>.png
the run's samples (one row per class when conditional); DIR/table.md and DIR/table.json the results.
A sweep that stopped half-way continues where it was: a finished run is only measured (and its
measurement, DIR/<run>/sweep-eval.json, reused), an unfinished one is resumed from its checkpoint.

Measured for each run (its EMA generator, `dcgan eval` at --n images against the test split): FID,
precision, recall, label accuracy (conditional), classes covered, training time; and, when the runs
evaluate themselves while training (--set eval.every_kimg=K), the worst FID of the second half of the
run relative to the run's best ("late / best": how far a run stopped at a random late moment can be
from its best).
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

from .config import parse_set, resolve, steps_for_kimg
from .data.sources import SOURCES
from .errors import UserError

COLUMNS = [("fid", "FID ↓", "{:.2f}"), ("precision", "precision", "{:.3f}"), ("recall", "recall ↑", "{:.3f}"),
           ("label_accuracy", "label acc.", "{:.4f}"), ("classes_covered", "classes", "{:.1f}"),
           ("late_over_best", "late / best", "{:.2f}"), ("train_s", "train s", "{:.0f}")]


def parse_grid(items: list[str]) -> list[tuple[str, list[Any]]]:
    """--grid key=v1,v2 items → [(key, [v1, v2])], each value read as --set reads it (TOML, else text)."""
    grid = []
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not values:
            raise UserError(f"--grid {item!r}: expected section.key=value1,value2 (e.g. --grid loss.r1_gamma=0,0.1)")
        # commas separate the values; a value with commas in it is quoted: train.augment="translation,cutout",""
        parsed = [parse_set(f"{key}={v}")[1] for v in next(csv.reader([values]))]
        if key in dict(grid):
            raise UserError(f"--grid {key} given twice; list all its values in one --grid")
        grid.append((key.strip(), parsed))
    return grid


def variant_name(assignment: list[tuple[str, Any]]) -> str:
    """A folder-safe name for one combination: key=value pairs joined by '_' (the key's last part)."""
    if not assignment:
        return "base"
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in assignment).replace("/", "-").replace(" ", "")


def sweep(base: str, out: str | Path, *, grid: list[str] = (), seeds: int = 3, steps: int | None = None,
          kimg: float | None = None, n_eval: int = 10000, sets: list[str] = (), device: str | None = None,
          data_dir: str | None = None, log: Callable[[str], None] | None = None, first_seed: int = 0) -> dict[str, Any]:
    """Train and measure every combination of `grid` (key=v1,v2 strings) over `seeds` seeds; write the
    tables and grids under `out`; return the summary (table.json's content). Seeds: first_seed, first_seed + 1, ..."""
    from . import checkpoint
    from .images import save_grid
    from .metrics.evaluate import evaluate
    from .sampling import generate, parse_labels
    from .training import train

    log = log or (lambda m: print(m, file=sys.stderr))
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if (steps is None) == (kimg is None):
        raise UserError("give the budget of every run: --steps N or --kimg K (thousands of real images), not both")
    if n_eval < 10:
        raise UserError(f"--n must be >= 10, got {n_eval}")
    from .device import pick_device

    pick_device(device)  # a device that is not here: exit 2 before any run
    axes = parse_grid(list(grid))
    combos = [list(zip([k for k, _ in axes], values)) for values in itertools.product(*[v for _, v in axes])]
    out = Path(out)
    flags = {"train.device": device}
    # every combination's config is resolved (and so checked) before the first run trains
    plans = []
    for assignment in combos:
        for seed in range(first_seed, first_seed + seeds):
            cfg, _ = resolve(base, list(sets), {**flags, "train.seed": seed})
            for key, value in assignment:
                cfg.set(key, value, where="--grid")
            if kimg is not None:
                cfg.train.steps = steps_for_kimg(kimg, cfg.train.batch)
            elif steps is not None:
                cfg.train.steps = steps
            cfg.validate()
            plans.append((variant_name(assignment), assignment, seed, cfg))
    toys = sorted({cfg.data.dataset for *_, cfg in plans if getattr(SOURCES.get(cfg.data.dataset), "target", None)})
    if toys:  # measured with FID, precision/recall, ...: image runs only
        raise UserError(f"dcgan sweep measures image runs (FID, precision/recall); {', '.join(toys)} holds 2-D points: "
                        f"train toy runs with 'dcgan train' and measure each with 'dcgan eval RUN' (modes covered, "
                        f"D accuracy, ...)")
    log(f"sweep of {base}: {len(combos)} combination(s) x {seeds} seed(s) = {len(plans)} runs of "
        f"{plans[0][3].train.steps} steps → {out}")

    results: dict[str, dict[str, Any]] = {}
    for name, assignment, seed, cfg in plans:
        run = out / f"{name}-s{seed}"
        found = checkpoint.latest(run) if run.is_dir() else None
        if not (found and found[1]["step"] >= cfg.train.steps):
            log(f"[{name} seed {seed}] training {cfg.train.steps} steps → {run}")
            train(cfg, run, resume=found is not None, data_dir=data_dir, preset=base,
                  log=lambda m, where=f"[{name} seed {seed}]": log(f"{where} {m}"))  # the run's lines, labelled
        measured = run / "sweep-eval.json"
        state = checkpoint.latest(run)[1]
        if measured.is_file() and json.loads(measured.read_text()).get("step") == state["step"]:
            row = json.loads(measured.read_text())
        else:
            res = evaluate(run, n=n_eval, device=device or "auto", data_dir=data_dir, record=False, log=lambda m: None)
            row = {"step": state["step"], "images_seen": state["images_seen"], "fid": res["fid"],
                   "precision": res["precision_recall"]["precision"], "recall": res["precision_recall"]["recall"],
                   "label_accuracy": (res.get("label_accuracy") or {}).get("accuracy"),
                   "classes_covered": res["classes"]["classes_covered"], "train_s": state["elapsed"],
                   **late_over_best(run, state["images_seen"])}
            measured.write_text(json.dumps(row))
        row = {"seed": seed, "run": str(run), **row}
        results.setdefault(name, {"assignment": dict(assignment), "runs": []})["runs"].append(row)
        log(f"[{name} seed {seed}] FID {row['fid']:.2f}  recall {row['recall']:.3f}"
            + (f"  label accuracy {row['label_accuracy']:.4f}" if row["label_accuracy"] is not None else "")
            + f"  ({row['train_s']:.0f} s)")
        G, _ = checkpoint.load_generator(run)
        k = G.num_classes
        images = generate(G, 10 * (k or 10), parse_labels("all", 10 * (k or 10), k) if k else None, seed=0)
        if k:  # one row per class: image i has label i % k, so column-major order puts class c in row c
            images = images.view(10, k, *images.shape[1:]).transpose(0, 1).reshape(images.shape)
        save_grid(images.numpy(), out / "grids" / f"{name}-s{seed}.png", nrow=10)

    summary = {"base": base, "grid": {k: v for k, v in axes}, "seeds": seeds, "first_seed": first_seed, "steps": plans[0][3].train.steps,
               "batch": plans[0][3].train.batch, "kimg": plans[0][3].train.steps * plans[0][3].train.batch / 1000,
               "n_eval": n_eval, "sets": list(sets), "variants": results}
    for row in results.values():
        row["mean"], row["std"] = {}, {}
        for key, _, _ in COLUMNS:
            values = [r[key] for r in row["runs"] if r.get(key) is not None]
            if values:
                row["mean"][key] = statistics.fmean(values)
                row["std"][key] = statistics.stdev(values) if len(values) > 1 else 0.0
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(table_md(summary))
    return summary


def late_over_best(run: Path, images_seen: int) -> dict[str, Any]:
    """From the run's own evaluations (eval.every_kimg): the worst FID of the second half of the run
    over the best FID; nothing when the run did not evaluate itself."""
    from .files import read_metrics

    evals = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "eval" and "fid" in r]
    late = [r["fid"] for r in evals if r["images_seen"] * 2 > images_seen]
    if not late:
        return {}
    best = min(r["fid"] for r in evals)
    return {"late_over_best": max(late) / best, "evals": [(r["images_seen"], r["fid"]) for r in evals]}


def table_md(summary: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in v["mean"] for v in summary["variants"].values())]
    lines = [f"Sweep of {summary['base']}: {summary['steps']} steps of batch {summary['batch']} "
             f"({summary['kimg']:g}k images) per run, seeds {summary.get('first_seed', 0)}..{summary.get('first_seed', 0) + summary['seeds'] - 1}, overrides "
             f"{summary['sets'] or 'none'}; `dcgan eval` of each run's EMA generator at n = {summary['n_eval']} against "
             f"the test split, mean ± std over the seeds.", "",
             "| variant | " + " | ".join(title for _, title, _ in cols) + " | FID per seed |",
             "|---|" + "---|" * (len(cols) + 1)]
    for name, row in summary["variants"].items():
        cells = []
        for key, _, fmt in cols:
            if key in row["mean"]:
                cells.append(fmt.format(row["mean"][key]) + (" ± " + fmt.format(row["std"][key]) if summary["seeds"] > 1 else ""))
            else:
                cells.append("–")
        per = ", ".join(f"{r['fid']:.2f}" for r in row["runs"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {per} |")
    return "\n".join(lines) + "\n"
