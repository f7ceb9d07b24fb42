"""Crash safety: kills at random moments, clean stops on signals, refusal of unsafe files."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcgan import checkpoint
from dcgan.cli import main

from conftest import TINY, needs_mnist

pytestmark = needs_mnist

# Bitwise equality holds for the same device and CPU thread count: every run here uses one thread,
# whether it runs in a subprocess or in this process.
SETS = [a for s in TINY + ["train.tick_every=4", "train.num_threads=1"] for a in ("--set", s)]


def train_args(out: Path, steps: int, *extra: str, every: int = 2) -> list[str]:
    return ["train", "mnist-cdcgan", "--steps", str(steps), "--device", "cpu", "--out", str(out),
            "--checkpoint-every", str(every), "--quiet", *SETS, *extra]


def train_cmd(out: Path, steps: int, *extra: str, every: int = 2) -> list[str]:
    return [sys.executable, "-m", "dcgan", *train_args(out, steps, *extra, every=every)]


def final_state(run: Path) -> dict:
    path, state = checkpoint.latest(run)
    return state


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for which in ("G", "D", "G_ema"):
        for k, v in a["models"][which].items():
            assert torch.equal(v, b["models"][which][k]), f"{which}.{k} differs"
    for which in ("G", "D"):
        sa, sb = a["optim"][which]["state"], b["optim"][which]["state"]
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f"optim {which}[{i}].{k}"


def test_sigkill_at_random_moments_then_resume_is_bitwise_exact(tmp_path):
    steps = 24
    ref = tmp_path / "ref"  # the uninterrupted run, in this process (the same one-thread CPU run)
    assert main(train_args(ref, steps)) == 0

    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    while kills < 4:
        resume = ("--resume",) if (run / "config.toml").exists() else ()  # a first start, or one killed before its folder
        proc = subprocess.Popen(train_cmd(run, steps, *resume), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until training is under way (a checkpoint newer than before exists), then kill at a random instant
        before = len(checkpoint.list_checkpoints(run)) and checkpoint.list_checkpoints(run)[-1]
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            cks = checkpoint.list_checkpoints(run)
            if cks and cks[-1] != before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            break  # finished before we could kill it: the run is complete
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 3, "the run finished too quickly to be killed repeatedly; raise the step count"
    assert main(train_args(run, steps, "--resume")) == 0  # the last resume, in this process
    assert_same_training_state(final_state(ref), final_state(run))
    # no torn temporary files are left behind, and every checkpoint present is readable
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    for p in checkpoint.list_checkpoints(run):
        checkpoint.load(p)
    # the metrics log has each tick exactly once
    import json
    steps_logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == sorted(set(steps_logged)) == list(range(4, steps + 1, 4))


def test_sigterm_stops_cleanly_with_143_and_resume_continues_exactly(tmp_path):
    steps = 400
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run, steps, every=1000),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err.decode()
    cks = checkpoint.list_checkpoints(run)
    assert len(cks) == 1, "the stop must write a checkpoint even though checkpoint_every was not reached"
    stopped_at = checkpoint.load(cks[0])["step"]
    assert 0 < stopped_at < steps
    # continue to a few steps past the stop, and compare with a straight run of the same length
    target = stopped_at + 3
    assert main(["train", "mnist-cdcgan", "--steps", str(target), "--device", "cpu", "--out", str(run),
                 "--resume", "--quiet", *SETS, "--set", "train.checkpoint_every=1000"]) == 0
    ref = tmp_path / "ref"
    assert main(["train", "mnist-cdcgan", "--steps", str(target), "--device", "cpu", "--out", str(ref),
                 "--quiet", *SETS, "--set", "train.checkpoint_every=1000"]) == 0
    assert_same_training_state(final_state(ref), final_state(run))


class _Marker:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-save", "fake-header"])
def test_crafted_pickles_are_refused_by_sample_eval_and_resume(tmp_path, kind, capsys):
    marker = tmp_path / "marker"
    bad = tmp_path / "evil.ckpt"
    payload = {"models": _Marker(str(marker))}
    if kind == "raw-pickle":
        bad.write_bytes(pickle.dumps(payload))
    elif kind == "torch-save":
        torch.save(payload, bad)
    else:  # a correct dcgan header and hash around a malicious payload: the safe loader must refuse it
        import hashlib
        import io
        import json
        buf = io.BytesIO()
        torch.save(payload, buf)
        body = buf.getvalue()
        header = {"format_version": checkpoint.FORMAT_VERSION, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
        bad.write_bytes(checkpoint.MAGIC + json.dumps(header).encode() + b"\n" + body)

    assert main(["sample", str(bad), "--n", "4", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["eval", str(bad), "--n", "20"]) == 2
    # a run folder whose newest checkpoint is the crafted file
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-000000100.ckpt").write_bytes(bad.read_bytes())
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "y.png")]) == 2
    assert main(["eval", str(run), "--n", "20"]) == 2
    rc = main(["train", "mnist-cdcgan", "--steps", "2", "--device", "cpu", "--out", str(run), "--resume", "--quiet", *SETS])
    # resume refuses a run whose checkpoints are all unreadable, naming the file; it never unpickles it
    assert rc == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "step-000000100.ckpt" in err and "cannot resume" in err
