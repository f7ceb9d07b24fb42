"""Tests for dcgan.config: defaults, presets, --set parsing, validation, TOML round trips."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from dcgan.config import (
    SECTIONS,
    SUPPORTED_RESOLUTIONS,
    Config,
    ModelConfig,
    parse_set,
    preset_names,
    read_preset,
    resolve,
    to_toml,
)
from dcgan.errors import UserError


def keys_of(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(getattr(Config(), section))]


# ---- defaults and presets -------------------------------------------------------------------

def test_defaults_validate():
    cfg = Config()
    assert cfg.validate() is cfg
    assert cfg.data.resolution == 0 or cfg.data.resolution in SUPPORTED_RESOLUTIONS


def test_both_presets_are_packaged():
    assert {"mnist-dcgan", "mnist-cdcgan"} <= set(preset_names())


@pytest.mark.parametrize("name", ["mnist-dcgan", "mnist-cdcgan"])
def test_preset_resolves_to_its_overrides(name):
    cfg, run_name = resolve(name)
    assert run_name == name
    raw = read_preset(name)
    assert raw["description"] and raw["source"]  # shown by `dcgan presets`
    # every override in the preset file is what the resolved config holds; the rest are defaults
    defaults = Config().to_dict()
    got = cfg.to_dict()
    for section in SECTIONS:
        for key, default in defaults[section].items():
            expected = raw.get(section, {}).get(key, default)
            assert got[section][key] == expected, f"{name}: {section}.{key}"


def test_presets_differ_where_documented():
    plain, _ = resolve("mnist-dcgan")
    cond, _ = resolve("mnist-cdcgan")
    assert plain.model.conditional is False and cond.model.conditional is True
    assert cond.model.g_fc == cond.model.d_fc == 1024
    assert cond.model.g_cond == cond.model.d_cond == "all"
    assert plain.model.kernel == cond.model.kernel == 5


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UserError) as e:
        resolve("no-such-preset")
    msg = str(e.value)
    assert "no-such-preset" in msg
    for name in preset_names():
        assert name in msg


# ---- --set parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "item, key, value",
    [
        ("train.batch=128", "train.batch", 128),
        ("train.batch = 12 ", "train.batch", 12),
        ("optim.lr_g=1e-3", "optim.lr_g", 1e-3),
        ("loss.real_label=0.9", "loss.real_label", 0.9),
        ("model.conditional=true", "model.conditional", True),
        ("model.conditional=false", "model.conditional", False),
        ("data.dataset=fashion-mnist", "data.dataset", "fashion-mnist"),  # not TOML: taken as a string
        ('model.g_cond="input"', "model.g_cond", "input"),  # a quoted TOML string
        ("train.device=cuda:0", "train.device", "cuda:0"),
    ],
)
def test_parse_set_reads_toml_values(item, key, value):
    k, v = parse_set(item)
    assert (k, v) == (key, value)
    assert type(v) is type(value)


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("train.ema_decay=0", "ema_decay", 0.0),  # an int where a float is expected becomes a float
        ("loss.real_label=1", "real_label", 1.0),
        ("train.seed=7", "seed", 7),
        ("model.kernel=5", "kernel", 5),
        ("model.conditional=true", "conditional", True),
        ("data.dataset=fashion-mnist", "dataset", "fashion-mnist"),
    ],
)
def test_set_applies_with_the_field_type(item, key, value):
    cfg, _ = resolve("mnist-dcgan", [item])
    section = item.split(".")[0]
    got = getattr(getattr(cfg, section), key)
    assert got == value and type(got) is type(value)


def test_later_overrides_win():
    cfg, _ = resolve("mnist-dcgan", ["train.batch=8", "train.batch=16"], {"train.steps": 3, "train.seed": None})
    assert cfg.train.batch == 16
    assert cfg.train.steps == 3
    assert cfg.train.seed == Config().train.seed  # a None flag leaves the value alone


@pytest.mark.parametrize("item", ["train.batch", "=3", "noequals"])
def test_parse_set_needs_key_and_value(item):
    with pytest.raises(UserError, match="section.key=value"):
        parse_set(item)


# ---- unknown names and wrong types ------------------------------------------------------------

def test_unknown_section_in_set_lists_sections():
    with pytest.raises(UserError) as e:
        resolve("mnist-dcgan", ["foo.bar=1"])
    msg = str(e.value)
    assert "foo.bar" in msg
    for s in SECTIONS:
        assert s in msg


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(UserError) as e:
        resolve("mnist-dcgan", ["train.bach=1"])
    msg = str(e.value)
    assert "train.bach" in msg
    for key in keys_of("train"):
        assert key in msg


def test_unknown_section_in_a_toml_file_lists_sections(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[trian]\nbatch = 3\n")
    with pytest.raises(UserError) as e:
        resolve(str(path))
    msg = str(e.value)
    assert "trian" in msg and str(path) in msg
    for s in SECTIONS:
        assert s in msg


def test_unknown_key_in_a_toml_file_lists_keys(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nwidth = 3\n")
    with pytest.raises(UserError) as e:
        resolve(str(path))
    msg = str(e.value)
    assert "model.width" in msg
    for key in keys_of("model"):
        assert key in msg


def test_a_section_that_is_not_a_table(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("model = 3\n")
    with pytest.raises(UserError, match=r"\[model\]"):
        resolve(str(path))


@pytest.mark.parametrize(
    "item, words",
    [
        ("train.batch=abc", ["train.batch", "integer", "abc"]),
        ("train.batch=1.5", ["train.batch", "integer"]),
        ("train.seed=true", ["train.seed", "integer"]),  # a bool is not an int
        ("model.conditional=3", ["model.conditional", "true or false"]),
        ("optim.lr_g=fast", ["optim.lr_g", "number"]),
        ("data.dataset=3", ["data.dataset", "string"]),
    ],
)
def test_wrong_type_is_a_user_error(item, words):
    with pytest.raises(UserError) as e:
        resolve("mnist-dcgan", [item])
    for w in words:
        assert w in str(e.value)


def test_wrong_type_in_a_toml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nbatch = "abc"\n')
    with pytest.raises(UserError) as e:
        resolve(str(path))
    assert str(path) in str(e.value) and "train.batch" in str(e.value)


# ---- ranges -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "item, word",
    [
        ("optim.lr_g=0", "lr_g"),
        ("optim.lr_d=-1e-4", "lr_d"),
        ("data.resolution=50", "data.resolution"),
        ("data.resolution=-28", "data.resolution"),
        ("train.batch=0", "train.batch"),
        ("train.ema_decay=1.0", "train.ema_decay"),
        ("train.ema_decay=-0.5", "train.ema_decay"),
        ("model.g_cond='middle'", "model.g_cond"),
        ("model.d_cond=everywhere", "model.d_cond"),
        ("model.kernel=3", "model.kernel"),
        ("model.z_dim=0", "model.z_dim"),
        ("loss.real_label=0", "loss.real_label"),
        ("loss.real_label=1.1", "loss.real_label"),
        ("optim.beta1=1.0", "beta1"),
        ("optim.g_steps=0", "optim.g_steps"),
        ("train.steps=-1", "train.steps"),
        ("train.tick_every=0", "train.tick_every"),
        ("train.checkpoint_every=-1", "train.checkpoint_every"),
        ("train.checkpoint_minutes=0", "train.checkpoint_minutes"),
        ("train.keep_checkpoints=1", "train.keep_checkpoints"),
        ("train.device=tpu", "train.device"),
    ],
)
def test_out_of_range_is_a_user_error(item, word):
    with pytest.raises(UserError) as e:
        resolve("mnist-dcgan", [item])
    assert word in str(e.value)


@pytest.mark.parametrize("res", SUPPORTED_RESOLUTIONS)
def test_every_supported_resolution_validates(res):
    cfg, _ = resolve("mnist-dcgan", [f"data.resolution={res}"])
    assert cfg.data.resolution == res


@pytest.mark.parametrize("device", ["cudax", "cuda:x"])
def test_malformed_cuda_device_is_rejected(device):
    with pytest.raises(UserError):
        resolve("mnist-dcgan", [f"train.device={device}"])


# ---- TOML files, run folders, round trips ----------------------------------------------------

def test_to_toml_round_trip():
    cfg, _ = resolve("mnist-cdcgan", ["optim.lr_g=1e-05", "loss.real_label=0.9", "train.device=cuda:1",
                                      'data.dataset="a\\"b\\\\c"', "train.ema_decay=0"])
    text = to_toml(cfg.to_dict())
    back = Config.from_dict(tomllib.loads(text))
    assert back == cfg
    assert back.data.dataset == 'a"b\\c'
    assert type(back.train.ema_decay) is float


def test_a_toml_file_as_input(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('description = "ignored"\n[model]\nconditional = true\ng_width = 16\n[train]\nbatch = 32\n')
    cfg, name = resolve(str(path), ["train.batch=48"])
    assert name == "mine"
    assert cfg.model.conditional is True and cfg.model.g_width == 16
    assert cfg.train.batch == 48  # --set wins over the file
    assert cfg.model.d_width == ModelConfig().d_width  # untouched keys keep their defaults


def test_a_missing_or_invalid_toml_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve(str(tmp_path / "nope.toml"))
    bad = tmp_path / "broken.toml"
    bad.write_text("[model\n")
    with pytest.raises(UserError, match="not valid TOML"):
        resolve(str(bad))


def test_a_run_folder_as_input(tmp_path):
    run = tmp_path / "my-run"
    run.mkdir()
    cfg, _ = resolve("mnist-cdcgan", ["model.g_width=8", "train.seed=5"])
    (run / "config.toml").write_text(to_toml(cfg.to_dict()))
    back, name = resolve(str(run))
    assert name == "my-run"
    assert back == cfg


def test_a_folder_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config.toml"):
        resolve(str(tmp_path))
