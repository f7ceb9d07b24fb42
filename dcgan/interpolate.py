"""Walks through a generator's latent space: `dcgan interpolate`.

    frames, labels = interpolate(G, seed_a=1, seed_b=2, steps=10)         # slerp from z(1) to z(2)
    frames, labels = interpolate(G, seed_a=1, across_labels=True)         # z(1) fixed, one frame per class

z(seed) is `sampling.noise(1, z_dim, seed)`, the noise `dcgan sample --n 1 --seed seed` uses, and
the images come from the one `sampling.generate(G, n, labels, z=...)`: the first frame is exactly
the sample of seed a and the last exactly the sample of seed b.

Spherical interpolation (slerp) rather than a straight line: z ~ N(0, I) lies near the sphere of
radius sqrt(z_dim), and the midpoint of a straight line between two such points has a norm about
1/sqrt(2) of theirs, a region the generator never saw in training.

Across labels, the generators take integer labels (one-hot inside the model), so there is no
in-between class to show: the animation has one frame per class, 0..K-1, with z fixed. (A soft
label path would need a change to every generator, and it would ask G for inputs it was never
trained on.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.raw import kind_of
from .errors import UserError
from .images import make_grid
from .sampling import generate, noise


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between vectors a and b (D,) at fractions t (T,) → (T, D), in float64;
    a straight line where a and b are (anti)parallel to within rounding."""
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:
        return (1 - t64) * a64 + t64 * b64
    return (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / torch.sin(omega)


def interpolation_noise(z_dim: int, seed_a: int, seed_b: int, steps: int) -> torch.Tensor:
    """(steps, z_dim) float32: slerp from noise(seed_a) to noise(seed_b); the ends are exactly those noises."""
    if steps < 2:
        raise UserError(f"--frames must be >= 2 (the two ends), got {steps}")
    za, zb = noise(1, z_dim, seed_a)[0], noise(1, z_dim, seed_b)[0]
    z = slerp(za, zb, torch.linspace(0, 1, steps)).float()
    z[0], z[-1] = za, zb
    return z


def interpolate(G: torch.nn.Module, seed_a: int, seed_b: int | None = None, steps: int = 10,
                label: int | None = None, across_labels: bool = False,
                batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames uint8 (T, C, H, W) and their labels (T,) (None for an unconditional G)."""
    if kind_of(G.out_shape) != "images":
        raise UserError("interpolate draws images; this generator makes points (a toy run): use 'dcgan sample' instead")
    K = G.num_classes
    if (label is not None or across_labels) and not K:
        raise UserError("this generator is unconditional; drop --label / --across-labels")
    if label is not None and across_labels:
        raise UserError("give either --label or --across-labels, not both")
    if label is not None and not 0 <= label < K:
        raise UserError(f"--label {label} is out of range; classes are 0..{K - 1}")
    if across_labels:
        z = noise(1, G.z_dim, seed_a).repeat(K, 1)
        labels = torch.arange(K)
    else:
        if seed_b is None:
            raise UserError("--to-seed is required (or --across-labels for a fixed z through the classes)")
        z = interpolation_noise(G.z_dim, seed_a, seed_b, steps)
        labels = torch.full((steps,), label or 0, dtype=torch.long) if K else None
    return generate(G, len(z), labels, z=z, batch_size=batch_size), labels


def _scaled(frame: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, C) uint8 → nearest-neighbour upscaled by an integer factor."""
    return frame.repeat(scale, 0).repeat(scale, 1) if scale > 1 else frame


def _pil(frame: np.ndarray):
    from PIL import Image

    return Image.fromarray(frame[:, :, 0] if frame.shape[2] == 1 else frame)


def save_strip(frames: np.ndarray, path: str | Path, scale: int = 1) -> None:
    """One row of the frames (T, C, H, W) uint8, 2-pixel gaps, as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil(_scaled(make_grid(frames, nrow=len(frames)), scale)).save(path)


def save_animation(frames: np.ndarray, path: str | Path, scale: int = 1, ms: int = 150, hold_ms: int = 600) -> None:
    """An animated, looping GIF of the frames (T, C, H, W) uint8, each shown `ms`, the ends `hold_ms`.
    Gray frames are exact (a 256-gray palette); colour frames are quantised to 256 colours."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [_pil(_scaled(f.transpose(1, 2, 0), scale)) for f in frames]
    if images[0].mode == "RGB":
        images = [im.quantize(256) for im in images]
    durations = [hold_ms] + [ms] * (len(images) - 2) + [hold_ms] if len(images) > 1 else [hold_ms]
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0, duration=durations,
                   optimize=False, disposal=1)
    tmp.replace(path)
