"""Health: non-finite steps are skipped, persistent ones roll back, divergence stops cleanly;
evaluation during training writes eval lines, keeps the best checkpoint and stops at a target FID."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY, needs_mnist, wrap_training_batches
from dcgan import checkpoint
from dcgan.cli import main

pytestmark = needs_mnist

SETS = [a for s in TINY for a in ("--set", s)]


def train(out, steps, *extra):
    return main(["train", "mnist-cdcgan", "--steps", str(steps), "--device", "cpu", "--out", str(out),
                 "--quiet", *SETS, *extra])


def lines(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == kind]


def assert_all_checkpoints_finite(run):
    paths = checkpoint.list_checkpoints(run)
    assert paths
    for p in paths:
        state = checkpoint.load(p)
        for which, weights in state["models"].items():  # G, D, G_ema; a slim one the EMA generator only
            for k, v in weights.items():
                if v.is_floating_point():
                    assert torch.isfinite(v).all(), f"{p.name} {which}.{k}"


def test_nan_batches_are_skipped_then_rolled_back_and_the_run_finishes(tmp_path, monkeypatch, capsys):
    poisoned = set()

    def poison_once(step, x, y):  # steps 9..11 get a NaN batch, the first time they are seen only
        if 9 <= step <= 11 and step not in poisoned:
            poisoned.add(step)
            return x * float("nan"), y
        return x, y

    wrap_training_batches(monkeypatch, poison_once)
    run = tmp_path / "run"
    assert train(run, 20, "--checkpoint-every", "5", "--set", "train.max_bad_steps=3") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rollbacks"] == 1 and summary["skipped_steps"] == 3 and summary["step"] == 20
    warnings = lines(run, "warning")
    assert len(warnings) == 1 and "at step 12: rolled back to step 10" in warnings[0]["message"]
    assert_all_checkpoints_finite(run)
    # the learning rates were lowered by the rollback and the checkpoints remember it
    state = checkpoint.load(checkpoint.list_checkpoints(run)[-1])
    assert state["optim"]["D"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * 0.5)
    # the metrics log holds every tick exactly once despite the replayed steps
    steps = [r["step"] for r in lines(run, "train")]
    assert steps == sorted(set(steps)) == list(range(5, 21, 5))


def test_a_few_nan_batches_are_only_skipped(tmp_path, monkeypatch, capsys):
    wrap_training_batches(monkeypatch, lambda step, x, y: (x * float("nan") if step in (3, 7) else x, y))
    run = tmp_path / "run"
    assert train(run, 10, "--set", "train.max_bad_steps=3") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_steps"] == 2 and summary["rollbacks"] == 0
    assert_all_checkpoints_finite(run)


def test_persistent_nan_stops_with_a_clear_error_and_no_bad_checkpoint(tmp_path, monkeypatch, capsys):
    wrap_training_batches(monkeypatch, lambda step, x, y: (x * float("nan") if step >= 6 else x, y))
    run = tmp_path / "run"
    rc = train(run, 30, "--checkpoint-every", "4", "--set", "train.max_bad_steps=2", "--set", "train.max_rollbacks=2")
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dcgan: error: training diverged") and "lr_g" in err
    assert len(lines(run, "warning")) == 2  # two rollbacks, then the stop
    assert_all_checkpoints_finite(run)


def test_evaluation_during_training_keeps_the_best_and_stops_at_the_target(tmp_path, capsys):
    run = tmp_path / "run"
    # eval every 640 images (10 steps); a target every model meets stops the run at the first evaluation
    assert train(run, 40, "--set", "eval.every_kimg=0.64", "--set", "eval.n=200", "--target-fid", "1e9") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 10 and summary["time_to_target_s"] > 0 and summary["best_step"] == 10
    evals = lines(run, "eval")
    assert len(evals) == 1 and math.isfinite(evals[0]["fid"]) and evals[0]["generator"] == "ema"
    assert evals[0]["protocol"]["n_fake"] == 200 and "label_accuracy" in evals[0]
    assert (run / "checkpoints" / checkpoint.BEST).is_file()
    assert checkpoint.load(run / "checkpoints" / checkpoint.BEST)["step"] == 10


def test_evaluation_every_kimg_without_target_runs_to_the_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, 20, "--set", "eval.every_kimg=0.64", "--set", "eval.n=200") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 20 and summary["time_to_target_s"] is None
    evals = lines(run, "eval")
    assert [e["step"] for e in evals] == [10, 20]
    best = min(evals, key=lambda e: e["fid"])
    assert summary["best_step"] == best["step"] and summary["best_fid"] == pytest.approx(best["fid"])


def test_target_fid_needs_an_extractor(tmp_path, capsys):
    rc = main(["train", "toy-gaussian", "--steps", "5", "--out", str(tmp_path / "t"), "--quiet", "--target-fid", "1"])
    assert rc == 2
    assert "eval.every_kimg" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
