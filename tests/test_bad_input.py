"""The table of bad inputs: each one exits 2 with a one-line message naming the problem.

docs/RELIABILITY.md lists the same cases with their messages.
"""

from __future__ import annotations

import gzip
import pickle
import shutil

import pytest
import torch

from conftest import TINY, needs_mnist, real_data_root
from dcgan.cli import main

pytestmark = needs_mnist

SETS = [a for s in TINY for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny conditional and a tiny unconditional run, trained once for the module."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for preset in ("mnist-cdcgan", "mnist-dcgan"):
        out = root / preset
        assert main(["train", preset, "--steps", "2", "--device", "cpu", "--out", str(out), "--quiet", *SETS]) == 0
        runs[preset] = out
    return runs


def _bad_data_root(tmp_path, damage: str):
    """A data root whose MNIST train images are damaged in one way."""
    src = real_data_root() / "mnist"
    dst = tmp_path / "data" / "mnist"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    target = dst / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(target.read_bytes())
    # level 1: the 47 MB of pixels take 0.4 s to compress instead of 15 s at gzip's default level 9
    pack = lambda b: gzip.compress(b, compresslevel=1)  # noqa: E731
    if damage == "truncated":
        target.write_bytes(pack(raw[: len(raw) // 2]))
    elif damage == "magic":
        target.write_bytes(pack(b"\x00\x00\x09\x09" + raw[4:]))
    elif damage == "altered":  # a valid IDX file with different pixels: only the checksum can tell
        target.write_bytes(pack(raw[:-1] + bytes([raw[-1] ^ 0xFF])))
    return tmp_path / "data"


# (case id, argv builder (tmp_path, trained runs) -> argv, words the message must contain)
TRAIN = ["train", "--device", "cpu", "--quiet"]
CASES = [
    ("unknown-preset", lambda t, r: ["train", "mnist-cgan"], ["unknown preset 'mnist-cgan'", "mnist-cdcgan"]),
    ("unknown-section", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "optimizer.lr=1"], ["unknown config", "optim"]),
    ("unknown-key", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "model.zdim=3"], ["model.zdim", "z_dim"]),
    ("wrong-type-int", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "train.batch=abc"], ["train.batch", "integer"]),
    ("wrong-type-bool", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "model.conditional=3"], ["model.conditional", "true or false"]),
    ("set-without-equals", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "train.batch"], ["section.key=value"]),
    ("lr-zero", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "optim.lr_g=0"], ["learning rates must be > 0"]),
    ("lr-negative", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "optim.lr_d=-1e-4"], ["learning rates must be > 0"]),
    ("resolution", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "data.resolution=50"], ["data.resolution=50", "28"]),
    ("batch-zero", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "train.batch=0"], ["train.batch must be >= 1"]),
    ("steps-zero", lambda t, r: [*TRAIN, "mnist-dcgan", "--steps", "0"], ["train.steps must be >= 1"]),
    ("ema-decay", lambda t, r: [*TRAIN, "mnist-dcgan", "--set", "train.ema_decay=1.0"], ["train.ema_decay"]),
    ("cond-site", lambda t, r: [*TRAIN, "mnist-cdcgan", "--set", "model.g_cond=middle"], ["model.g_cond", "input", "all"]),
    ("unknown-dataset", lambda t, r: [*TRAIN, "mnist-dcgan", "--out", str(t / "o"), "--set", "data.dataset=imagenet"],
     ["unknown dataset 'imagenet'", "mnist"]),
    ("unknown-split", lambda t, r: [*TRAIN, "mnist-dcgan", "--out", str(t / "o"), "--set", "data.split=val"], ["no split 'val'"]),
    ("unknown-loss", lambda t, r: [*TRAIN, "mnist-dcgan", "--out", str(t / "o"), "--set", "loss.kind=wgan"], ["unknown loss 'wgan'", "hinge"]),
    ("unknown-arch", lambda t, r: [*TRAIN, "mnist-dcgan", "--out", str(t / "o"), "--set", "model.arch=vae"], ["unknown model architecture 'vae'"]),
    ("model-does-not-fit-data", lambda t, r: [*TRAIN, "toy-gaussian", "--out", str(t / "o"), "--set", "model.arch=dcgan"],
     ["model.arch='dcgan'", "(2,)", "mlp"]),
    ("resolution-does-not-fit-model", lambda t, r: [*TRAIN, "mnist-dcgan", "--out", str(t / "o"), "--set", "data.resolution=48"],
     ["data.resolution=48"]),
    ("batch-larger-than-data", lambda t, r: [*TRAIN, "mnist-dcgan", "--out", str(t / "o"), "--set", "data.split=test",
                                             "--set", "train.batch=20000"], ["fewer than one batch", "train.batch"]),
    ("missing-toml", lambda t, r: [*TRAIN, str(t / "nope.toml")], ["nope.toml", "does not exist"]),
    ("invalid-toml", lambda t, r: [*TRAIN, str(_write(t / "bad.toml", "[model\nz_dim = 3"))], ["bad.toml", "not valid TOML"]),
    ("existing-run-without-resume", lambda t, r: [*TRAIN, "mnist-cdcgan", "--out", str(r["mnist-cdcgan"]), *SETS],
     ["already holds a run", "--resume"]),
    ("resume-with-changed-model", lambda t, r: [*TRAIN, "mnist-cdcgan", "--out", str(r["mnist-cdcgan"]), "--resume",
                                                "--set", "model.z_dim=64", *SETS], ["cannot resume", "model.z_dim"]),
    ("resume-without-run", lambda t, r: [*TRAIN, "mnist-dcgan", "--resume"], ["--resume needs the run"]),
    ("sample-extension", lambda t, r: ["sample", str(r["mnist-cdcgan"]), "--out", str(t / "x.jpg")], [".png", ".npz"]),
    ("sample-n-zero", lambda t, r: ["sample", str(r["mnist-cdcgan"]), "--n", "0", "--out", str(t / "x.png")], ["--n must be >= 1"]),
    ("sample-label-range", lambda t, r: ["sample", str(r["mnist-cdcgan"]), "--labels", "10", "--out", str(t / "x.png")],
     ["classes must be in 0..9"]),
    ("sample-label-text", lambda t, r: ["sample", str(r["mnist-cdcgan"]), "--labels", "seven", "--out", str(t / "x.png")],
     ["--labels 'seven'"]),
    ("sample-labels-unconditional", lambda t, r: ["sample", str(r["mnist-dcgan"]), "--labels", "3", "--out", str(t / "x.png")],
     ["unconditional"]),
    ("sample-missing-path", lambda t, r: ["sample", str(t / "no-run"), "--out", str(t / "x.png")], ["no-run", "does not exist"]),
    ("sample-run-without-checkpoint", lambda t, r: ["sample", str(_mkdir(t / "empty-run")), "--out", str(t / "x.png")],
     ["no readable checkpoint"]),
    ("sample-plain-pickle", lambda t, r: ["sample", str(_write_bytes(t / "p.ckpt", pickle.dumps({"a": 1}))), "--out", str(t / "x.png")],
     ["not a dcgan checkpoint"]),
    ("sample-damaged-checkpoint", lambda t, r: ["sample", str(_damaged_copy(r["mnist-cdcgan"], t)), "--out", str(t / "x.png")],
     ["damaged"]),
    ("idx-truncated", lambda t, r: ["prepare", "mnist", "--data-dir", str(_bad_data_root(t, "truncated"))],
     ["train-images-idx3-ubyte.gz"]),
    ("idx-wrong-magic", lambda t, r: ["prepare", "mnist", "--data-dir", str(_bad_data_root(t, "magic"))],
     ["train-images-idx3-ubyte.gz"]),
    ("idx-checksum", lambda t, r: ["prepare", "mnist", "--data-dir", str(_bad_data_root(t, "altered"))],
     ["train-images-idx3-ubyte.gz", "checksum mismatch", "delete it"]),
    ("data-missing-offline", lambda t, r: ["prepare", "mnist", "--data-dir", str(_mkdir(t / "empty-data"))],
     ["could not be downloaded", "train-images-idx3-ubyte.gz", "empty-data"]),
]


