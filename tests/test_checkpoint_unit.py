"""dcgan/checkpoint.py on checkpoints written here from untrained tiny models (no training run, a
few milliseconds each): which generator load_generator gives (EMA or raw, on the asked device) and
what it says when it cannot, the slim header read on bad files, the intact() memo keyed by size
and modification time, and the complete size estimate of a run without EMA. (docs/MUTATION.md:
these tests kill the mutants the older tests let survive.)"""

from __future__ import annotations

import json
import os

import pytest
import torch

from dcgan import checkpoint
from dcgan.config import Config
from dcgan.errors import UserError
from dcgan.models import build_generator


def tiny_config() -> Config:
    cfg = Config()
    cfg.update({"model": {"g_width": 8, "d_width": 8, "g_fc": 32, "d_fc": 32}})
    return cfg


def generators():
    """Two different tiny conditional generators: the raw G and the EMA one."""
    cfg = tiny_config()
    torch.manual_seed(0)
    G = build_generator(cfg.model, (1, 28, 28), 10)
    torch.manual_seed(1)
    ema = build_generator(cfg.model, (1, 28, 28), 10)
    return cfg, G, ema


def write(path, models: dict, config=None):
    cfg, G, ema = generators()
    state = {"config": config if config is not None else cfg.to_dict(), "data": {"shape": [1, 28, 28], "num_classes": 10},
             "step": 12, "models": models}
    checkpoint.save(state, path)
    return state


def same(module, weights) -> bool:
    return all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())


# ---- load_generator ----------------------------------------------------------------------------

def test_load_generator_gives_the_ema_weights_by_default_and_the_raw_ones_when_asked(tmp_path):
    _, G, ema = generators()
    path = tmp_path / "a.ckpt"
    write(path, {"G": G.state_dict(), "G_ema": ema.state_dict()})
    got, info = checkpoint.load_generator(path)  # default: EMA, on the CPU
    assert same(got, ema.state_dict()) and not got.training and next(got.parameters()).device.type == "cpu"
    assert info["generator"] == "ema" and info["step"] == 12 and info["path"] == str(path)
    assert isinstance(info["config"], Config) and info["config"].model.g_width == 8
    assert info["data"] == {"shape": [1, 28, 28], "num_classes": 10}
    assert set(info) == {"path", "config", "data", "step", "generator"}
    raw, info = checkpoint.load_generator(path, ema=False)
    assert same(raw, G.state_dict()) and info["generator"] == "raw"
    meta, _ = checkpoint.load_generator(path, device="meta")
    assert next(meta.parameters()).device.type == "meta"


def test_a_run_without_ema_gives_its_raw_generator(tmp_path):
    _, G, _ = generators()
    path = tmp_path / "a.ckpt"
    write(path, {"G": G.state_dict(), "G_ema": None})
    got, info = checkpoint.load_generator(path)
    assert same(got, G.state_dict()) and info["generator"] == "raw"


def test_a_slim_checkpoint_has_no_raw_generator_and_says_where_it_is(tmp_path):
    _, G, ema = generators()
    folder = checkpoint.checkpoint_dir(tmp_path / "run")
    path = folder / checkpoint.name_for(12)
    write(path, {"G_ema": ema.state_dict()})
    got, info = checkpoint.load_generator(path)
    assert same(got, ema.state_dict()) and info["generator"] == "ema"
    with pytest.raises(UserError) as e:
        checkpoint.load_generator(path, ema=False)
    assert str(e.value) == (f"{path} is a slim checkpoint holding only the EMA generator; for the raw generator use "
                            f"the run's newest checkpoint ({folder})")


def test_weights_that_do_not_fit_and_a_bad_config_are_user_errors_naming_the_file(tmp_path):
    cfg, G, _ = generators()
    path = tmp_path / "wrong.ckpt"
    wrong = {k: v[..., :1] if v.dim() else v for k, v in G.state_dict().items()}
    write(path, {"G": wrong, "G_ema": None})
    try:
        G.load_state_dict(wrong)
    except RuntimeError as e:
        first_line = str(e).splitlines()[0]
    with pytest.raises(UserError) as e:
        checkpoint.load_generator(path)
    assert str(e.value) == f"{path}: the generator weights do not fit model 'dcgan' ({first_line})"
    bad = tmp_path / "bad.ckpt"
    config = cfg.to_dict()
    config["model"]["no_such_key"] = 1
    write(bad, {"G": G.state_dict()}, config=config)
    with pytest.raises(UserError) as e:
        checkpoint.load_generator(bad)
    assert str(e.value).startswith(f"{bad}: unknown config key 'model.no_such_key'")


