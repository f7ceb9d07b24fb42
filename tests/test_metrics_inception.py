"""Inception FID/IS for RGB data (dcgan/metrics/inception.py, evaluate.py): the exit-2 messages, and, where
torch-fidelity is installed, the whole path on a weights file of the right architecture with random
weights (the real pt_inception-2015-12-05 weights cannot be fetched here: these tests check the
plumbing and the protocol, not real Inception numbers)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcgan import cli as eval_cli
from dcgan.metrics import inception as inc
from dcgan.metrics.classifier import file_sha256
from dcgan.metrics.evaluate import evaluate_images

HAS_FIDELITY = importlib.util.find_spec("torch_fidelity") is not None
needs_fidelity = pytest.mark.skipif(not HAS_FIDELITY, reason="torch-fidelity not installed (pip install dcgan[inception])")
N = 4  # Inception-v3 at 299x299 costs ~1 s per image on a 2-core CPU


def _rgb(n: int, seed: int) -> np.ndarray:
    """Smooth colour blobs, 3x32x32 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((n, 3, 32, 32), np.uint8)
    for i in range(n):
        c = rng.uniform(0, 1, (3, 3))
        img = c[:, 0, None, None] * xx + c[:, 1, None, None] * yy + c[:, 2, None, None] * 0.5
        out[i] = np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("rgb") / "imgs"
    root.mkdir()
    images = _rgb(N, 0)
    for i, a in enumerate(images):
        Image.fromarray(a.transpose(1, 2, 0)).save(root / f"{i}.png")
    return root, images


def write_random_weights(path: Path, seed: int = 0) -> Path:
    """A weights file of the right architecture and format with random weights (its features mean nothing)."""
    import torch

    mod = inc._import_fidelity()[0]
    cls = mod.FeatureExtractorInceptionV3
    saved = mod.load_state_dict_from_url
    mod.load_state_dict_from_url = lambda *a, **k: {}
    cls.load_state_dict = lambda self, *a, **k: None  # keep torch's random initialisation
    try:
        torch.manual_seed(seed)
        model = cls("inception-v3-compat", ["2048", "logits_unbiased"])
    finally:
        mod.load_state_dict_from_url = saved
        del cls.load_state_dict
    with torch.no_grad():  # He init keeps the activations' scale through the 90-odd layers
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    if not HAS_FIDELITY:
        pytest.skip("torch-fidelity not installed")
    return write_random_weights(tmp_path_factory.mktemp("w") / inc.EXPECTED_FILE)


def _npz(path: Path, images) -> Path:
    np.savez(path, images=np.asarray(images))
    return path


