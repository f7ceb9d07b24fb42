"""Tests for `dcgan sample` and dcgan.sampling: file formats, labels, determinism, refusing foreign files."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, skip_without_mnist
from dcgan import checkpoint, load_generator
from dcgan.cli import main
from dcgan.images import make_grid
from dcgan.errors import UserError
from dcgan.sampling import generate, noise, parse_labels

SETS = [a for item in TINY for a in ("--set", item)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    skip_without_mnist()
    root = tmp_path_factory.mktemp("sample-runs")
    out = {}
    for name, preset in (("cond", "mnist-cdcgan"), ("plain", "mnist-dcgan")):
        out[name] = root / name
        args = ["train", preset, "--out", str(out[name]), "--steps", "3", "--device", "cpu", "--quiet",
                "--set", "train.batch=16", *SETS]
        assert main(args) == 0
    return out


def run_sample(run, out, *extra) -> int:
    return main(["sample", str(run), "--out", str(out), *extra])


def npz(run, path, *extra) -> dict:
    assert run_sample(run, path, *extra) == 0
    return dict(np.load(path))


# ---- npz and png -----------------------------------------------------------------------------

def test_npz_of_a_conditional_run(runs, tmp_path, capsys):
    capsys.readouterr()
    d = npz(runs["cond"], tmp_path / "s.npz", "--n", "23")
    assert set(d) == {"images", "labels"}
    assert d["images"].dtype == np.uint8 and d["images"].shape == (23, 1, 28, 28)
    assert d["labels"].dtype == np.int64 and d["labels"].shape == (23,)
    assert np.array_equal(d["labels"], np.arange(23) % 10)  # the default is 'all'
    assert d["images"].std() > 0
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == 23 and info["step"] == 3 and info["generator"] == "ema"
    assert info["checkpoint"].endswith(checkpoint.name_for(3))


def test_npz_of_an_unconditional_run(runs, tmp_path):
    d = npz(runs["plain"], tmp_path / "s.npz", "--n", "5")
    assert set(d) == {"images"} and d["images"].shape == (5, 1, 28, 28)


@pytest.mark.parametrize("spec, expected", [
    ("all", [i % 10 for i in range(20)]),
    ("3", [3] * 20),
    ("0,1,2", [i % 3 for i in range(20)]),
    ("9,0", [9, 0] * 10),
])
def test_labels(runs, tmp_path, spec, expected):
    d = npz(runs["cond"], tmp_path / "s.npz", "--n", "20", "--labels", spec)
    assert d["labels"].tolist() == expected


def test_the_label_changes_the_image(runs, tmp_path):
    a = npz(runs["cond"], tmp_path / "a.npz", "--n", "4", "--labels", "3")
    b = npz(runs["cond"], tmp_path / "b.npz", "--n", "4", "--labels", "4")
    assert not np.array_equal(a["images"], b["images"])


@pytest.mark.parametrize("spec", ["11", "10", "-1", "x", "1,x", "1.5"])
def test_bad_labels(runs, tmp_path, capsys, spec):
    out = tmp_path / "s.npz"
    assert run_sample(runs["cond"], out, "--n", "4", f"--labels={spec}") == 2
    err = capsys.readouterr().err
    assert "--labels" in err and "Traceback" not in err
    assert not out.exists()


def test_labels_for_an_unconditional_run(runs, tmp_path, capsys):
    """Any --labels of an unconditional run is refused with one message, 'all' as much as '3'; the
    library still reads 'all' of an unconditional generator as no labels (the metrics ask for it)."""
    messages = []
    for spec in ("3", "all"):
        capsys.readouterr()
        assert run_sample(runs["plain"], tmp_path / "s.npz", "--labels", spec) == 2
        messages.append(capsys.readouterr().err)
    assert messages[0] == messages[1] and "unconditional" in messages[0] and "drop --labels" in messages[0]
    assert not (tmp_path / "s.npz").exists()
    assert parse_labels("all", 5, 0) is None and parse_labels(None, 5, 0) is None


def test_a_conditional_generator_called_without_labels_says_to_pass_them(runs):
    G, _ = load_generator(runs["cond"])
    with pytest.raises(TypeError) as err:
        G(noise(3, G.z_dim, 0))
    message = str(err.value)
    assert "G(z, y)" in message and "int64" in message and "(N,)" in message and "0..9" in message
    assert "one_hot" not in message
    with torch.no_grad():
        assert G(noise(3, G.z_dim, 0), torch.tensor([1, 2, 3])).shape == (3, 1, 28, 28)  # with labels: as before
        assert G(noise(3, G.z_dim, 0), y=torch.tensor([1, 2, 3])).shape == (3, 1, 28, 28)


def cell(img: np.ndarray, row: int, col: int, size: int = 28) -> np.ndarray:
    """The image at (row, col) of a grid with 2-pixel gaps, as (H, W)."""
    top, left = 2 + row * (size + 2), 2 + col * (size + 2)
    return img[top : top + size, left : left + size]


def test_png_is_the_grid_of_the_images(runs, tmp_path):
    """--labels all: one row per class (the orientation of the training grids, the export's sample.png
    and the report), each row that class's samples in order: sample i (label i % 10) is at row
    i % 10, column i // 10."""
    d = npz(runs["cond"], tmp_path / "s.npz", "--n", "25", "--seed", "4")
    png = tmp_path / "s.png"
    assert run_sample(runs["cond"], png, "--n", "25", "--seed", "4") == 0
    img = Image.open(png)
    img.load()
    assert img.format == "PNG" and img.mode == "L"
    assert img.size == (3 * 30 + 2, 10 * 30 + 2)  # 10 rows (classes), 3 columns (25 samples: 3, 3, 3, 3, 3, 2, ...)
    a = np.asarray(img)
    for i in range(25):
        assert d["labels"][i] == i % 10
        assert np.array_equal(cell(a, i % 10, i // 10), d["images"][i, 0]), i
    assert not cell(a, 9, 2).any()  # class 9 has two samples: its third cell is blank


def test_png_of_a_list_of_labels_has_one_row_per_class_in_the_order_asked(runs, tmp_path):
    d = npz(runs["cond"], tmp_path / "s.npz", "--n", "6", "--labels", "7,2")
    png = tmp_path / "s.png"
    assert run_sample(runs["cond"], png, "--n", "6", "--labels", "7,2") == 0
    a = np.asarray(Image.open(png))
    assert a.shape == (2 * 30 + 2, 3 * 30 + 2)
    for i in range(6):
        assert np.array_equal(cell(a, i % 2, i // 2), d["images"][i, 0])
    assert run_sample(runs["cond"], png, "--n", "9", "--labels", "4") == 0  # one class: a square grid
    assert Image.open(png).size == (3 * 30 + 2, 3 * 30 + 2)


def test_png_of_top_k_by_d_is_written_one_row_per_class(runs, tmp_path):
    d = npz(runs["cond"], tmp_path / "t.npz", "--top-k-by-d", "6", "--from", "12", "--labels", "0,1")
    png = tmp_path / "t.png"
    assert run_sample(runs["cond"], png, "--top-k-by-d", "6", "--from", "12", "--labels", "0,1") == 0
    a = np.asarray(Image.open(png))
    rows = list(dict.fromkeys(d["labels"].tolist()))  # the classes D preferred, best first
    if len(rows) == 1:  # D kept one class only: a square grid, best first
        assert a.shape == (2 * 30 + 2, 3 * 30 + 2)
        rows, places = [rows[0]], [(i // 3, i % 3) for i in range(6)]
        for i, (r, c) in enumerate(places):
            assert np.array_equal(cell(a, r, c), d["images"][i, 0])
    for row, label in enumerate(rows if len(rows) > 1 else []):
        mine = d["images"][d["labels"] == label]
        for col in range(len(mine)):
            assert np.array_equal(cell(a, row, col), mine[col, 0])


def test_png_nrow(runs, tmp_path):
    png = tmp_path / "s.png"
    assert run_sample(runs["plain"], png, "--n", "6", "--nrow", "3") == 0
    assert Image.open(png).size == (3 * 30 + 2, 2 * 30 + 2)
    assert run_sample(runs["plain"], png, "--n", "10") == 0
    assert Image.open(png).size == (4 * 30 + 2, 3 * 30 + 2)  # square-ish: ceil(sqrt(10)) = 4 columns


# ---- determinism ---------------------------------------------------------------------------------

def test_result_does_not_depend_on_batch_size(runs, tmp_path):
    ref = npz(runs["cond"], tmp_path / "ref.npz", "--n", "20", "--seed", "5", "--batch", "500")
    for bs in ("1", "7"):
        d = npz(runs["cond"], tmp_path / f"b{bs}.npz", "--n", "20", "--seed", "5", "--batch-size", bs)
        assert np.array_equal(d["images"], ref["images"]), bs
        assert np.array_equal(d["labels"], ref["labels"])


def test_seed(runs, tmp_path):
    a = npz(runs["cond"], tmp_path / "a.npz", "--n", "10", "--seed", "1")
    b = npz(runs["cond"], tmp_path / "b.npz", "--n", "10", "--seed", "1")
    c = npz(runs["cond"], tmp_path / "c.npz", "--n", "10", "--seed", "2")
    assert np.array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], c["images"])


def test_checkpoint_file_and_run_folder_agree(runs, tmp_path):
    [ckpt] = checkpoint.list_checkpoints(runs["cond"])
    a = npz(runs["cond"], tmp_path / "a.npz", "--n", "12", "--seed", "2")
    b = npz(ckpt, tmp_path / "b.npz", "--n", "12", "--seed", "2")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])


def test_generate_matches_the_generator_in_eval_mode(runs):
    G, info = load_generator(runs["cond"])
    assert not G.training and info["generator"] == "ema"
    y = torch.arange(6) % 10
    out = generate(G, 6, y, seed=9, batch_size=4)
    with torch.no_grad():
        x = G(noise(6, G.z_dim, 9), y)
    assert torch.equal(out, ((x + 1) * 127.5).round().clamp(0, 255).byte())
    G.train()
    generate(G, 2, y[:2])
    assert G.training  # the caller's mode is restored


def test_parse_labels_unit():
    assert parse_labels(None, 5, 0) is None
    assert parse_labels("all", 5, 0) is None
    assert parse_labels(None, 12, 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert parse_labels("2,7", 3, 10).tolist() == [2, 7, 2]
    with pytest.raises(UserError):
        parse_labels("10", 3, 10)


# ---- --top-k-by-d against a brute-force best k ------------------------------------------------

class PixelG(torch.nn.Module):
    """A stub generator of 2x2 grey images: pixel j of image i is tanh(z[i, j]), so the M images of a
    seed are M different random images."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes, self.out_shape = 4, num_classes, (1, 2, 2)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # for generate()'s device

    def forward(self, z, y=None):
        return torch.tanh(z).view(-1, 1, 2, 2)  # (N, 1, 2, 2) in [-1, 1]


class BrightD(torch.nn.Module):
    """A stub discriminator whose logit is a known function of the image and its label:
    mean pixel (in [-1, 1]) + 0.01·label, so brighter images (and, a little, higher labels) look
    more real."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, y=None):
        logit = x.mean((1, 2, 3))  # (N,)
        return logit + 0.01 * y.float() if y is not None else logit


@pytest.mark.parametrize("conditional", [True, False])
def test_top_k_by_d_keeps_the_brute_force_best_k_best_first(conditional):
    """top_k_by_d(k=5, m=40) against the best 5 of the same 40 images found by brute force from
    the stub D's known score, computed here in float64 from the uint8 images (not with d_scores):
    the exact indices (hence images and labels), best first, and their scores. The best 5 are not
    the first 5, so returning the first k (sorted or not) fails."""
    from dcgan.sampling import top_k_by_d

    k, m, seed = 5, 40, 3
    G, D = PixelG(10 if conditional else 0), BrightD()
    labels = (torch.arange(m) * 7) % 10 if conditional else None  # (m,) every class, not in order
    pool = generate(G, m, labels, seed=seed)  # (m, 1, 2, 2) uint8: the candidates top_k_by_d draws
    x = pool.double().div(127.5).sub(1.0)  # (m, 1, 2, 2) as D sees them
    score = x.mean((1, 2, 3)) + (0.01 * labels.double() if conditional else 0.0)  # (m,) the known logit
    best = sorted(range(m), key=lambda i: -score[i].item())[:k]
    top = sorted(score.tolist(), reverse=True)[: k + 1]
    assert min(a - b for a, b in zip(top, top[1:])) > 1e-4  # no near-ties in the top k + 1: one right answer
    assert set(best) != set(range(k))  # the test can tell the best k from the first k

    images, top_labels, scores = top_k_by_d(G, D, k, m, labels, seed=seed, batch_size=16)
    assert images.shape == (k, 1, 2, 2) and images.dtype == torch.uint8
    assert len(set(map(bytes, pool.numpy()))) == m  # every candidate differs: an image names its index
    picked = [next(i for i in range(m) if torch.equal(pool[i], img)) for img in images]  # their indices in pool
    assert picked == best
    assert torch.equal(images, pool[best])
    if conditional:
        assert top_labels.tolist() == labels[best].tolist()
    else:
        assert top_labels is None
    assert scores.tolist() == pytest.approx(torch.sigmoid(score[best]).tolist(), abs=1e-6)


# ---- bad inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["s.jpg", "s", "s.NPZ"])
def test_unknown_extension(runs, tmp_path, capsys, name):
    out = tmp_path / name
    assert run_sample(runs["cond"], out, "--n", "2") == 2
    err = capsys.readouterr().err
    assert ".png" in err and ".npz" in err
    assert not out.exists()


def test_n_must_be_positive(runs, tmp_path, capsys):
    assert run_sample(runs["cond"], tmp_path / "s.npz", "--n", "0") == 2
    assert "--n" in capsys.readouterr().err


class Marker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_plain_torch_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"G": {"w": torch.zeros(3)}}, path)
    out = tmp_path / "s.npz"
    assert run_sample(path, out) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not a dcgan checkpoint" in err
    assert not out.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["evil.pkl", "evil.ckpt"])
