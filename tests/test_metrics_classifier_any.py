"""The classifier route for any labelled dataset: train small-cnn-v1 with `dcgan eval train-classifier`
on a synthetic labelled RGB image folder, then measure samples with it (CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from dcgan import cli as eval_cli
from dcgan.errors import UserError

N_PER_CLASS = 64
SIDE = 32
CLASSES = ("circle", "cross", "square", "triangle")  # sorted: the label order of labels_from_subfolders
COLOURS = {"circle": (230, 40, 40), "cross": (230, 220, 40), "square": (40, 200, 60), "triangle": (50, 80, 240)}
TRAIN_ARGS = ["--epochs", "3", "--batch-size", "32", "--seed", "0"]


def _draw(shape: str, rng: np.random.Generator):
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(0, 70, 3))
    im = Image.new("RGB", (SIDE, SIDE), bg)
    d = ImageDraw.Draw(im)
    r = int(rng.integers(7, 12))
    cx, cy = (int(v) for v in rng.integers(r + 1, SIDE - r - 1, 2))
    jitter = rng.integers(-25, 26, 3)
    colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[shape], jitter))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = max(2, r // 3)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    a = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (SIDE, SIDE, 3))  # a little pixel noise
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A labelled RGB folder: one sub-folder per class of coloured shapes, 32x32 PNGs."""
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    rng = np.random.default_rng(0)
    for shape in CLASSES:
        (root / shape).mkdir(parents=True)
        for i in range(N_PER_CLASS):
            _draw(shape, rng).save(root / shape / f"{i:03d}.png")
    return root


def _folder_cfg(path: Path, labelled: bool = True):
    from dcgan.config import DataConfig

    return DataConfig(dataset="folder", path=str(path), labels_from_subfolders=labelled)


