"""The shipped MNIST feature extractor: accuracy, integrity check, input handling, reproducible training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import needs_mnist
from dcgan.errors import UserError
from dcgan.metrics.classifier import (
    FEATURE_DIM,
    accuracy,
    default_weights_path,
    file_sha256,
    record_path,
    train_classifier,
)
from dcgan.metrics.features import load_extractor


def _mnist(split: str):
    from dcgan.config import DataConfig
    from dcgan.data.prepare import prepare

    return prepare(DataConfig(dataset="mnist", split=split))


def test_shipped_weights_and_record_agree():
    w = default_weights_path("mnist")
    assert w.is_file() and w.stat().st_size <= 2 * 1024 * 1024
    rec = json.loads(record_path(w).read_text())
    assert rec["sha256"] == file_sha256(w)
    for key in ("command", "seed", "epochs", "test_accuracy", "torch", "date"):
        assert key in rec
    assert rec["test_accuracy"] >= 0.99


@needs_mnist
def test_shipped_extractor_is_at_least_99_percent_on_mnist_test():
    ds = _mnist("test")
    ex = load_extractor("mnist")
    idx = np.random.default_rng(0).choice(len(ds), 2000, replace=False)
    images, labels = np.asarray(ds.images)[idx], np.asarray(ds.labels)[idx]
    assert accuracy(ex.model, images, labels) >= 0.99
    feats, probs = ex.extract(images)
    assert feats.shape == (2000, FEATURE_DIM) and feats.dtype == np.float64
    assert probs.shape == (2000, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert (probs.argmax(1) == labels).mean() >= 0.99


def test_damaged_weights_are_refused(tmp_path):
    src = default_weights_path("mnist")
    w = tmp_path / "mnist-classifier.safetensors"
    shutil.copy(src, w)
    shutil.copy(record_path(src), record_path(w))
    load_extractor("mnist", weights=w)  # an intact copy loads
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its record"):
        load_extractor("mnist", weights=w)


def test_missing_extractor_says_how_to_get_one():
    with pytest.raises(UserError, match="train-classifier fashion-mnist"):
        load_extractor("fashion-mnist")


def test_rgb_and_bad_inputs_are_refused():
    ex = load_extractor("mnist")
    with pytest.raises(UserError, match="1-channel"):
        ex.extract(np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(UserError, match="uint8"):
        ex.extract(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(UserError, match="4-D"):
        ex.extract(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match="square"):
        ex.extract(np.zeros((2, 1, 28, 32), np.uint8))


def test_other_sizes_are_resized_and_the_protocol_says_so():
    from dcgan.data.prepare import resize

    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    big = rng.integers(0, 256, (4, 1, 64, 64), dtype=np.uint8)
    ex = load_extractor("mnist")
    f_big, p_big = ex.extract(big)
    f_ref, p_ref = ex.extract(resize(big, 28))
    np.testing.assert_allclose(f_big, f_ref)
    assert ex.protocol(big.shape)["resize"].startswith("64x64->28x28")
    assert ex.protocol(small.shape)["resize"] == "none"
    p = ex.protocol(small.shape)
    assert p["extractor_sha256"] == file_sha256(default_weights_path("mnist"))
    # a fresh load and the batch size do not change the result beyond float32 rounding: a batch of 3 and
    # one of 4 can take different convolution kernels (differences up to 3.8e-6 seen); a batch-dependent
    # layer (the batch norm left in training mode) moves these features by up to 1.13
    f2, _ = load_extractor("mnist").extract(small, batch_size=3)
    np.testing.assert_allclose(f2, ex.extract(small)[0], rtol=1e-5, atol=1e-4)


@needs_mnist
def test_training_is_seeded_and_writes_weights_and_record(tmp_path):
    a = train_classifier("mnist", epochs=1, seed=3, out=tmp_path / "a.safetensors", train_images=256, test_images=100,
                         log=lambda m: None)
    b = train_classifier("mnist", epochs=1, seed=3, out=tmp_path / "b.safetensors", train_images=256, test_images=100,
                         log=lambda m: None)
    assert a["sha256"] == b["sha256"] == file_sha256(tmp_path / "a.safetensors")
    assert json.loads((tmp_path / "a.json").read_text())["sha256"] == a["sha256"]
    assert a["train_images"] == 256 and a["seed"] == 3 and a["epochs"] == 1
    ex = load_extractor("mnist", weights=tmp_path / "a.safetensors")
    assert ex.sha256 == a["sha256"]


def test_train_classifier_refuses_unknown_dataset(tmp_path):
    with pytest.raises(UserError, match="supports the datasets"):
        train_classifier("cifar10", out=tmp_path / "x.safetensors")