# ---- is_slim and intact on bad files ---------------------------------------------------------------

def test_is_slim_is_false_for_whatever_cannot_be_read_as_a_slim_header(tmp_path):
    assert checkpoint.is_slim(tmp_path / "missing.ckpt") is False
    assert checkpoint.is_slim(tmp_path) is False  # a folder
    cases = {
        "json.ckpt": checkpoint.MAGIC + b"{not json\n",
        "list.ckpt": checkpoint.MAGIC + b"[1, 2]\n",  # JSON, not an object
        "other.ckpt": b"PK\x03\x04 a zip file\n",
        "fat.ckpt": checkpoint.MAGIC + json.dumps({"slim": "yes"}).encode() + b"\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert checkpoint.is_slim(tmp_path / name) is False, name
    (tmp_path / "slim.ckpt").write_bytes(checkpoint.MAGIC + json.dumps({"slim": True}).encode() + b"\npayload")
    assert checkpoint.is_slim(tmp_path / "slim.ckpt") is True


def test_intact_is_false_for_a_missing_file_and_remembers_by_size_and_modification_time(tmp_path):
    assert checkpoint.intact(tmp_path / "missing.ckpt") is False
    path = tmp_path / "a.ckpt"
    checkpoint.save({"step": 1, "config": {}, "data": {}, "models": {}}, path)
    assert checkpoint.intact(path) is True
    st = path.stat()
    # damaged in place with the same size: only the modification time tells the memo it changed
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert checkpoint.intact(path) is False
    # truncated, and given back the first modification time: only the size tells
    checkpoint.save({"step": 2, "config": {}, "data": {}, "models": {}}, path)
    st = path.stat()
    assert checkpoint.intact(path) is True
    path.write_bytes(path.read_bytes()[:-1])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert checkpoint.intact(path) is False


# ---- estimate_bytes ------------------------------------------------------------------------------

def test_estimated_sizes_of_a_run_without_ema():
    """G: 3x4 weight + 4 bias = 16 floats (64 bytes); D: 4x1 + 1 = 5 floats (20 bytes) and a batch
    norm of 1 feature (weight, bias, 2 running stats: 16 bytes; the int64 counter 8): complete =
    G + D + Adam's two moments of every parameter = 64 + 44 + 2 * (64 + 28) = 292; with EMA, one
    more G (356); slim = G."""
    G = torch.nn.Linear(3, 4)
    D = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.BatchNorm1d(1))
    assert checkpoint.estimate_bytes(G, D, ema=False) == (292, 64)
    assert checkpoint.estimate_bytes(G, D, ema=True) == (356, 64)


# ---- load: every refusal says why ----------------------------------------------------------------

def minimal(step: int = 1) -> dict:
    """The smallest complete content: exactly the required keys."""
    return {"config": {}, "data": {}, "step": step, "models": {}}


def headered(payload: bytes, **header) -> bytes:
    import hashlib

    fields = {"format_version": checkpoint.FORMAT_VERSION, "sha256": hashlib.sha256(payload).hexdigest(),
              "bytes": len(payload), **header}
    return checkpoint.MAGIC + json.dumps(fields).encode() + b"\n" + payload


def torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def refusal(path) -> str:
    with pytest.raises(UserError) as e:
        checkpoint.load(path)
    return str(e.value)


