"""`dcgan export RUN --format hf|onnx`, and dcgan.load_generator of an hf export."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import train_tiny_run
from dcgan import load_generator
from dcgan.cli import main
from dcgan.errors import UserError
from dcgan.sampling import generate, noise


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = train_tiny_run(tmp_path_factory.mktemp("export") / "mnist-cdcgan-20260101-000000")
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "step": 6, "time": 0.0, "fid": 123.456, "kid": {"mean": 0.5, "std": 0.1},
                            "protocol": {"n_fake": 10, "extractor": "mnist-cnn-v1/mnist", "reference": {"split": "test"}}})
                + "\n")
    return out


@pytest.fixture(scope="module")
def hf(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "export"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 0
    return out


def test_hf_export_files_and_config(hf):
    assert sorted(p.name for p in hf.iterdir()) == ["README.md", "config.json", "model.safetensors", "sample.png"]
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["format"] == "dcgan-generator" and cfg["weights"] == "ema"
    assert cfg["model"]["conditional"] is True and cfg["model"]["g_width"] == 8
    assert cfg["data"]["shape"] == [1, 28, 28] and cfg["data"]["num_classes"] == 10
    assert cfg["data"]["class_names"] == [str(i) for i in range(10)]
    assert cfg["run"]["preset"] == "mnist-cdcgan" and cfg["run"]["step"] == 6 and cfg["run"]["images_seen"] > 0
    assert cfg["config"]["train"]["steps"] == 6 and cfg["z_dim"] == 100
    from safetensors.torch import load_file

    keys = load_file(str(hf / "model.safetensors")).keys()
    assert any(k.endswith("running_mean") for k in keys) and any(k.endswith("running_var") for k in keys)


def test_model_card(hf):
    card = (hf / "README.md").read_text()
    assert "![samples](sample.png)" in card
    assert "mnist-cdcgan" in card and "| fid | 123.5 |" in card and "kid.mean" in card
    assert '"extractor": "mnist-cnn-v1/mnist"' in card  # the protocol, verbatim
    assert "http" not in card


def test_hf_round_trip_is_bitwise(run, hf):
    G_run, info_run = load_generator(run)
    G_hf, info_hf = load_generator(hf)
    assert not G_hf.training and info_hf["generator"] == "ema" and info_hf["step"] == info_run["step"]
    labels = torch.arange(37) % 10
    assert torch.equal(generate(G_hf, 37, labels, seed=11), generate(G_run, 37, labels, seed=11))
    z = noise(5, 100, 2)
    with torch.no_grad():
        assert torch.equal(G_hf(z, labels[:5]), G_run(z, labels[:5]))  # the floats, not only the uint8 images
    for k, v in G_run.state_dict().items():
        assert torch.equal(v, G_hf.state_dict()[k]), k


def test_interpolate_from_the_export_equals_from_the_run(run, hf, tmp_path):
    from PIL import Image

    for src, name in ((hf, "a.png"), (run, "b.png")):
        assert main(["interpolate", str(src), "--from-seed", "1", "--to-seed", "2", "--label", "4",
                     "--out", str(tmp_path / name)]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_damaged_export_is_refused(hf, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(hf, bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json"):
        load_generator(bad)
    shutil.copy(hf / "config.json", bad / "config.json")
    (bad / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(UserError, match="damaged"):
        load_generator(bad)


def test_onnx_export_matches_pytorch(run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    capsys.readouterr()
    out = tmp_path / "onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"] == ["z", "labels"] and info["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["z", "labels"] and inputs["labels"].type == "tensor(int64)"
    assert isinstance(inputs["z"].shape[0], str)  # the dynamic batch axis
    G, _ = load_generator(run)
    for n in (3, 7):
        z, y = noise(n, 100, n), torch.arange(n) % 10
        got = session.run(None, {"z": z.numpy(), "labels": y.numpy()})[0]
        with torch.no_grad():
            want = G(z, y).numpy()
        assert got.shape == (n, 1, 28, 28) and np.abs(got - want).max() < 1e-4


def test_onnx_without_onnxruntime_says_what_to_install(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "pip install dcgan[onnx]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_input_exits_2(run, hf, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(run), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["export", str(tmp_path / "empty"), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    assert "no readable checkpoint" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "file")]) == 2
    assert main(["export", str(hf), "--format", "hf", "--out", str(tmp_path / "y")]) == 2
    assert "already an export" in capsys.readouterr().err


def test_sample_from_the_export_equals_sample_from_the_run(run, hf, tmp_path):
    a, b = tmp_path / "run.npz", tmp_path / "export.npz"
    assert main(["sample", str(run), "--n", "12", "--seed", "4", "--out", str(a)]) == 0
    assert main(["sample", str(hf), "--n", "12", "--seed", "4", "--out", str(b)]) == 0
    ra, rb = np.load(a), np.load(b)
    assert np.array_equal(ra["images"], rb["images"]) and np.array_equal(ra["labels"], rb["labels"])
