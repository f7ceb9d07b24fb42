"""What a model family is (a generator and a discriminator builder) and the registry the families
add themselves to (each module of this package registers one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from ..config import ModelConfig
from ..registry import Registry


@dataclass(frozen=True)
class ModelFamily:
    generator: Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
    discriminator: Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
    points: bool = False  # True: also models point data of shape (D,), not only images (C, H, W)


MODELS: Registry[ModelFamily] = Registry("model architecture")
