"""Tests for dcgan.checkpoint: format, integrity checks, atomic writes, latest() fallback, pruning."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import warnings

import pytest
import torch

from dcgan import checkpoint, files
from dcgan.errors import UserError


def state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "images_seen": 64 * step, "config": {"train": {"batch": 64}}, "data": {"shape": [1, 28, 28]},
            "models": {"G": {"w": torch.randn(4, 3, generator=g)}}, "note": "hello", "pair": (1, 2.5)}


def write(run, step: int):
    path = checkpoint.checkpoint_dir(run) / checkpoint.name_for(step)
    checkpoint.save(state(step), path)
    return path


def headered(payload: bytes, version: int = checkpoint.FORMAT_VERSION) -> bytes:
    """A file with a valid dcgan header (correct hash and length) around any payload."""
    header = {"format_version": version, "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    return checkpoint.MAGIC + json.dumps(header).encode() + b"\n" + payload


def payload_start(data: bytes) -> int:
    return data.index(b"\n", len(checkpoint.MAGIC)) + 1


class Marker:
    """Unpickling this object would create a file: the proof that a load executed code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---- format and round trip ---------------------------------------------------------------------

def test_round_trip(tmp_path):
    path = write(tmp_path, 7)
    data = path.read_bytes()
    assert data.startswith(checkpoint.MAGIC)
    header = json.loads(data[len(checkpoint.MAGIC): payload_start(data) - 1])
    payload = data[payload_start(data):]
    assert header == {"format_version": checkpoint.FORMAT_VERSION, "bytes": len(payload),
                      "sha256": hashlib.sha256(payload).hexdigest()}
    back = checkpoint.load(path)
    expected = state(7)
    assert torch.equal(back["models"]["G"]["w"], expected["models"]["G"]["w"])
    assert {k: back[k] for k in ("step", "images_seen", "config", "note")} == \
        {k: expected[k] for k in ("step", "images_seen", "config", "note")}


def test_names_sort_by_step():
    names = [checkpoint.name_for(s) for s in (9, 10, 100, 99999)]
    assert names == sorted(names)
    assert all(n.endswith(checkpoint.SUFFIX) for n in names)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    for step in (1, 2, 3):
        write(tmp_path, step)
    write(tmp_path, 3)  # overwriting goes through a temp file too
    folder = checkpoint.checkpoint_dir(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint.name_for(s) for s in (1, 2, 3)]


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    files.atomic_write(path, b"old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(UserError, match="No space left"):
        files.atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # the temp file is gone


def test_atomic_write_into_a_missing_folder(tmp_path):
    with pytest.raises(UserError, match="could not write"):
        files.atomic_write(tmp_path / "nope" / "file.bin", b"x")


# ---- damage ----------------------------------------------------------------------------------------

def test_flipped_byte_is_detected_and_latest_falls_back(tmp_path, capsys):
    write(tmp_path, 10)
    newest = write(tmp_path, 20)
    data = bytearray(newest.read_bytes())
    i = random.Random(0).randrange(payload_start(data), len(data))
    data[i] ^= 0x01
    newest.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        checkpoint.load(newest)
    capsys.readouterr()
    path, content = checkpoint.latest(tmp_path)
    assert path.name == checkpoint.name_for(10)
    assert content["step"] == 10
    err = capsys.readouterr().err
    assert checkpoint.name_for(20) in err and "damaged" in err  # reported, not silently skipped
    # a run folder resolves the same way
    assert checkpoint.resolve(tmp_path)[0] == path


@pytest.mark.parametrize("where", ["magic", "header"])
def test_damage_outside_the_payload(tmp_path, where):
    path = write(tmp_path, 1)
    data = bytearray(path.read_bytes())
    i = 0 if where == "magic" else len(checkpoint.MAGIC) + 40  # inside the hex digest
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("keep", [0, 10, 100])
def test_truncated_file(tmp_path, keep):
    path = write(tmp_path, 1)
    data = path.read_bytes()
    path.write_bytes(data[: payload_start(data) + keep])
    with pytest.raises(UserError, match="damaged|truncated"):
        checkpoint.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="not a dcgan checkpoint"):
        checkpoint.load(path)


def test_format_version_mismatch(tmp_path):
    buf = io.BytesIO()
    torch.save(state(1), buf)
    path = tmp_path / "future.ckpt"
    path.write_bytes(headered(buf.getvalue(), version=checkpoint.FORMAT_VERSION + 1))
    with pytest.raises(UserError) as e:
        checkpoint.load(path)
    assert f"format {checkpoint.FORMAT_VERSION + 1}" in str(e.value)
    assert f"format {checkpoint.FORMAT_VERSION}" in str(e.value)


