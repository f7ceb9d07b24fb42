"""The device a command runs on: one check of `--device` / `train.device` for every command."""

from __future__ import annotations

import re

import torch

from .errors import UserError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def valid_device_name(name: str) -> bool:
    return _PATTERN.fullmatch(name) is not None


def pick_device(name: str | None = "auto") -> torch.device:
    """The torch device `name` means here (auto: CUDA when there is one); exit 2 when it is not here."""
    name = name or "auto"
    if not valid_device_name(name):
        raise UserError(f"--device {name!r}: use {DEVICE_NAMES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)
