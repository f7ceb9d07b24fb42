"""Model families, registered by name. Each family builds a generator and a discriminator
whose shapes come from the data: the shape of one example — images (C, H, W), points (D,) —
and the number of classes (0 = unconditional).

Generators: forward(z (N, z_dim), y (N,) int64 or None) -> images (N, C, H, W) in [-1, 1], or points (N, D).
Discriminators: forward(x (N, *shape), y (N,) or None) -> logits (N,).
Both carry z_dim (G), num_classes and out_shape (G) / in_shape (D).

    dcgan  convolutional, images only (dcgan.py)
    mlp    fully connected, any shape: 2-D points (toy GANs) or flattened images (mlp.py)
    simple tanh + dropout G, max-pooling D, optional K+1-class D head (simple.py)
    nelson 4x4x512 start, valid 4→7 ConvT, LeakyReLU + dropout (nelson.py)
    anime  the 96x96 anime-faces DCGAN, last ConvT k5 s3 (anime.py)

A D with model.d_head = "classes" returns (N, K+1) logits instead (K classes + "fake").
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import UserError
from .family import MODELS, ModelFamily


def _family(cfg: ModelConfig, shape: tuple[int, ...]) -> ModelFamily:
    family = MODELS.get(cfg.arch)
    if len(shape) != 3 and not family.points:
        able = [name for name in MODELS.names() if MODELS.get(name).points]
        raise UserError(f"model.arch={cfg.arch!r} models images (C, H, W); this data has shape {tuple(shape)}: "
                        f"set model.arch to one of [{', '.join(able)}]")
    return family


class MissingLabels(UserError, TypeError):
    """A conditional generator called without labels (a TypeError to library code, exit 2 on the command line)."""


def _require_labels(G: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of a conditional generator: without labels every family would fail deep inside
    (one_hot() of None) with a message that does not say what is missing."""
    y = args[1] if len(args) > 1 else kwargs.get("y")
    if y is None:
        k = G.num_classes
        raise MissingLabels(f"this generator is conditional ({k} classes): call G(z, y) with y the class of each "
                            f"image, an int64 tensor (N,) of values in 0..{k - 1}")


# What torch's layer constructors raise for sizes no tensor can have (a width of 2**60 overflows the
# storage size; 2**63 does not fit an int64) or no memory holds.
_UNBUILDABLE = (RuntimeError, TypeError, ValueError, OverflowError, MemoryError)


def _build(cfg: ModelConfig, what: str, make):
    """make(), with the failure of a layer that cannot be built as a UserError naming the sizes to lower."""
    try:
        return make()
    except UserError:
        raise
    except _UNBUILDABLE as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"the {what} of model.arch={cfg.arch!r} cannot be built at model.z_dim={cfg.z_dim}, "
                        f"g_width={cfg.g_width}, d_width={cfg.d_width}, g_fc={cfg.g_fc}, d_fc={cfg.d_fc} "
                        f"({type(e).__name__}: {reason}); lower them") from None


def build_generator(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    G = _build(cfg, "generator", lambda: _family(cfg, shape).generator(cfg, shape, num_classes))
    if num_classes:
        G.register_forward_pre_hook(_require_labels, with_kwargs=True)
    return G


def build_discriminator(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    D = _build(cfg, "discriminator", lambda: _family(cfg, shape).discriminator(cfg, shape, num_classes))
    return spectral_normalise(D) if cfg.spectral_norm else D


class ChannelShift(nn.Module):
    """A learned offset per channel, x (N, C) or (N, C, H, W) + b (C,): what is left of a batch norm
    that spectral normalisation replaces. The layers before a batch norm carry no bias of their own
    (its shift served as one), so without this they would have none."""

    def __init__(self, channels: int):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.view(1, -1, *([1] * (x.dim() - 2)))


def spectral_normalise(module: nn.Module) -> nn.Module:
    """`module` with spectral normalisation (one power iteration per forward in training) on every
    conv, linear and embedding layer, and without batch norm (SN-GAN's discriminator): each batch norm
    becomes a ChannelShift (its learned offset, without the normalisation and the scale). Changed in place."""
    from torch.nn.utils.parametrizations import spectral_norm

    for name, child in list(module.named_children()):
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            setattr(module, name, ChannelShift(child.num_features))
        elif isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            spectral_norm(child)
        else:
            spectral_normalise(child)
    return module


from . import dcgan as _dcgan  # noqa: E402,F401  (registers "dcgan")
from . import mlp as _mlp  # noqa: E402,F401  (registers "mlp")
from . import simple as _simple  # noqa: E402,F401  (registers "simple")
from . import nelson as _nelson  # noqa: E402,F401  (registers "nelson")
from . import anime as _anime  # noqa: E402,F401  (registers "anime")
