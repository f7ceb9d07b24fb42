"""Tests for dcgan.data: the prepared cache, resizing, the (seed, step) loader, missing / damaged files."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_mnist, real_data_root
from dcgan.cli import main
from dcgan.config import DataConfig
from dcgan.data import download
from dcgan.data.loader import DeviceBatches
from dcgan.data.prepare import cache_root, content_hash, prepare, resize
from dcgan.errors import UserError

MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DCGAN_CACHE", str(cache))
    return cache


@pytest.fixture
def no_retry_sleep(monkeypatch):
    """The downloader backs off between attempts (1 s, 2 s); skip the waiting, keep the attempts."""
    slept = []
    kw = dict(download.ensure_files.__kwdefaults__)
    kw["sleep"] = slept.append
    monkeypatch.setattr(download.ensure_files, "__kwdefaults__", kw)
    return slept


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith(".")) if cache.is_dir() else []


# ---- the cache ------------------------------------------------------------------------------

@needs_mnist
def test_cache_is_built_once_and_reused(fresh_cache):
    logs = []
    cfg = DataConfig(split="test")
    first = prepare(cfg, log=logs.append)
    assert cache_root() == fresh_cache
    [entry] = entries(fresh_cache)
    assert len(logs) == 1 and str(entry) in logs[0]  # built, and said where
    meta_file = entry / "meta.json"
    stamp = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}

    second = prepare(cfg, log=logs.append)
    assert len(logs) == 1  # nothing rebuilt
    assert entries(fresh_cache) == [entry]
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == stamp
    assert isinstance(second.images, np.memmap)  # read from the entry, not decoded again
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    assert second.meta == json.loads(meta_file.read_text())
    assert not [p for p in fresh_cache.iterdir() if p.name.startswith(".tmp-")]  # no temp folder left


@needs_mnist
def test_mnist_test_split_contents(fresh_cache):
    ds = prepare(DataConfig(split="test"))
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,) and ds.labels.dtype == np.int64
    assert ds.shape == (1, 28, 28) and len(ds) == 10000
    assert ds.num_classes == 10
    assert np.bincount(ds.labels, minlength=10).min() > 800  # every digit is there
    assert ds.images.max() == 255 and ds.images.min() == 0
    assert ds.meta["content_hash"] == content_hash(np.asarray(ds.images), ds.labels)


@needs_mnist
@pytest.mark.parametrize("size", [32, 64])
def test_prepare_resizes(size):
    native = prepare(DataConfig(split="test"))
    ds = prepare(DataConfig(split="test", resolution=size))
    assert ds.images.shape == (10000, 1, size, size)
    assert ds.images.dtype == np.uint8
    assert np.array_equal(ds.labels, native.labels)
    assert ds.meta["resolution"] == size and ds.meta["shape"] == [10000, 1, size, size]
    # the cached images are the resize of the native ones (same digit, same order)
    assert np.array_equal(ds.images[:50], resize(np.array(native.images[:50]), size))
    # mean brightness survives an (antialiased, bilinear) resize
    assert abs(float(ds.images[:200].mean()) - float(native.images[:200].mean())) < 2.0


def test_resize_of_constant_images_is_constant():
    img = np.full((2, 3, 28, 28), 77, dtype=np.uint8)
    out = resize(img, 64)
    assert out.shape == (2, 3, 64, 64) and out.dtype == np.uint8
    assert (out == 77).all()
    assert resize(img, 28) is img  # already the size: no copy


# ---- the loader -----------------------------------------------------------------------------

def indexed_data(n: int):
    """Images whose labels are their own index, so a batch says which images it holds."""
    images = np.zeros((n, 1, 4, 4), dtype=np.uint8)
    images[::2] = 255
    return images, np.arange(n, dtype=np.int64)


CPU = torch.device("cpu")


def test_loader_batches_are_a_function_of_seed_and_step():
    images, labels = indexed_data(50)
    a = DeviceBatches(images, labels, batch=8, seed=3, device=CPU)
    b = DeviceBatches(images, labels, batch=8, seed=3, device=CPU)
    c = DeviceBatches(images, labels, batch=8, seed=4, device=CPU)
    # b jumps straight to late steps (as a resumed run does); a walks there
    walked = {step: a.get(step)[1].clone() for step in range(14)}
    for step in (13, 6, 0, 5):
        assert torch.equal(b.get(step)[1], walked[step])
    assert any(not torch.equal(c.get(s)[1], walked[s]) for s in range(3))


def test_loader_epoch_visits_each_index_at_most_once():
    images, labels = indexed_data(50)
    batches = DeviceBatches(images, labels, batch=8, seed=0, device=CPU)
    assert batches.steps_per_epoch == 6  # 50 // 8: the last partial batch is dropped
    epoch0 = torch.cat([batches.get(s)[1] for s in range(6)])
    assert len(epoch0) == 48 and len(set(epoch0.tolist())) == 48
    assert set(epoch0.tolist()) <= set(range(50))
    epoch1 = torch.cat([batches.get(s)[1] for s in range(6, 12)])
    assert len(set(epoch1.tolist())) == 48
    assert not torch.equal(epoch0, epoch1)  # a new order each epoch


def test_loader_scales_to_minus_one_one():
    images, labels = indexed_data(16)
    x, y = DeviceBatches(images, labels, batch=16, seed=0, device=CPU).get(0)
    assert x.shape == (16, 1, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = torch.where(y % 2 == 0, 1.0, -1.0)  # even indices are white (255), odd black (0)
    assert torch.equal(x.flatten(1)[:, 0], expected)
    assert torch.equal(x.amax(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)))


def test_dataset_smaller_than_a_batch():
    images, labels = indexed_data(5)
    with pytest.raises(UserError, match="fewer than one batch"):
        DeviceBatches(images, labels, batch=8, seed=0, device=CPU)


# ---- missing and damaged files ---------------------------------------------------------------

def test_missing_mnist_offline(tmp_path, monkeypatch, capsys, fresh_cache, no_retry_sleep):
    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("DCGAN_DATA", str(empty))
    assert main(["prepare", "mnist"]) == 2
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith("dcgan: error:")]
    assert len(error) == 1, err
    assert "Traceback" not in err
    folder = empty / "mnist"
    for name in MNIST_TRAIN:
        assert name in error[0]
    assert str(folder) in error[0]
    assert "127.0.0.1:9" in error[0]  # says where it tried
    assert not [p for p in folder.rglob("*") if p.is_file()]  # no partial download left behind
    assert entries(fresh_cache) == []


def copy_mnist_test(root: Path) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_TEST:
        shutil.copy(real_data_root() / "mnist" / name, folder / name)
    return folder


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _wrong_magic(data: bytes) -> bytes:
    raw = bytearray(gzip.decompress(data))
    raw[:4] = b"\x12\x34\x08\x03"
    return gzip.compress(bytes(raw), compresslevel=1)


def _truncated_idx(data: bytes) -> bytes:
    return gzip.compress(gzip.decompress(data)[:-100], compresslevel=1)  # a valid gzip of a short IDX file


@needs_mnist
@pytest.mark.parametrize("damage", [_truncated, _wrong_magic, _truncated_idx])
@pytest.mark.parametrize("which", MNIST_TEST)
def test_damaged_idx_file(tmp_path, capsys, fresh_cache, damage, which):
    folder = copy_mnist_test(tmp_path / "data")
    path = folder / which
    path.write_bytes(damage(path.read_bytes()))
    code = main(["prepare", "mnist", "--split", "test", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("dcgan: error:")]
    assert str(path) in line
    assert "checksum" in line or "corrupt" in line or "truncated" in line or "not an IDX" in line
    assert entries(fresh_cache) == []  # nothing cached from damaged files


@needs_mnist
def test_prepare_command_prints_a_summary(tmp_path, capsys, fresh_cache):
    copy_mnist_test(tmp_path / "data")
    assert main(["prepare", "mnist", "--split", "test", "--data-dir", str(tmp_path / "data")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 10000 and out["shape"] == [1, 28, 28] and out["classes"] == 10
    assert len(entries(fresh_cache)) == 1


def test_unknown_dataset_and_split(capsys):
    assert main(["prepare", "no-such-set"]) == 2
    err = capsys.readouterr().err
    assert "no-such-set" in err and "mnist" in err
    assert main(["prepare", "mnist", "--split", "valid"]) == 2
    err = capsys.readouterr().err
    assert "valid" in err and "train" in err and "test" in err


@needs_mnist
@pytest.mark.parametrize("res", ["-3", "50"])
def test_prepare_rejects_an_unsupported_resolution(capsys, res):
    assert main(["prepare", "mnist", "--split", "test", "--resolution", res]) == 2
    assert f"--resolution {res} is not supported" in capsys.readouterr().err