def test_all_damaged_means_no_checkpoint(tmp_path, capsys):
    for step in (1, 2):
        write(tmp_path, step).write_bytes(b"garbage")
    assert checkpoint.latest(tmp_path) is None
    with pytest.raises(UserError, match="no readable checkpoint"):
        checkpoint.resolve(tmp_path)
    assert checkpoint.latest(tmp_path / "missing") is None


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.resolve(tmp_path / "nope.ckpt")
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load(tmp_path / "nope.ckpt")


# ---- unsafe files ------------------------------------------------------------------------------------

def test_plain_torch_file_is_refused(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save(state(1), path)
    with pytest.raises(UserError, match="not a dcgan checkpoint"):
        checkpoint.load(path)


@pytest.mark.parametrize("kind", ["pickle", "torch"])
def test_code_in_a_headered_file_is_never_run(tmp_path, kind):
    marker = tmp_path / "marker"
    obj = {"models": Marker(marker)}
    if kind == "pickle":
        payload = pickle.dumps(obj, protocol=2)
    else:
        buf = io.BytesIO()
        torch.save(obj, buf)
        payload = buf.getvalue()
    path = tmp_path / "evil.ckpt"
    path.write_bytes(headered(payload))  # even with a correct hash
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="refuses"):
            checkpoint.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [b"hello world", b""])
def test_headered_non_torch_payload_is_a_user_error(tmp_path, payload):
    path = tmp_path / "odd.ckpt"
    path.write_bytes(headered(payload))
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_headered_payload_that_is_not_a_checkpoint_dict_is_a_user_error(tmp_path):
    import io
    buf = io.BytesIO()
    torch.save([1, 2], buf)
    path = tmp_path / "list.ckpt"
    path.write_bytes(headered(buf.getvalue()))
    with pytest.raises(UserError, match="not a complete dcgan checkpoint"):
        checkpoint.load(path)


# ---- pruning --------------------------------------------------------------------------------------

