"""The canonical cache: every source becomes its examples (uint8 (N, C, H, W) images, or
float32 (N, D) points) + int64 labels + meta.

Layout: <cache>/<dataset>-<split>-<resolution>-<key>/{images.npy, labels.npy, meta.json}.
The key hashes what produced the entry (source files' names, sizes and mtimes, resolution,
cache version; for synthetic points the generator's parameters and seeds), so a changed source
or setting never reads a stale entry. meta.json holds the shape, class names and a SHA-256 of
the content. Entries are written to a temporary folder and renamed into place, so a crash never
leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import UserError
from .sources import SOURCES, kind_of

CACHE_VERSION = 1


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $DCGAN_DATA, else ~/.cache/dcgan."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("DCGAN_DATA"):
        return Path(os.environ["DCGAN_DATA"]).expanduser()
    return Path.home() / ".cache" / "dcgan"


def cache_root() -> Path:
    """$DCGAN_CACHE, else ~/.cache/dcgan/prepared (kept apart from the raw data root, which may be shared)."""
    if os.environ.get("DCGAN_CACHE"):
        return Path(os.environ["DCGAN_CACHE"]).expanduser()
    return Path.home() / ".cache" / "dcgan" / "prepared"


@dataclass
class Dataset:
    images: np.ndarray  # the examples: (N, C, H, W) uint8 images or (N, D) float32 points, possibly memory-mapped
    labels: np.ndarray  # (N,) int64
    meta: dict

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])  # (C, H, W) for images, (D,) for points

    @property
    def kind(self) -> str:
        return kind_of(self.shape)  # "images" | "points"

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    def __len__(self) -> int:
        return len(self.images)


def resize(images: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Bilinear, antialiased resize of uint8 (N, C, H, W) to (N, C, size, size)."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk])).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + chunk] = y.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _key(cfg: DataConfig, files: list[Path], version: str = "") -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{cfg.dataset}|{cfg.split}|{cfg.resolution}".encode())
    if version:  # synthetic sources: the generator's parameters (image sources have none)
        h.update(f"|{version}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    for i in range(0, len(images), 8192):
        h.update(np.ascontiguousarray(images[i : i + 8192]).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def prepare(cfg: DataConfig, root: str | os.PathLike | None = None, log=None) -> Dataset:
    """Return the dataset `cfg` names, building its cache entry on first use."""
    source = SOURCES.get(cfg.dataset)
    if cfg.split not in source.splits:
        raise UserError(f"dataset {cfg.dataset} has no split {cfg.split!r}; choose from [{', '.join(source.splits)}]")
    root = data_root(root)
    wanted = source.files(root, cfg.split)
    files = [f for f in wanted if f.exists()]
    entry = None
    if len(files) == len(wanted):  # every source file is present (synthetic data wants none)
        entry = cache_root() / f"{cfg.dataset}-{cfg.split}-{cfg.resolution or 'native'}-{_key(cfg, files, source.version)}"
        if (entry / "meta.json").is_file():
            return _read_entry(entry)

    raw = source.load(root, cfg.split)  # downloads what is missing, verifies checksums; synthetic: draws
    if cfg.resolution and kind_of(raw.images.shape[1:]) != "images":
        raise UserError(f"data.resolution={cfg.resolution}: {cfg.dataset} holds points, not images; leave data.resolution at 0")
    images = resize(raw.images, cfg.resolution) if cfg.resolution else raw.images
    meta = {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "resolution": cfg.resolution,
        "shape": list(images.shape),
        "class_names": raw.class_names,
        "content_hash": content_hash(images, raw.labels),
        "cache_version": CACHE_VERSION,
    }
    entry = cache_root() / f"{cfg.dataset}-{cfg.split}-{cfg.resolution or 'native'}-{_key(cfg, raw.files, source.version)}"
    _write_entry(entry, images, raw.labels, meta)
    if log:
        log(f"prepared {cfg.dataset}/{cfg.split}: {images.shape[0]} {kind_of(images.shape[1:])} {tuple(images.shape[1:])} → {entry}")
    return Dataset(images, raw.labels, meta)


def _write_entry(entry: Path, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, entry)
        except OSError:  # another process wrote the same entry first: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_entry(entry: Path) -> Dataset:
    meta = json.loads((entry / "meta.json").read_text())
    images = np.load(entry / "images.npy", mmap_mode="r")
    labels = np.load(entry / "labels.npy")
    if list(images.shape) != meta["shape"] or len(labels) != len(images):
        raise UserError(f"the cache entry {entry} is damaged (shape {images.shape} vs {meta['shape']}); delete it to rebuild")
    return Dataset(images, labels, meta)
