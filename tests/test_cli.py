"""Tests for the `dcgan` command itself: entry point, exit codes, one-line errors."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

import dcgan
from conftest import REPO_ROOT
from dcgan.cli import main
from dcgan.config import preset_names, read_preset


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "dcgan", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=timeout)


# ---- real processes (python -m dcgan) -----------------------------------------------------------

def test_console_entry_lists_presets():
    p = run_cli("presets")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == len(preset_names())
    for name, line in zip(preset_names(), lines):
        assert line.startswith(name)
        assert read_preset(name)["description"] in line


class Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_console_entry_error_is_one_line_without_traceback(tmp_path):
    """A pickle given to `sample`: exit 2, one line on stderr, and the pickle is never executed."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps(Marker(marker)))
    p = run_cli("sample", str(evil), "--out", str(tmp_path / "s.npz"))
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("dcgan: error: ")
    assert "Traceback" not in p.stderr
    assert str(evil) in p.stderr
    assert not marker.exists() and not (tmp_path / "s.npz").exists()


# ---- in-process -------------------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dcgan {dcgan.__version__}"


def test_presets_in_process(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert name in out and read_preset(name)["source"] in out


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["train"], ["sample", "x"], ["train", "mnist-dcgan", "--steps", "many"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--set", "train.bach=3"], ["train.bach", "batch"]),
    (["--set", "nope.x=1"], ["nope.x", "model"]),
    (["--set", "train.batch=abc"], ["train.batch", "integer"]),
    (["--set", "model.conditional=3"], ["model.conditional", "true or false"]),
    (["--set", "data.resolution=50"], ["data.resolution", "50"]),
    (["--set", "optim.lr_d=0"], ["lr_d"]),
    (["--steps", "-5"], ["train.steps"]),
    (["--set", "noequals"], ["section.key=value"]),
])
def test_config_errors_exit_2_before_anything_is_written(tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    assert main(["train", "mnist-dcgan", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dcgan: error: ")
    for w in words:
        assert w in lines[0]
    assert not out.exists()


def test_unknown_preset_lists_presets(capsys):
    assert main(["train", "no-such-preset", "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("dcgan: error: ") and "no-such-preset" in line
    for name in preset_names():
        assert name in line


def test_resume_needs_a_run(capsys):
    assert main(["train", "mnist-dcgan", "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", "mnist-dcgan", "--out", str(f), "--steps", "1", "--device", "cpu"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_a_toml_file_that_does_not_exist(tmp_path, capsys):
    assert main(["train", str(tmp_path / "mine.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- one flag vocabulary --------------------------------------------------------------------------

def subparsers():
    """{command: its parser} of `dcgan`."""
    import argparse

    from dcgan.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


# the commands that run a model: (shows progress, so takes --quiet; has a batch size, so takes --batch)
MODEL_COMMANDS = {"train": (True, True), "sample": (True, True), "experiment": (True, True), "bench": (True, True),
                  "eval": (True, True), "sweep": (True, True), "interpolate": (False, False), "export": (False, False)}


def test_every_option_and_positional_has_a_help_line():
    import argparse

    missing = []
    for name, parser in subparsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue  # -h, and the hidden old spellings
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_commands_that_run_a_model_share_the_flags(command):
    """--device (one help, one check), --seed, --data-dir everywhere; --quiet where progress is shown;
    --batch where there is a batch size; --steps only ever means training steps."""
    import argparse

    from dcgan.cli import DEVICE_HELP

    quiet, batch = MODEL_COMMANDS[command]
    options = subparsers()[command]._option_string_actions
    for flag in ("--device", "--seed", "--data-dir"):
        assert flag in options, f"{command} {flag}"
    assert options["--device"].help.startswith(DEVICE_HELP)
    assert ("--quiet" in options) == quiet and ("--batch" in options) == batch
    if "--batch-size" in options:
        assert options["--batch-size"].help == argparse.SUPPRESS  # a hidden old spelling
    if "--steps" in options and options["--steps"].help != argparse.SUPPRESS:
        assert "training steps" in options["--steps"].help


@pytest.mark.parametrize("argv", [
    ["sample", "RUN", "--out", "{tmp}/s.png"],
    ["interpolate", "RUN", "--seed", "1", "--to-seed", "2", "--out", "{tmp}/i.png"],
    ["export", "RUN", "--format", "hf", "--out", "{tmp}/hf"],
    ["bench", "mnist-dcgan", "--iters", "1"],
    ["train", "mnist-dcgan", "--steps", "1", "--out", "{tmp}/run"],
    ["experiment", "conditioning", "--steps", "1", "--out", "{tmp}/exp"],
    ["eval", "RUN"],
    ["sweep", "mnist-dcgan", "--steps", "1", "--out", "{tmp}/sweep"],
])
@pytest.mark.parametrize("device", ["cuda:99", "foo"])
def test_a_device_that_is_not_here_is_one_line_and_exit_2_in_every_command(argv, device, tmp_path, capsys):
    """cuda:99 is valid but absent (no CUDA, or fewer devices), foo is not a device: both exit 2 with one
    line naming --device, before anything is read or written."""
    argv = [a.replace("{tmp}", str(tmp_path)).replace("RUN", str(tmp_path / "no-run")) for a in argv]
    capsys.readouterr()
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dcgan: error: ") and device in err and "device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_old_spellings_still_parse_with_a_one_line_notice(capsys):
    from dcgan.cli import build_parser

    parser = build_parser()
    capsys.readouterr()
    assert parser.parse_args(["bench", "mnist-dcgan", "--steps", "7"]).iters == 7
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--steps is deprecated" in err[0] and "--iters" in err[0]
    assert parser.parse_args(["bench", "mnist-dcgan"]).iters == 200  # the default is --iters'
    assert parser.parse_args(["interpolate", "R", "--steps", "5", "--out", "x.png"]).frames == 5
    assert "--frames" in capsys.readouterr().err
    # the batch flag: --batch everywhere; sample's old --batch-size is a silent hidden alias
    assert parser.parse_args(["sample", "R", "--out", "x.png", "--batch-size", "9"]).batch_size == 9
    assert parser.parse_args(["sample", "R", "--out", "x.png", "--batch", "9"]).batch_size == 9
    assert parser.parse_args(["sample", "R", "--out", "x.png"]).batch_size == 500
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["train", "p", "--batch", "32"]).batch == 32
    assert parser.parse_args(["eval", "RUN", "--batch", "32"]).batch_size == 32
    assert parser.parse_args(["eval", "RUN"]).batch_size is None  # eval's default (500; train-classifier 128)
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["eval", "RUN", "--batch-size", "32"]).batch_size == 32  # eval's old spelling
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--batch-size is deprecated" in err[0] and "use --batch" in err[0]
    assert parser.parse_args(["sweep", "p", "--out", "o", "--batch", "32"]).batch_size == 32


def test_sweep_batch_seed_and_quiet_reach_every_run(monkeypatch, tmp_path, capsys):
    """sweep --batch B is --set train.batch=B for every run, --seed the first seed, --quiet silences
    the runs' lines and the bars."""
    import dcgan.sweep
    from dcgan.progress import steps

    seen = {}

    def fake_sweep(base, out, **kw):
        empty: list = []
        bar = steps(empty)
        seen.update(kw, bars=bar is not empty)  # a bar object only where bars are shown
        getattr(bar, "close", lambda: None)()
        return {"variants": {}}

    monkeypatch.setattr(dcgan.sweep, "sweep", fake_sweep)
    monkeypatch.setenv("DCGAN_PROGRESS", "1")  # bars as on a terminal
    assert main(["sweep", "p", "--out", str(tmp_path / "s"), "--steps", "2", "--set", "loss.r1_gamma=1",
                 "--batch", "32", "--seed", "4", "--seeds", "2", "--quiet"]) == 0
    assert seen["sets"] == ["loss.r1_gamma=1", "train.batch=32"] and seen["first_seed"] == 4 and seen["seeds"] == 2
    assert seen["log"]("a line") is None and seen["bars"] is False
    assert capsys.readouterr().err == ""
    assert main(["sweep", "p", "--out", str(tmp_path / "s"), "--steps", "2"]) == 0
    assert seen["sets"] == [] and seen["first_seed"] == 0 and seen["log"] is None
    capsys.readouterr()
    # and the real sweep: a bad --batch is the config's error, before any run
    monkeypatch.undo()
    assert main(["sweep", "mnist-dcgan", "--out", str(tmp_path / "t"), "--steps", "1", "--batch", "0",
                 "--device", "cpu"]) == 2
    assert "train.batch" in capsys.readouterr().err and not (tmp_path / "t").exists()
