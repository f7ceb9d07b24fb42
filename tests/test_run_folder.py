"""Run-folder rules that do not need training: resume compatibility of saved configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcgan.config import Config
from dcgan.errors import UserError
from dcgan.training.run import check_resume_config


def test_a_saved_config_without_a_newer_key_still_resumes():
    saved = Config().to_dict()
    del saved["model"]["g_fc"]  # a run saved before the key existed: the default applies
    check_resume_config(Path("run"), saved, Config())


def test_a_saved_config_whose_default_now_differs_from_the_request_is_refused():
    saved = Config().to_dict()
    del saved["model"]["g_fc"]
    cfg = Config()
    cfg.model.g_fc = 1024
    with pytest.raises(UserError, match="model.g_fc"):
        check_resume_config(Path("run"), saved, cfg)


def test_a_saved_config_with_an_unknown_key_is_a_clear_error():
    saved = Config().to_dict()
    saved["model"]["from_the_future"] = 1
    with pytest.raises(UserError, match="from_the_future"):
        check_resume_config(Path("run"), saved, Config())


def test_training_restores_the_callers_thread_count(tmp_path):
    import torch

    from dcgan.cli import main

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    assert main(["train", "toy-gaussian", "--steps", "2", "--out", str(tmp_path / "t"), "--quiet",
                 "--set", f"train.num_threads={wanted}"]) == 0
    assert torch.get_num_threads() == before


def test_a_run_made_before_the_preset_and_the_progress_key_were_recorded_resumes_and_records_them(tmp_path):
    """A toy run written as before: no run.json, no "preset" in its checkpoint, no train.progress_seconds
    in its config.toml or checkpoint. `--resume` continues it (the new key takes its default, even when
    this session asks for another value, since it only changes how the run reports), and the preset of
    the command line is recorded from then on."""
    import tomllib

    from dcgan import checkpoint
    from dcgan.cli import main
    from dcgan.config import to_toml

    run = tmp_path / "old"
    assert main(["train", "toy-gaussian", "--steps", "4", "--out", str(run), "--quiet"]) == 0
    (run / "run.json").unlink()
    saved = tomllib.loads((run / "config.toml").read_text())
    del saved["train"]["progress_seconds"]
    (run / "config.toml").write_text(to_toml(saved))
    for path in checkpoint.list_checkpoints(run):
        state = checkpoint.load(path)
        del state["config"]["train"]["progress_seconds"]
        del state["preset"]
        checkpoint.save(state, path)
    assert main(["train", "toy-gaussian", "--steps", "8", "--out", str(run), "--resume", "--quiet",
                 "--set", "train.progress_seconds=5"]) == 0
    assert checkpoint.latest(run)[1]["step"] == 8 and checkpoint.latest(run)[1]["preset"] == "toy-gaussian"
    assert (run / "run.json").read_text().strip() == '{"preset": "toy-gaussian"}'
