"""`dcgan sweep`: every combination over every seed, measured and tabulated; a second call continues
(finished runs are only read back, shorter ones resumed); the grid's values parse as --set does."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import TINY, needs_mnist
from dcgan import checkpoint
from dcgan.cli import main
from dcgan.errors import UserError
from dcgan.sweep import parse_grid, variant_name

SETS = [a for s in TINY + ["train.batch=16"] for a in ("--set", s)]


def test_grid_values_parse_like_set_values_and_commas_can_be_quoted():
    assert parse_grid(["loss.r1_gamma=0,0.5", "model.spectral_norm=true,false"]) == [
        ("loss.r1_gamma", [0, 0.5]), ("model.spectral_norm", [True, False])]
    assert parse_grid(['train.augment="translation,cutout",""']) == [("train.augment", ["translation,cutout", ""])]
    with pytest.raises(UserError, match="expected section.key=value1,value2"):
        parse_grid(["loss.r1_gamma"])
    with pytest.raises(UserError, match="given twice"):
        parse_grid(["loss.r1_gamma=0", "loss.r1_gamma=1"])
    assert variant_name([("loss.r1_gamma", 0.1), ("train.augment", "translation,cutout")]) == \
        "r1_gamma=0.1_augment=translation,cutout"


@needs_mnist
def test_a_sweep_trains_measures_and_tabulates_every_combination_then_continues(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "mnist-cdcgan", "--grid", "loss.r1_gamma=0,0.1", "--seeds", "2", "--steps", "3", "--n", "100",
            "--out", str(out), "--device", "cpu", *SETS, "--set", "eval.every_kimg=0.016", "--set", "eval.n=50"]
    assert main(argv) == 0
    data = json.loads((out / "table.json").read_text())
    assert sorted(data["variants"]) == ["r1_gamma=0", "r1_gamma=0.1"] and data["steps"] == 3
    for name, row in data["variants"].items():
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        assert all(r["step"] == 3 and 0 <= r["recall"] <= 1 and 0 <= r["label_accuracy"] <= 1 for r in row["runs"])
        fids = [r["fid"] for r in row["runs"]]
        assert row["mean"]["fid"] == pytest.approx(sum(fids) / 2)
        assert "late_over_best" in row["mean"]  # the runs evaluated themselves while training
        for seed in (0, 1):
            assert Image.open(out / "grids" / f"{name}-s{seed}.png").size == (10 * 30 + 2, 10 * 30 + 2)
    assert len(data["variants"]["r1_gamma=0.1"]["runs"]) == 2
    table = (out / "table.md").read_text()
    assert "| r1_gamma=0.1 |" in table and " ± " in table
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["variants"]["r1_gamma=0"]["fid"] == \
        pytest.approx(data["variants"]["r1_gamma=0"]["mean"]["fid"])

    # again: nothing is trained or measured anew
    runs = sorted(p for p in out.iterdir() if p.name.startswith("r1_gamma"))
    stamps = {p: (checkpoint.latest(p)[0].stat().st_mtime_ns, (p / "sweep-eval.json").stat().st_mtime_ns) for p in runs}
    assert main(argv) == 0
    assert stamps == {p: (checkpoint.latest(p)[0].stat().st_mtime_ns, (p / "sweep-eval.json").stat().st_mtime_ns)
                      for p in runs}
    assert json.loads((out / "table.json").read_text())["variants"] == data["variants"]

    # a longer budget: every run continues from its checkpoint to the new step count
    argv[argv.index("--steps") + 1] = "5"
    assert main(argv) == 0
    longer = json.loads((out / "table.json").read_text())
    assert all(r["step"] == 5 for row in longer["variants"].values() for r in row["runs"])
    train_lines = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train_lines if r["kind"] == "train"][-1] == 5


@needs_mnist
@pytest.mark.parametrize("extra,word", [
    (["--grid", "loss.nope=1,2", "--steps", "2"], "unknown config key"),
    (["--grid", "loss.r1_gamma=-1,0", "--steps", "2"], "r1_gamma"),
    (["--grid", "loss.r1_gamma=0,1"], "--steps N or --kimg K"),
    (["--grid", "loss.r1_gamma=0,1", "--steps", "2", "--kimg", "3"], "--steps N or --kimg K"),
])
def test_a_bad_sweep_is_refused_before_any_run(extra, word, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "mnist-cdcgan", "--out", str(out), "--device", "cpu", *extra]) == 2
    assert word in capsys.readouterr().err and not out.exists()
