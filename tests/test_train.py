"""End-to-end training on real MNIST with tiny widths: run artifacts, determinism, exact resume."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, needs_mnist, wrap_training_batches
from dcgan import checkpoint
from dcgan.cli import main
from dcgan.config import Config, resolve

pytestmark = needs_mnist

SETS = [a for item in TINY for a in ("--set", item)]
TIMING = {"img_per_s", "elapsed_s", "time"}
REQUIRED = {"step", "images_seen", "d_loss", "g_loss", "d_real", "d_fake", "img_per_s"}
PAD = 2  # dcgan/images.py make_grid's default padding


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: a second thread only adds contention on a shared machine
    yield
    torch.set_num_threads(old)


def train(preset: str, out: Path | None, *extra: str) -> int:
    args = ["train", preset, "--device", "cpu", "--quiet", *SETS, *extra]
    if out is not None:
        args += ["--out", str(out)]
    return main(args)


def sample(run: Path, out: Path, *extra: str) -> dict:
    assert main(["sample", str(run), "--out", str(out), *extra]) == 0
    return dict(np.load(out))


def final_state(run: Path) -> dict:
    return checkpoint.latest(run)[1]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.rglob("*")) if p.is_file()}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_optim(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert_same_tensors(a["state"][i], b["state"][i])


# ---- the main conditional run ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "cdcgan"
    assert train("mnist-cdcgan", out, "--steps", "30") == 0
    return out


def test_run_folder_contents(cond_run):
    ckpts = checkpoint.list_checkpoints(cond_run)
    assert [p.name for p in ckpts] == [checkpoint.name_for(30)]  # one at the end (checkpoint_every is 500)
    state = checkpoint.load(ckpts[0])
    assert state["step"] == 30 and state["images_seen"] == 30 * 64
    assert state["data"]["num_classes"] == 10 and state["data"]["shape"] == [1, 28, 28]
    assert set(state["models"]) == {"G", "D", "G_ema"} and state["models"]["G_ema"] is not None
    grids = sorted(p.name for p in (cond_run / "grids").iterdir())
    assert grids == [f"step-{s:09d}.png" for s in (5, 10, 15, 20, 25, 30)]  # tick_every=5


def test_config_toml_is_the_resolved_config(cond_run):
    saved = Config.from_dict(tomllib.loads((cond_run / "config.toml").read_text()))
    expected, _ = resolve("mnist-cdcgan", TINY, {"train.steps": 30, "train.device": "cpu"})
    assert saved == expected
    assert final_state(cond_run)["config"] == expected.to_dict()


def test_metrics_lines(cond_run):
    lines = metrics(cond_run)
    assert [r["step"] for r in lines] == [5, 10, 15, 20, 25, 30]
    for r in lines:
        assert REQUIRED <= r.keys()
        assert r["images_seen"] == r["step"] * 64
        assert 0.0 <= r["d_real"] <= 1.0 and 0.0 <= r["d_fake"] <= 1.0
        assert math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"])
        assert r["img_per_s"] > 0
    # at the start D cannot tell: both losses near log 2 per term
    assert lines[0]["d_loss"] == pytest.approx(2 * math.log(2), abs=0.1)
    assert lines[0]["g_loss"] == pytest.approx(math.log(2), abs=0.1)


def test_conditional_grid_has_one_row_per_class(cond_run):
    img = Image.open(cond_run / "grids" / f"step-{30:09d}.png")
    img.load()
    rows = cols = 10  # 10 classes, GRID_COLUMNS = 10
    assert img.mode == "L"
    assert img.size == (cols * (28 + PAD) + PAD, rows * (28 + PAD) + PAD)
    a = np.asarray(img)
    assert (a[:PAD] == 0).all() and (a[:, :PAD] == 0).all()  # the padding
    tiles = [[a[PAD + r * 30: PAD + r * 30 + 28, PAD + c * 30: PAD + c * 30 + 28] for c in range(cols)] for r in range(rows)]
    assert len({t.tobytes() for row in tiles for t in row}) == rows * cols  # no two tiles alike


class _LabelPainter(torch.nn.Module):
    """A stub conditional generator: image i is flat grey 20 * label + 10, its first three pixels a
    function of its noise (so a tile says which class and which noise it was drawn for)."""

    num_classes, z_dim, out_shape = 10, 4, (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))  # generate() reads the device off a parameter

    def forward(self, z, y):
        grey = (20 * y + 10).float()[:, None, None, None].expand(len(z), *self.out_shape).clone()
        grey[:, 0, 0, :3] = 100 + 100 * torch.sigmoid(z[:, :3])  # the noise, readable back
        return grey / 127.5 - 1.0  # to_uint8 maps it back to the grey levels above


def test_the_training_grid_puts_class_r_in_row_r_and_one_noise_per_column(tmp_path):
    """The grid the training monitor writes (ImageGrids, the function every tick calls), drawn by a
    generator that paints each image with its label: row r holds only class r, and every row of a
    column has the same noise."""
    from dcgan.training.monitor import GRID_COLUMNS, ImageGrids

    G = _LabelPainter()
    ImageGrids(G.num_classes, G.z_dim, seed=0, run_dir=tmp_path).tick(7, G, G, None)
    a = np.asarray(Image.open(tmp_path / "grids" / f"step-{7:09d}.png"))
    assert a.shape == (10 * (28 + PAD) + PAD, GRID_COLUMNS * (28 + PAD) + PAD)
    corners = np.zeros((10, GRID_COLUMNS, 3), np.uint8)
    for r in range(10):
        for c in range(GRID_COLUMNS):
            tile = a[PAD + r * 30: PAD + r * 30 + 28, PAD + c * 30: PAD + c * 30 + 28]
            assert (tile.ravel()[3:] == 20 * r + 10).all(), (r, c)  # class r, in row r
            corners[r, c] = tile[0, :3]
    assert (corners == corners[0]).all()  # the same noise down each column
    assert len({tuple(n) for n in corners[0].tolist()}) == GRID_COLUMNS  # and a different one in each column


def test_ema_differs_from_the_raw_generator(cond_run):
    models = final_state(cond_run)["models"]
    assert any(not torch.equal(models["G"][k], models["G_ema"][k]) for k in models["G"] if k.endswith("weight"))


# ---- determinism -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        runs[name] = root / name
        assert train("mnist-cdcgan", runs[name], "--steps", "8", "--seed", str(seed), "--set", "train.batch=16") == 0
    return runs


def test_streamed_data_trains_exactly_as_device_resident_data(seed_runs, tmp_path):
    """train.placement=stream (memory-mapped cache, a prefetch thread) gives the same run bit for bit."""
    out = tmp_path / "stream"
    assert train("mnist-cdcgan", out, "--steps", "8", "--seed", "0", "--set", "train.batch=16",
                 "--set", "train.placement=stream", "--set", "train.prefetch=2") == 0
    a, b = final_state(seed_runs["a"]), final_state(out)
    for k in ("G", "D", "G_ema"):
        assert_same_tensors(a["models"][k], b["models"][k])


def test_same_seed_gives_identical_weights(seed_runs):
    a, b = final_state(seed_runs["a"]), final_state(seed_runs["b"])
    for k in ("G", "D", "G_ema"):
        assert_same_tensors(a["models"][k], b["models"][k])
    for k in ("G", "D"):
        assert_same_optim(a["optim"][k], b["optim"][k])
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(seed_runs["a"])] == \
        [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(seed_runs["b"])]


def test_different_seeds_differ(seed_runs):
    a, c = final_state(seed_runs["a"]), final_state(seed_runs["c"])
    for k in ("G", "D"):
        assert any(not torch.equal(a["models"][k][n], c["models"][k][n]) for n in a["models"][k])


# ---- resume ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resume_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    straight, resumed = root / "straight", root / "resumed"
    assert train("mnist-cdcgan", straight, "--steps", "40", "--set", "train.batch=16") == 0
    assert train("mnist-cdcgan", resumed, "--steps", "20", "--set", "train.batch=16") == 0
    assert checkpoint.latest(resumed)[1]["step"] == 20
    # continue from the run folder itself: its config.toml is the input
    assert main(["train", str(resumed), "--resume", "--steps", "40", "--quiet"]) == 0
    return straight, resumed


def test_resume_is_bitwise_exact(resume_pair):
    straight, resumed = resume_pair
    a, b = final_state(straight), final_state(resumed)
    assert a["step"] == b["step"] == 40 and a["images_seen"] == b["images_seen"]
    for k in ("G", "D", "G_ema"):
        assert_same_tensors(a["models"][k], b["models"][k])
    for k in ("G", "D"):
        assert_same_optim(a["optim"][k], b["optim"][k])
    assert a["config"] == b["config"]
    assert [p.name for p in checkpoint.list_checkpoints(resumed)] == [checkpoint.name_for(s) for s in (20, 40)]


def test_resume_gives_identical_samples(resume_pair, tmp_path):
    straight, resumed = resume_pair
    a = sample(straight, tmp_path / "a.npz", "--n", "20", "--seed", "3")
    b = sample(resumed, tmp_path / "b.npz", "--n", "20", "--seed", "3")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])


def test_resume_gives_identical_metrics(resume_pair):
    straight, resumed = resume_pair
    a, b = metrics(straight), metrics(resumed)
    assert [r["step"] for r in a] == list(range(5, 41, 5))
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in a] == \
        [{k: v for k, v in r.items() if k not in TIMING} for r in b]
    for i in (20, 40):  # and the grids
        name = f"step-{i:09d}.png"
        assert np.array_equal(np.asarray(Image.open(straight / "grids" / name)),
                              np.asarray(Image.open(resumed / "grids" / name)))


def test_resume_with_a_changed_model_key(cond_run, capsys):
    before = snapshot(cond_run)
    assert main(["train", str(cond_run), "--resume", "--steps", "40", "--quiet", "--set", "model.g_width=16"]) == 2
    err = capsys.readouterr().err
    assert "model.g_width" in err and "Traceback" not in err
    assert snapshot(cond_run) == before


def test_out_at_an_existing_run_without_resume(cond_run, capsys):
    before = snapshot(cond_run)
    assert train("mnist-cdcgan", cond_run, "--steps", "40") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and str(cond_run) in err
    assert snapshot(cond_run) == before
    # the run folder itself as input, without --resume: same refusal
    assert main(["train", str(cond_run), "--steps", "40", "--quiet"]) == 2
    assert snapshot(cond_run) == before


def test_resume_at_the_target_step_trains_nothing(cond_run, capsys):
    before = snapshot(cond_run)
    assert main(["train", str(cond_run), "--resume", "--steps", "30", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 30
    after = snapshot(cond_run)
    assert {k: v for k, v in after.items() if k.startswith(("checkpoints", "grids"))} == \
        {k: v for k, v in before.items() if k.startswith(("checkpoints", "grids"))}


# ---- presets and options -------------------------------------------------------------------------

def test_unconditional_preset_trains(tmp_path, capsys):
    out = tmp_path / "dcgan"
    assert train("mnist-dcgan", out, "--steps", "5", "--set", "train.batch=16") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 5 and summary["images_seen"] == 80
    state = final_state(out)
    assert state["data"]["num_classes"] == 0 and state["config"]["model"]["conditional"] is False
    img = Image.open(out / "grids" / f"step-{5:09d}.png")
    assert img.size == (10 * (28 + PAD) + PAD,) * 2  # 10x10
    s = sample(out, tmp_path / "s.npz", "--n", "6")
    assert s["images"].shape == (6, 1, 28, 28) and "labels" not in s


def test_two_generator_steps(tmp_path):
    out = tmp_path / "g2"
    assert train("mnist-cdcgan", out, "--steps", "4", "--set", "train.batch=16", "--set", "optim.g_steps=2") == 0
    optim = final_state(out)["optim"]
    assert all(int(s["step"]) == 8 for s in optim["G"]["state"].values())  # two G updates per step
    assert all(int(s["step"]) == 4 for s in optim["D"]["state"].values())


def test_label_smoothing(tmp_path):
    out = tmp_path / "smooth"
    assert train("mnist-cdcgan", out, "--steps", "4", "--set", "train.batch=16", "--set", "loss.real_label=0.9") == 0
    assert final_state(out)["config"]["loss"]["real_label"] == 0.9
    assert all(math.isfinite(r["d_loss"]) for r in metrics(out))


def test_hinge_loss(tmp_path):
    out = tmp_path / "hinge"
    assert train("mnist-cdcgan", out, "--steps", "2", "--set", "train.batch=16", "--set", "loss.kind=hinge",
                 "--set", "train.tick_every=1") == 0
    first = metrics(out)[0]
    # D's logits start near 0: hinge gives d ≈ relu(1 - 0) + relu(1 + 0) = 2 and g ≈ 0
    # (the non-saturating loss would give 2 log 2 and log 2)
    assert first["d_loss"] == pytest.approx(2.0, abs=0.15)
    assert first["g_loss"] == pytest.approx(0.0, abs=0.15)


def test_without_ema_sampling_uses_the_raw_generator(tmp_path, capsys):
    out = tmp_path / "noema"
    assert train("mnist-cdcgan", out, "--steps", "3", "--set", "train.batch=16", "--set", "train.ema_decay=0") == 0
    assert final_state(out)["models"]["G_ema"] is None
    capsys.readouterr()
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["generator"] == "raw"


def test_a_failed_start_does_not_leave_a_run_behind(tmp_path, capsys):
    out = tmp_path / "run"
    assert train("mnist-dcgan", out, "--steps", "2", "--set", "train.batch=16", "--set", "loss.kind=foo") == 2
    assert "foo" in capsys.readouterr().err
    assert train("mnist-dcgan", out, "--steps", "2", "--set", "train.batch=16") == 0


def test_a_large_seed_is_handled_or_rejected(tmp_path, capsys):
    code = train("mnist-dcgan", tmp_path / "run", "--steps", "1", "--set", "train.batch=16", "--seed", str(2**45))
    assert code == 2 and "train.seed" in capsys.readouterr().err


def test_checkpoints_every_n_steps_or_by_time(tmp_path):
    """--checkpoint-every N: at every N-th step and the last; the default (train.checkpoint_every=0) is by
    time: a short run writes only its last, and an interval that has always passed writes every step."""
    steps = lambda run: [p.name for p in checkpoint.list_checkpoints(run)]  # noqa: E731
    assert train("mnist-cdcgan", tmp_path / "n", "--steps", "7", "--checkpoint-every", "3",
                 "--set", "train.keep_checkpoints=5") == 0
    assert steps(tmp_path / "n") == [checkpoint.name_for(s) for s in (3, 6, 7)]
    assert train("mnist-cdcgan", tmp_path / "default", "--steps", "7") == 0  # 10 minutes never pass here
    assert steps(tmp_path / "default") == [checkpoint.name_for(7)]
    assert train("mnist-cdcgan", tmp_path / "timed", "--steps", "7", "--set", "train.checkpoint_minutes=1e-9",
                 "--set", "train.keep_checkpoints=10") == 0
    assert steps(tmp_path / "timed") == [checkpoint.name_for(s) for s in range(1, 8)]


def test_a_resume_in_the_middle_of_a_tick_reproduces_the_next_metrics_lines(tmp_path, monkeypatch):
    """Ticks every 4 steps, a checkpoint at step 6 (inside the tick 5-8), a crash at step 8: the run
    resumed from step 6 writes the lines of steps 8 and 10 exactly as an uninterrupted run does (the
    sums of steps 5 and 6 come back from the checkpoint), timing fields aside."""
    flags = ["--steps", "10", "--checkpoint-every", "6", "--set", "train.tick_every=4"]
    assert train("mnist-cdcgan", tmp_path / "straight", *flags) == 0

    def crash_at_8(step, x, y):  # step is the number of steps done: 7 done, the 8th starts
        if step == 7:
            raise RuntimeError("the machine went down")
        return x, y

    wrap_training_batches(monkeypatch, crash_at_8)
    with pytest.raises(RuntimeError, match="went down"):
        train("mnist-cdcgan", tmp_path / "crashed", *flags)
    monkeypatch.undo()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "crashed")] == [checkpoint.name_for(6)]
    assert train("mnist-cdcgan", tmp_path / "crashed", *flags, "--resume") == 0
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs if r["kind"] == "train"]  # noqa: E731
    assert [r["step"] for r in strip(metrics(tmp_path / "crashed"))] == [4, 8, 10]
    assert strip(metrics(tmp_path / "crashed")) == strip(metrics(tmp_path / "straight"))


def test_resume_over_unreadable_checkpoints_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert train("mnist-cdcgan", run, "--steps", "30", "--checkpoint-every", "10") == 0
    for path in checkpoint.list_checkpoints(run):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(run)
    capsys.readouterr()
    assert train("mnist-cdcgan", run, "--steps", "60", "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dcgan: error: cannot resume {run}")
    assert all(checkpoint.name_for(s) in err[0] for s in (10, 20, 30)) and "another --out" in err[0]
    assert snapshot(run) == before  # not a byte, not a modification time


def test_resume_past_damaged_newer_checkpoints_keeps_the_newest_readable(tmp_path, capsys):
    """Complete checkpoints 10, 20, 30 (as runs kept them before older ones were made slim) with 20 and
    30 truncated: the run resumes from 10, and keeping 2 checkpoints never deletes the new intact one
    in favour of the damaged ones."""
    run = tmp_path / "run"
    keep = ["--set", "train.keep_checkpoints=3"]
    assert train("mnist-cdcgan", run, "--steps", "10", "--checkpoint-every", "10", *keep) == 0
    complete_10 = (checkpoint.checkpoint_dir(run) / checkpoint.name_for(10)).read_bytes()
    assert train("mnist-cdcgan", run, "--steps", "30", "--checkpoint-every", "10", *keep, "--resume") == 0
    (checkpoint.checkpoint_dir(run) / checkpoint.name_for(10)).write_bytes(complete_10)
    for s in (20, 30):
        path = checkpoint.checkpoint_dir(run) / checkpoint.name_for(s)
        path.write_bytes(path.read_bytes()[:100])
    assert train("mnist-cdcgan", run, "--steps", "15", "--checkpoint-every", "5", "--resume",
                 "--set", "train.keep_checkpoints=2") == 0
    assert "skipping step-000000030.ckpt" in capsys.readouterr().err
    names = [p.name for p in checkpoint.list_checkpoints(run)]
    assert checkpoint.name_for(15) in names and checkpoint.name_for(10) in names
    assert checkpoint.latest(run)[1]["step"] == 15


def test_resume_of_a_folder_that_holds_no_run_is_refused(tmp_path, capsys):
    typo = tmp_path / "rnu"
    assert train("mnist-cdcgan", typo, "--steps", "4", "--resume") == 2
    assert capsys.readouterr().err.strip() == f"dcgan: error: no run at {typo}; drop --resume to start one there"
    assert not typo.exists()


# ---- slim older checkpoints ---------------------------------------------------------------------------

def test_only_the_newest_checkpoint_is_complete_and_the_older_kept_ones_are_slim(tmp_path, capsys):
    """Checkpoints 10, 20, 30: 30 holds everything a resume needs; 10 and 20 hold the config, the data,
    the counters and the EMA generator only, which sample, export and report read."""
    run = tmp_path / "run"
    assert train("mnist-cdcgan", run, "--steps", "30", "--checkpoint-every", "10") == 0
    paths = checkpoint.list_checkpoints(run)
    assert [p.name for p in paths] == [checkpoint.name_for(s) for s in (10, 20, 30)]
    assert [checkpoint.is_slim(p) for p in paths] == [True, True, False]
    newest, older = checkpoint.load(paths[-1]), checkpoint.load(paths[0])
    assert {"optim", "rng", "tick", "health"} <= newest.keys() and set(newest["models"]) == {"G", "D", "G_ema"}
    assert not {"optim", "rng", "tick", "health"} & older.keys() and set(older["models"]) == {"G_ema"}
    assert older["step"] == 10 and older["images_seen"] == 640 and older["preset"] == "mnist-cdcgan"
    assert paths[0].stat().st_size < paths[-1].stat().st_size / 3
    # the slim one gives exactly the samples its EMA generator gave when it was written (a copy taken then)
    d = sample(paths[0], tmp_path / "s.npz", "--n", "8")
    assert d["images"].shape == (8, 1, 28, 28)
    assert main(["export", str(paths[0]), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["sample", str(paths[0]), "--n", "4", "--top-k-by-d", "2", "--out", str(tmp_path / "t.npz")]) == 2
    assert "slim" in capsys.readouterr().err


def test_a_slim_checkpoint_samples_exactly_as_the_complete_one_it_was(tmp_path):
    run = tmp_path / "run"
    assert train("mnist-cdcgan", run, "--steps", "10", "--checkpoint-every", "10") == 0
    before = sample(run, tmp_path / "a.npz", "--n", "6", "--seed", "3")
    assert train("mnist-cdcgan", run, "--steps", "20", "--checkpoint-every", "10", "--resume") == 0
    slim_10 = checkpoint.checkpoint_dir(run) / checkpoint.name_for(10)
    assert checkpoint.is_slim(slim_10)
    after = sample(slim_10, tmp_path / "b.npz", "--n", "6", "--seed", "3")
    assert np.array_equal(before["images"], after["images"])


def test_resume_when_the_complete_checkpoint_is_unreadable_and_only_slim_ones_remain(tmp_path, capsys):
    """Refused with exit 2 and one line naming the unreadable checkpoint and the slim ones; nothing is
    changed; sampling still reads the newest slim checkpoint."""
    run = tmp_path / "run"
    assert train("mnist-cdcgan", run, "--steps", "30", "--checkpoint-every", "10") == 0
    newest = checkpoint.checkpoint_dir(run) / checkpoint.name_for(30)
    newest.write_bytes(newest.read_bytes()[:1000])
    before = snapshot(run)
    capsys.readouterr()
    assert train("mnist-cdcgan", run, "--steps", "40", "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dcgan: error: cannot resume {run}")
    for name in (checkpoint.name_for(30), checkpoint.name_for(10), checkpoint.name_for(20)):
        assert name in err[0]
    assert "slim" in err[0] and "another --out" in err[0]
    assert snapshot(run) == before
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 20


def test_rollback_when_the_complete_checkpoint_is_unreadable_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    """Non-finite steps after checkpoint 20 while it is unreadable: a rollback cannot use the slim 10
    (no D, no optimizer state), so training stops (exit 1) saying why, without writing a checkpoint."""
    run = tmp_path / "run"

    def poison_after_20(step, x, y):
        if step == 20:  # the checkpoint of step 20 is in place: damage it, as a failing disk would
            path = checkpoint.checkpoint_dir(run) / checkpoint.name_for(20)
            path.write_bytes(path.read_bytes()[:1000])
        return (x * float("nan") if step >= 20 else x), y

    wrap_training_batches(monkeypatch, poison_after_20)
    assert train("mnist-cdcgan", run, "--steps", "40", "--checkpoint-every", "10",
                 "--set", "train.max_bad_steps=2") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dcgan: error: training diverged") or "non-finite" in err
    assert "complete checkpoint cannot be read" in err and "slim" in err
    assert [p.name for p in checkpoint.list_checkpoints(run)] == [checkpoint.name_for(s) for s in (10, 20)]


def test_a_default_mnist_cdcgan_run_folder_stays_under_250_mb(tmp_path):
    """The real widths (190 MB complete checkpoints): three checkpoints kept take at most 250 MB."""
    run = tmp_path / "run"
    assert main(["train", "mnist-cdcgan", "--device", "cpu", "--quiet", "--out", str(run), "--steps", "3",
                 "--checkpoint-every", "1", "--set", "train.batch=8", "--set", "train.tick_every=1000"]) == 0
    assert len(checkpoint.list_checkpoints(run)) == 3  # the default keep_checkpoints
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    assert size <= 250e6, f"{size / 1e6:.1f} MB"
    assert checkpoint.list_checkpoints(run)[-1].stat().st_size > 150e6  # the newest is still complete


# ---- shortcuts: --data, --kimg, --tick-every, --batch, --dry-run ----------------------------------------

def dry_run(capsys, *args: str) -> tuple[list[str], dict]:
    """The comment lines and the parsed TOML of `dcgan train ... --dry-run`."""
    capsys.readouterr()
    assert main(["train", *args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    return [line for line in out.splitlines() if line.startswith("#")], tomllib.loads(out)


def test_kimg_is_thousands_of_images_in_whole_steps(tmp_path, capsys):
    _, cfg = dry_run(capsys, "mnist-cdcgan", "--kimg", "100", "--batch", "48", "--out", str(tmp_path / "r"))
    assert cfg["train"]["batch"] == 48 and cfg["train"]["steps"] == math.ceil(100_000 / 48) == 2084
    _, cfg = dry_run(capsys, "mnist-cdcgan", "--kimg", "1.28", "--out", str(tmp_path / "r"))
    assert cfg["train"]["steps"] == 20  # batch 64
    capsys.readouterr()
    assert main(["train", "mnist-cdcgan", "--kimg", "10", "--steps", "5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps" in err and "--kimg" in err
    assert main(["train", "mnist-cdcgan", "--kimg", "0", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_data_tick_every_and_batch_flags_set_their_keys(tmp_path, capsys):
    _, cfg = dry_run(capsys, "folder-dcgan", "--data", str(tmp_path / "faces"), "--tick-every", "7", "--batch", "16",
                     "--out", str(tmp_path / "r"))
    assert cfg["data"]["path"] == str(tmp_path / "faces")
    assert cfg["train"]["tick_every"] == 7 and cfg["train"]["batch"] == 16
    assert cfg == Config.from_dict(cfg).to_dict()  # a whole configuration


def test_tick_every_flag_sets_the_metrics_lines(tmp_path):
    run = tmp_path / "run"
    assert train("mnist-cdcgan", run, "--steps", "9", "--tick-every", "3") == 0
    assert [r["step"] for r in metrics(run) if r["kind"] == "train"] == [3, 6, 9]


def test_dry_run_prints_the_config_and_the_cost_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    cache = Path(__import__("os").environ["DCGAN_CACHE"])
    cache_before = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    comments, cfg = dry_run(capsys, "mnist-cdcgan", "--steps", "2000", "--out", str(out), *SETS)
    want, _ = resolve("mnist-cdcgan", TINY, {"train.steps": 2000})
    assert cfg == want.to_dict()
    assert not out.exists() and not tmp_path.joinpath("runs").exists()
    assert (sorted(p.name for p in cache.iterdir()) if cache.exists() else []) == cache_before
    text = "\n".join(comments)
    assert "2,000 steps" in text and f"{2000 * 64:,} images" in text and "nothing was written" in text


def test_dry_run_checkpoint_sizes_are_those_the_run_writes(tmp_path, capsys):
    """The estimate from the models' parameter counts against the files a run then writes."""
    import re

    run = tmp_path / "run"
    assert train("mnist-cdcgan", run, "--steps", "4", "--checkpoint-every", "2") == 0  # prepares the data too
    comments, _ = dry_run(capsys, "mnist-cdcgan", "--steps", "8", "--out", str(run), "--resume", "--device", "cpu",
                          *SETS)
    line = next(c for c in comments if c.startswith("# checkpoint "))
    complete, slim, total = (float(x) * 1e6 for x in re.findall(r"([\d.]+) MB", line))
    paths = checkpoint.list_checkpoints(run)
    assert abs(paths[-1].stat().st_size - complete) < 0.02 * complete + 0.1e6
    assert abs(paths[0].stat().st_size - slim) < 0.02 * slim + 0.1e6
    assert total == pytest.approx(complete + 2 * slim, abs=0.2e6)
    # resuming: steps from the checkpoint, and a time from the run's own ticks
    text = "\n".join(comments)
    assert "4 → 8 (4 steps)" in text and "img/s" in text and "unknown" not in text
