#!/usr/bin/env python3
"""The MNIST recipe search and check, in one process on one CUDA machine (the sweeps share the process:
no start-up per run). In order, each part skipped when the time left (--budget seconds from the start)
is less than its estimate, each result copied to OUT as soon as it exists:

  1. screen: mnist-cdcgan, seed 0, --kimg K, the preset's recipe against candidate changes (a grid);
  2. pick: the candidate with the lowest FID among those with recall >= 0.80 (else the lowest FID);
  3. confirm: the pick on mnist-cdcgan and mnist-dcgan over 3 seeds with evaluations every 32k images
     (for the late/best ratio), and the preset's own recipe over 3 seeds;
  4. long: the pick on mnist-cdcgan 4x as long, seed 0.

    DCGAN_DATA=... python3 scripts/gpu_recipe.py OUT [--work DIR] [--budget 280] [--device cuda] [--rehearsal]
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

from dcgan.sweep import sweep  # noqa: E402

SCREEN = ["optim.lr_decay=0,0.5", "loss.r1_gamma=0,0.1"]  # with loss.r1_every=4 (lazy R1)
COMMON = ["loss.r1_every=4"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--budget", type=float, default=280.0, help="seconds from the start for all parts")
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
    kimg, n = (2, 200) if a.rehearsal else (256, 10000)
    every = ["eval.every_kimg=0.5", "eval.n=200"] if a.rehearsal else ["eval.every_kimg=32", "eval.n=10000"]
    # seconds per run on an H100: 256k images of mnist-cdcgan ~8 s (33,000 img/s), a final `dcgan eval` at
    # n=10,000 a few seconds, an evaluation during training (n=2,000 took 0.03-0.16 s there) well under one
    cost = {"plain": 0.5 if a.rehearsal else 12.0, "evals": 1.0 if a.rehearsal else 13.0}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results = {}

    def left() -> float:
        return a.budget - (time.perf_counter() - t0)

    def run(name: str, preset: str, runs: int, per_run: float, folder: str | None = None, **kw) -> dict | None:
        if left() < runs * per_run:
            log(f"== {name}: skipped ({left():.0f} s left, about {runs * per_run:.0f} s needed)")
            return None
        log(f"== {name} ({left():.0f} s left)")
        t = time.perf_counter()
        where = work / (folder or name)
        try:
            res = sweep(preset, where, device=a.device, n_eval=n, log=log, **kw)
        except Exception as e:  # noqa: BLE001 - one failed part must not cost the others' device time
            log(f"== {name}: FAILED {type(e).__name__}: {e}")
            results[name] = {"failed": f"{type(e).__name__}: {e}"}
            (out / "summary.json").write_text(json.dumps(results))
            return None
        shutil.copy(where / "table.json", out / f"{name}.json")  # table.md: dcgan.sweep.table_md(json)
        results[name] = {"seconds": time.perf_counter() - t}
        (out / "summary.json").write_text(json.dumps(results))  # seconds per part, and the pick
        return res

    screen = run("screen-cdcgan", "mnist-cdcgan", 4, cost["plain"], grid=SCREEN, seeds=1, kimg=kimg, sets=COMMON + tiny)
    if screen is None:
        return 1
    ok = {k: v for k, v in screen["variants"].items() if v["mean"]["recall"] >= 0.80}
    pick = min(ok or screen["variants"], key=lambda k: (ok or screen["variants"])[k]["mean"]["fid"])
    recipe = COMMON + [f"{k}={v}" for k, v in screen["variants"][pick]["assignment"].items()]
    results["pick"] = {"variant": pick, "sets": recipe}
    log(f"== pick: {pick} → {recipe}")
    run("cdcgan-recipe", "mnist-cdcgan", 3, cost["evals"], seeds=3, kimg=kimg, sets=recipe + every + tiny)
    # the preset's own recipe: seed 0 is the screen's run, seeds 1 and 2 are trained beside it
    run("cdcgan-preset", "mnist-cdcgan", 2, cost["plain"], folder="screen-cdcgan", grid=[g.split(",")[0] for g in SCREEN],
        seeds=3, kimg=kimg, sets=COMMON + tiny)
    run("dcgan-recipe", "mnist-dcgan", 3, cost["evals"], seeds=3, kimg=kimg, sets=recipe + every + tiny)
    run("dcgan-preset", "mnist-dcgan", 3, cost["plain"], seeds=3, kimg=kimg, sets=tiny)
    long_every = ["eval.every_kimg=1", "eval.n=200"] if a.rehearsal else ["eval.every_kimg=128", "eval.n=10000"]
    run("cdcgan-recipe-4x", "mnist-cdcgan", 1, 3 * cost["plain"], seeds=1, kimg=4 * kimg, sets=recipe + long_every + tiny)
    log(f"== done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
