"""Fully connected G and D for any data shape: 2-D points (toy GANs) or images, flattened.

G: [z, onehot(y)] → g_depth × (Linear(g_width) → ReLU) → Linear(prod(shape)) → reshape.
   Images (C, H, W) end in tanh, so G's range is the data's [-1, 1]; points (D,) end linear,
   since the toy targets are unbounded. g_depth = 0 is a single linear layer z → x: for the
   `gaussian` target (x = z·A + b) the exact model class, with a 2-D z it can match the target
   exactly.
D: [flatten(x), onehot(y)] → d_depth × (Linear(d_width) → LeakyReLU(0.2)) → Linear(1), logits (N,).

Choices: ReLU in G and LeakyReLU(0.2) in D as in DCGAN (D's leak keeps gradients flowing to G
where D is saturated); no batch norm (it couples the samples of a batch, which on 2-D data makes
the generator's output depend on the batch it is drawn in, and the toys train fine without it);
PyTorch's default (Kaiming-uniform) initialisation rather than DCGAN's N(0, 0.02), which starves a
deep narrow MLP of signal at the start. Conditioning is the one-hot label concatenated to the
input of G and of D (the conditional GAN of Mirza & Osindero, 2014); the number of classes
comes from the data.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from ..config import ModelConfig
from .family import MODELS, ModelFamily
from .dcgan import class_embedding, concat_label, init_weights, label_input, projected


def _mlp(sizes: list[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers through `sizes`, `act` after every one but the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.z_dim, self.num_classes, self.out_shape = cfg.z_dim, num_classes, tuple(shape)
        self.images = len(shape) == 3  # tanh output for images, linear for points
        sizes = [cfg.z_dim + num_classes] + [cfg.g_width] * cfg.g_depth + [math.prod(shape)]
        self.net = _mlp(sizes, lambda: nn.ReLU(True))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = z  # (N, z_dim)
        if self.num_classes:
            h = concat_label(h, y, self.num_classes)  # (N, z_dim + K)
        x = self.net(h)  # (N, prod(shape))
        if self.images:
            x = torch.tanh(x)
        return x.view(-1, *self.out_shape)  # (N, C, H, W) or (N, D)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.num_classes, self.in_shape = num_classes, tuple(shape)
        sizes = [math.prod(shape) + label_input(cfg, num_classes)] + [cfg.d_width] * cfg.d_depth + [1]
        self.net = _mlp(sizes, lambda: nn.LeakyReLU(0.2, True))
        self.embed = class_embedding(cfg, num_classes, sizes[-2])
        if self.embed is not None:
            init_weights(self.embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (N, prod(shape))
        if self.num_classes and self.embed is None:
            h = concat_label(h, y, self.num_classes)  # (N, prod(shape) + K)
        if self.embed is None:
            return self.net(h).squeeze(1)  # (N,) logits
        h = self.net[:-1](h)  # (N, d_width): the last hidden features
        return projected(self.net[-1](h).squeeze(1), h, self.embed, y)


MODELS.register("mlp")(ModelFamily(generator=Generator, discriminator=Discriminator, points=True))
