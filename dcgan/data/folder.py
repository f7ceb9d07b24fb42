"""Image folders (and CelebA / LSUN exports, which are image folders): PNG, JPEG, WebP, BMP, GIF.

Rules:
* Files: every file under data.path, recursively, in sorted relative-path order; hidden files
  and folders (".name") are ignored. Files that Pillow cannot read (corrupt, not an image) are
  skipped, counted and the first names listed in the log; data.strict = true makes the first one
  an error instead. A folder with no readable image is an error.
* Labels: data.labels_from_subfolders = true gives one class per immediate sub-folder (sorted
  names; images directly in data.path are then skipped and counted); else no labels.
* Channels: data.channels (1 or 3), else 3 if any image is colour, else 1. Grey images become
  RGB by repeating the channel; colour becomes grey by ITU-R 601 luma (Pillow's "L"). Alpha is
  dropped (RGBA and palette images are converted to RGB).
* Geometry: a centre crop to data.crop x data.crop (0 = the largest centred square), then a
  bilinear, antialiased resize to data.resolution (0 = the smallest cropped side among the
  images, rounded down to a supported resolution). An image smaller than the crop, or whose crop
  is smaller than the resolution, is an error (listed): upscaling would make blurry training data
  without saying so; lower data.resolution / data.crop or remove those images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import SUPPORTED_RESOLUTIONS, DataConfig
from ..errors import UserError
from .sources import RawData

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def list_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, sorted by relative path (images or not: unreadable
    ones are reported when read, so a misnamed or corrupt file is never silently ignored)."""
    if not folder.is_dir():
        return []
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def _crop_box(w: int, h: int, crop: int) -> tuple[int, int, int, int]:
    side = crop or min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def _resize_one(a: np.ndarray, size: int) -> np.ndarray:
    """uint8 (C, h, w) → (C, size, size), bilinear antialiased (the cache's resize)."""
    if a.shape[1] == size and a.shape[2] == size:
        return a
    x = torch.from_numpy(np.array(a, copy=True)).float()[None]
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y[0].round().clamp(0, 255).to(torch.uint8).numpy()


def read_images(items: list[tuple[str, object]], cfg: DataConfig, where: str, log=None,
                open_item=None) -> tuple[np.ndarray, list[int]]:
    """Decode, crop and resize images. `items` are (name, handle) pairs; `open_item(handle)` gives
    a PIL image (default: Image.open(handle)). Returns uint8 (N, C, R, R) and the indices of
    `items` that were read (unreadable ones skipped unless data.strict)."""
    from PIL import Image, UnidentifiedImageError

    open_item = open_item or (lambda h: Image.open(h))
    bad: list[str] = []
    heads = []  # (index, size, grey)
    for i, (name, handle) in enumerate(items):
        try:
            with open_item(handle) as im:
                heads.append((i, im.size, im.mode in GREY_MODES))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            if cfg.strict:
                raise UserError(f"{where}: {name} is not a readable image ({type(e).__name__}); remove it, "
                                f"or drop data.strict to skip such files") from None
            bad.append(name)
    if not heads:
        raise UserError(f"{where} holds no readable image (PNG, JPEG, WebP, ...)"
                        + (f"; {len(bad)} unreadable file(s), e.g. {', '.join(bad[:3])}" if bad else ""))
    channels = cfg.channels or (3 if any(not grey for _, _, grey in heads) else 1)
    sides = [min(w, h) for _, (w, h), _ in heads]
    too_small = [items[i][0] for (i, (w, h), _) in heads if cfg.crop and min(w, h) < cfg.crop]
    if too_small:
        raise UserError(f"{where}: {len(too_small)} image(s) are smaller than data.crop={cfg.crop}, e.g. "
                        f"{', '.join(too_small[:3])}; lower data.crop or remove them")
    side = cfg.crop or min(sides)
    res = cfg.resolution
    if not res:
        fitting = [r for r in SUPPORTED_RESOLUTIONS if r <= side]
        if not fitting:
            raise UserError(f"{where}: the smallest image is {side} pixels, below the smallest supported "
                            f"resolution {SUPPORTED_RESOLUTIONS[0]}; remove it or set data.crop")
        res = fitting[-1]
    small = [items[i][0] for (i, (w, h), _) in heads if (cfg.crop or min(w, h)) < res]
    if small:
        raise UserError(f"{where}: {len(small)} image(s) are smaller than data.resolution={res} after cropping "
                        f"(images are never upscaled), e.g. {', '.join(small[:3])}; lower data.resolution or "
                        f"remove them")
    mode = "RGB" if channels == 3 else "L"
    out, kept = [], []
    for i, _, _ in heads:
        name, handle = items[i]
        try:
            with open_item(handle) as im:
                im = im.convert(mode)
                im = im.crop(_crop_box(im.size[0], im.size[1], cfg.crop))
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as e:  # a truncated file fails only on decoding
            if cfg.strict:
                raise UserError(f"{where}: {name} is not a readable image ({type(e).__name__}); remove it, "
                                f"or drop data.strict to skip such files") from None
            bad.append(name)
            continue
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, h, w)
        out.append(_resize_one(a, res))
        kept.append(i)
    if bad and log:
        log(f"{where}: skipped {len(bad)} unreadable file(s): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    if not out:
        raise UserError(f"{where} holds no readable image")
    return np.stack(out), kept


def folder_root(root: Path, cfg: DataConfig, default: str) -> Path:
    return Path(cfg.path).expanduser() if cfg.path else root / default


def load_folder(folder: Path, cfg: DataConfig, what: str, how: str, log=None) -> RawData:
    """Read an image folder as described in the module docstring."""
    if not folder.is_dir():
        raise UserError(f"{what}: {folder} is not a folder. {how}")
    files = all_files = list_files(folder)
    if not files:
        raise UserError(f"{what}: {folder} is empty. {how}")
    class_names: list[str] = []
    labels_of: list[int] = []
    if cfg.labels_from_subfolders:
        class_names = sorted({f.relative_to(folder).parts[0] for f in files if len(f.relative_to(folder).parts) > 1})
        if not class_names:
            raise UserError(f"{what}: data.labels_from_subfolders is true but {folder} has no sub-folders with files")
        loose = [f for f in files if len(f.relative_to(folder).parts) == 1]
        if loose and log:
            log(f"{folder}: {len(loose)} file(s) outside the class sub-folders are not used, e.g. {loose[0].name}")
        files = [f for f in files if len(f.relative_to(folder).parts) > 1]
        index = {c: k for k, c in enumerate(class_names)}
        labels_of = [index[f.relative_to(folder).parts[0]] for f in files]
    else:
        labels_of = [0] * len(files)
    items = [(f.relative_to(folder).as_posix(), f) for f in files]
    images, kept = read_images(items, cfg, str(folder), log)
    labels = np.asarray([labels_of[i] for i in kept], dtype=np.int64)
    return RawData(images=images, labels=labels, class_names=class_names, files=all_files)
