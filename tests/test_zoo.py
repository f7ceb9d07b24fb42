"""The model zoo: every preset trains a few steps on CPU (tiny widths) and samples with the right
shape, channels and range; the new data sources (CIFAR-10 tarball, image folders, CelebA, LSUN)
on small synthetic files; the K+1-class loss; top-k sampling by D; the conditioning experiment."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.cli import main
from dcgan.config import DataConfig, preset_names, read_preset, resolve
from dcgan.data.prepare import prepare
from dcgan.errors import UserError

from conftest import needs_mnist

TINY_ZOO = ["model.g_width=4", "model.d_width=4", "model.g_fc=16", "model.d_fc=16", "train.tick_every=2",
            "train.batch=8"]


# ---- synthetic data ---------------------------------------------------------------------------

def make_cifar(path: Path, n: int = 20, protocol: int = 2) -> Path:
    """A tiny tarball with the layout and pickles of cifar-10-python.tar.gz."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            data = pickle.dumps(obj, protocol=protocol)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add(name, {b"batch_label": name.encode(), b"labels": [int(i % 10) for i in range(n)],
                       b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                       b"filenames": [b"x.png"] * n})
        add("batches.meta", {b"label_names": [b"airplane"] * 10})
    return path


def make_folder(root: Path, sizes=((40, 36), (36, 40), (48, 48)), subfolders=("cats", "dogs")) -> Path:
    """PNG (grey and RGB), JPEG and WebP images in class sub-folders, plus a corrupt file."""
    rng = np.random.default_rng(1)
    for k, sub in enumerate(subfolders):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(d / f"c{i}.png")
            Image.fromarray(rgb[:, :, 0]).save(d / f"g{i}.png")
            Image.fromarray(rgb).save(d / f"j{i}.jpg", quality=90)
            Image.fromarray(rgb).save(d / f"w{i}.webp")
    (root / subfolders[0] / "broken.png").write_bytes(b"\x89PNG not really")
    return root


# ---- presets -----------------------------------------------------------------------------------

ZOO = ["mnist-dcgan-64", "mnist-simple-dcgan", "mnist-simple-cdcgan", "mnist-nelson-dcgan", "cifar10-nelson-dcgan",
       "mnist-mlp-gan", "celeba-dcgan", "lsun-dcgan", "anime-dcgan-96", "folder-dcgan"]


def test_every_zoo_preset_is_listed_with_description_and_source():
    assert set(ZOO) <= set(preset_names())
    for name in ZOO:
        raw = read_preset(name)
        assert raw.get("description") and raw.get("source"), name
        resolve(name)  # valid as shipped


def _train_and_sample(tmp_path, preset, sets, shape, classes=0, data_dir=None):
    run = tmp_path / preset
    argv = ["train", preset, "--steps", "2", "--out", str(run), "--quiet"]
    for s in TINY_ZOO + sets:
        argv += ["--set", s]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    assert main(argv) == 0
    out = tmp_path / f"{preset}.npz"
    assert main(["sample", str(run), "--n", "6", "--out", str(out)]) == 0
    z = np.load(out)
    assert z["images"].dtype == np.uint8 and z["images"].shape == (6, *shape)
    assert ("labels" in z) == bool(classes)
    from dcgan.checkpoint import load_generator

    G, _ = load_generator(run, ema=False)  # the raw generator's float output: tanh range
    with torch.no_grad():
        x = G(torch.randn(3, G.z_dim), torch.zeros(3, dtype=torch.long) if classes else None)
    assert x.shape == (3, *shape) and x.min() >= -1 and x.max() <= 1 and x.std() > 0
    return run


@needs_mnist
@pytest.mark.parametrize("preset,shape,classes", [
    ("mnist-dcgan-64", (1, 64, 64), 0),
    ("mnist-simple-dcgan", (1, 32, 32), 0),
    ("mnist-simple-cdcgan", (1, 32, 32), 10),
    ("mnist-nelson-dcgan", (1, 28, 28), 0),
    ("mnist-mlp-gan", (1, 28, 28), 0),
])
def test_mnist_zoo_presets_train_and_sample(tmp_path, preset, shape, classes):
    _train_and_sample(tmp_path, preset, [], shape, classes)


