#!/usr/bin/env python3
"""Write a folder of synthetic images for timing `dcgan prepare` (docs/BENCHMARKS.md):

    python scripts/make_synthetic_folder.py /tmp/synthetic --n 20000 --size 128 --format jpeg

Each image is smooth colour (a random 4x4 RGB field, bilinearly enlarged) plus a little noise,
so it compresses about like a photo; image i depends only on (--seed, i). Files are named
00000.jpg, 00001.jpg, ...; an existing non-empty folder is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(rng: np.random.Generator, size: int) -> Image.Image:
    """One size x size RGB image."""
    field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    a = np.asarray(field, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=128, help="side of the square images in pixels")
    ap.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    ext = "jpg" if args.format == "jpeg" else "png"
    for i in range(args.n):
        im = make_image(np.random.default_rng([args.seed, i]), args.size)
        path = args.out / f"{i:05d}.{ext}"
        if args.format == "jpeg":
            im.save(path, quality=args.quality)
        else:
            im.save(path)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.n} {args.size}x{args.size} {args.format.upper()} images ({total / 2**20:.1f} MiB) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
