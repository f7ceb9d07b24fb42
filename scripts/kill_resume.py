#!/usr/bin/env python3
"""Kill a training run with SIGKILL at random moments, resume it each time, and check that the
final weights are bitwise equal to those of an uninterrupted run of the same length.

    DCGAN_DATA=../shared/data python scripts/kill_resume.py --kills 20

The test suite does the same with 5 kills (tests/test_reliability.py); this is the longer soak.
Exit 0 when every tensor matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dcgan import checkpoint

TINY = ["model.g_width=8", "model.d_width=8", "model.g_fc=32", "model.d_fc=32", "train.tick_every=4"]


def cmd(out: Path, steps: int, *extra: str) -> list[str]:
    sets = [a for s in TINY for a in ("--set", s)]
    return [sys.executable, "-m", "dcgan", "train", "mnist-cdcgan", "--steps", str(steps), "--device", "cpu",
            "--out", str(out), "--checkpoint-every", "2", "--quiet", *sets, *extra]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill timing")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref, run = Path(tmp) / "ref", Path(tmp) / "killed"
        subprocess.run(cmd(ref, args.steps), check=True, capture_output=True)
        kills = 0
        while kills < args.kills:
            before = checkpoint.list_checkpoints(run)
            resume = ("--resume",) if (run / "config.toml").exists() else ()  # the first start: a new run
            proc = subprocess.Popen(cmd(run, args.steps, *resume), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None and checkpoint.list_checkpoints(run) == before:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is not None:
                print(f"run finished after {kills} kills; raise --steps for more", file=sys.stderr)
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            last = checkpoint.list_checkpoints(run)
            print(f"kill {kills}: newest checkpoint {last[-1].name if last else None}", file=sys.stderr)
        subprocess.run(cmd(run, args.steps, "--resume"), check=True, capture_output=True)
        a, b = checkpoint.latest(ref)[1], checkpoint.latest(run)[1]
        bad = [f"{w}.{k}" for w in ("G", "D", "G_ema") for k, v in a["models"][w].items()
               if not torch.equal(v, b["models"][w][k])]
        print(f"{kills} kills, step {b['step']}: {'all tensors equal' if not bad else 'DIFFER: ' + ', '.join(bad)}")
        return 1 if bad or a["step"] != b["step"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