def test_cifar_preset_on_a_fake_tarball(tmp_path):
    tar = make_cifar(tmp_path / "c" / "cifar-10-python.tar.gz")
    _train_and_sample(tmp_path, "cifar10-nelson-dcgan", [f"data.path='{tar}'", "train.batch=2"], (3, 32, 32))
    ds = prepare(DataConfig(dataset="cifar10", path=str(tar), classes=[7, 3]))
    assert ds.shape == (3, 32, 32) and len(ds) == 2 * 2 * 5 and ds.meta["class_names"] == ["horse", "cat"]
    assert set(ds.labels.tolist()) == {0, 1}
    test = prepare(DataConfig(dataset="cifar10", path=str(tar), split="test"))
    assert len(test) == 20 and test.num_classes == 10


def test_cifar_pickles_written_by_python3_protocol4_also_read(tmp_path):
    tar = make_cifar(tmp_path / "cifar-10-python.tar.gz", protocol=4)
    assert len(prepare(DataConfig(dataset="cifar10", path=str(tar)))) == 100


def test_cifar_unpickler_refuses_code(tmp_path):
    from dcgan.data.cifar import safe_load

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError):
        safe_load(pickle.dumps({b"data": Evil()}, protocol=2))
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)]:
            data = pickle.dumps({b"data": Evil()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="not a plain CIFAR batch"):
        prepare(DataConfig(dataset="cifar10", path=str(path)))


def test_cifar_missing_everywhere_says_where_to_put_it(tmp_path):
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):
        prepare(DataConfig(dataset="cifar10"), root=tmp_path)


