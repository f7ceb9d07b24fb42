"""Shared fixtures: where real MNIST lives, and a per-session cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """$DCGAN_DATA (a relative value is taken from the repo root), else ../shared/data beside the repo."""
    env = os.environ.get("DCGAN_DATA")
    return REPO_ROOT / env if env else REPO_ROOT.parent / "shared" / "data"


def has_mnist() -> bool:
    return (real_data_root() / "mnist" / "train-images-idx3-ubyte.gz").is_file()


needs_mnist = pytest.mark.skipif(not has_mnist(), reason="real MNIST not found (set DCGAN_DATA)")


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
TINY = ["model.g_width=8", "model.d_width=8", "model.g_fc=32", "model.d_fc=32", "train.tick_every=5"]


def train_tiny_run(out: Path) -> Path:
    """A 6-step `mnist-cdcgan` run at TINY widths with a tick every 2 steps, in `out` (skips the
    test without real MNIST): the run the report, export and interpolation tests read."""
    if not has_mnist():
        pytest.skip("real MNIST not found (set DCGAN_DATA)")
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
