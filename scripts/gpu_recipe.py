#!/usr/bin/env python3
"""The MNIST recipe search and check, in one process on one CUDA machine (the sweeps share the process:
no start-up per run). In order, each part skipped when the time left (--budget seconds from the start)
is less than its estimate, each result copied to OUT as soon as it exists:

  1. screen: mnist-cdcgan at --kimg K, the preset's recipe and one change at a time (SCREEN), seeds 0 and
     1 each (one seed's FID moved by +-1.3 between seeds at 256k images: one seed cannot rank them);
  2. pick: the changes that beat the preset's FID on both seeds, best mean FID first (recall >= 0.80
     first, when any reaches it); "best" is the first, "combo" all of them together (when more than one);
  3. confirm: best on mnist-cdcgan over 3 seeds with evaluations every 32k images (for late/best);
     the preset and best on mnist-dcgan over 3 seeds (best without its label-only keys);
  4. long: best on mnist-cdcgan 4x as long, seed 0, with evaluations every 128k images; then combo on
     mnist-cdcgan over 3 seeds, if the budget still allows.

OUT/summary.json (seconds per part, the pick), OUT/PART.json (each sweep's table.json) and OUT/screen.md
(the screen's tables, dcgan.sweep.table_md) hold the results.

    DCGAN_DATA=... python3 scripts/gpu_recipe.py OUT [--work DIR] [--budget 540] [--device cuda] [--rehearsal]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcgan.sweep import sweep, table_md  # noqa: E402

# the preset's own recipe (optim.lr_decay=0.5 since the first screen) against one change at a time
SCREEN = {
    "preset": [],
    # decay over the whole run: on the CPU (seed 0, one thread) FID 7.46 -> 6.94, recall 0.788 -> 0.810
    # (docs/RESULTS.md); the EMA's horizon, screened here before, was neutral there (scripts/ema_horizons.py)
    "lr-decay-whole": ["optim.lr_decay=1"],
    "batch-32": ["train.batch=32"],  # twice the updates for the same images
    "spectral-norm": ["model.spectral_norm=true"],
    "projection": ["model.d_cond=projection"],
    "translation": ["train.augment=translation"],
    "hinge": ["loss.kind=hinge"],
    "label-smoothing": ["loss.real_label=0.9"],
}
LABEL_ONLY = ("model.d_cond", "model.g_cond")  # keys mnist-dcgan (no labels) cannot take
SEEDS_SCREEN = 2


def pick(screen: dict[str, dict]) -> list[str]:
    """The changes that beat the preset's FID on every screened seed, best mean FID first (those reaching
    recall 0.80 before the others)."""
    base = {r["seed"]: r["fid"] for r in screen["preset"]["variants"]["base"]["runs"]}
    wins = []
    for name, table in screen.items():
        if name == "preset" or table is None:
            continue
        row = table["variants"]["base"]
        if all(r["fid"] < base[r["seed"]] for r in row["runs"]):
            wins.append((row["mean"]["recall"] < 0.80, row["mean"]["fid"], name))
    return [name for *_, name in sorted(wins)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--budget", type=float, default=540.0, help="seconds from the start for all parts")
    p.add_argument("--device", default="cuda")
    p.add_argument("--rehearsal", action="store_true", help="tiny widths and budgets (a CPU check of the script)")
    p.add_argument("--work", help="folder of the runs (default OUT/work); OUT then holds only the tables")
    a = p.parse_args()
    t0 = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    tiny = ["model.g_width=8", "model.d_width=8", "model.g_fc=32", "model.d_fc=32"] if a.rehearsal else []
    kimg, n = (1, 100) if a.rehearsal else (256, 10000)
    every = ["eval.every_kimg=0.25", "eval.n=100"] if a.rehearsal else ["eval.every_kimg=32", "eval.n=10000"]
    long_every = ["eval.every_kimg=1", "eval.n=100"] if a.rehearsal else ["eval.every_kimg=128", "eval.n=10000"]
    # seconds per run on an H100 (2026-11-26): 256k images of mnist-cdcgan 8-11 s of training, the final
    # `dcgan eval` at n=10,000 a few seconds; 8 evaluations during training at n=10,000 about as much again
    cost = {"plain": 0.5 if a.rehearsal else 14.0, "evals": 1.0 if a.rehearsal else 22.0}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results: dict = {}

    def left() -> float:
        return a.budget - (time.perf_counter() - t0)

    def run(name: str, preset: str, runs: int, per_run: float, **kw) -> dict | None:
        if left() < runs * per_run:
            log(f"== {name}: skipped ({left():.0f} s left, about {runs * per_run:.0f} s needed)")
            results[name] = {"skipped": f"{left():.0f} s left"}
            return None
        log(f"== {name} ({left():.0f} s left)")
        t = time.perf_counter()
        where = work / name
        try:
            res = sweep(preset, where, device=a.device, n_eval=n, log=log, **kw)
        except Exception as e:  # noqa: BLE001 - one failed part must not cost the others' device time
            log(f"== {name}: FAILED {type(e).__name__}: {e}")
            results[name] = {"failed": f"{type(e).__name__}: {e}"}
            (out / "summary.json").write_text(json.dumps(results, indent=1))
            return None
        shutil.copy(where / "table.json", out / f"{name}.json")  # table.md: dcgan.sweep.table_md(json)
        results[name] = {"seconds": round(time.perf_counter() - t, 1), "sets": kw.get("sets", [])}
        (out / "summary.json").write_text(json.dumps(results, indent=1))
        return res

    # 1. the screen: the preset first (every other change is compared with it), then one change at a time
    screen = {}
    for name, sets in SCREEN.items():
        per_run = cost["plain"] * (2 if "train.batch=32" in sets else 1)
        screen[name] = run(f"screen-{name}", "mnist-cdcgan", SEEDS_SCREEN, per_run, seeds=SEEDS_SCREEN, kimg=kimg,
                           sets=sets + tiny)
        if screen["preset"] is None:
            return 1
    # one table per change, each with its own header (batch-32 runs twice the steps)
    (out / "screen.md").write_text("\n".join(table_md(t) for t in screen.values() if t is not None))

    # 2. the pick
    wins = pick(screen)
    best = SCREEN[wins[0]] if wins else []
    combo = [s for w in wins for s in SCREEN[w]] if len(wins) > 1 else None
    results["pick"] = {"wins": wins, "best": best, "combo": combo}
    log(f"== pick: wins {wins or 'none'}; best {best}; combo {combo}")
    (out / "summary.json").write_text(json.dumps(results, indent=1))

    # 3. confirm over 3 seeds, with the evaluations that give late/best
    if best:
        run("cdcgan-best", "mnist-cdcgan", 3, cost["evals"], seeds=3, kimg=kimg, sets=best + every + tiny)
    run("dcgan-preset", "mnist-dcgan", 3, cost["evals"], seeds=3, kimg=kimg, sets=every + tiny)
    unlabelled = [s for s in best if not s.startswith(LABEL_ONLY)]
    if unlabelled:
        run("dcgan-best", "mnist-dcgan", 3, cost["evals"], seeds=3, kimg=kimg, sets=unlabelled + every + tiny)
    # 4. four times as long: does the recipe hold? Then the combination, the most speculative part
    run("cdcgan-best-4x", "mnist-cdcgan", 1, 4 * cost["evals"], seeds=1, kimg=4 * kimg, sets=best + long_every + tiny)
    if combo:
        run("cdcgan-combo", "mnist-cdcgan", 3, cost["evals"], seeds=3, kimg=kimg, sets=combo + every + tiny)
    log(f"== done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
