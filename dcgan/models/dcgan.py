"""The DCGAN of Radford et al. (2015), with optional label conditioning.

Depth comes from the resolution: G projects z to a start x start map and doubles it with
strided transposed convolutions; D mirrors it with strided convolutions. The start size is the
resolution halved while it stays even and >= 4: 28 → 7 (2 stages), 32 → 4 (3), 64 → 4 (4),
96 → 6 (4), 128 → 4 (5). Batch norm everywhere except G's output and D's input, ReLU in G,
LeakyReLU(0.2) in D, tanh output, N(0, 0.02) initialisation, no pooling.

Conditioning is by concatenating the one-hot label: to z at G's input, and (site "all") as
constant label maps before every later layer; in D to the image (site "input") or before every
layer (site "all"). G "all" + D "all" with kernel 5 and 1024-wide hidden fully connected layers
is the conditional MNIST model of DCGAN-tensorflow (carpedm20).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import SUPPORTED_RESOLUTIONS, ModelConfig
from ..errors import UserError
from .family import MODELS, ModelFamily


def start_size(resolution: int) -> tuple[int, int]:
    """(start, stages): resolution = start * 2**stages, start the smallest even-halving size >= 4."""
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise UserError(
            f"the dcgan model supports resolutions {list(SUPPORTED_RESOLUTIONS)}, got {resolution}; "
            f"set data.resolution to one of them"
        )
    start, stages = resolution, 0
    while start % 2 == 0 and start // 2 >= 4:
        start, stages = start // 2, stages + 1
    return start, stages


def _padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 layer exactly halve / double the size."""
    return (1, 0) if kernel == 4 else (2, 1)


def label_maps(onehot: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, K) one-hot → (N, K, H, W) constant maps matching `like` (N, C, H, W)."""
    return onehot[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


def concat_label(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, D) features and (N,) labels → (N, D + K) with the one-hot label appended."""
    return torch.cat([h, F.one_hot(y, num_classes).to(h.dtype)], 1)


def class_embedding(cfg: ModelConfig, num_classes: int, features: int) -> nn.Embedding | None:
    """The projection discriminator's class embedding (K, F) when model.d_cond = "projection"."""
    return nn.Embedding(num_classes, features) if num_classes and cfg.d_cond == "projection" else None


def label_input(cfg: ModelConfig, num_classes: int) -> int:
    """How many label channels D's input takes: K, or none when D projects the label instead."""
    return 0 if cfg.d_cond == "projection" else num_classes


def projected(logits: torch.Tensor, h: torch.Tensor, embed: nn.Embedding | None, y: torch.Tensor | None) -> torch.Tensor:
    """logits (N,) plus the projection term <embed(y), h> of D's last features h (N, F) (Miyato & Koyama
    2018: the label's evidence as an inner product with what D sees)."""
    if embed is None:
        return logits
    return logits + (embed(y).to(h.dtype) * h).sum(1)


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: weights N(0, 0.02); batch-norm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, resolution = shape[0], shape[1]
        start, stages = start_size(resolution)
        k = num_classes
        self.z_dim, self.num_classes, self.out_shape = cfg.z_dim, k, tuple(shape)
        self.start = start
        self.cond_all = k > 0 and cfg.g_cond == "all"
        extra = k if self.cond_all else 0  # label channels concatenated before later layers
        # channels entering each upsampling stage, e.g. 64x64: [512, 256, 128, 64]
        widths = [cfg.g_width * 2 ** (stages - 1 - i) for i in range(stages)]

        in_dim = cfg.z_dim + k
        if cfg.g_fc:
            self.fc = nn.Sequential(nn.Linear(in_dim, cfg.g_fc, bias=False), nn.BatchNorm1d(cfg.g_fc), nn.ReLU(True))
            in_dim = cfg.g_fc + extra
        else:
            self.fc = None
        # "project and reshape": the same function as a k=start transposed conv from 1x1
        self.project = nn.Linear(in_dim, widths[0] * start * start, bias=False)
        self.project_bn = nn.BatchNorm2d(widths[0])

        pad, out_pad = _padding(cfg.kernel)
        self.ups = nn.ModuleList()
        for i in range(stages):
            last = i == stages - 1
            cout = channels if last else widths[i + 1]
            conv = nn.ConvTranspose2d(widths[i] + extra, cout, cfg.kernel, 2, pad, out_pad, bias=last)
            self.ups.append(nn.Sequential(conv) if last else nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(True)))
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        n = z.shape[0]
        h = z  # (N, z_dim)
        onehot = None
        if self.num_classes:
            onehot = F.one_hot(y, self.num_classes).to(z.dtype)  # (N, K)
            h = torch.cat([h, onehot], 1)
        if self.fc is not None:
            h = self.fc(h)  # (N, g_fc)
            if self.cond_all:
                h = torch.cat([h, onehot], 1)
        h = self.project(h).view(n, -1, self.start, self.start)  # (N, C0, s, s)
        h = F.relu(self.project_bn(h))
        for block in self.ups:
            if self.cond_all:
                h = torch.cat([h, label_maps(onehot, h)], 1)
            h = block(h)  # (N, C/2, 2H, 2W) ... last: (N, channels, H, W)
        return torch.tanh(h)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, resolution = shape[0], shape[1]
        start, stages = start_size(resolution)
        k = num_classes
        self.num_classes, self.in_shape = k, tuple(shape)
        self.cond_all = k > 0 and cfg.d_cond == "all"
        self.k_in = label_input(cfg, k)
        extra = k if self.cond_all else 0
        widths = [cfg.d_width * 2**i for i in range(stages)]  # e.g. 64x64: [64, 128, 256, 512]

        pad, _ = _padding(cfg.kernel)
        self.downs = nn.ModuleList()
        for i in range(stages):
            cin = channels + self.k_in if i == 0 else widths[i - 1] + extra  # the image sees the label unless projected
            layers: list[nn.Module] = [nn.Conv2d(cin, widths[i], cfg.kernel, 2, pad, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(widths[i]))
            layers.append(nn.LeakyReLU(0.2, True))
            self.downs.append(nn.Sequential(*layers))

        flat = widths[-1] * start * start + extra
        if cfg.d_fc:
            self.fc = nn.Sequential(nn.Linear(flat, cfg.d_fc, bias=False), nn.BatchNorm1d(cfg.d_fc), nn.LeakyReLU(0.2, True))
            flat = cfg.d_fc + extra
        else:
            self.fc = None
        self.out = nn.Linear(flat, 1)
        self.embed = class_embedding(cfg, k, flat)
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x  # (N, C, H, W)
        onehot = None
        if self.num_classes:
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)  # (N, K)
        for i, block in enumerate(self.downs):
            if onehot is not None and ((i == 0 and self.k_in) or self.cond_all):
                h = torch.cat([h, label_maps(onehot, h)], 1)
            h = block(h)  # (N, width * 2**i, H / 2**(i+1), W / 2**(i+1))
        h = h.flatten(1)  # (N, C_last * s * s)
        if self.cond_all:
            h = torch.cat([h, onehot], 1)
        if self.fc is not None:
            h = self.fc(h)  # (N, d_fc)
            if self.cond_all:
                h = torch.cat([h, onehot], 1)
        return projected(self.out(h).squeeze(1), h, self.embed, y)  # (N,) logits


MODELS.register("dcgan")(ModelFamily(generator=Generator, discriminator=Discriminator))
