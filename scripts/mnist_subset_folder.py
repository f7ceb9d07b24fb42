#!/usr/bin/env python3
"""Write the first N MNIST training digits as an image folder, one sub-folder per class:

    python scripts/mnist_subset_folder.py /tmp/mnist2k --n 2000

(DIR/0/00000.png, DIR/7/00001.png, ...; 28x28 8-bit grey PNGs), for training on a small data set
as users do with their own folders (`--set data.dataset=folder --set data.path=DIR
--set data.labels_from_subfolders=true`) and for measuring what `train.augment` buys there
(docs/RESULTS.md). The digits come from the MNIST files under the data root ($DCGAN_DATA, or
--data-dir); an existing non-empty folder is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from dcgan.config import DataConfig
from dcgan.data.prepare import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder to write (new or empty)")
    ap.add_argument("--n", type=int, default=2000, help="how many of the first training digits (default 2000)")
    ap.add_argument("--data-dir", help="data root holding mnist/ (default $DCGAN_DATA)")
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out} is not empty: give a new folder")
    data = prepare(DataConfig(dataset="mnist"), args.data_dir)
    if not 1 <= args.n <= len(data):
        sys.exit(f"--n must be in 1..{len(data)}")
    for i in range(args.n):
        label = int(data.labels[i])
        folder = args.out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i, 0]).save(folder / f"{i:05d}.png")
    print(f"wrote {args.n} digits to {args.out}")


if __name__ == "__main__":
    main()
