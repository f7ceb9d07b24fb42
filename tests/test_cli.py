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