def _train_folder_run(folder, run, steps: int, *sets: str):
    """`dcgan train folder-dcgan` on `folder` at TINY widths for `steps` steps, with more --set items."""
    from dcgan.cli import main

    argv = ["train", "folder-dcgan", "--steps", str(steps), "--out", str(run), "--quiet", "--device", "cpu",
            "--set", f"data.path='{folder}'"]
    for item in [*TINY, *sets]:
        argv += ["--set", item]
    assert main(argv) == 0
    return run


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = eval_cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trained(shapes):
    """Train through the CLI entry point into the default place (the session's $DCGAN_CACHE)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = eval_cli.main(["eval", "train-classifier", "folder", "--set", f"data.path='{shapes}'",
                            "--set", "data.labels_from_subfolders=true", *TRAIN_ARGS])
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue())


def _samples(shapes: Path, tmp_path: Path):
    from dcgan.data.prepare import prepare

    ds = prepare(_folder_cfg(shapes))
    x, y = np.asarray(ds.images), np.asarray(ds.labels)
    idx = np.random.default_rng(1).permutation(len(x))[:160]
    real = tmp_path / "real.npz"
    np.savez(real, images=x[idx], labels=y[idx])
    noise = tmp_path / "noise.npz"
    np.savez(noise, images=np.random.default_rng(2).integers(0, 256, (160, 3, SIDE, SIDE), dtype=np.uint8))
    return real, noise, x[idx], y[idx]


def test_train_classifier_writes_cache_weights_and_record(trained, shapes):
    from dcgan.metrics.classifier import ARCH_ANY, cached_weights_path, file_sha256, record_path

    w = cached_weights_path(_folder_cfg(shapes))
    assert w.is_file() and w.parent.name == "classifiers" and w.name.startswith("folder-")
    rec = json.loads(record_path(w).read_text())
    assert rec == trained
    assert rec["sha256"] == file_sha256(w) and rec["arch"] == ARCH_ANY
    assert rec["input_shape"] == [3, SIDE, SIDE] and rec["num_classes"] == len(CLASSES)
    assert rec["class_names"] == list(CLASSES)
    assert rec["epochs"] == 3 and rec["seed"] == 0 and rec["command"].startswith("dcgan eval train-classifier folder")
    # no test split in a folder: a fixed 10 % is held out and never trained on
    assert rec["test_split"].startswith("held out") and rec["test_images"] == 26 and rec["train_images"] == 230
    assert rec["test_accuracy"] >= 0.9
    assert len(rec["train_content_hash"]) == 64 and rec["data"]["path"] == str(shapes)


def test_training_is_seeded(shapes, tmp_path, capsys):
    shas = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        rc, stdout, err = _cli(["eval", "train-classifier", "folder", "--set", f"data.path='{shapes}'",
                                "--set", "data.labels_from_subfolders=true", "--epochs", "1", "--batch-size", "32",
                                "--train-images", "64", "--seed", seed, "--out", str(tmp_path / f"{name}.safetensors")],
                               capsys)
        assert rc == 0, err
        rec = json.loads(stdout)
        assert rec["train_images"] == 64 and rec["seed"] == int(seed)
        shas.append(rec["sha256"])
    assert shas[0] == shas[1] != shas[2]


def test_real_images_score_far_better_than_noise(trained, shapes, tmp_path, capsys):
    real, noise, _, _ = _samples(shapes, tmp_path)
    w = _cached(shapes)
    results = {}
    for name, f in (("real", real), ("noise", noise)):
        rc, out, err = _cli(["eval", str(f), "--classifier", str(w), "--n", "160", "--metrics", "fid,classes"],
                            capsys)
        assert rc == 0, err
        results[name] = json.loads(out)
    assert results["noise"]["fid"] > 20 * results["real"]["fid"]
    assert results["real"]["classes"]["classes_covered"] == len(CLASSES)
    p = results["real"]["protocol"]
    assert p["extractor_arch"] == "small-cnn-v1" and p["extractor"] == "small-cnn-v1/folder"
    assert p["extractor_sha256"] == trained["sha256"] and p["extractor_dataset"] == "folder"
    assert p["extractor_test_accuracy"] == trained["test_accuracy"]
    assert p["extractor_test_split"] == trained["test_split"]
    assert p["extractor_weights"] == str(w) and p["extractor_data"]["path"] == str(shapes)
    assert p["input_size"] == [3, SIDE, SIDE] and p["resize"] == "none" and p["feature_dim"] == 128
    # the record names the real data: the folder's only split, at the classifier's training settings
    assert p["reference"]["dataset"] == "folder" and p["reference"]["split"] == "train"
    assert p["reference"]["path"] == str(shapes) and p["n_real"] == 160
    assert p["reference"]["classifier_accuracy"] >= 0.9


def _cached(shapes: Path) -> Path:
    from dcgan.metrics.classifier import cached_weights_path

    return cached_weights_path(_folder_cfg(shapes))


def test_label_accuracy_and_auto_lookup_in_the_cache(trained, shapes, tmp_path, capsys):
    from dcgan.metrics.evaluate import evaluate

    real, _, x, y = _samples(shapes, tmp_path)
    # --dataset + --set name the real data; auto finds the classifier trained on it (RGB, no Inception needed)
    rc, out, err = _cli(["eval", str(real), "--dataset", "folder", "--set", f"data.path='{shapes}'", "--n", "160",
                         "--metrics", "label_accuracy,classes"], capsys)
    assert rc == 0, err
    good = json.loads(out)
    assert good["protocol"]["extractor_sha256"] == trained["sha256"]
    assert good["label_accuracy"]["accuracy"] >= 0.9
    assert len(good["label_accuracy"]["confusion_matrix"]) == len(CLASSES)
    shuffled = tmp_path / "shuffled.npz"
    np.savez(shuffled, images=x, labels=(y + 1) % len(CLASSES))
    bad = evaluate(shuffled, n=160, metrics="label_accuracy", classifier=_cached(shapes), log=lambda m: None)
    assert bad["label_accuracy"]["accuracy"] < 0.3
    one_class = tmp_path / "one.npz"
    np.savez(one_class, images=x[y == 2][np.arange(160) % int((y == 2).sum())])
    c = evaluate(one_class, n=160, metrics="classes", classifier=_cached(shapes), log=lambda m: None)["classes"]
    assert c["classes_covered"] == 1 and c["reference"]["classes_covered"] == len(CLASSES)


def test_larger_samples_are_resized_to_the_classifier_input(trained, shapes, tmp_path):
    from dcgan.data.prepare import resize
    from dcgan.metrics.evaluate import evaluate

    _, noise_npz, x, _ = _samples(shapes, tmp_path)
    big = tmp_path / "big.npz"
    np.savez(big, images=resize(x, 64))
    r = evaluate(big, n=160, metrics="fid", classifier=_cached(shapes), log=lambda m: None)
    assert r["protocol"]["resize"].startswith("64x64->32x32")
    assert r["protocol"]["reference"]["resize"] == "32x32->64x64->32x32"
    noise = evaluate(noise_npz, n=160, metrics="fid", classifier=_cached(shapes), log=lambda m: None)
    assert noise["fid"] > 10 * r["fid"]


def test_eval_of_an_rgb_run_uses_the_cached_classifier(trained, shapes, tmp_path, capsys):
    run = _train_folder_run(shapes, tmp_path / "run", 2, "train.batch=8")
    rc, out, err = _cli(["eval", str(run), "--n", "64", "--metrics", "fid,classes", "--device", "cpu"], capsys)
    assert rc == 0, err
    p = json.loads(out)["protocol"]
    assert p["source"] == "run" and p["extractor_arch"] == "small-cnn-v1"
    assert p["extractor_sha256"] == trained["sha256"] and p["reference"]["split"] == "train"
    # a classifier of other data is refused by name
    rc, _, err = _cli(["eval", str(run), "--n", "8", "--device", "cpu", "--classifier",
                       str(Path(__file__).resolve().parents[1] / "dcgan/metrics/weights/mnist-classifier.safetensors")],
                      capsys)
    assert rc == 2 and "not of 'folder'" in err


def test_run_without_a_classifier_says_to_train_one(shapes, tmp_path, capsys):
    from dcgan.metrics.features import load_classifier

    other = tmp_path / "other"
    other.mkdir()
    for f in sorted((shapes / "circle").glob("*.png"))[:12]:
        (other / f.name).write_bytes(f.read_bytes())
    with pytest.raises(UserError, match="train-classifier folder --set data.path="):
        load_classifier(_folder_cfg(other, labelled=False))
    run = _train_folder_run(other, tmp_path / "run", 1, "train.batch=4")
    rc, _, err = _cli(["eval", str(run), "--n", "8", "--device", "cpu", "--extractor", "classifier"], capsys)
    assert rc == 2 and "dcgan eval train-classifier folder" in err
    rc, _, err = _cli(["eval", str(run), "--n", "8", "--device", "cpu"], capsys)  # auto: Inception, or train one
    assert rc == 2 and "train-classifier folder" in err


def test_unlabelled_data_is_refused_with_exit_2(shapes, tmp_path, capsys):
    rc, out, err = _cli(["eval", "train-classifier", "folder", "--set", f"data.path='{shapes}'", "--epochs", "1",
                         "--out", str(tmp_path / "w.safetensors")], capsys)
    assert rc == 2 and out == ""
    assert "no labels" in err and "data.labels_from_subfolders=true" in err
    assert not (tmp_path / "w.safetensors").exists()
    rc, _, err = _cli(["eval", "train-classifier", "ring8", "--epochs", "1", "--out", str(tmp_path / "p.safetensors")],
                      capsys)
    assert rc == 2 and "points" in err
    rc, _, err = _cli(["eval", "train-classifier", "folder", "--set", "train.batch=3"], capsys)
    assert rc == 2 and "only data.* keys" in err


def test_channel_mismatch_is_refused_with_exit_2(trained, shapes, tmp_path, capsys):
    grey = tmp_path / "grey.npz"
    np.savez(grey, images=np.zeros((16, 1, SIDE, SIDE), np.uint8))
    rc, _, err = _cli(["eval", str(grey), "--classifier", str(_cached(shapes)), "--n", "16"], capsys)
    assert rc == 2 and "3-channel (RGB) images, got 1 channels" in err
    # and the MNIST classifier refuses RGB samples, naming this route
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.zeros((16, 3, 28, 28), np.uint8))
    rc, _, err = _cli(["eval", str(rgb), "--extractor", "classifier", "--n", "16"], capsys)
    assert rc == 2 and "1-channel" in err and "train-classifier" in err


def test_mnist_shipped_extractor_is_unchanged():
    """The shipped weights still load as mnist-cnn-v1, through both entry points, to the same features."""
    from dcgan.config import DataConfig
    from dcgan.metrics.classifier import ARCH, default_weights_path, file_sha256
    from dcgan.metrics.features import load_classifier, load_extractor

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    a, b = load_extractor("mnist"), load_classifier(DataConfig(dataset="mnist"))
    assert a.arch == b.arch == ARCH and a.sha256 == b.sha256 == file_sha256(default_weights_path("mnist"))
    fa, pa = a.extract(x)
    fb, pb = b.extract(x)
    assert np.array_equal(fa, fb) and np.array_equal(pa, pb)
    p = a.protocol(x.shape)
    assert p["extractor"] == "mnist-cnn-v1/mnist" and p["extractor_dataset"] == "mnist"
    assert p["extractor_test_accuracy"] >= 0.99 and "extractor_weights" not in p


def test_training_time_evaluation_uses_the_cached_classifier(trained, shapes, tmp_path):
    from dcgan.files import read_metrics

    run = _train_folder_run(shapes, tmp_path / "run", 4, "train.batch=8", "eval.every_kimg=0.016", "eval.n=32")
    evals = [m for m in read_metrics(run / "metrics.jsonl") if m.get("kind") == "eval"]
    assert evals and all(np.isfinite(m["fid"]) for m in evals)
    p = evals[-1]["protocol"]
    assert p["extractor_arch"] == "small-cnn-v1" and p["extractor_sha256"] == trained["sha256"]
    assert p["reference"]["split"] == "train"  # eval.reference=test, but a folder has only train


def test_missing_source_files_are_not_downloaded(tmp_path, capsys):
    rc, _, err = _cli(["eval", "train-classifier", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                       "--out", str(tmp_path / "c.safetensors")], capsys)
    assert rc == 2 and "dcgan prepare cifar10" in err
    assert not (tmp_path / "data").exists()
