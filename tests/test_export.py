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


# ---- the model card of a run made with --out; the files' permissions; the sample grid --------------

@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A run whose folder name says nothing of its preset (as the README's `--out runs/c1`), with one
    evaluation line that carries its time as seconds since 1970."""
    out = train_tiny_run(tmp_path_factory.mktemp("named") / "c1")
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "step": 6, "time": 1.796e9, "fid": 55.5, "protocol": {}}) + "\n")
    return out


def test_the_card_names_the_preset_of_a_run_made_with_out(named_run, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(named_run), "--format", "hf", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["run"]["preset"] == "mnist-cdcgan"
    card = (out / "README.md").read_text()
    assert "| preset | mnist-cdcgan |" in card and "unknown" not in card
    # the evaluation's time is a date, not a number in the metrics table
    assert "| time |" not in card and "e+09" not in card
    assert "measured 2026-11-30" in card and "| fid | 55.5 |" in card


def test_the_preset_is_recorded_in_the_run_and_in_its_checkpoints(named_run):
    from dcgan import checkpoint

    assert json.loads((named_run / "run.json").read_text()) == {"preset": "mnist-cdcgan"}
    assert checkpoint.latest(named_run)[1]["preset"] == "mnist-cdcgan"


def test_a_toml_file_is_recorded_by_its_path(tmp_path):
    from conftest import TINY, skip_without_mnist

    skip_without_mnist()
    toml = tmp_path / "mine.toml"
    toml.write_text('[model]\nconditional = true\nkernel = 5\n[train]\ntick_every = 2\n')
    run = tmp_path / "r"
    sets = [a for item in TINY for a in ("--set", item)]
    assert main(["train", str(toml), "--steps", "2", "--device", "cpu", "--out", str(run), "--quiet", *sets]) == 0
    assert json.loads((run / "run.json").read_text()) == {"preset": str(toml.resolve())}
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert f"| preset | {toml.resolve()} |" in (tmp_path / "hf" / "README.md").read_text()


def test_a_run_from_before_the_preset_was_recorded_still_exports_and_guesses_from_its_name(run, tmp_path):
    """No run.json and no "preset" in the checkpoint (as runs written before): the folder name is used."""
    import shutil

    from dcgan import checkpoint

    old = tmp_path / "mnist-dcgan-20250101-000000"
    shutil.copytree(run, old)
    (old / "run.json").unlink()
    for path in checkpoint.list_checkpoints(old):
        state = checkpoint.load(path)
        state.pop("preset")
        checkpoint.save(state, path)
    assert main(["export", str(old), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["run"]["preset"] == "mnist-dcgan"


def test_every_exported_file_has_the_same_permissions(hf):
    modes = {p.name: p.stat().st_mode & 0o777 for p in hf.iterdir()}
    assert len(set(modes.values())) == 1, modes  # model.safetensors was 0600, the others 0644


def test_the_sample_grid_has_one_row_per_class(run, hf):
    """sample.png: class k is row k, 10 noises per row (seed 0), as every class grid."""
    from PIL import Image

    G, _ = load_generator(run)
    img = np.asarray(Image.open(hf / "sample.png"))
    assert img.shape == (10 * 30 + 2, 10 * 30 + 2)
    want = generate(G, 100, torch.arange(10).repeat_interleave(10), seed=0).numpy()
    for label in (0, 3, 9):
        for col in (0, 7):
            cell = img[2 + label * 30 : 2 + label * 30 + 28, 2 + col * 30 : 2 + col * 30 + 28]
            assert np.array_equal(cell, want[label * 10 + col, 0]), (label, col)
