"""`dcgan interpolate`: slerp between the noises of two seeds, or one z through the classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from conftest import train_tiny_run
from dcgan import load_generator
from dcgan.cli import main
from dcgan.config import ModelConfig
from dcgan.errors import UserError
from dcgan.interpolate import interpolate, interpolation_noise, slerp
from dcgan.models import build_generator
from dcgan.sampling import generate, noise

PAD = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("interp") / "run")


@pytest.fixture(scope="module")
def G(run):
    return load_generator(run)[0]


def tile(strip: np.ndarray, i: int, h: int = 28, w: int = 28) -> np.ndarray:
    """Frame i of a one-row strip (gaps of PAD pixels), as (H, W)."""
    left = PAD + i * (w + PAD)
    return strip[PAD : PAD + h, left : left + w]


def sample(G, seed: int, label: int) -> np.ndarray:
    return generate(G, 1, torch.tensor([label]), seed=seed)[0, 0].numpy()


# ---- slerp ---------------------------------------------------------------------------------------

def test_slerp_ends_are_exactly_the_seeds_noises():
    z = interpolation_noise(100, 3, 8, 7)
    assert z.shape == (7, 100) and z.dtype == torch.float32
    assert torch.equal(z[0], noise(1, 100, 3)[0]) and torch.equal(z[-1], noise(1, 100, 8)[0])
    # on the great circle: norms stay near those of the ends (a straight line would dip to ~1/sqrt(2) at the middle)
    norms = z.norm(dim=1)
    assert norms.min() > 0.9 * min(norms[0], norms[-1])


def test_slerp_of_parallel_vectors_is_a_line():
    a = torch.ones(4)
    out = slerp(a, 2 * a, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(out, torch.stack([a, 1.5 * a, 2 * a]).double())


def test_interpolate_rejects_points_and_unconditional_labels():
    cfg = ModelConfig(g_width=8, d_width=8)
    plain = build_generator(cfg, (1, 28, 28), 0).eval()
    frames, labels = interpolate(plain, 1, 2, steps=3)
    assert frames.shape == (3, 1, 28, 28) and labels is None
    with pytest.raises(UserError, match="unconditional"):
        interpolate(plain, 1, 2, label=0)
    with pytest.raises(UserError, match="unconditional"):
        interpolate(plain, 1, across_labels=True)
    points = build_generator(ModelConfig(arch="mlp", g_width=8, z_dim=2), (2,), 0).eval()
    with pytest.raises(UserError, match="points"):
        interpolate(points, 1, 2)


# ---- the command ---------------------------------------------------------------------------------

def test_png_strip_ends_equal_the_samples_of_the_seeds(run, G, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "i.png"
    assert main(["interpolate", str(run), "--from-seed", "5", "--to-seed", "9", "--frames", "6", "--label", "3",
                 "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 6 and info["labels"] == [3] * 6
    strip = np.asarray(Image.open(out))
    assert strip.shape == (28 + 2 * PAD, 6 * (28 + PAD) + PAD)
    assert np.array_equal(tile(strip, 0), sample(G, 5, 3))
    assert np.array_equal(tile(strip, 5), sample(G, 9, 3))
    assert not np.array_equal(tile(strip, 2), tile(strip, 0))


def test_gif_has_one_frame_per_step(run, G, tmp_path):
    out = tmp_path / "i.gif"
    assert main(["interpolate", str(run), "--from-seed", "1", "--to-seed", "2", "--frames", "8", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "GIF" and im.size == (28, 28) and im.n_frames == 8
        frames = [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(im)]
    assert np.array_equal(frames[0], sample(G, 1, 0))  # default label 0; gray GIF frames are exact
    assert np.array_equal(frames[-1], sample(G, 2, 0))


def test_scale_enlarges_the_pixels(run, G, tmp_path):
    out = tmp_path / "big.gif"
    assert main(["interpolate", str(run), "--from-seed", "1", "--to-seed", "2", "--frames", "3", "--scale", "3",
                 "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (84, 84) and im.n_frames == 3
        first = np.asarray(im.convert("L"))
    assert np.array_equal(first[::3, ::3], sample(G, 1, 0))


def test_across_labels_one_frame_per_class_with_fixed_z(run, G, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "a.png"
    assert main(["interpolate", str(run), "--from-seed", "4", "--across-labels", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 10 and info["labels"] == list(range(10))
    strip = np.asarray(Image.open(out))
    for k in (0, 7, 9):
        assert np.array_equal(tile(strip, k), sample(G, 4, k))
    gif = tmp_path / "a.gif"
    assert main(["interpolate", str(run), "--from-seed", "4", "--across-labels", "--out", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 10


@pytest.mark.parametrize("extra, message", [
    (["--to-seed", "2", "--frames", "1"], "--frames must be >= 2"),
    (["--to-seed", "2", "--label", "10"], "out of range"),
    (["--to-seed", "2", "--label", "-1"], "out of range"),
    (["--label", "1", "--across-labels"], "not both"),
    (["--across-labels", "--to-seed", "2"], "drop --to-seed"),
    ([], "--to-seed is required"),
    (["--to-seed", "2", "--scale", "0"], "--scale"),
])
def test_bad_input_exits_2(run, tmp_path, capsys, extra, message):
    capsys.readouterr()
    assert main(["interpolate", str(run), "--from-seed", "1", *extra, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_bad_output_and_run_exit_2(run, tmp_path, capsys):
    assert main(["interpolate", str(run), "--from-seed", "1", "--to-seed", "2", "--out", str(tmp_path / "x.jpg")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["interpolate", str(tmp_path / "empty"), "--from-seed", "1", "--to-seed", "2",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "no readable checkpoint" in capsys.readouterr().err


def test_seed_and_frames_are_the_flags_and_the_old_spellings_still_work(run, tmp_path, capsys):
    """--seed is the first frame's noise seed (as in `dcgan sample --seed`), --frames the count; the old
    --from-seed and --steps give the same strip, --steps with a one-line deprecation notice."""
    new, old = tmp_path / "new.png", tmp_path / "old.png"
    capsys.readouterr()
    assert main(["interpolate", str(run), "--seed", "3", "--to-seed", "4", "--frames", "4", "--out", str(new)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["interpolate", str(run), "--from-seed", "3", "--to-seed", "4", "--steps", "4", "--out", str(old)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--steps is deprecated" in err[0] and "--frames" in err[0]
    assert np.array_equal(np.asarray(Image.open(new)), np.asarray(Image.open(old)))
    assert Image.open(new).size[0] == 4 * (28 + PAD) + PAD
