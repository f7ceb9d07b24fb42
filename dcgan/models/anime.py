"""The PyTorch DCGAN for 96x96 anime faces.

G: ConvT k4 s1 p0 from z (1x1) to 4x4x8w → k4 s2 p1 stages (BN, ReLU) to 32x32xw
   → ConvT k5 s3 p1 to 96x96xC, tanh.  (w = model.g_width, 64 in the source.)
D mirrors it: conv k5 s3 p1 96 → 32 (LeakyReLU(0.2), no BN) → k4 s2 p1 stages to 4x4x8w (BN,
   LeakyReLU) → conv k4 s1 p0 to one logit. (w = model.d_width.)
Sizes: 3·4·2^n (48, 96, 192). Conditioning: one-hot concatenated to z, label maps to D's input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import UserError
from .family import MODELS, ModelFamily
from .dcgan import class_embedding, concat_label, init_weights, label_input, label_maps, projected


def _stages(shape: tuple[int, ...]) -> int:
    res, n = shape[1], 0
    if res % 3 == 0 and shape[1] == shape[2]:
        r = res // 3
        while r > 4 and r % 2 == 0:
            r, n = r // 2, n + 1
        if r == 4 and n >= 1:
            return n
    raise UserError(f"model.arch='anime' needs square images of size 3·4·2^n (48, 96), got {tuple(shape)}; "
                    f"set data.resolution=96")


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        n, k, w = _stages(shape), num_classes, cfg.g_width
        self.z_dim, self.num_classes, self.out_shape = cfg.z_dim, k, tuple(shape)
        top = w * 2**n  # 96: 8w
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.z_dim + k, top, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(top), nn.ReLU(True)]
        c = top
        for _ in range(n):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, shape[0], 5, 3, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = z  # (N, z_dim)
        if self.num_classes:
            h = concat_label(h, y, self.num_classes)
        return self.net(h[:, :, None, None])  # (N, z, 1, 1) → (N, C, 96, 96)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        n, k, w = _stages(shape), num_classes, cfg.d_width
        self.num_classes, self.in_shape = k, tuple(shape)
        layers: list[nn.Module] = [nn.Conv2d(shape[0] + label_input(cfg, k), w, 5, 3, 1), nn.LeakyReLU(0.2, True)]
        c = w
        for _ in range(n):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 4, 1, 0))  # (N, c, 4, 4) → (N, 1, 1, 1): a linear map of the last features
        self.net = nn.Sequential(*layers)
        self.embed = class_embedding(cfg, k, c * 4 * 4)
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x  # (N, C, 96, 96)
        if self.num_classes and self.embed is None:
            h = torch.cat([h, label_maps(F.one_hot(y, self.num_classes).to(x.dtype), h)], 1)
        h = self.net[:-1](h)  # (N, c, 4, 4)
        return projected(self.net[-1](h).flatten(), h.flatten(1), self.embed, y)  # (N,) logits


MODELS.register("anime")(ModelFamily(generator=Generator, discriminator=Discriminator))
