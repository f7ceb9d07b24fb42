"""Toy GANs on 2-D points: sources, the mlp family, the monitors, pictures, sampling, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan import checkpoint
from dcgan.cli import main
from dcgan.config import DataConfig, ModelConfig
from dcgan.data.loader import DeviceBatches
from dcgan.data.prepare import prepare
from dcgan.data.raw import kind_of
from dcgan.data.sources import SOURCES
from dcgan.errors import UserError
from dcgan.models import build_discriminator, build_generator
from dcgan.sampling import generate
from dcgan.toy.distributions import TARGETS
from dcgan.toy.measures import mode_coverage, moment_errors

from conftest import TINY, needs_mnist, skip_without_mnist

# small toy models: a few milliseconds a step
SMALL = [a for kv in ("model.g_width=32", "model.d_width=32", "model.g_depth=2", "model.d_depth=2", "train.tick_every=5")
         for a in ("--set", kv)]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train(*args: str) -> None:
    assert main(["train", *args, "--device", "cpu", "--quiet"]) == 0


# ---- sources -----------------------------------------------------------------------------------

def test_gaussian_source_has_the_target_mean_and_covariance():
    ds = prepare(DataConfig(dataset="gaussian"))
    assert ds.images.dtype == np.float32 and ds.images.shape == (100_000, 2)
    assert ds.shape == (2,) and ds.kind == "points" and ds.num_classes == 0
    assert (ds.labels == 0).all()
    A = np.array([[1.0, 2.0], [-0.1, 0.5]])
    np.testing.assert_allclose(TARGETS["gaussian"].cov, A.T @ A)
    np.testing.assert_allclose(ds.images.mean(0), [1.0, 2.0], atol=0.02)
    cov = np.cov(np.asarray(ds.images, np.float64), rowvar=False)
    assert np.linalg.norm(cov - A.T @ A) / np.linalg.norm(A.T @ A) < 0.02


@pytest.mark.parametrize("name, k, sigma", [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixture_sources_place_each_label_at_its_mode(name, k, sigma):
    ds = prepare(DataConfig(dataset=name))
    target = SOURCES.get(name).target
    centres = np.asarray(target.centres)
    assert ds.num_classes == k and len(centres) == k and target.sigma == sigma
    if name == "ring8":
        np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2.0)
        angles = np.sort(np.mod(np.arctan2(centres[:, 1], centres[:, 0]), 2 * np.pi))
        np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 8)
    else:
        assert sorted({c for xy in centres for c in xy}) == [-4, -2, 0, 2, 4]
        assert len({tuple(c) for c in centres}) == 25
    offsets = ds.images - centres[ds.labels]  # (N, 2)
    np.testing.assert_allclose(offsets.std(0), [sigma, sigma], rtol=0.03)
    assert np.abs(offsets).max() < 6 * sigma
    counts = np.bincount(ds.labels, minlength=k)
    assert counts.min() > 0.9 * len(ds) / k  # components equally likely
    m = mode_coverage(np.asarray(ds.images[:10_000]), centres, sigma, ds.labels[:10_000])
    assert m["modes_covered"] == k and m["hq_frac"] > 0.98 and m["label_match"] > 0.98


def test_toy_data_is_the_same_in_every_run_and_cached(tmp_path, monkeypatch):
    a = prepare(DataConfig(dataset="ring8"))
    monkeypatch.setenv("DCGAN_CACHE", str(tmp_path))  # a fresh cache: drawn again, same content
    b = prepare(DataConfig(dataset="ring8"))
    assert a.meta["content_hash"] == b.meta["content_hash"]
    np.testing.assert_array_equal(a.images, b.images)
    assert list(tmp_path.iterdir()) and isinstance(prepare(DataConfig(dataset="ring8")).images, np.memmap)
    test = prepare(DataConfig(dataset="ring8", split="test"))
    assert len(test) == 10_000 and test.meta["content_hash"] != a.meta["content_hash"]


def test_points_refuse_a_resolution():
    with pytest.raises(UserError, match="resolution"):
        prepare(DataConfig(dataset="gaussian", resolution=32))


def test_point_batches_are_not_rescaled():
    points = np.random.default_rng(0).normal(5.0, 3.0, (100, 2)).astype(np.float32)
    b = DeviceBatches(points, np.zeros(100, np.int64), 10, 0, torch.device("cpu"))
    x, _ = b.get(0)
    assert x.dtype == torch.float32 and x.shape == (10, 2)
    np.testing.assert_array_equal(x.numpy(), points[b.order(0)[:10].numpy()])
    images = np.full((20, 1, 4, 4), 255, np.uint8)
    x, _ = DeviceBatches(images, np.zeros(20, np.int64), 5, 0, torch.device("cpu")).get(0)
    assert torch.all(x == 1.0)  # uint8 images still map to [-1, 1]


# ---- the mlp family ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2,), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("k", [0, 10])
def test_mlp_shapes(shape, k):
    cfg = ModelConfig(arch="mlp", z_dim=8, g_width=16, d_width=16, g_depth=2, d_depth=2)
    G, D = build_generator(cfg, shape, k), build_discriminator(cfg, shape, k)
    z, y = torch.randn(5, 8), (torch.arange(5) % k if k else None)
    x = G(z, y)
    assert x.shape == (5, *shape) and G.out_shape == shape and G.num_classes == k
    assert D(x, y).shape == (5,)
    if len(shape) == 3:
        assert x.abs().max() <= 1.0  # tanh for images
        assert generate(G, 3, y[:3] if k else None).dtype == torch.uint8
    else:
        out = generate(G, 3, y[:3] if k else None)
        assert out.dtype == torch.float32 and out.shape == (3, 2)
    if k:  # the label changes the output
        assert not torch.equal(G(z, torch.zeros(5, dtype=torch.long)), G(z, torch.ones(5, dtype=torch.long)))


def test_mlp_g_depth_0_is_one_linear_layer_and_points_are_unbounded():
    G = build_generator(ModelConfig(arch="mlp", z_dim=2, g_depth=0), (2,), 0)
    linears = [m for m in G.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (2, 2)
    with torch.no_grad():
        linears[0].bias.fill_(10.0)
    assert G(torch.zeros(1, 2)).min() == 10.0  # linear output, no tanh


def test_dcgan_arch_refuses_points():
    with pytest.raises(UserError, match="mlp"):
        build_generator(ModelConfig(arch="dcgan"), (2,), 0)
    assert kind_of((2,)) == "points" and kind_of((1, 28, 28)) == "images"


# ---- measures ----------------------------------------------------------------------------------

def test_mode_coverage_and_moments_on_known_samples():
    target = TARGETS["ring8"]
    centres = np.asarray(target.centres)
    pts = np.concatenate([centres[:6].repeat(100, 0), np.full((400, 2), 0.5)])  # 6 modes + junk
    m = mode_coverage(pts, centres, target.sigma)
    assert m == {"modes_covered": 6, "num_modes": 8, "hq_frac": 0.6}
    few = np.concatenate([centres[:1].repeat(995, 0), centres[1:2].repeat(5, 0)])  # mode 1 holds 0.5% < 1%
    assert mode_coverage(few, centres, target.sigma)["modes_covered"] == 1
    x, _ = TARGETS["gaussian"].sample(50_000, 1)
    e = moment_errors(x, TARGETS["gaussian"].mean, TARGETS["gaussian"].cov)
    assert max(e["mean_err"]) < 0.03 and e["cov_rel_err"] < 0.03


# ---- training, monitors, pictures, sampling ------------------------------------------------------

def test_short_gaussian_run_moves_the_mean_towards_the_target(tmp_path):
    run = tmp_path / "g"
    train("toy-gaussian", "--out", str(run), "--steps", "600", "--set", "train.tick_every=100")
    lines = metrics(run)
    first, last = lines[0], lines[-1]
    assert len(lines) == 6
    # the linear G starts near mean (0, 0): errors about (1, 2); 600 steps take them well below half that
    assert last["mean_err"][0] < 0.5 and last["mean_err"][1] < 1.0
    assert sum(last["mean_err"]) < 0.6 * sum(first["mean_err"])
    assert last["cov_rel_err"] < first["cov_rel_err"]
    assert 0.0 <= last["d_acc"] <= 1.0 and len(last["sample_mean"]) == 2


def test_ring8_tick_writes_monitor_keys_scatter_and_gif(tmp_path):
    run = tmp_path / "r"
    train("toy-ring8", "--out", str(run), "--steps", "10", *SMALL)
    lines = metrics(run)
    assert [r["step"] for r in lines] == [5, 10]
    for r in lines:
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "img_per_s", "images_seen"):
            assert key in r  # the existing keys stay
        for key in ("d_acc_real", "d_acc_fake", "d_acc", "hq_frac"):
            assert 0.0 <= r[key] <= 1.0
        assert r["d_acc"] == pytest.approx((r["d_acc_real"] + r["d_acc_fake"]) / 2)
        assert 0 <= r["modes_covered"] <= 8 and r["num_modes"] == 8
    png = run / "grids" / "step-000000010.png"
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.width >= 300
    with Image.open(run / "progress.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 2


def test_sample_writes_points_and_a_scatter(tmp_path, capsys):
    run = tmp_path / "r"
    train("toy-ring8", "--out", str(run), "--steps", "5", *SMALL)
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "50", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert set(f.files) == {"points"}
        assert f["points"].dtype == np.float32 and f["points"].shape == (50, 2)
    assert main(["sample", str(run), "--n", "50", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as im:
        im.load()
        assert im.format == "PNG"
    capsys.readouterr()


def test_conditional_toy_samples_carry_labels(tmp_path, capsys):
    run = tmp_path / "c"
    train("toy-ring8-conditional", "--out", str(run), "--steps", "5", *SMALL)
    assert "label_match" in metrics(run)[-1]
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "20", "--labels", "3", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["points"].dtype == np.float32 and f["points"].shape == (20, 2)
        assert f["labels"].dtype == np.int64 and (f["labels"] == 3).all()
    capsys.readouterr()


def _compare_runs(a: Path, b: Path) -> None:
    sa, sb = checkpoint.latest(a)[1], checkpoint.latest(b)[1]
    assert sa["step"] == sb["step"]
    for name in ("G", "D", "G_ema"):
        for key, value in sa["models"][name].items():
            assert torch.equal(value, sb["models"][name][key]), (name, key)
    drop = ("img_per_s", "elapsed_s", "time")
    la = [{k: v for k, v in r.items() if k not in drop} for r in metrics(a)]
    lb = [{k: v for k, v in r.items() if k not in drop} for r in metrics(b)]
    assert la == lb


def test_toy_resume_is_exact(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    sets = [*SMALL, "--checkpoint-every", "10"]
    train("toy-ring8-conditional", "--out", str(straight), "--steps", "20", *sets)
    train("toy-ring8-conditional", "--out", str(resumed), "--steps", "10", *sets)
    train("toy-ring8-conditional", "--out", str(resumed), "--steps", "20", "--resume", *sets)
    _compare_runs(straight, resumed)
    with Image.open(resumed / "progress.gif") as gif:
        assert gif.n_frames == 4  # all ticks, also those before the resume


@needs_mnist
def test_image_resume_is_still_exact(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    sets = [a for kv in (*TINY, "train.batch=8") for a in ("--set", kv)] + ["--checkpoint-every", "5"]
    train("mnist-dcgan", "--out", str(straight), "--steps", "10", *sets)
    train("mnist-dcgan", "--out", str(resumed), "--steps", "5", *sets)
    train("mnist-dcgan", "--out", str(resumed), "--steps", "10", "--resume", *sets)
    _compare_runs(straight, resumed)
    assert not (resumed / "progress.gif").exists()
    with Image.open(resumed / "grids" / "step-000000010.png") as im:
        assert im.size == (302, 302)  # the 10x10 image grid, as before


def test_mlp_trains_on_images_too(tmp_path):
    skip_without_mnist()
    run = tmp_path / "m"
    train("mnist-dcgan", "--out", str(run), "--steps", "3", "--set", "model.arch=mlp", "--set", "model.g_width=16",
          "--set", "model.d_width=16", "--set", "train.tick_every=3", "--set", "train.batch=8")
    assert "d_acc" not in metrics(run)[-1]  # the image monitor adds no keys
    assert (run / "grids" / "step-000000003.png").is_file()


# ---- dcgan eval of a toy run: the monitor's measures, once, with a protocol ---------------------------

def eval_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["eval", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_evaluate_points_of_perfect_samples_covers_every_mode():
    from dcgan.toy.evaluate import evaluate_points, summary_line

    target = TARGETS["ring8"]
    centres = np.asarray(target.centres, np.float32)
    labels = np.arange(800) % 8
    r = evaluate_points(centres[labels], labels, "ring8", seed=3)
    assert r["mode_coverage"] == {"modes_covered": 8, "num_modes": 8, "hq_frac": 1.0, "label_match": 1.0}
    # the floor: the same measures of 800 real points of the test split (their own labels)
    real = r["real"]["mode_coverage"]
    assert real["modes_covered"] == 8 and 0.95 < real["hq_frac"] <= 1.0 and real["label_match"] == real["hq_frac"]
    p = r["protocol"]
    assert p["data_kind"] == "points" and p["n_fake"] == p["n_real"] == 800 and p["seed"] == 3
    assert p["reference"]["split"] == "test" and p["target"]["modes"] == 8 and p["target"]["sigma"] == 0.02
    assert "d_accuracy" not in r and p["measures"] == ["mode_coverage"]
    json.dumps(r)  # JSON as it is
    # every point asked for the wrong mode: all high quality, no label match; two modes only: 2/8
    assert evaluate_points(centres[labels], (labels + 1) % 8, "ring8")["mode_coverage"]["label_match"] == 0.0
    assert evaluate_points(centres[labels % 2], None, "ring8")["mode_coverage"]["modes_covered"] == 2
    assert summary_line(r).startswith("8/8 modes covered, 100.0% high quality, label match 100.0% (real data: 8/8, ")
    g = evaluate_points(TARGETS["gaussian"].sample(20_000, 5)[0], None, "gaussian")
    assert max(g["moment_errors"]["mean_err"]) < 0.05 and g["moment_errors"]["cov_rel_err"] < 0.05
    assert "covariance error" in summary_line(g)
    with pytest.raises(UserError, match="holds images, not 2-D points"):
        evaluate_points(centres, None, "mnist")
    with pytest.raises(UserError, match=r"expected \(N, 2\)"):
        evaluate_points(np.zeros((4, 3)), None, "ring8")


def test_dcgan_eval_of_a_toy_run_reports_its_measures_and_records_them(tmp_path, capsys):
    run = tmp_path / "c"
    train("toy-ring8-conditional", "--out", str(run), "--steps", "10", *SMALL, "--checkpoint-every", "5")
    before = len(metrics(run))
    rc, out, err = eval_cli(capsys, str(run), "--n", "400", "--seed", "2", "--device", "cpu")
    assert rc == 0, err
    r = json.loads(out)
    m, d = r["mode_coverage"], r["d_accuracy"]
    assert isinstance(m["modes_covered"], int) and 0 <= m["modes_covered"] <= m["num_modes"] == 8
    assert 0.0 <= m["hq_frac"] <= 1.0 and 0.0 <= m["label_match"] <= m["hq_frac"]
    assert all(0.0 <= d[k] <= 1.0 for k in ("d_acc", "d_acc_real", "d_acc_fake"))
    assert d["d_acc"] == pytest.approx((d["d_acc_real"] + d["d_acc_fake"]) / 2)
    assert r["real"]["mode_coverage"]["modes_covered"] == 8
    p = r["protocol"]
    assert (p["source"], p["step"], p["generator"], p["n_fake"], p["seed"]) == ("run", 10, "ema", 400, 2)
    assert p["reference"]["split"] == "test" and p["labels"].startswith("all classes")
    assert "raw generator" in p["d_accuracy"]
    # stderr: the progress lines, then one summary line for a person, then where it was recorded
    lines = err.splitlines()
    summary = next(line for line in lines if "modes covered" in line)
    assert summary.startswith(f"{m['modes_covered']}/8 modes covered") and "D accuracy" in summary
    assert "(n = 400 vs the test split of ring8)" in summary and "appended the result" in lines[-1]
    rec = metrics(run)
    assert len(rec) == before + 1 and rec[-1]["kind"] == "eval" and rec[-1]["step"] == 10
    assert rec[-1]["mode_coverage"] == m and rec[-1]["d_accuracy"] == d
    # the same again: the same numbers; --no-record leaves metrics.jsonl alone; --quiet: the summary only
    rc, out2, err = eval_cli(capsys, str(run), "--n", "400", "--seed", "2", "--device", "cpu", "--no-record", "--quiet")
    assert rc == 0 and len(metrics(run)) == before + 1
    assert {k: v for k, v in json.loads(out2).items() if k != "elapsed_s"} == \
        {k: v for k, v in r.items() if k != "elapsed_s"}
    assert err == summary + "\n"
    # the older checkpoint is slim (no D): the measures of G, and why D's accuracy is missing
    slim = run / "checkpoints" / "step-000000005.ckpt"
    assert checkpoint.is_slim(slim)
    rc, out, err = eval_cli(capsys, str(slim), "--n", "100", "--device", "cpu")
    assert rc == 0, err
    r = json.loads(out)
    assert "d_accuracy" not in r and r["protocol"]["d_accuracy"].startswith("not measured")
    assert r["protocol"]["source"] == "checkpoint" and r["protocol"]["step"] == 5 and "mode_coverage" in r
    assert len(metrics(run)) == before + 1  # a checkpoint file is not recorded


def test_dcgan_eval_of_a_gaussian_toy_run_reports_moment_errors(tmp_path, capsys):
    run = tmp_path / "g"
    train("toy-gaussian", "--out", str(run), "--steps", "5", "--set", "train.tick_every=5")
    rc, out, err = eval_cli(capsys, str(run), "--n", "300", "--device", "cpu", "--raw", "--no-record")
    assert rc == 0, err
    r = json.loads(out)
    e = r["moment_errors"]
    assert len(e["mean_err"]) == 2 and all(v >= 0 for v in e["mean_err"]) and e["cov_rel_err"] >= 0
    assert len(e["sample_mean"]) == 2 and "mode_coverage" not in r and r["protocol"]["generator"] == "raw"
    assert r["real"]["moment_errors"]["cov_rel_err"] < 0.5 and 0 <= r["d_accuracy"]["d_acc"] <= 1
    assert r["protocol"]["target"]["mean"] == [1.0, 2.0]
    assert "mean error" in err and "covariance error" in err and "D accuracy" in err


def test_dcgan_eval_refusals_for_toy_data_say_what_to_do(tmp_path, capsys):
    run = tmp_path / "r"
    train("toy-ring8", "--out", str(run), "--steps", "5", *SMALL)
    for extra, flag in ((["--metrics", "fid"], "--metrics"), (["--metrics", "modes"], "--metrics"),
                        (["--extractor", "classifier"], "--extractor")):
        rc, out, err = eval_cli(capsys, str(run), "--device", "cpu", *extra)
        assert rc == 2 and out == "" and f"drop {flag}" in err and "toy run" in err and err.count("\n") == 1
    # the samples of a toy run as an .npz: measured against the target --dataset names (no D)
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "64", "--out", str(npz)]) == 0
    rc, out, err = eval_cli(capsys, str(npz))
    assert rc == 2 and "--dataset" in err and "ring8" in err
    rc, out, err = eval_cli(capsys, str(npz), "--dataset", "mnist")
    assert rc == 2 and "holds images, not 2-D points" in err
    rc, out, err = eval_cli(capsys, str(npz), "--dataset", "ring8", "--n", "50")
    assert rc == 0, err
    r = json.loads(out)
    assert r["protocol"]["source"] == "samples" and r["protocol"]["n_fake"] == 50 and "d_accuracy" not in r
    assert "modes covered" in err
    # the classifier route says where a toy run's measures are
    rc, out, err = eval_cli(capsys, "train-classifier", "ring8", "--epochs", "1",
                            "--out", str(tmp_path / "p.safetensors"))
    assert rc == 2 and "'dcgan eval RUN'" in err


def test_a_sweep_of_a_toy_preset_is_refused_before_any_run(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "toy-ring8", "--grid", "loss.r1_gamma=0,0.1", "--steps", "5", "--out", str(out),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "2-D points" in err and "dcgan eval RUN" in err and not out.exists()