def _write(path, text):
    path.write_text(text)
    return path


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _damaged_copy(run, tmp_path):
    from dcgan import checkpoint

    src = checkpoint.list_checkpoints(run)[-1]
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    return _write_bytes(tmp_path / src.name, bytes(data))


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(case, tmp_path, trained, capsys):
    _, argv, words = case
    before = {p: p.stat().st_mtime_ns for run in trained.values() for p in run.rglob("*") if p.is_file()}
    assert main(argv(tmp_path, trained)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]  # progress (e.g. download attempts) may come before the one error line
    assert err.startswith("dcgan: error: "), lines
    assert sum("dcgan: error" in line for line in lines) == 1 and not any("Traceback" in line for line in lines)
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"
    # nothing of the trained runs was overwritten or lost
    after = {p: p.stat().st_mtime_ns for run in trained.values() for p in run.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_requested_without_cuda(tmp_path, capsys):
    assert main([*TRAIN, "mnist-dcgan", "--device", "cuda", "--out", str(tmp_path / "o"), *SETS]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_a_full_disk_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """Simulate ENOSPC on the second checkpoint write: exit 2 naming the file, the first one intact."""
    import errno
    import os

    from dcgan import checkpoint, files

    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        if str(dst).endswith(checkpoint.SUFFIX):
            calls["n"] += 1
            if calls["n"] >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    run = tmp_path / "run"
    rc = main([*TRAIN, "mnist-cdcgan", "--steps", "6", "--checkpoint-every", "2", "--out", str(run), *SETS])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in err and "step-000000004.ckpt" in err and "previous file is intact" in err
    paths = checkpoint.list_checkpoints(run)
    assert [p.name for p in paths] == ["step-000000002.ckpt"]
    assert checkpoint.load(paths[0])["step"] == 2
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp file left


def test_image_folder_with_corrupt_truncated_and_non_image_files(tmp_path, capsys):
    """Through the CLI: unreadable files are skipped with a count and their names; --set data.strict=true
    makes them an error (exit 2, one line naming a file); an empty folder is exit 2 too."""
    import io

    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"ok{i}.png")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    assert main(["prepare", "folder", "--set", f"data.path={folder}", "--resolution", "32"]) == 0
    captured = capsys.readouterr()
    import json
    assert json.loads(captured.out)["n"] == 6
    assert "skipped" in captured.err and "truncated.jpg" in captured.err

    assert main(["prepare", "folder", "--set", f"data.path={folder}", "--set", "data.strict=true"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("dcgan: error: ") and any(n in lines[-1] for n in ("truncated.jpg", "notes.txt", "fake.png"))

    (tmp_path / "empty").mkdir()
    assert main(["prepare", "folder", "--set", f"data.path={tmp_path / 'empty'}"]) == 2
    assert "empty" in capsys.readouterr().err


def test_strict_is_honoured_when_a_cache_entry_of_the_folder_exists(tmp_path, capsys):
    """A folder prepared without data.strict (its unreadable files left out), then the same folder and
    settings with data.strict=true: exit 2 naming a left-out file, as a fresh cache would; a clean
    folder's entry is reused with data.strict=true."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"ok{i}.png")
    same = ["prepare", "folder", "--set", f"data.path={folder}", "--resolution", "32"]
    assert main(same + ["--set", "data.strict=true"]) == 0  # clean: strict or not, one entry
    assert main(same) == 0
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(same) == 0
    capsys.readouterr()
    assert main(same + ["--set", "data.strict=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png is not a readable image" in err[0] and "data.strict" in err[0]


@pytest.mark.parametrize("command", [
    ["train", "mnist-cdcgan", "--steps", "2", "--device", "cpu", "--out", "{blocked}/run"],
    ["sample", "{run}", "--n", "4", "--out", "{blocked}/x.png"],
    ["sample", "{run}", "--n", "4", "--out", "{blocked}/x.npz"],
    ["export", "{run}", "--format", "hf", "--out", "{blocked}/hf"],
    ["interpolate", "{run}", "--from-seed", "1", "--to-seed", "2", "--out", "{blocked}/walk.gif"],
], ids=["train", "sample-png", "sample-npz", "export", "interpolate"])
def test_an_output_path_that_cannot_be_written_is_one_line_and_exit_2(command, tmp_path, trained, capsys):
    """The output lies under a file (what a read-only folder or a typo gives too): exit 2 before any
    work, one line naming the path and the reason, and nothing created."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    argv = [a.format(blocked=blocked, run=trained["mnist-cdcgan"]) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dcgan: error: --out ") and "is a file, not a folder" in err[0]
    assert blocked.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_and_exit_2(tmp_path, trained, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["sample", str(trained["mnist-cdcgan"]), "--n", "4", "--out", str(ro / "x.png")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_a_write_that_fails_midway_is_one_line_and_exit_2(tmp_path, trained, monkeypatch, capsys):
    """The disk fills up while the file is written: one line naming the file, exit 2, no traceback."""
    import numpy as np

    def full(f, header):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array_header_2_0", full)
    out = tmp_path / "x.npz"
    assert main(["sample", str(trained["mnist-cdcgan"]), "--n", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dcgan: error: {out}: No space left on device; check the path and its permissions"]
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary
