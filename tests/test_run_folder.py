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
