"""Measure how the EMA generator's averaging horizon changes its scores, from one training run.

    python scripts/ema_horizons.py train OUT 2000,3000,4000 -- mnist-cdcgan --seed 0 --kimg 256 --out RUN
    python scripts/ema_horizons.py eval RUN OUT [--n 10000] [--glob "*-4000.pt"]

`train` runs `dcgan train` with the arguments after `--` and, beside the run's own EMA, keeps one
average of G's weights per horizon below; at each listed step it writes each of them, and G itself
("raw"), to OUT/NAME-STEP.pt. Batch-norm buffers are copied from G, as the run's own EMA does. The
run itself is not changed: its checkpoints and metrics are what `dcgan train` alone gives.
`eval` scores each file with the run's generator architecture, as `dcgan eval RUN --n N` does (FID,
precision / recall, label accuracy against the test split).

Horizons: "ramp10" is what dcgan does (decay min(0.999, (1 + t) / (10 + t)) after step t, a half-life
of about 7.7% of the steps so far); "fF" has a half-life of F times the steps so far."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def _fraction(f: float):
    return lambda t: 0.5 ** (1.0 / max(f * (t + 1), 1.0))


HORIZONS = {"ramp10": lambda t: min(0.999, (1 + t) / (10 + t)),
            "f0.05": _fraction(0.05), "f0.15": _fraction(0.15), "f0.25": _fraction(0.25), "f0.4": _fraction(0.4)}


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
        return ok

    tr.Trainer.train_step = train_step
    return main(["train", *args])


def evaluate(run: str, folder: Path, n: int, pattern: str) -> None:
    from dcgan.checkpoint import load_generator
    from dcgan.metrics.evaluate import fid_of_generator

    G, _ = load_generator(run)
    for f in sorted(folder.glob(pattern)):
        G.load_state_dict(torch.load(f))
        G.eval()
        metrics = ["fid", "precision_recall"] + (["label_accuracy"] if G.num_classes else [])
        r = fid_of_generator(G, n=n, metrics=metrics)
        pr, acc = r["precision_recall"], (r.get("label_accuracy") or {}).get("accuracy", float("nan"))
        print(f"{f.stem:14s} FID {r['fid']:.2f}  precision {pr['precision']:.3f}  recall {pr['recall']:.3f}  "
              f"label accuracy {acc:.4f}", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["train"] and "--" in a:
        sys.exit(train(Path(a[1]), {int(s) for s in a[2].split(",")}, a[a.index("--") + 1:]))
    if a[:1] == ["eval"] and len(a) >= 3:
        opts = dict(zip(a[3::2], a[4::2]))
        evaluate(a[1], Path(a[2]), int(opts.get("--n", 10000)), opts.get("--glob", "*.pt"))
        sys.exit(0)
    sys.exit(__doc__)
