"""Tests for the parallel, memory-mapped `prepare` of image folders and the placements of the
training batches (DeviceBatches / StreamBatches / make_batches)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dcgan.cli import main
from dcgan.config import DataConfig
from dcgan.data.loader import DeviceBatches, StreamBatches, make_batches
from dcgan.data.prepare import Dataset, cache_root, content_hash, prepare
from dcgan.errors import UserError

N = 2000
CPU = torch.device("cpu")


def write_indexed_folder(folder: Path, n: int) -> Path:
    """n 28x28 RGB PNGs, 00000.png ...: red = index // 256, green = index % 256 everywhere (so a
    decoded image, or a batch of them, says which file it came from), blue = noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.empty((28, 28, 3), dtype=np.uint8)
        a[..., 0], a[..., 1] = i // 256, i % 256
        a[..., 2] = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i:05d}.png")
    return folder


def index_of(x: torch.Tensor) -> torch.Tensor:
    """The file index encoded in images: uint8 (B, 3, H, W), or float (B, 3, H, W) in [-1, 1]."""
    v = x[:, :2, 0, 0].double()
    if x.dtype != torch.uint8:
        v = ((v + 1.0) * 127.5).round()
    return (v[:, 0] * 256 + v[:, 1]).long()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_indexed_folder(tmp_path_factory.mktemp("indexed") / "images", N)


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory) -> Dataset:
    """The folder prepared with 2 workers, labels replaced by the examples' indices."""
    import os

    old = os.environ["DCGAN_CACHE"]
    os.environ["DCGAN_CACHE"] = str(tmp_path_factory.mktemp("cache-module"))
    try:
        ds = prepare(DataConfig(dataset="folder", path=str(folder)), workers=2)
    finally:
        os.environ["DCGAN_CACHE"] = old
    return Dataset(ds.images, np.arange(len(ds), dtype=np.int64), ds.meta)


def reference_decode(files: list[Path], mode: str, crop: int, res: int) -> np.ndarray:
    """An image at a time, as the sequential reader always did: convert, centre crop, resize.
    uint8 (N, C, res, res)."""
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert(mode)
            w, h = im.size
            side = crop or min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            a = np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if a.shape[1] != res:
            x = torch.from_numpy(a.copy()).float()[None]
            a = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True,
                              align_corners=False)[0].round().clamp(0, 255).to(torch.uint8).numpy()
        out.append(a)
    return np.stack(out)


# ---- prepare ----------------------------------------------------------------------------------

def test_parallel_prepare_equals_sequential(folder, tmp_path, monkeypatch):
    cfg = DataConfig(dataset="folder", path=str(folder))
    got = {}
    for workers in (1, 2):
        monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / f"cache-{workers}"))
        got[workers] = prepare(cfg, workers=workers)
        [entry] = [p for p in cache_root().iterdir()]  # no temporary folder left beside it
        assert sorted(p.name for p in entry.iterdir()) == ["images.npy", "labels.npy", "meta.json"]
    one, two = got[1], got[2]
    assert isinstance(two.images, np.memmap) and two.images.shape == (N, 3, 28, 28)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)
    assert one.meta == two.meta and two.meta["content_hash"] == content_hash(np.asarray(two.images), two.labels)
    assert torch.equal(index_of(torch.from_numpy(np.array(two.images))), torch.arange(N))  # sorted file order
    files = sorted(folder.iterdir())
    assert np.array_equal(two.images, reference_decode(files, "RGB", 0, 28))


