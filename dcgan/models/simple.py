"""The "DCGAN and cDCGAN on MNIST" write-up's model: tanh activations, dropout, a max-pooling D.

G: [z, onehot(y)] → dense start x start x 4w (tanh) + dropout → ConvT 5x5/2 to 2w (BN, tanh)
   → ConvT 5x5/2 to C (tanh). With w = model.g_width = 64 and 32x32 images this is the write-up's
   dense 8x8x256 → 16x16x128 → 32x32x1. Any resolution divisible by 4 works (28 → 7x7 start).
D: conv 5x5/1 w (tanh) + maxpool 2 → conv 5x5/1 2w (tanh) + maxpool 2 → dropout
   → dense model.d_fc (ReLU) → dropout → dense: one logit (model.d_head = "binary") or K+1 logits
   (model.d_head = "classes": the K digits + "fake", trained with loss.kind = "nplus1").
   With w = model.d_width = 64 and d_fc = 1024 this is the write-up's D.

Conditioning (num_classes > 0): the one-hot label concatenated to z; in D as constant label maps
before the first conv (model.d_cond = "input") or before each conv (d_cond = "all", the
write-up's choice). model.g_cond = "all" also adds label maps before G's second ConvT.
Dropout rate: model.dropout (the write-up's 0.5 in the presets); off in eval mode (sampling).
Initialisation: N(0, 0.02) as in the rest of the package.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import UserError
from .family import MODELS, ModelFamily
from .dcgan import class_embedding, init_weights, label_input, label_maps, projected


def _check(shape: tuple[int, ...]) -> tuple[int, int]:
    channels, res = shape[0], shape[1]
    if res % 4 or res < 8 or shape[1] != shape[2]:
        raise UserError(f"model.arch='simple' needs square images with a size divisible by 4 (e.g. 28, 32), "
                        f"got {tuple(shape)}; set data.resolution")
    return channels, res


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, res = _check(shape)
        k = num_classes
        self.z_dim, self.num_classes, self.out_shape = cfg.z_dim, k, tuple(shape)
        self.start, w = res // 4, cfg.g_width
        self.cond_all = k > 0 and cfg.g_cond == "all"
        self.fc = nn.Linear(cfg.z_dim + k, 4 * w * self.start**2)
        self.drop = nn.Dropout(cfg.dropout)
        self.up1 = nn.ConvTranspose2d(4 * w + (k if self.cond_all else 0), 2 * w, 5, 2, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * w)
        self.up2 = nn.ConvTranspose2d(2 * w + (k if self.cond_all else 0), channels, 5, 2, 2, 1)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h, onehot = z, None  # (N, z_dim)
        if self.num_classes:
            onehot = F.one_hot(y, self.num_classes).to(z.dtype)
            h = torch.cat([h, onehot], 1)  # (N, z_dim + K)
        h = self.drop(torch.tanh(self.fc(h))).view(z.shape[0], -1, self.start, self.start)  # (N, 4w, s, s)
        if self.cond_all:
            h = torch.cat([h, label_maps(onehot, h)], 1)
        h = torch.tanh(self.bn1(self.up1(h)))  # (N, 2w, 2s, 2s)
        if self.cond_all:
            h = torch.cat([h, label_maps(onehot, h)], 1)
        return torch.tanh(self.up2(h))  # (N, C, 4s, 4s)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, res = _check(shape)
        k = num_classes
        self.num_classes, self.in_shape = k, tuple(shape)
        self.cond_all = k > 0 and cfg.d_cond == "all"
        w = cfg.d_width
        self.k_in = label_input(cfg, k)
        self.conv1 = nn.Conv2d(channels + self.k_in, w, 5, 1, 2)
        self.conv2 = nn.Conv2d(w + (k if self.cond_all else 0), 2 * w, 5, 1, 2)
        self.drop = nn.Dropout(cfg.dropout)
        flat = 2 * w * (res // 4) ** 2
        self.fc = nn.Linear(flat, cfg.d_fc) if cfg.d_fc else None
        outputs = k + 1 if cfg.d_head == "classes" else 1
        self.out = nn.Linear(cfg.d_fc or flat, outputs)
        self.classes_head = cfg.d_head == "classes"
        self.embed = class_embedding(cfg, k, cfg.d_fc or flat)
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h, onehot = x, None  # (N, C, H, W)
        if self.num_classes:
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)
        if self.k_in:
            h = torch.cat([h, label_maps(onehot, h)], 1)
        h = F.max_pool2d(torch.tanh(self.conv1(h)), 2)  # (N, w, H/2, W/2)
        if self.cond_all:
            h = torch.cat([h, label_maps(onehot, h)], 1)
        h = F.max_pool2d(torch.tanh(self.conv2(h)), 2)  # (N, 2w, H/4, W/4)
        h = self.drop(h.flatten(1))
        if self.fc is not None:
            h = self.drop(F.relu(self.fc(h)))  # (N, d_fc)
        out = self.out(h)  # (N, K+1) or (N, 1)
        return out if self.classes_head else projected(out.squeeze(1), h, self.embed, y)


MODELS.register("simple")(ModelFamily(generator=Generator, discriminator=Discriminator))
