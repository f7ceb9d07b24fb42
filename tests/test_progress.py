"""Progress output of `dcgan train` (a bar on a terminal, plain tick lines elsewhere, nothing with
--quiet) and TensorBoard logging (scalars, grids, eval metrics; each step once after a resume)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import TINY, needs_mnist
from dcgan import checkpoint
from dcgan.cli import main
from dcgan.progress import TrainProgress, bars_enabled, showing, steps

SETS = [a for s in TINY for a in ("--set", s)]  # tick every 5 steps


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.delenv("DCGAN_PROGRESS", raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def train(out, steps, *extra):
    return main(["train", "mnist-cdcgan", "--steps", str(steps), "--device", "cpu", "--out", str(out), *SETS, *extra])


def test_bars_follow_the_terminal_and_the_environment(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    assert bars_enabled(Tty()) and not bars_enabled(open(__file__))
    monkeypatch.setenv("DCGAN_PROGRESS", "0")
    assert not bars_enabled(Tty())
    monkeypatch.setenv("DCGAN_PROGRESS", "1")
    assert bars_enabled(open(__file__))


def test_library_loops_show_a_bar_only_inside_showing(capsys, monkeypatch):
    monkeypatch.setenv("DCGAN_PROGRESS", "1")
    assert steps(range(3), desc="generate") == range(3)  # e.g. the grids during training: no bar
    with showing():
        assert list(steps(range(3), desc="generate")) == [0, 1, 2]
    assert "generate" in capsys.readouterr().err
    monkeypatch.setenv("DCGAN_PROGRESS", "0")
    with showing():
        assert steps(range(3), desc="generate") == range(3)


def test_train_progress_bar_shows_the_tick_record(capsys):
    p = TrainProgress(enabled=True)
    p.start(0, 100)
    p.log("a message")
    record = {"step": 50, "images_seen": 3200, "img_per_s": 1234.0, "d_loss": 1.25, "g_loss": 0.75,
              "d_real": 0.6, "d_fake": 0.4}
    p.tick(record, "step 50/100 (the plain line)")
    p.tick({**record, "step": 20}, "rolled back")  # a rollback: the count goes back
    p.close()
    err = capsys.readouterr().err
    assert "a message" in err and "plain line" not in err
    for text in ("50/100", "img 3.2k", "1234 img/s", "d_loss 1.250", "g_loss 0.750", "D(x) 0.600", "D(G(z)) 0.400"):
        assert text in err, text


def test_quiet_train_progress_prints_nothing(capsys):
    p = TrainProgress(quiet=True, enabled=True)
    p.start(0, 10)
    p.log("x")
    p.tick({"step": 5}, "y")
    p.close()
    assert capsys.readouterr().err == ""


@needs_mnist
def test_not_a_terminal_prints_the_plain_tick_lines(tmp_path, capsys):
    assert not sys.stderr.isatty()  # capsys
    assert train(tmp_path / "run", 10) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 10
    for step in (5, 10):
        assert f"step {step}/10  d_loss " in err and "D(G(z)) " in err
    assert "\r" not in err and "it/s" not in err  # no bar


@needs_mnist
def test_forced_bar_replaces_the_tick_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DCGAN_PROGRESS", "1")
    assert train(tmp_path / "run", 10) == 0
    err = capsys.readouterr().err
    assert "step 5/10  d_loss" not in err and "training mnist" in err
    assert "10/10" in err and "D(G(z))" in err and "img/s" in err


@needs_mnist
def test_quiet_prints_only_the_summary(tmp_path, capsys):
    assert train(tmp_path / "run", 10, "--quiet") == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert len(out.splitlines()) == 1 and json.loads(out)["step"] == 10


# ---- the time-based progress lines (Heartbeat) -----------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_heartbeat_first_after_10_s_then_every_period_from_steps_and_wall_time():
    from dcgan.progress import Heartbeat

    clock = Clock()
    hb = Heartbeat(every_s=20.0, total=10_000, batch=64, clock=clock)
    assert not hb.due(1)  # the first step sets the reference
    clock.t += 9.9
    assert not hb.due(30)
    clock.t += 0.1  # 10 s after the first step
    assert hb.due(31)
    record, line = hb.beat(41, 41 * 64)  # 40 steps in 10 s
    assert record["img_per_s"] == pytest.approx(4 * 64) and record["eta_s"] == pytest.approx((10_000 - 41) / 4)
    assert line == "step 41/10000 (0.4%)  2.6k images  256 img/s  ETA 41:30"
    clock.t += 19.9
    assert not hb.due(100)
    clock.t += 0.1
    assert hb.due(121)
    record, _ = hb.beat(121, 121 * 64)  # 80 steps in the 20 s since the previous line
    assert record["img_per_s"] == pytest.approx(4 * 64)
    hb.restart(121)  # e.g. after an evaluation: no steps since, so nothing to say yet
    clock.t += 30
    assert not hb.due(121) and hb.due(122)


def test_heartbeat_off_and_short_periods():
    from dcgan.progress import Heartbeat, duration

    clock = Clock()
    off = Heartbeat(every_s=0, total=10, batch=1, clock=clock)
    clock.t += 1e6
    assert not off.due(0) and not off.due(5)
    short = Heartbeat(every_s=3.0, total=10, batch=1, clock=clock)  # first after min(10, 3) s
    short.due(0)
    clock.t += 3.0
    assert short.due(1)
    assert duration(59.4) == "0:59" and duration(3725) == "1:02:05" and duration(float("inf")) == "?"


def test_the_default_progress_period_says_something_within_10_seconds():
    from dcgan.config import Config
    from dcgan.progress import FIRST_BEAT_S

    assert 15 <= Config().train.progress_seconds <= 30 and FIRST_BEAT_S <= 10


@needs_mnist
def test_progress_lines_come_between_ticks_in_a_log_and_not_in_metrics(tmp_path, capsys):
    assert train(tmp_path / "run", 12, "--set", "train.progress_seconds=0.001", "--tick-every", "6") == 0
    err = capsys.readouterr().err.splitlines()
    beats = [line for line in err if "ETA" in line]
    assert beats and all(" img/s  ETA " in line and line.startswith("step ") for line in beats)
    assert any(line.startswith("step 2/12 ") for line in beats)  # long before the first tick (step 6)
    assert err.index(beats[0]) < err.index(next(line for line in err if line.startswith("step 6/12  d_loss")))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [6, 12]  # metrics.jsonl holds the ticks only


@needs_mnist
def test_progress_lines_read_nothing_from_the_device(tmp_path, capsys, monkeypatch):
    """A line at every step reads no tensor more than a run without them: the ticks' losses and the
    health counters are all the loop reads (on a GPU, each read is a sync)."""
    reads = {"n": 0}
    for name in ("item", "tolist", "__float__", "__bool__", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            reads["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for seconds in ("0", "0.000001"):
        reads["n"] = 0
        assert train(tmp_path / f"run{seconds}", 10, "--quiet", "--set", f"train.progress_seconds={seconds}",
                     "--tick-every", "100") == 0
        counts.append(reads["n"])
    assert counts[0] == counts[1] and counts[0] > 0


@needs_mnist
def test_the_bar_moves_and_shows_img_s_before_the_first_tick(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DCGAN_PROGRESS", "1")
    assert train(tmp_path / "run", 12, "--set", "train.progress_seconds=0.001", "--tick-every", "12") == 0
    err = capsys.readouterr().err
    early = [f for f in err.split("\r") if any(f.startswith(f"train {n}/12 ") for n in range(1, 12))]
    assert early and all("img/s" in f and "d_loss" not in f for f in early)  # no losses before the first tick
    assert "ETA" not in err  # on a terminal the bar says it (tqdm's remaining time), not extra lines


# ---- TensorBoard --------------------------------------------------------------------------------

def events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def raw_steps(run, tag):
    """Every (step) of `tag` in the event files as written, purges not applied."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and any(v.tag == tag for v in event.summary.value):
                steps.append(event.step)
    return steps


