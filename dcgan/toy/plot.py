"""Scatter pictures of 2-D points with Pillow only: real vs generated points over D's decision
surface (filled contours of sigmoid(D)), and the animated GIF of a run's ticks.

The surface is coloured in LEVELS bands from pale orange (D says "fake") through white (0.5)
to pale blue (D says "real"), with D's 0.5 contour drawn in grey; real points are dark blue,
generated ones dark orange, drawn on top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 360  # plot area, pixels square
HEADER = 36  # pixels of text above the plot (two lines)
LEVELS = 10  # bands of the filled contours
SURFACE_RES = 120  # D is evaluated on a SURFACE_RES² grid, upsampled to the plot

FAKE_BG, MID_BG, REAL_BG = np.array([253, 212, 178]), np.array([255, 255, 255]), np.array([190, 215, 238])
REAL_DOT, FAKE_DOT, CONTOUR = (8, 69, 148), (217, 72, 1), (110, 110, 110)


def bounds_of(points: np.ndarray, margin: float = 0.25) -> tuple[float, float, float, float]:
    """A square (x0, x1, y0, y1) holding the bulk (0.1%–99.9% quantiles) of `points` (N, 2), with a margin."""
    lo, hi = np.quantile(np.asarray(points, np.float64), [0.001, 0.999], axis=0)
    centre, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-3) * (1 + margin)
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def grid_points(bounds, res: int = SURFACE_RES) -> np.ndarray:
    """(res*res, 2) cell centres, row-major with the first row at the top (largest y)."""
    x0, x1, y0, y1 = bounds
    xs = x0 + (np.arange(res) + 0.5) * (x1 - x0) / res
    ys = y1 - (np.arange(res) + 0.5) * (y1 - y0) / res
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)


def _band_colours(level: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → (…, 3) colours: pale orange at 0, white at 0.5, pale blue at 1."""
    t = np.abs(level - 0.5)[..., None] * 2  # 0 at 0.5, 1 at the ends
    edge = np.where(level[..., None] < 0.5, FAKE_BG, REAL_BG)
    return (MID_BG * (1 - t) + edge * t).round().astype(np.uint8)


def _palette() -> list[int]:
    """Every colour a picture uses (bands, dots, contour, greys for text), for the GIF frames."""
    colours = [tuple(c) for c in _band_colours((np.arange(LEVELS) + 0.5) / LEVELS)]
    colours += [REAL_DOT, FAKE_DOT, CONTOUR, (60, 60, 60)] + [(v, v, v) for v in range(0, 256, 17)]
    return [v for c in colours for v in c]


def _surface_pixels(prob: np.ndarray) -> np.ndarray:
    """prob (res, res) in [0, 1] → (SIZE, SIZE, 3) uint8 filled contours with the 0.5 line."""
    p = Image.fromarray(prob.astype(np.float32), mode="F").resize((SIZE, SIZE), Image.BILINEAR)
    p = np.clip(np.asarray(p), 0.0, 1.0)
    band = np.minimum((p * LEVELS).astype(int), LEVELS - 1)  # 0 .. LEVELS-1
    rgb = _band_colours((band + 0.5) / LEVELS)  # each band has the colour of its middle value
    above = p >= 0.5
    line = np.zeros_like(above)
    line[:, 1:] |= above[:, 1:] != above[:, :-1]
    line[1:, :] |= above[1:, :] != above[:-1, :]
    rgb[line] = CONTOUR
    return rgb


def _dots(rgb: np.ndarray, points: np.ndarray, bounds, colour, radius: int = 1) -> None:
    x0, x1, y0, y1 = bounds
    px = ((np.asarray(points[:, 0]) - x0) / (x1 - x0) * SIZE).astype(int)
    py = ((y1 - np.asarray(points[:, 1])) / (y1 - y0) * SIZE).astype(int)
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            qx, qy = px + dx, py + dy
            ok = (qx >= 0) & (qx < SIZE) & (qy >= 0) & (qy < SIZE)
            rgb[qy[ok], qx[ok]] = colour


def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def scatter(path: str | Path, bounds, real: np.ndarray | None, fake: np.ndarray,
            prob: np.ndarray | None = None, title: str = "") -> None:
    """Save a PNG: `fake` (N, 2) (and `real` (M, 2)) over the surface `prob` (res, res) of
    sigmoid(D) on grid_points(bounds, res), or over white without one."""
    rgb = _surface_pixels(prob) if prob is not None else np.full((SIZE, SIZE, 3), 255, np.uint8)
    if real is not None:
        _dots(rgb, real, bounds, REAL_DOT)
    _dots(rgb, fake, bounds, FAKE_DOT)
    img = Image.new("RGB", (SIZE, SIZE + HEADER), (255, 255, 255))
    img.paste(Image.fromarray(rgb), (0, HEADER))
    draw, font = ImageDraw.Draw(img), _font()
    draw.multiline_text((4, 3), title, fill=(0, 0, 0), font=font, spacing=2)
    x0, x1, y0, y1 = bounds
    draw.text((4, SIZE + HEADER - 16), f"x [{x0:.1f}, {x1:.1f}]  y [{y0:.1f}, {y1:.1f}]", fill=(60, 60, 60), font=font)
    legend = [("real", REAL_DOT), ("generated", FAKE_DOT)] if real is not None else [("generated", FAKE_DOT)]
    x = SIZE - 4
    for name, colour in reversed(legend):
        w = draw.textlength(name, font=font)
        x -= w
        draw.text((x, SIZE + HEADER - 16), name, fill=colour, font=font)
        x -= 10
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def save_gif(frames: list[Path], out: str | Path, ms: int = 250, last_ms: int = 2000) -> None:
    """An animated, looping GIF of the PNG `frames`, each shown `ms` (the last `last_ms`)."""
    if not frames:
        return
    images = [Image.open(f).convert("RGB") for f in frames]
    palette = Image.new("P", (1, 1))
    palette.putpalette(_palette())
    quantized = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    quantized[0].save(tmp, format="GIF", save_all=True, append_images=quantized[1:], loop=0,
                      duration=[ms] * (len(quantized) - 1) + [last_ms], optimize=False)
    tmp.replace(out)


def save_samples(path: str | Path, points: np.ndarray, dataset: str, title: str = "", n_real: int = 2_000) -> None:
    """A scatter of generated `points` (N, 2), over real points of `dataset` when it is a toy target."""
    from ..data.sources import SOURCES

    target = SOURCES.get(dataset).target if dataset in SOURCES else None
    real = target.sample(n_real, seed=0)[0] if target is not None else None
    scatter(path, bounds_of(real if real is not None else points), real, points, None, title=title)