def test_prune_keeps_the_newest(tmp_path):
    steps = [100, 9, 1000, 10, 99]
    for s in steps:  # written out of order: age on disk must not matter, the step does
        write(tmp_path, s)
    os.utime(checkpoint.checkpoint_dir(tmp_path) / checkpoint.name_for(9), (1, 1))
    checkpoint.prune(tmp_path, 3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [checkpoint.name_for(s) for s in (99, 100, 1000)]
    checkpoint.prune(tmp_path, 3)  # nothing more to delete
    assert len(checkpoint.list_checkpoints(tmp_path)) == 3
    checkpoint.prune(tmp_path, 2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [checkpoint.name_for(s) for s in (100, 1000)]


def test_list_ignores_other_files(tmp_path):
    write(tmp_path, 5)
    folder = checkpoint.checkpoint_dir(tmp_path)
    (folder / ".step-000000006.ckpt.tmp-123").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [checkpoint.name_for(5)]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    write(tmp_path, 2)
    folder = checkpoint.checkpoint_dir(tmp_path)
    (folder / ".step-000000004.ckpt.tmp-99999").write_bytes(b"half a checkpoint")
    (folder / "notes.txt").write_text("keep me")
    assert checkpoint.remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "step-000000002.ckpt"]


def test_prune_never_keeps_a_damaged_checkpoint_in_place_of_an_intact_one(tmp_path):
    """Three newer checkpoints truncated, two intact older ones: pruning to 3 deletes no intact
    checkpoint (the damaged ones do not count) and leaves the damaged ones for a person to look at."""
    for s in (10, 20, 30, 40, 50):
        write(tmp_path, s)
    for s in (30, 40, 50):
        path = checkpoint.checkpoint_dir(tmp_path) / checkpoint.name_for(s)
        path.write_bytes(path.read_bytes()[:200])
    checkpoint.prune(tmp_path, 3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [checkpoint.name_for(s) for s in (10, 20, 30, 40, 50)]
    write(tmp_path, 25)
    checkpoint.prune(tmp_path, 2, written=checkpoint.checkpoint_dir(tmp_path) / checkpoint.name_for(25))
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == [checkpoint.name_for(s) for s in (20, 25, 30, 40, 50)]  # 10 went: the newest 2 intact are kept
    assert not checkpoint.intact(checkpoint.checkpoint_dir(tmp_path) / checkpoint.name_for(30))
    assert checkpoint.intact(checkpoint.checkpoint_dir(tmp_path) / checkpoint.name_for(20))


# ---- complete and slim checkpoints ----------------------------------------------------------------

def complete_state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {**state(step), "preset": "p", "elapsed": 1.5,
            "models": {"G": {"w": torch.randn(4, 3, generator=g)}, "D": {"w": torch.randn(5, generator=g)},
                       "G_ema": {"w": torch.randn(4, 3, generator=g)}},
            "optim": {"G": {"state": {}}, "D": {"state": {}}}, "rng": {"noise": torch.zeros(3)},
            "tick": {"steps": 0}, "health": {}}


def test_prune_keeps_the_newest_complete_and_makes_the_older_kept_ones_slim(tmp_path):
    folder = checkpoint.checkpoint_dir(tmp_path)
    for s in (10, 20, 30, 40):
        checkpoint.save(complete_state(s), folder / checkpoint.name_for(s))
    checkpoint.prune(tmp_path, 3, written=folder / checkpoint.name_for(40))
    paths = checkpoint.list_checkpoints(tmp_path)
    assert [p.name for p in paths] == [checkpoint.name_for(s) for s in (20, 30, 40)]
    assert [checkpoint.is_slim(p) for p in paths] == [True, True, False]
    slim = checkpoint.load(paths[0])
    assert set(slim) == {"config", "data", "step", "images_seen", "elapsed", "preset", "models", "slim"}
    assert set(slim["models"]) == {"G_ema"} and torch.equal(slim["models"]["G_ema"]["w"],
                                                            complete_state(20)["models"]["G_ema"]["w"])
    assert checkpoint.load(paths[-1]).keys() == complete_state(40).keys()
    assert paths[0].stat().st_size < paths[-1].stat().st_size
    mtime = paths[0].stat().st_mtime_ns
    checkpoint.prune(tmp_path, 3)  # slim already: not rewritten
    assert paths[0].stat().st_mtime_ns == mtime


def test_newest_complete_passes_over_slim_ones_without_calling_them_damaged(tmp_path):
    folder = checkpoint.checkpoint_dir(tmp_path)
    for s in (10, 20, 30):
        checkpoint.save(complete_state(s), folder / checkpoint.name_for(s))
    checkpoint.prune(tmp_path, 3)
    (path, state_), damaged = checkpoint.newest_readable(tmp_path, complete=True)
    assert state_["step"] == 30 and damaged == []
    newest = folder / checkpoint.name_for(30)
    newest.write_bytes(newest.read_bytes()[:300])
    found, damaged = checkpoint.newest_readable(tmp_path, complete=True)
    assert found is None and [p.name for p, _ in damaged] == [newest.name]  # slim 20 and 10: passed over
    assert checkpoint.newest_readable(tmp_path)[0][1]["step"] == 20  # sampling reads the slim one


def test_a_run_without_ema_keeps_its_raw_generator_in_slim_checkpoints():
    full = complete_state(5)
    full["models"]["G_ema"] = None
    assert set(checkpoint.slim(full)["models"]) == {"G"}


def test_estimated_sizes_match_the_written_files(tmp_path):
    """The estimate from tensor sizes (what `dcgan train --dry-run` prints) against real files."""
    G, D = torch.nn.Linear(300, 200), torch.nn.Sequential(torch.nn.Linear(200, 100), torch.nn.BatchNorm1d(100))
    ema = torch.nn.Linear(300, 200)
    adam = lambda m: {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),  # noqa: E731
                                    "exp_avg_sq": torch.zeros_like(p)} for i, p in enumerate(m.parameters())},
                      "param_groups": [{"lr": 1e-4, "params": list(range(len(list(m.parameters()))))}]}
    full = {"config": {}, "data": {}, "step": 1, "images_seen": 1, "elapsed": 0.0,
            "models": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": ema.state_dict()},
            "optim": {"G": adam(G), "D": adam(D)}}
    checkpoint.save(full, tmp_path / "full.ckpt")
    checkpoint.save(checkpoint.slim(full), tmp_path / "slim.ckpt")
    complete, slim = checkpoint.estimate_bytes(G, D, ema=True)
    assert (tmp_path / "full.ckpt").stat().st_size == pytest.approx(complete, rel=0.03)
    assert (tmp_path / "slim.ckpt").stat().st_size == pytest.approx(slim, rel=0.03)