@needs_mnist
@pytest.mark.parametrize("crash", [False, True])
def test_tensorboard_scalars_and_grids_continue_after_resume(tmp_path, capsys, crash):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    tb = ("--set", "train.tensorboard=true", "--checkpoint-every", "10", "--quiet")
    assert train(run, 10, *tb) == 0
    step_10 = checkpoint.checkpoint_dir(run) / checkpoint.name_for(10)
    complete_10 = step_10.read_bytes()  # complete while it is the newest; made slim once step 20's is in place
    assert train(run, 20, *tb, "--resume") == 0
    if crash:  # the run died after step 20's tick but before its checkpoint: resume from 10, still complete then
        (checkpoint.checkpoint_dir(run) / checkpoint.name_for(20)).unlink()
        step_10.write_bytes(complete_10)
    assert train(run, 40, *tb, "--resume") == 0
    capsys.readouterr()
    acc = events(run)
    ticks = [5, 10, 15, 20, 25, 30, 35, 40]
    for tag in ("loss/d_loss", "loss/g_loss", "D/real", "D/fake", "speed/img_per_s"):
        assert [e.step for e in acc.Scalars(tag)] == ticks, tag
    grids = acc.Images("grid")
    assert [e.step for e in grids] == ticks and grids[0].width > 0 and grids[0].height > 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    d_loss = {r["step"]: r["d_loss"] for r in metrics if r.get("kind") == "train"}
    assert {e.step: e.value for e in acc.Scalars("loss/d_loss")} == pytest.approx(d_loss)
    written = raw_steps(run, "loss/d_loss")
    if crash:  # steps 15 and 20 were written twice; the purge at the resume drops the first ones
        assert sorted(written) == sorted(ticks + [15, 20])
    else:
        assert written == ticks


