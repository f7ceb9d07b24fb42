"""The suite's own report of the tests it skipped for lack of real MNIST (tests/conftest.py): a run
without MNIST ends by saying how many skipped and how to get it, and DCGAN_REQUIRE_MNIST=1 turns
those skips into a failed run (CI sets it, so losing the data cannot pass CI by skipping).

Each case runs pytest in a subprocess on a small test file beside a copy of this conftest, with
DCGAN_DATA pointed at a folder without MNIST (or with a stand-in file where has_mnist() looks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# Four tests: two skip for lack of MNIST (the marker, and a skip inside the test as the fixtures
# do), one skips for another reason, one passes.
TESTS = '''
import pytest
from conftest import needs_mnist, skip_without_mnist

@needs_mnist
def test_marked():
    pass

def test_skips_inside():
    skip_without_mnist()

def test_other_skip():
    pytest.skip("chromium not found")

def test_plain():
    pass
'''


def run_suite(tmp_path: Path, data: Path | None, require: str | None, *pytest_args: str,
              home: Path | None = None) -> tuple[int, list[str]]:
    """Run pytest on TESTS with DCGAN_DATA=data (unset when None, and HOME=home then) and
    DCGAN_REQUIRE_MNIST=require unless None; returns (exit code, output lines)."""
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    shutil.copy(HERE / "conftest.py", suite / "conftest.py")
    (suite / "test_sample.py").write_text(TESTS)
    (suite / "pytest.ini").write_text("[pytest]\n")  # the rootdir: not this repo's configuration
    # not this run's own settings, nor its xdist worker's (which the copied conftest would read as its own)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DCGAN_REQUIRE_MNIST", "PYTEST_ADDOPTS", "DCGAN_DATA") and not k.startswith("PYTEST_XDIST")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])  # dcgan itself
    if data is not None:
        env["DCGAN_DATA"] = str(data)
    if home is not None:
        env["HOME"] = str(home)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no installed plugins: a fraction of a second a run
    if require is not None:
        env["DCGAN_REQUIRE_MNIST"] = require
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, (proc.stdout + proc.stderr).splitlines()


def mnist_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "skipped for lack of real MNIST" in line]


@pytest.fixture
def no_mnist(tmp_path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_a_run_without_mnist_says_how_many_skipped_and_how_to_get_it(tmp_path, no_mnist):
    """Without DCGAN_REQUIRE_MNIST: exit 0, and one line near the end counting the 2 MNIST skips
    (not the third, unrelated skip) and naming `dcgan prepare mnist` and DCGAN_DATA."""
    rc, lines = run_suite(tmp_path, no_mnist, None)
    assert rc == 0, "\n".join(lines)
    [line] = mnist_lines(lines)
    assert line.startswith("2 tests skipped for lack of real MNIST"), line
    assert "dcgan prepare mnist" in line and "DCGAN_DATA" in line and "DCGAN_REQUIRE_MNIST=1" in line
    assert lines.index(line) >= len(lines) - 2  # with pytest's own "1 passed, 3 skipped" line after it
    assert "1 passed, 3 skipped" in lines[-1]


@pytest.mark.parametrize("require", ["1", "yes"])
def test_require_mnist_fails_a_run_that_skipped_for_lack_of_it(tmp_path, no_mnist, require):
    """DCGAN_REQUIRE_MNIST=1 (any value but empty or 0): the same run exits 1 and says why."""
    rc, lines = run_suite(tmp_path, no_mnist, require)
    assert rc == 1, "\n".join(lines)
    [line] = mnist_lines(lines)
    assert line.startswith(f"DCGAN_REQUIRE_MNIST={require} and 2 tests skipped for lack of real MNIST"), line
    assert "failing the run" in line and "dcgan prepare mnist" in line


def test_require_mnist_fails_a_run_split_over_xdist_workers(tmp_path, no_mnist):
    """The README's command runs the tests in pytest-xdist workers; the skips they report reach the
    controller, which counts them and fails the run, as in a run in one process."""
    rc, lines = run_suite(tmp_path, no_mnist, "1", "-p", "xdist", "-n", "2", "--dist", "loadfile")
    assert rc == 1 and "bringing up nodes..." in lines, "\n".join(lines)  # the tests ran in workers
    [line] = mnist_lines(lines)
    assert line.startswith("DCGAN_REQUIRE_MNIST=1 and 2 tests skipped for lack of real MNIST"), line
    assert "1 passed, 3 skipped" in lines[-1]


def test_require_mnist_passes_when_mnist_is_there_and_zero_disables_it(tmp_path, no_mnist):
    """With the file has_mnist() looks for present, nothing skips for lack of MNIST: no line, and
    DCGAN_REQUIRE_MNIST=1 lets the run pass; DCGAN_REQUIRE_MNIST=0 is the same as unset."""
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    (data / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")  # a stand-in: the sample tests read nothing
    rc, lines = run_suite(tmp_path, data, "1")
    assert rc == 0 and not mnist_lines(lines), "\n".join(lines)
    assert "3 passed, 1 skipped" in lines[-1]
    rc, lines = run_suite(tmp_path, no_mnist, "0")
    assert rc == 0 and len(mnist_lines(lines)) == 1, "\n".join(lines)


def test_each_skip_says_how_to_get_mnist(tmp_path, no_mnist):
    """The reason of every MNIST skip (pytest -rs) names the folder looked in and `dcgan prepare mnist`."""
    rc, lines = run_suite(tmp_path, no_mnist, None, "-rs")
    reasons = [line for line in lines if line.startswith("SKIPPED") and "real MNIST not found" in line]
    assert len(reasons) == 2, "\n".join(lines)
    for line in reasons:
        assert str(no_mnist / "mnist") in line and "dcgan prepare mnist" in line


def test_without_dcgan_data_the_tests_look_where_dcgan_prepare_puts_mnist(tmp_path):
    """No DCGAN_DATA (a fresh clone running plain `python -m pytest -q`): the tests look in dcgan's own
    default data root, ~/.cache/dcgan, not in a folder beside the clone."""
    home = tmp_path / "home"
    rc, lines = run_suite(tmp_path, None, "1", "-rs", home=home)
    assert rc == 1 and str(home / ".cache" / "dcgan" / "mnist") in "\n".join(lines)
    (home / ".cache" / "dcgan" / "mnist").mkdir(parents=True)
    (home / ".cache" / "dcgan" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    rc, lines = run_suite(tmp_path, None, "1", home=home)
    assert rc == 0 and not mnist_lines(lines), "\n".join(lines)


def test_the_readme_test_command_is_plain_and_ci_runs_exactly_it():
    readme = (HERE.parent / "README.md").read_text()
    ci = (HERE.parent / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.splitlines() if "pytest" in line and line.strip().startswith(("python", "DCGAN"))]
    assert commands == ["python -m pytest -q -n auto --dist loadfile"]
    assert "../shared" not in readme
    assert "python3 -m pytest -q -n auto --dist loadfile\n" in ci and 'DCGAN_DATA="${DCGAN_DATA:-$(cd .. && pwd)/shared/data}"' in ci
    assert "export DCGAN_REQUIRE_MNIST=1" in ci
