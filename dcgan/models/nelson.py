"""The TensorFlow "DCGAN for MNIST and CIFAR" write-up's model (leaky ReLU, dropout, a valid 4x4
transposed conv to 7x7; trained with one-sided label smoothing, loss.real_label = 0.9).

G: [z, onehot(y)] → dense 4x4x8w (BN, LeakyReLU(0.2), dropout)
   → 28x28: ConvT k4 s1 valid to 7x7x4w, then ConvT k5 s2 'same' stages: 14x14x2w → 28x28xC
   → 32x32 (CIFAR): ConvT k5 s2 'same' stages 8x8x4w → 16x16x2w → 32x32xC
   every hidden stage BN, LeakyReLU, dropout; tanh out. w = model.g_width (64: 512, 256, 128).
D: conv k5 s2 'same' stages w → 2w → 4w (BN except the first, LeakyReLU(0.2)), no pooling,
   flatten → one logit. w = model.d_width.
Sizes: 7·2^n (28) or 4·2^n (32, 64). Conditioning: one-hot concatenated to z, label maps to D's
input image. Dropout rate: model.dropout (0.4 in the presets), off in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import UserError
from .family import MODELS, ModelFamily
from .dcgan import class_embedding, concat_label, init_weights, label_input, label_maps, projected


def _plan(shape: tuple[int, ...]) -> tuple[bool, int]:
    """(valid 4→7 first stage?, number of stride-2 stages)."""
    res = shape[1]
    for base, valid in ((7, True), (4, False)):
        n, r = 0, res
        while r > base and r % 2 == 0:
            r, n = r // 2, n + 1
        if r == base and n >= 1 and shape[1] == shape[2]:
            return valid, n
    raise UserError(f"model.arch='nelson' needs square images of size 7·2^n (28) or 4·2^n (32, 64), "
                    f"got {tuple(shape)}; set data.resolution")


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        valid, n = _plan(shape)
        k, w, c = num_classes, cfg.g_width, shape[0]
        self.z_dim, self.num_classes, self.out_shape = cfg.z_dim, k, tuple(shape)
        top = w * 2 ** (n + (1 if valid else 0))  # 28: 8w at 4x4; 32: 8w at 4x4
        self.top = top
        self.fc = nn.Linear(cfg.z_dim + k, top * 16, bias=False)
        self.fc_bn = nn.BatchNorm2d(top)
        act = lambda: nn.LeakyReLU(0.2, True)  # noqa: E731
        layers: list[nn.Module] = [act(), nn.Dropout(cfg.dropout)]
        cin = top
        if valid:  # 4x4 → 7x7
            layers += [nn.ConvTranspose2d(cin, cin // 2, 4, 1, 0, bias=False), nn.BatchNorm2d(cin // 2), act(),
                       nn.Dropout(cfg.dropout)]
            cin //= 2
        for i in range(n):
            last = i == n - 1
            cout = c if last else cin // 2
            layers.append(nn.ConvTranspose2d(cin, cout, 5, 2, 2, 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(cout), act(), nn.Dropout(cfg.dropout)]
            cin = cout
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = z  # (N, z_dim)
        if self.num_classes:
            h = concat_label(h, y, self.num_classes)
        h = self.fc_bn(self.fc(h).view(z.shape[0], self.top, 4, 4))  # (N, 8w, 4, 4)
        return torch.tanh(self.net(h))  # (N, C, H, W)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        _plan(shape)
        k, w, c, res = num_classes, cfg.d_width, shape[0], shape[1]
        self.num_classes, self.in_shape = k, tuple(shape)
        layers: list[nn.Module] = []
        cin = c + label_input(cfg, k)
        for i in range(3):
            layers.append(nn.Conv2d(cin, w * 2**i, 5, 2, 2, bias=i == 0))
            if i:
                layers.append(nn.BatchNorm2d(w * 2**i))
            layers.append(nn.LeakyReLU(0.2, True))
            cin, res = w * 2**i, (res + 1) // 2
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(cin * res * res, 1)
        self.embed = class_embedding(cfg, k, cin * res * res)
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x  # (N, C, H, W)
        if self.num_classes and self.embed is None:
            h = torch.cat([h, label_maps(F.one_hot(y, self.num_classes).to(x.dtype), h)], 1)
        h = self.net(h).flatten(1)  # (N, 4w * H/8 * W/8)
        return projected(self.out(h).squeeze(1), h, self.embed, y)  # (N,) logits


MODELS.register("nelson")(ModelFamily(generator=Generator, discriminator=Discriminator))