@needs_mnist
def test_tensorboard_has_the_eval_metrics(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert train(run, 10, "--quiet", "--set", "train.tensorboard=true", "--set", "eval.every_kimg=0.64",
                 "--set", "eval.n=200") == 0
    capsys.readouterr()
    acc = events(run)
    assert [e.step for e in acc.Scalars("eval/fid")] == [10]
    assert [e.step for e in acc.Scalars("eval/label_accuracy")] == [10]


@needs_mnist
def test_tensorboard_missing_exits_2_with_the_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    run = tmp_path / "run"
    assert train(run, 10, "--quiet", "--set", "train.tensorboard=true") == 2
    err = capsys.readouterr().err
    assert err.startswith("dcgan: error:") and "pip install dcgan[tensorboard]" in err
    assert not run.exists()  # nothing written


@needs_mnist
def test_tensorboard_changes_no_weights(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    assert train(tmp_path / "off", 10, "--quiet") == 0
    assert train(tmp_path / "on", 10, "--quiet", "--set", "train.tensorboard=true") == 0
    a, b = checkpoint.latest(tmp_path / "off")[1], checkpoint.latest(tmp_path / "on")[1]
    for which in ("G", "D", "G_ema"):
        for k, v in a["models"][which].items():
            assert torch.equal(v, b["models"][which][k]), f"{which}.{k}"


@pytest.mark.parametrize("forced, shown", [("1", True), ("0", False)])
def test_sample_and_eval_show_bars_only_when_enabled(tmp_path, capsys, monkeypatch, forced, shown):
    run = tmp_path / "run"
    assert train(run, 2) == 0
    capsys.readouterr()
    monkeypatch.setenv("DCGAN_PROGRESS", forced)
    assert main(["sample", str(run), "--n", "30", "--batch-size", "10", "--out", str(tmp_path / "s.npz")]) == 0
    assert ("generate:" in capsys.readouterr().err) == shown  # tqdm writes "desc: 100%|..."
    assert main(["eval", str(run), "--n", "20", "--metrics", "fid"]) == 0
    err = capsys.readouterr().err
    assert ("features:" in err) == shown
