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
    from ..progress import steps  # a bar only inside progress.showing() (dcgan prepare / eval)

    for i in steps(range(0, len(images), chunk), desc="resize", unit="chunk"):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk])).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + chunk] = y.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


# DataConfig keys that change the content besides dataset/split/resolution; hashed only when they
# differ from their defaults, so the keys of entries made before they existed stay the same.
_CONTENT_KEYS = ("path", "crop", "channels", "classes", "labels_from_subfolders")


def _key(cfg: DataConfig, files: list[Path], version: str = "", full_paths: bool = False) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{cfg.dataset}|{cfg.split}|{cfg.resolution}".encode())
    if version:  # synthetic sources: the generator's parameters (image sources have none)
        h.update(f"|{version}".encode())
    default = DataConfig()
    for k in _CONTENT_KEYS:
        if getattr(cfg, k) != getattr(default, k):
            h.update(f"|{k}={getattr(cfg, k)!r}".encode())
    for f in files:  # image folders: every file's path (relative names repeat across class folders)
        st = f.stat()
        h.update(f"|{f if full_paths else f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def filter_classes(images: np.ndarray, labels: np.ndarray, class_names: list[str], keep: list[int],
                   dataset: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Keep the examples of the classes `keep` (data.classes), relabelled 0..len(keep)-1 in that order."""
    if not class_names:
        raise UserError(f"data.classes={keep}: {dataset} has no labels to filter by; drop data.classes "
                        f"(image folders: set data.labels_from_subfolders=true)")
    bad = [c for c in keep if not 0 <= c < len(class_names)]
    if bad or len(set(keep)) != len(keep):
        raise UserError(f"data.classes={keep}: {dataset} has classes 0..{len(class_names) - 1} "
                        f"({', '.join(f'{i}={n}' for i, n in enumerate(class_names))}); list each once")
    remap = np.full(len(class_names), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    new = remap[labels]
    mask = new >= 0
    if not mask.any():
        raise UserError(f"data.classes={keep}: {dataset} has no examples of these classes")
    return images[mask], new[mask], [class_names[c] for c in keep]


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
    full = source.configured  # folder-like sources: files named by their full paths in the key
    wanted = source.files(root, cfg.split, cfg) if source.configured else source.files(root, cfg.split)
    files = [f for f in wanted if f.exists()]
    entry = None
    if len(files) == len(wanted) and (files or not source.configured):  # every source file is present (synthetic data wants none)
        entry = cache_root() / f"{cfg.dataset}-{cfg.split}-{cfg.resolution or 'native'}-{_key(cfg, files, source.version, full)}"
        if (entry / "meta.json").is_file():
            return _read_entry(entry)

    # downloads what is missing, verifies checksums; synthetic: draws; folders: decode, crop, resize
    raw = source.load(root, cfg.split, cfg, log) if source.configured else source.load(root, cfg.split)
    if cfg.classes:
        raw.images, raw.labels, raw.class_names = filter_classes(raw.images, raw.labels, raw.class_names,
                                                                 list(cfg.classes), cfg.dataset)
    if cfg.resolution and kind_of(raw.images.shape[1:]) != "images":
        raise UserError(f"data.resolution={cfg.resolution}: {cfg.dataset} holds points, not images; leave data.resolution at 0")
    images = resize(raw.images, cfg.resolution) if cfg.resolution else raw.images
    meta = {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "resolution": cfg.resolution,
        **({"classes": list(cfg.classes)} if cfg.classes else {}),
        "shape": list(images.shape),
        "class_names": raw.class_names,
        "content_hash": content_hash(images, raw.labels),
        "cache_version": CACHE_VERSION,
    }
    entry = cache_root() / f"{cfg.dataset}-{cfg.split}-{cfg.resolution or 'native'}-{_key(cfg, raw.files, source.version, full)}"
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
