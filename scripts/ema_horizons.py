"""Measure how the EMA generator's averaging horizon changes its scores, from one training run.

    python scripts/ema_horizons.py train OUT 2000,3000,4000 -- mnist-cdcgan --seed 0 --kimg 256 --out RUN
    python scripts/ema_horizons.py eval RUN OUT [--n 10000] [--glob "*-4000.pt"]

`train` runs `dcgan train` with the arguments after `--` and, beside the run's own EMA, keeps one
average of G's weights per horizon below; at each listed step it writes the run's EMA ("ema"), each
of the others, and G itself ("raw") to OUT/NAME-STEP.pt. Batch-norm buffers are copied from G, as the
run's own EMA does. The run itself is not changed: its checkpoints and metrics are what `dcgan train`
alone gives. `eval` scores each file with the run's generator architecture, as `dcgan eval RUN --n N`
does (FID, precision / recall, label accuracy against the test split).

Horizons: the run's EMA ramps its decay up as min(train.ema_decay, (1 + t) / (10 + t)) after step t
(dcgan/training/ema.py), a half-life of about 7.7% of the steps so far; "fF" has a half-life of F times
the steps so far."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _fraction(f: float):
    return lambda t: 0.5 ** (1.0 / max(f * (t + 1), 1.0))


HORIZONS = {"f0.05": _fraction(0.05), "f0.15": _fraction(0.15), "f0.25": _fraction(0.25), "f0.4": _fraction(0.4)}


def train(out: Path, save_steps: set[int], args: list[str]) -> int:
    from dcgan.cli import main
    from dcgan.training import trainer as tr

    out.mkdir(parents=True, exist_ok=True)
    averages: dict[str, list[torch.Tensor]] = {}
    step_once = tr.Trainer.train_step

    def train_step(self, x, y):
        ok = step_once(self, x, y)
        if not ok:
            return ok
        t = self.step - 1  # the step just taken
        params = list(self.G.parameters())
        with torch.no_grad():
            if not averages:
                averages.update({k: [p.detach().clone() for p in params] for k in HORIZONS})
            for k, decay in HORIZONS.items():
                torch._foreach_lerp_(averages[k], params, 1.0 - decay(t))
        if self.step in save_steps:
            names = [n for n, _ in self.G.named_parameters()]
            buffers = {n: b.detach().clone() for n, b in self.G.named_buffers()}
            for k, avg in [*averages.items(), ("raw", [p.detach() for p in params])]:
                torch.save({**dict(zip(names, [p.clone() for p in avg])), **buffers}, out / f"{k}-{self.step}.pt")
            if self.ema is not None:
                torch.save(self.ema.model.state_dict(), out / f"ema-{self.step}.pt")
        return ok

    tr.Trainer.train_step = train_step
    return main(["train", *args])


def evaluate(run: str, folder: Path, n: int, pattern: str) -> None:
    from dcgan.checkpoint import load_generator
    from dcgan.metrics.evaluate import fid_of_generator, summary_line

    G, _ = load_generator(run)
    for f in sorted(folder.glob(pattern)):
        G.load_state_dict(torch.load(f))
        G.eval()
        metrics = ["fid", "precision_recall"] + (["label_accuracy"] if G.num_classes else [])
        print(f"{f.stem:14s} {summary_line(fid_of_generator(G, n=n, metrics=metrics))}", flush=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train with `dcgan train` arguments after --, writing the averages")
    t.add_argument("out", type=Path)
    t.add_argument("steps", help="comma-separated steps at which to write them")
    e = sub.add_parser("eval", help="score every file of OUT")
    e.add_argument("run")
    e.add_argument("out", type=Path)
    e.add_argument("--n", type=int, default=10000)
    e.add_argument("--glob", default="*.pt")
    a = ap.parse_args(argv)
    if a.command == "train":
        if not train_args:
            ap.error("train needs the dcgan train arguments after --")
        sys.exit(train(a.out, {int(s) for s in a.steps.split(",")}, train_args))
    evaluate(a.run, a.out, a.n, a.glob)