def _run_cli(argv, capsys):
    rc = eval_cli.main(["eval", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---- exit 2 with what to do ----------------------------------------------------------------------

def test_missing_extra_exits_2_saying_what_to_install(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(inc, "_MODULE", None)
    monkeypatch.setattr(inc.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "torch_fidelity" else real(name, *a, **k))
    src = _npz(tmp_path / "s.npz", _rgb(2, 1))
    rc, out, err = _run_cli([str(src), "--dataset", "cifar10", "--inception-weights", str(tmp_path / "w.pth")], capsys)
    assert rc == 2 and out == ""
    assert "pip install dcgan[inception]" in err and "torch-fidelity" in err


@needs_fidelity
def test_missing_weights_file_exits_2_naming_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(inc.ENV, raising=False)
    src = _npz(tmp_path / "s.npz", _rgb(2, 1))
    rc, out, err = _run_cli([str(src), "--dataset", "cifar10", "--inception-weights", str(tmp_path / "nope.pth")],
                            capsys)
    assert rc == 2 and out == ""
    assert "nope.pth does not exist" in err and inc.EXPECTED_FILE in err
    # the environment variable is read too
    monkeypatch.setenv(inc.ENV, str(tmp_path / "env.pth"))
    rc, _, err = _run_cli([str(src), "--dataset", "cifar10"], capsys)
    assert rc == 2 and "env.pth does not exist" in err


def test_rgb_without_weights_says_what_to_give(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(inc.ENV, raising=False)
    src = _npz(tmp_path / "s.npz", _rgb(2, 1))
    rc, out, err = _run_cli([str(src), "--dataset", "cifar10"], capsys)
    assert rc == 2 and out == ""
    assert "RGB images need --inception-weights PATH (pip install dcgan[inception])" in err
    assert inc.EXPECTED_FILE in err
    # an RGB .npz must name its real data
    rc, _, err = _run_cli([str(src), "--inception-weights", "w.pth"], capsys)
    assert rc == 2 and "--dataset" in err


@needs_fidelity
def test_bad_weights_and_bad_metrics_exit_2(tmp_path, capsys, weights):
    import torch

    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    src = _npz(tmp_path / "s.npz", _rgb(2, 1))
    rc, _, err = _run_cli([str(src), "--dataset", "cifar10", "--inception-weights", str(bad)], capsys)
    assert rc == 2 and "do not fit" in err and inc.EXPECTED_FILE in err
    rc, _, err = _run_cli([str(src), "--dataset", "cifar10", "--inception-weights", str(weights),
                           "--metrics", "precision_recall"], capsys)
    assert rc == 2 and "not measured with Inception" in err


# ---- the whole path, random weights of the right architecture ------------------------------------

@needs_fidelity
def test_fid_of_same_images_is_zero_and_noise_is_far(rgb_folder, weights):
    from dcgan.config import DataConfig

    folder, images = rgb_folder
    cfg = DataConfig(dataset="folder", path=str(folder), resolution=32)
    ex = inc.load_inception(weights)
    same = evaluate_images(images, None, extractor=ex, dataset=cfg, metrics="fid,inception_score", log=lambda m: None)
    noise = np.random.default_rng(3).integers(0, 256, images.shape, dtype=np.uint8)
    far = evaluate_images(noise, None, extractor=ex, dataset=cfg, metrics="fid", log=lambda m: None)
    assert abs(same["fid"]) < 1e-3, same["fid"]
    assert far["fid"] > 1.0 and far["fid"] > same["fid"] + 1.0
    assert far["reference_cache"]["hit"]  # the second call reads the cached reference features
    p = same["protocol"]
    assert p["extractor"].startswith("inception-v3-fid (torch-fidelity ")
    assert p["extractor_sha256"] == file_sha256(weights) and p["weights_file"] == inc.EXPECTED_FILE
    assert p["n_fake"] == p["n_real"] == N
    assert p["reference"]["dataset"] == "folder" and p["reference"]["split"] == "train"
    assert "299x299" in p["resize"] and "bilinear" in p["resize"]
    assert same["inception_score"]["mean"] >= 1.0 - 1e-9  # one image per split here: exactly 1


@needs_fidelity
def test_eval_of_an_rgb_run_uses_inception(tmp_path, rgb_folder, weights, capsys):
    from dcgan.cli import main

    folder, _ = rgb_folder
    run = tmp_path / "run"
    argv = ["train", "folder-dcgan", "--steps", "2", "--out", str(run), "--quiet", "--device", "cpu",
            "--set", f"data.path='{folder}'"]
    for s in ["model.g_width=4", "model.d_width=4", "train.tick_every=2", "train.batch=4"]:
        argv += ["--set", s]
    assert main(argv) == 0
    capsys.readouterr()
    rc, out, err = _run_cli([str(run), "--n", str(N), "--inception-weights", str(weights), "--device", "cpu"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert np.isfinite(res["fid"]) and res["fid"] >= 0 and "inception_score" in res
    p = res["protocol"]
    assert p["source"] == "run" and p["n_fake"] == N and p["n_real"] == N
    assert p["extractor"].startswith("inception-v3-fid") and len(p["extractor_sha256"]) == 64
    assert p["reference"]["split"] == "train"  # an image folder has no test split
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "eval" and lines[-1]["fid"] == res["fid"]
    # without weights an RGB run says what to give
    rc, _, err = _run_cli([str(run), "--n", "2", "--device", "cpu"], capsys)
    assert rc == 2 and "RGB images need --inception-weights PATH" in err