def test_parallel_decode_keeps_the_folder_rules(tmp_path, monkeypatch):
    """Crop, resize, grey conversion and unreadable files (bad header, truncated data) give what
    an image-at-a-time decode gives, with any number of workers."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(60):
        h, w = 40 + i % 9, 36 + i % 13
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "020-bad.png").write_bytes(b"not an image")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "041-truncated.png")
    data = (folder / "041-truncated.png").read_bytes()
    (folder / "041-truncated.png").write_bytes(data[: len(data) // 2])
    good = [f for f in sorted(folder.iterdir()) if "-" not in f.name]

    for kw, mode, crop, res in [({}, "RGB", 0, 32), ({"crop": 34, "resolution": 28, "channels": 1}, "L", 34, 28)]:
        want = reference_decode(good, mode, crop, res)
        for workers in (1, 2):
            monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / f"cache-{len(kw)}-{workers}"))
            logs = []
            ds = prepare(DataConfig(dataset="folder", path=str(folder), **kw), log=logs.append, workers=workers)
            assert np.array_equal(ds.images, want), (kw, workers)
            assert any("skipped 2 unreadable" in m and "020-bad.png, 041-truncated.png" in m for m in logs)
            assert [p.name for p in cache_root().iterdir()] == [next(cache_root().iterdir()).name]

    monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / "cache-strict"))
    with pytest.raises(UserError, match="020-bad.png is not a readable image"):
        prepare(DataConfig(dataset="folder", path=str(folder), strict=True), workers=2)
    assert not list((tmp_path / "cache-strict").iterdir())  # nothing half-written left


def test_class_selection_of_a_decoded_folder(tmp_path, monkeypatch):
    """data.classes on a memory-mapped decode: the kept rows go to a new file of the entry."""
    rng = np.random.default_rng(2)
    for c in ("cats", "dogs"):
        (tmp_path / "pets" / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(tmp_path / "pets" / c / f"{i:02d}.png")
    monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / "cache"))
    ds = prepare(DataConfig(dataset="folder", path=str(tmp_path / "pets"), labels_from_subfolders=True,
                            classes=[1], resolution=32), workers=2)
    dogs = sorted((tmp_path / "pets" / "dogs").iterdir())
    assert np.array_equal(ds.images, reference_decode(dogs, "RGB", 0, 32))
    assert ds.meta["class_names"] == ["dogs"] and (ds.labels == 0).all()
    [entry] = cache_root().iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["images.npy", "labels.npy", "meta.json"]


def test_prepare_command_takes_workers(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / "cache"))
    assert main(["prepare", "folder", "--set", f"data.path={folder}", "--workers", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == N and out["shape"] == [3, 28, 28]
    assert main(["prepare", "folder", "--set", f"data.path={folder}", "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err


# ---- the loaders ------------------------------------------------------------------------------

def test_stream_visits_every_image_once_per_epoch(prepared):
    with StreamBatches(prepared.images, prepared.labels, batch=64, seed=5, device=CPU, prefetch=3) as s:
        assert s.placement == "stream" and s.steps_per_epoch == N // 64
        for epoch in range(2):
            steps = range(epoch * s.steps_per_epoch, (epoch + 1) * s.steps_per_epoch)
            batches = [s.get(step) for step in steps]
            seen = torch.cat([index_of(x) for x, _ in batches])
            assert torch.equal(seen, torch.cat([y for _, y in batches]))  # pixels and labels agree
            assert len(seen) == len(set(seen.tolist())) == (N // 64) * 64
            assert set(seen.tolist()) <= set(range(N))
            x = batches[0][0]
            assert x.dtype == torch.float32 and x.shape == (64, 3, 28, 28)
            assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("device", [CPU, pytest.param(
    torch.device("cuda"), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_stream_equals_device_batch_for_batch(prepared, device):
    """On CUDA this is the pinned staging + side-stream copy path."""
    d = DeviceBatches(prepared.images, prepared.labels, 48, 7, device)
    with StreamBatches(prepared.images, prepared.labels, 48, 7, device, prefetch=2) as s:
        order = list(range(45)) + [100, 3, 4, 5, 41, 41, 0] + list(range(200, 210))  # jumps: resume, rollback
        for step in order:
            (xd, yd), (xs, ys) = d.get(step), s.get(step)
            assert torch.equal(xd, xs) and torch.equal(yd, ys), step
            assert ys.dtype == torch.int64


def test_stream_of_points_equals_device():
    points = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    labels = np.arange(100, dtype=np.int64) % 8
    d = DeviceBatches(points, labels, 16, 1, CPU)
    with StreamBatches(points, labels, 16, 1, CPU) as s:
        for step in [0, 1, 2, 9, 30, 31, 5]:
            (xd, yd), (xs, ys) = d.get(step), s.get(step)
            assert xs.dtype == torch.float32 and torch.equal(xd, xs) and torch.equal(yd, ys)


@pytest.mark.parametrize("kind", [DeviceBatches, StreamBatches])
def test_rank_shards_make_the_global_batch(prepared, kind):
    whole = DeviceBatches(prepared.images, prepared.labels, 64, 3, CPU)  # one rank, the global batch
    ranks = [kind(prepared.images, prepared.labels, 32, 3, CPU, rank=r, world=2) for r in range(2)]
    try:
        assert all(r.steps_per_epoch == whole.steps_per_epoch == N // 64 for r in ranks)
        for step in [0, 1, 30, 31, 32, 77, 5]:
            (x0, y0), (x1, y1) = (r.get(step) for r in ranks)
            xg, yg = whole.get(step)
            assert not set(y0.tolist()) & set(y1.tolist())  # disjoint shards
            assert torch.equal(torch.cat([y0, y1]), yg) and torch.equal(torch.cat([x0, x1]), xg)
    finally:
        for r in ranks:
            r.close()


def test_world_needs_a_batch_per_rank():
    images = np.zeros((50, 1, 4, 4), dtype=np.uint8)
    labels = np.zeros(50, dtype=np.int64)
    with pytest.raises(UserError, match="fewer than one batch of 64 across 2 ranks"):
        StreamBatches(images, labels, 32, 0, CPU, rank=0, world=2)
    with pytest.raises(UserError, match="rank 2 of world 2"):
        DeviceBatches(images, labels, 8, 0, CPU, rank=2, world=2)


def test_auto_placement_follows_the_budget(prepared):
    logs = []
    small = make_batches(prepared, 32, 0, CPU, placement="auto", budget=1024, log=logs.append)
    big = make_batches(prepared, 32, 0, CPU, placement="auto", budget=1 << 40, log=logs.append)
    try:
        assert isinstance(small, StreamBatches) and small.placement == "stream"
        assert isinstance(big, DeviceBatches) and big.placement == "device"
        assert "stream placement" in logs[0] and "over" in logs[0]
        assert "device placement" in logs[1] and "within" in logs[1]
        assert torch.equal(small.get(3)[1], big.get(3)[1])
        assert make_batches(prepared, 32, 0, CPU).placement == "device"  # a few MB fit the host's budget
        forced = make_batches(prepared, 32, 0, CPU, placement="stream", budget=1 << 40)
        assert isinstance(forced, StreamBatches)
        forced.close()
        with pytest.raises(UserError, match="train.placement='gpu'"):
            make_batches(prepared, 32, 0, CPU, placement="gpu")
    finally:
        small.close()


def test_close_stops_the_thread_and_get_restarts_it(prepared):
    s = StreamBatches(prepared.images, prepared.labels, 16, 0, CPU, prefetch=4)
    s.get(0)
    thread = s._thread
    assert thread.is_alive()
    s.close()
    assert not thread.is_alive() and s._thread is None
    assert torch.equal(s.get(1)[1], DeviceBatches(prepared.images, prepared.labels, 16, 0, CPU).get(1)[1])
    s.close()
    assert not [t for t in threading.enumerate() if t.name == "dcgan-stream-batches"]
