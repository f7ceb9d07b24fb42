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