def test_folder_rules_channels_labels_corrupt_and_cache(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    logs = []
    ds = prepare(DataConfig(dataset="folder", path=str(folder), labels_from_subfolders=True), log=logs.append)
    # smallest side 36 → resolution 32; any RGB image → 3 channels; 24 readable images, 1 corrupt skipped
    assert ds.shape == (3, 32, 32) and len(ds) == 24 and ds.meta["class_names"] == ["cats", "dogs"]
    assert sorted(np.bincount(ds.labels).tolist()) == [12, 12]
    assert any("skipped 1 unreadable" in m and "broken.png" in m for m in logs)
    grey = prepare(DataConfig(dataset="folder", path=str(folder), channels=1, resolution=28))
    assert grey.shape == (1, 28, 28) and grey.num_classes == 0
    # the same config reads the cache; a new file changes the key
    again = prepare(DataConfig(dataset="folder", path=str(folder), channels=1, resolution=28))
    assert again.meta["content_hash"] == grey.meta["content_hash"]
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "dogs" / "new.png")
    more = prepare(DataConfig(dataset="folder", path=str(folder), channels=1, resolution=28))
    assert len(more) == 25
    with pytest.raises(UserError, match="broken.png"):
        prepare(DataConfig(dataset="folder", path=str(folder), strict=True))


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        prepare(DataConfig(dataset="folder", path=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="data.path"):
        prepare(DataConfig(dataset="folder"))
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(small / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(small / "b.png")
    with pytest.raises(UserError, match="never upscaled"):
        prepare(DataConfig(dataset="folder", path=str(small), resolution=32))
    with pytest.raises(UserError, match="data.crop"):
        prepare(DataConfig(dataset="folder", path=str(small), crop=30))


def test_folder_anime_celeba_lsun_presets(tmp_path):
    folder = make_folder(tmp_path / "f", sizes=((100, 110),))
    _train_and_sample(tmp_path, "folder-dcgan", [f"data.path='{folder}'", "data.labels_from_subfolders=true",
                                                 "model.conditional=true"], (3, 96, 96), classes=2)
    _train_and_sample(tmp_path, "anime-dcgan-96", [f"data.path='{folder}'"], (3, 96, 96))
    root = tmp_path / "root"
    celeba = root / "celeba" / "img_align_celeba"
    celeba.mkdir(parents=True)
    lsun = root / "lsun"
    lsun.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(celeba / f"{i:06d}.jpg")
        Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(lsun / f"{i:04d}.webp")
    _train_and_sample(tmp_path, "celeba-dcgan", [], (3, 64, 64), data_dir=root)
    _train_and_sample(tmp_path, "lsun-dcgan", [], (3, 64, 64), data_dir=root)


def test_celeba_missing_says_where(tmp_path):
    with pytest.raises(UserError, match="img_align_celeba"):
        prepare(DataConfig(dataset="celeba", resolution=64), root=tmp_path)


def test_lsun_lmdb_if_available(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    db = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(db), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(4):
            buf = io.BytesIO()
            Image.fromarray(np.full((80, 64, 3), 40 * i, np.uint8)).save(buf, format="WEBP")
            txn.put(f"{i:04d}".encode(), buf.getvalue())
    env.close()
    ds = prepare(DataConfig(dataset="lsun", path=str(db), resolution=64))
    assert ds.shape == (3, 64, 64) and len(ds) == 4


# ---- losses, sampling, experiment ----------------------------------------------------------------

def test_nplus1_loss():
    from dcgan.losses import LOSSES, real_probability

    loss = LOSSES.get("nplus1")
    assert loss.labels
    y = torch.tensor([0, 1])
    good = torch.tensor([[9.0, 0, 0], [0, 9.0, 0]])  # K = 2 classes + fake
    fake_logits = torch.tensor([[0, 0, 9.0], [0, 0, 9.0]])
    assert loss.d(good, fake_logits, None, y, y) < 0.01
    assert loss.g(good, None, y) < 0.01 < loss.g(fake_logits, None, y)
    assert torch.allclose(real_probability(fake_logits), torch.zeros(2), atol=1e-3)


def test_nplus1_needs_the_classes_head():
    with pytest.raises(UserError, match="d_head"):
        resolve("mnist-simple-cdcgan", ["loss.kind=nonsaturating"])


@needs_mnist
def test_sample_top_k_by_d(tmp_path):
    run = _train_and_sample(tmp_path, "mnist-simple-cdcgan", [], (1, 32, 32), classes=10)
    out = tmp_path / "top.npz"
    assert main(["sample", str(run), "--top-k-by-d", "5", "--from", "20", "--labels", "3", "--out", str(out)]) == 0
    z = np.load(out)
    assert z["images"].shape == (5, 1, 32, 32) and z["labels"].tolist() == [3] * 5
    from dcgan.checkpoint import load_generator
    from dcgan.sampling import d_scores, load_discriminator, top_k_by_d

    G, _ = load_generator(run)
    D = load_discriminator(run)
    imgs, labels, scores = top_k_by_d(G, D, 4, 12, torch.full((12,), 2), seed=1)
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    all_scores = d_scores(D, imgs, labels)
    assert torch.allclose(all_scores, scores)
    assert main(["sample", str(run), "--top-k-by-d", "30", "--from", "20", "--out", str(out)]) == 2


@needs_mnist
def test_conditioning_experiment_tiny(tmp_path):
    out = tmp_path / "exp"
    argv = ["experiment", "conditioning", "--steps", "2", "--seeds", "1", "--n", "20", "--out", str(out)]
    for s in TINY_ZOO:
        argv += ["--set", s]
    assert main(argv) == 0
    table = (out / "table.md").read_text()
    for g, d in [("all", "all"), ("all", "input"), ("input", "all"), ("input", "input")]:
        assert f"| {g} / {d} |" in table
    # four blocks side by side (12-pixel gaps), each one row per digit and 8 columns of noise
    assert Image.open(out / "grid.png").size == (4 * (8 * 30 + 2) + 3 * 12, 10 * 30 + 2)
    data = json.loads((out / "table.json").read_text())
    assert len(data["variants"]) == 4


def test_cifar_tarball_in_the_data_root_is_checked_against_the_published_md5(tmp_path):
    make_cifar(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    with pytest.raises(UserError, match="c58f30108f718f92721af3b95e74349a"):
        prepare(DataConfig(dataset="cifar10"), root=tmp_path)