def test_load_takes_exactly_the_required_keys_and_maps_tensors_where_asked(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint.save({**minimal(), "t": torch.ones(2)}, path)
    assert set(checkpoint.load(path)) == {"config", "data", "step", "models", "t"}
    assert checkpoint.load(path, map_location="meta")["t"].device.type == "meta"
    checkpoint.save(minimal(), path)
    assert checkpoint.load(path) == minimal()


def test_load_says_why_it_refuses(tmp_path):
    assert refusal(tmp_path) == f"cannot read checkpoint {tmp_path}: Is a directory"
    p = tmp_path / "h.ckpt"
    p.write_bytes(checkpoint.MAGIC + b"{broken\n" + torch_bytes(minimal()))
    assert refusal(p) == f"{p} has a damaged header; use an earlier checkpoint of the run"
    p.write_bytes(headered(torch_bytes(minimal()), format_version="1"))
    assert refusal(p) == f'{p} has a damaged header (format_version "1"); use an earlier checkpoint of the run'
    p.write_bytes(headered(torch_bytes(minimal()), format_version=True))
    assert refusal(p) == f"{p} has a damaged header (format_version true); use an earlier checkpoint of the run"
    p.write_bytes(headered(torch_bytes(minimal()), format_version="x" * 60))
    assert refusal(p) == (f'{p} has a damaged header (format_version "{"x" * 39}); use an earlier checkpoint of '
                          f'the run')
    p.write_bytes(headered(torch_bytes([1, 2])))
    assert refusal(p) == f"{p} is not a complete dcgan checkpoint (missing ['config', 'data', 'models', 'step'])"
    p.write_bytes(headered(torch_bytes(5)))
    assert refusal(p) == f"{p} is not a complete dcgan checkpoint (missing ['config', 'data', 'models', 'step'])"
    p.write_bytes(headered(torch_bytes({"config": {}, "data": {}, "step": 1})))
    assert refusal(p) == f"{p} is not a complete dcgan checkpoint (missing ['models'])"
    p.write_bytes(headered(b"PK\x03\x04 not a zip archive"))  # torch.load: RuntimeError
    assert refusal(p) == f"{p} has a malformed payload (RuntimeError); use an earlier checkpoint"
    p.write_bytes(headered(b""))  # torch.load: EOFError
    assert refusal(p) == f"{p} has a malformed payload (EOFError); use an earlier checkpoint"


def test_a_payload_a_safe_load_refuses_is_named_by_the_first_line_of_the_reason(tmp_path):
    import io
    import pickle

    payload = torch_bytes({**minimal(), "obj": Path3()})
    try:
        torch.load(io.BytesIO(payload), weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0]
    assert first  # torch says why, in more than one line
    p = tmp_path / "unsafe.ckpt"
    p.write_bytes(headered(payload))
    assert refusal(p) == f"{p} holds objects a safe load refuses ({first}); it was not loaded"


class Path3:
    """An object that only a full unpickling could rebuild."""


# ---- the newest checkpoint, complete or not ------------------------------------------------------------

def write_run(run, slim_steps=(), complete_steps=()):
    folder = checkpoint.checkpoint_dir(run)
    for s in complete_steps:
        checkpoint.save({**minimal(s), "optim": {}}, folder / checkpoint.name_for(s))
    for s in slim_steps:
        checkpoint.save({**minimal(s), "slim": True}, folder / checkpoint.name_for(s))


def test_latest_and_newest_readable_pass_over_slim_ones_only_when_asked(tmp_path, capsys):
    write_run(tmp_path, complete_steps=(10,), slim_steps=(20, 30))
    assert checkpoint.latest(tmp_path)[1]["step"] == 30
    assert checkpoint.latest(tmp_path, complete=True)[1]["step"] == 10
    found, damaged = checkpoint.newest_readable(tmp_path, complete=True)
    assert found[1]["step"] == 10 and damaged == []
    assert capsys.readouterr().err == ""


def test_a_checkpoint_damaged_after_its_check_is_left_and_the_older_kept_ones_still_slimmed(tmp_path):
    """intact() remembers a file by (size, modification time): one damaged in place since then (same
    size, same time) passes as intact, fails to load during pruning, and is left as it is; the
    older kept checkpoint is still made slim."""
    folder = checkpoint.checkpoint_dir(tmp_path)
    for s in (10, 20, 30, 40):
        checkpoint.save({**minimal(s), "models": {"G": {"w": torch.ones(2)}}, "optim": {"big": torch.zeros(100)}}, folder / checkpoint.name_for(s))
    paths = checkpoint.list_checkpoints(tmp_path)
    assert all(checkpoint.intact(p) for p in paths)
    victim = paths[2]  # step 30
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    checkpoint.prune(tmp_path, 3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [checkpoint.name_for(s) for s in (20, 30, 40)]
    assert victim.read_bytes() == bytes(data)  # left for a person to look at
    assert checkpoint.is_slim(folder / checkpoint.name_for(20)) and not checkpoint.is_slim(paths[3])


def test_save_creates_every_missing_folder(tmp_path):
    path = tmp_path / "a" / "b" / "c" / "x.ckpt"
    checkpoint.save(minimal(), path)
    assert checkpoint.load(path) == minimal()