def test_malicious_pickle_is_never_executed(tmp_path, capsys, how, name):
    marker = tmp_path / "marker"
    path = tmp_path / name
    if how == "pickle":
        path.write_bytes(pickle.dumps(Marker(marker)))
    else:
        torch.save({"G": Marker(marker)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_sample(path, tmp_path / "s.npz") == 2
    assert "dcgan: error:" in capsys.readouterr().err
    assert not marker.exists()


def test_malicious_checkpoint_in_a_run_folder_is_skipped(runs, tmp_path, capsys):
    """A run whose newest 'checkpoint' is a pickle: skipped with a warning, never unpickled."""
    run = tmp_path / "run"
    shutil.copytree(runs["cond"], run)
    marker = tmp_path / "marker"
    (checkpoint.checkpoint_dir(run) / checkpoint.name_for(99)).write_bytes(pickle.dumps(Marker(marker)))
    d = npz(run, tmp_path / "s.npz", "--n", "3")
    assert d["images"].shape == (3, 1, 28, 28)
    assert checkpoint.name_for(99) in capsys.readouterr().err
    assert not marker.exists()


def test_missing_run(tmp_path, capsys):
    assert run_sample(tmp_path / "nope", tmp_path / "s.npz") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_sample(tmp_path, tmp_path / "s.npz") == 2  # a folder without checkpoints
    assert "no readable checkpoint" in capsys.readouterr().err


def test_batch_size_zero(runs, tmp_path, capsys):
    assert run_sample(runs["cond"], tmp_path / "s.npz", "--n", "4", "--batch-size", "0") == 2


def test_batch_size_negative(runs, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert run_sample(runs["cond"], out, "--n", "4", "--batch-size", "-1") == 2
    assert not out.exists()


def test_negative_nrow(runs, tmp_path, capsys):
    assert run_sample(runs["cond"], tmp_path / "s.png", "--n", "4", "--nrow", "-1") == 2


# ---- any --n: noise in blocks, samples written chunk by chunk -----------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dcgan.sampling import noise_blocks  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), z_dim=st.integers(1, 130), rows=st.sampled_from([16, 32, 48, 256, 1024]),
       seed=st.integers(0, 2**31))
def test_noise_in_blocks_continues_one_draw_exactly(n, z_dim, rows, seed):
    """The blocks are the one (n, z_dim) draw of noise(), bit for bit, whatever their size: so
    samples do not depend on how many are asked for at once, and any n needs one block of memory."""
    blocks = list(noise_blocks(n, z_dim, seed, rows))
    assert all(len(b) <= rows + 16 for b in blocks)
    assert torch.equal(torch.cat(blocks), noise(n, z_dim, seed))


def test_a_large_npz_is_written_in_chunks_and_equals_the_samples_in_memory(runs, tmp_path, monkeypatch):
    """20,000 samples: the .npz holds what generate() gives in memory, and no noise draw during the
    command is larger than one block."""
    run = runs["cond"]
    G, _ = load_generator(run)
    expected = generate(G, 20_000, parse_labels("all", 20_000, G.num_classes), seed=4)
    drawn, randn = [], torch.randn

    def recording_randn(*size, **kwargs):
        result = randn(*size, **kwargs)
        drawn.append(result.numel())
        return result

    monkeypatch.setattr(torch, "randn", recording_randn)
    out = tmp_path / "big.npz"
    assert run_sample(run, out, "--n", "20000", "--seed", "4") == 0
    monkeypatch.undo()
    assert max(drawn) <= 4096 * G.z_dim
    data = np.load(out)
    assert data["images"].dtype == np.uint8 and np.array_equal(data["images"], expected.numpy())
    assert data["labels"].dtype == np.int64 and data["labels"].tolist() == [i % 10 for i in range(20_000)]


def test_more_samples_than_the_disk_holds_is_refused_before_any_work(runs, tmp_path, monkeypatch, capsys):
    import collections

    free = collections.namedtuple("usage", "total used free")(10**12, 0, 10**9)  # 1 GB free
    monkeypatch.setattr(shutil, "disk_usage", lambda path: free)
    out = tmp_path / "huge.npz"
    assert run_sample(runs["cond"], out, "--n", "100000000") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "100,000,000 samples need 73.8 GiB on disk and 0.9 GiB is free" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".huge*"))


def test_a_grid_too_large_for_one_png_is_refused(runs, tmp_path, capsys):
    assert run_sample(runs["cond"], tmp_path / "x.png", "--n", "1000000") == 2
    assert "write them to an .npz instead" in capsys.readouterr().err
