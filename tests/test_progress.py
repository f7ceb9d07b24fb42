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
    assert train(run, 20, *tb) == 0
    if crash:  # the run died after step 20's tick but before its checkpoint: resume from 10
        (checkpoint.checkpoint_dir(run) / checkpoint.name_for(20)).unlink()
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
