"""Shared fixtures: where real MNIST lives, and a per-session cache folder; and the count of the
tests that skipped for lack of real MNIST, said at the end of every run and made a failure by
DCGAN_REQUIRE_MNIST=1 (CI sets it, so a CI machine that lost its data cannot pass by skipping)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist (README: `-n auto`) each worker is one process per core: one torch thread each, unless
# the caller chose, so that N workers do not run 2N threads on N cores (measured on a 2-core machine: 5 min
# 41 s with two threads a worker, 4 min 24 s with one). Set before torch is imported, and inherited by the
# `dcgan` processes the tests start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def real_data_root() -> Path:
    """Where dcgan itself reads MNIST from: $DCGAN_DATA (a relative value is taken from the repo root),
    else dcgan's default data root (~/.cache/dcgan), where `dcgan prepare mnist` puts it. So a fresh
    clone runs plain `python -m pytest -q`, and the real-MNIST tests run once MNIST is fetched."""
    env = os.environ.get("DCGAN_DATA")
    if env:
        return REPO_ROOT / env
    from dcgan.data.prepare import data_root

    return data_root()


def has_mnist() -> bool:
    return (real_data_root() / "mnist" / "train-images-idx3-ubyte.gz").is_file()


# Every skip for lack of real MNIST says this (in its reason), so the end of the run can count them.
MNIST_MISSING = "real MNIST not found"
REQUIRE_MNIST = "DCGAN_REQUIRE_MNIST"  # =1: a run in which any test skipped for lack of MNIST fails
HOW_TO_GET_MNIST = ("get it with `dcgan prepare mnist` (downloads it to $DCGAN_DATA/mnist, else ~/.cache/dcgan/mnist), "
                    "or point DCGAN_DATA at a folder holding mnist/")


def mnist_skip_reason() -> str:
    """The reason of every skip for lack of real MNIST: what was looked for, where, and how to get it."""
    return f"{MNIST_MISSING} in {real_data_root() / 'mnist'}: {HOW_TO_GET_MNIST}"


def skip_without_mnist() -> None:
    """Inside a test or fixture: skip it, with that reason, when real MNIST is not there."""
    if not has_mnist():
        pytest.skip(mnist_skip_reason())


needs_mnist = pytest.mark.skipif(not has_mnist(), reason=mnist_skip_reason())


# ---- the skips for lack of MNIST: counted, said at the end, a failure under DCGAN_REQUIRE_MNIST=1 ----

def _skip_reason(report) -> str:
    """The reason of a skipped report: longrepr is (file, line, "Skipped: REASON") for a skip."""
    lr = report.longrepr
    return str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr or "")


class _MnistSkips:
    """The node ids of the tests (and modules) that skipped for lack of real MNIST."""

    def __init__(self):
        self.nodeids: list[str] = []

    def pytest_runtest_logreport(self, report):
        if report.skipped and not hasattr(report, "wasxfail") and MNIST_MISSING in _skip_reason(report):
            self.nodeids.append(report.nodeid)

    pytest_collectreport = pytest_runtest_logreport  # a module skipped as a whole


_MNIST_SKIPS = pytest.StashKey[_MnistSkips]()


def _mnist_required() -> bool:
    return os.environ.get(REQUIRE_MNIST, "") not in ("", "0")


def pytest_configure(config):
    config.stash[_MNIST_SKIPS] = tracker = _MnistSkips()
    config.pluginmanager.register(tracker, "dcgan-mnist-skips")


def pytest_sessionfinish(session, exitstatus):
    """Under DCGAN_REQUIRE_MNIST=1 a run with a skip for lack of MNIST fails (exit 1), unless it failed already."""
    tracker = session.config.stash.get(_MNIST_SKIPS, None)
    if tracker and tracker.nodeids and _mnist_required() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line (just above pytest's own count) saying how many tests skipped for lack of MNIST and how to get it."""
    tracker = config.stash.get(_MNIST_SKIPS, None)
    if not tracker or not tracker.nodeids:
        return
    n = len(tracker.nodeids)
    what = f"{n} test{'s' if n != 1 else ''} skipped for lack of real MNIST (looked for {real_data_root() / 'mnist'})"
    how = HOW_TO_GET_MNIST
    if _mnist_required():
        terminalreporter.write_line(f"{REQUIRE_MNIST}={os.environ[REQUIRE_MNIST]} and {what}: failing the run; {how}",
                                    red=True, bold=True)
    else:
        terminalreporter.write_line(f"{what}: {how}; {REQUIRE_MNIST}=1 makes this a failure", yellow=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Every test sees DCGAN_DATA as an absolute path and a cache folder of the test session,
    so no test writes outside its temporary folders or downloads anything."""
    old = {k: os.environ.get(k) for k in ("DCGAN_DATA", "DCGAN_CACHE", "DCGAN_MIRROR")}
    os.environ["DCGAN_DATA"] = str(real_data_root())
    os.environ["DCGAN_CACHE"] = str(tmp_path_factory.mktemp("dcgan-cache"))
    os.environ["DCGAN_MIRROR"] = "http://127.0.0.1:9/"  # nothing listens there: no test reaches the network
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# Tiny widths that keep a training step at a few milliseconds on CPU.
# optim.lr_decay=0: the tests' resumes often raise --steps, and a decaying learning rate follows train.steps
# (mnist-cdcgan decays over the last half), so a longer resumed run would not equal an uninterrupted one.
TINY = ["model.g_width=8", "model.d_width=8", "model.g_fc=32", "model.d_fc=32", "train.tick_every=5", "optim.lr_decay=0"]


def train_tiny_run(out: Path) -> Path:
    """A 6-step `mnist-cdcgan` run at TINY widths with a tick every 2 steps, in `out` (skips the
    test without real MNIST): the run the report, export and interpolation tests read."""
    skip_without_mnist()
    from dcgan.cli import main

    sets = [a for item in TINY for a in ("--set", item)]
    assert main(["train", "mnist-cdcgan", "--steps", "6", "--device", "cpu", "--out", str(out), "--quiet",
                 *sets, "--set", "train.tick_every=2"]) == 0
    return out


class WrappedBatches:
    """A training batch source (data/loader.py: get(step) -> (x, y)) with `transform(step, x, y) -> (x, y)`
    applied to every batch: how tests poison or record what the training loop reads."""

    def __init__(self, batches, transform):
        self.batches, self.transform = batches, transform
        self.placement = batches.placement

    def get(self, step):
        return self.transform(step, *self.batches.get(step))

    def __enter__(self):
        self.batches.__enter__()
        return self

    def __exit__(self, *exc):
        return self.batches.__exit__(*exc)


def wrap_training_batches(monkeypatch, transform) -> None:
    """Every `dcgan train` of this test (through dcgan.cli.main) reads its batches through `transform`."""
    import functools

    import dcgan.training
    from dcgan.training import loop

    monkeypatch.setattr(dcgan.training, "train",
                        functools.partial(loop.train, wrap_batches=lambda b: WrappedBatches(b, transform)))
