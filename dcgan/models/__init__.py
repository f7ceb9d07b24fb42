"""Model families, registered by name. Each family builds a generator and a discriminator
whose shapes come from the data: image shape (C, H, W) and number of classes (0 = unconditional).

Generators: forward(z (N, z_dim), y (N,) int64 or None) -> images (N, C, H, W) in [-1, 1].
Discriminators: forward(x (N, C, H, W), y (N,) or None) -> logits (N,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from ..config import ModelConfig
from ..registry import Registry


@dataclass(frozen=True)
class ModelFamily:
    generator: Callable[[ModelConfig, tuple[int, int, int], int], nn.Module]
    discriminator: Callable[[ModelConfig, tuple[int, int, int], int], nn.Module]


MODELS: Registry[ModelFamily] = Registry("model architecture")


def build_generator(cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return MODELS.get(cfg.arch).generator(cfg, shape, num_classes)


def build_discriminator(cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return MODELS.get(cfg.arch).discriminator(cfg, shape, num_classes)


from . import dcgan as _dcgan  # noqa: E402,F401  (registers "dcgan")
