"""The canonical cache: every source becomes its examples (uint8 (N, C, H, W) images, or
float32 (N, D) points) + int64 labels + meta.

Layout: <cache>/<dataset>-<split>-<resolution>-<key>/{images.npy, labels.npy, meta.json}.
The key hashes what produced the entry (source files' names, sizes and mtimes, resolution,
cache version; for synthetic points the generator's parameters and seeds), so a changed source
or setting never reads a stale entry. meta.json holds the shape, class names and a SHA-256 of
the content. Entries are written to a temporary folder and renamed into place, so a crash never
leaves a half-written entry.

images.npy is one uncompressed .npy file, read memory-mapped: training streams batches from it
(data/loader.py) without holding it in memory. Image folders are decoded by worker processes
straight into that file in the temporary folder (np.lib.format.open_memmap), as are class
selections and resizes of memory-mapped data, so an entry larger than memory can be built. The
entry is not split into shards: a memory map already pages a file of any size in and out, one
file keeps every reader a plain np.ndarray (np.memmap), and file systems that hold a dataset of
that size hold a file of that size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import UserError
from .raw import DecodeTarget, kind_of
from .sources import SOURCES

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


def resize(images: np.ndarray, size: int, chunk: int = 4096, out: Path | None = None) -> np.ndarray:
    """Bilinear, antialiased resize of uint8 (N, C, H, W) to (N, C, size, size); into the new
    memory-mapped .npy file `out` when given, else into memory."""
    if images.shape[2] == size and images.shape[3] == size:
        return images
    shape = (len(images), images.shape[1], size, size)
    if out is not None:
        out = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=shape)
    else:
        out = np.empty(shape, dtype=np.uint8)
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
                   dataset: str, out: Path | None = None,
                   chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Keep the examples of the classes `keep` (data.classes), relabelled 0..len(keep)-1 in that
    order; the kept examples go into the new memory-mapped .npy file `out` when given."""
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
    names = [class_names[c] for c in keep]
    if mask.all():
        return images, new, names
    if out is None:
        return images[mask], new[mask], names
    rows = np.flatnonzero(mask)
    dst = np.lib.format.open_memmap(out, mode="w+", dtype=images.dtype, shape=(len(rows), *images.shape[1:]))
    for i in range(0, len(rows), chunk):
        dst[i : i + chunk] = images[rows[i : i + chunk]]
    dst.flush()
    return dst, new[mask], names


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    for i in range(0, len(images), 8192):
        h.update(np.ascontiguousarray(images[i : i + 8192]).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    return h.hexdigest()


def default_workers() -> int:
    """Decoding processes when none are asked for: one per CPU."""
    return os.cpu_count() or 1


def prepare(cfg: DataConfig, root: str | os.PathLike | None = None, log=None, workers: int | None = None) -> Dataset:
    """Return the dataset `cfg` names, building its cache entry on first use. `workers`: the
    processes that decode an image folder (default_workers() when None); the entry is the same
    for any number."""
    source = SOURCES.get(cfg.dataset)
    if cfg.split not in source.splits:
        raise UserError(f"dataset {cfg.dataset} has no split {cfg.split!r}; choose from [{', '.join(source.splits)}]")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise UserError(f"workers={workers}: give at least 1 decoding process (dcgan prepare --workers N)")
    root = data_root(root)
    full = source.configured  # folder-like sources: files named by their full paths in the key
    entry = existing_entry(cfg, root)
    found = _existing(entry) if entry is not None else None
    if found is not None:
        if not cfg.strict:
            return found
        skipped = found.meta.get("skipped")
        if skipped:  # data.strict: an entry built without it may hold a folder with unreadable files left out
            raise UserError(f"{cfg.path or cfg.dataset}: {skipped[0]} is not a readable image (the cache entry "
                            f"{entry.name} left out {len(skipped)} unreadable file(s)); remove it, or drop "
                            f"data.strict to skip such files")
        if skipped is not None:
            return found
        shutil.rmtree(entry, ignore_errors=True)  # an entry from before skipped files were recorded: build it again

    started = time.perf_counter()
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_root()))  # the entry being built; renamed into place at the end
    try:
        # downloads what is missing, verifies checksums; synthetic: draws; folders: decode, crop, resize
        if source.decodes:  # straight into a memory-mapped file of the entry
            raw = source.load(root, cfg.split, cfg, log, DecodeTarget(tmp / "decoded.npy", workers))
        elif source.configured:
            raw = source.load(root, cfg.split, cfg, log)
        else:
            raw = source.load(root, cfg.split)
        images, labels, class_names, skipped = raw.images, raw.labels, raw.class_names, raw.skipped
        if cfg.classes:
            images, labels, class_names = filter_classes(
                images, labels, class_names, list(cfg.classes), cfg.dataset,
                out=tmp / "selected.npy" if isinstance(images, np.memmap) else None)
        if cfg.resolution and kind_of(images.shape[1:]) != "images":
            raise UserError(f"data.resolution={cfg.resolution}: {cfg.dataset} holds points, not images; leave data.resolution at 0")
        if cfg.resolution:
            images = resize(images, cfg.resolution, out=tmp / "resized.npy")
        meta = {
            "dataset": cfg.dataset,
            "split": cfg.split,
            "resolution": cfg.resolution,
            **({"classes": list(cfg.classes)} if cfg.classes else {}),
            "shape": list(images.shape),
            "class_names": class_names,
            "content_hash": content_hash(images, labels),
            "cache_version": CACHE_VERSION,
            "skipped": skipped,  # unreadable files left out (image folders): data.strict refuses the entry
        }
        entry = cache_root() / f"{cfg.dataset}-{cfg.split}-{cfg.resolution or 'native'}-{_key(cfg, raw.files, source.version, full)}"
        del raw
        _write_entry(entry, tmp, images, labels, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        took = time.perf_counter() - started
        log(f"prepared {cfg.dataset}/{cfg.split}: {images.shape[0]} {kind_of(images.shape[1:])} {tuple(images.shape[1:])} "
            f"in {took:.1f} s ({images.shape[0] / max(took, 1e-9):.0f}/s) → {entry}")
    del images
    return _read_entry(entry)


def existing_entry(cfg: DataConfig, root: Path) -> Path | None:
    """The cache entry `cfg` reads when every source file is present (synthetic data wants none), else
    None; the entry may not be built yet. Reads only file names, sizes and times."""
    source = SOURCES.get(cfg.dataset)
    wanted = source.files(root, cfg.split, cfg) if source.configured else source.files(root, cfg.split)
    files = [f for f in wanted if f.exists()]
    if len(files) != len(wanted) or not (files or not source.configured):
        return None
    key = _key(cfg, files, source.version, source.configured)
    return cache_root() / f"{cfg.dataset}-{cfg.split}-{cfg.resolution or 'native'}-{key}"


def prepared_meta(cfg: DataConfig, root: str | os.PathLike | None = None) -> dict | None:
    """The meta.json (shape, class names, ...) of the dataset's cache entry when it is built, else None
    (a damaged one too: the real run builds it again); writes nothing, downloads nothing (`dcgan train
    --dry-run`)."""
    if cfg.split not in SOURCES.get(cfg.dataset).splits:
        return None
    entry = existing_entry(cfg, data_root(root))
    try:
        return _read_meta(entry) if entry is not None else None
    except (OSError, DamagedEntry):
        return None


class DamagedEntry(UserError):
    """A cache entry that cannot be read as written: `prepare` builds it again."""

    def __init__(self, entry: Path, what: str):
        super().__init__(f"the cache entry {entry} is damaged ({what}); delete it to build it again")
        self.what = what


def _existing(entry: Path) -> Dataset | None:
    """The dataset of an entry in the cache; None when there is none, or when it is damaged (it is then
    removed, with a warning, and the caller builds it again: the cache holds only what can be rebuilt)."""
    if not entry.exists():
        return None
    try:
        return _read_entry(entry)
    except DamagedEntry as e:
        print(f"dcgan: warning: the cache entry {entry} is damaged ({e.what}); building it again", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def _read_meta(entry: Path) -> dict:
    """meta.json of an entry, checked for what readers use: a shape (N, C, H, W) or (N, D) of whole
    numbers, class names, the content hash and the list of skipped files (absent in older entries)."""
    try:
        meta = json.loads((entry / "meta.json").read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DamagedEntry(entry, "no meta.json") from None
    except ValueError as e:  # not UTF-8, not JSON
        raise DamagedEntry(entry, f"meta.json is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise DamagedEntry(entry, "meta.json is not a JSON object")
    shape, names = meta.get("shape"), meta.get("class_names")
    if not (isinstance(shape, list) and len(shape) in (2, 4) and all(type(n) is int for n in shape)
            and shape[0] >= 0 and all(n >= 1 for n in shape[1:])):
        raise DamagedEntry(entry, f"meta.json has no valid shape: {json.dumps(shape)[:60]}")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DamagedEntry(entry, "meta.json has no valid class_names")
    if not isinstance(meta.get("content_hash"), str):
        raise DamagedEntry(entry, "meta.json has no content_hash")
    skipped = meta.get("skipped")
    if not (skipped is None or (isinstance(skipped, list) and all(isinstance(n, str) for n in skipped))):
        raise DamagedEntry(entry, "meta.json has no valid list of skipped files")
    return meta


def _write_entry(entry: Path, tmp: Path, images: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    """Complete the entry being built in `tmp` (a folder beside `entry`) and rename it to `entry`.
    Images already in a memory-mapped .npy file of `tmp` are not copied again."""
    final = tmp / "images.npy"
    mapped = Path(images.filename) if isinstance(images, np.memmap) and images.filename else None
    if mapped is not None and mapped.parent == Path(os.path.abspath(tmp)) and np.load(mapped, mmap_mode="r").shape == images.shape:
        images.flush()
        os.replace(mapped, final)
    else:
        np.save(final, images)
    for f in tmp.glob("*.npy"):  # what the steps before the last one wrote
        if f != final:
            f.unlink()
    np.save(tmp / "labels.npy", labels)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.rename(tmp, entry)
    except OSError:  # another process wrote the same entry first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


def _read_entry(entry: Path) -> Dataset:
    """The dataset an entry holds; DamagedEntry when its files do not read as `_write_entry` wrote them
    (the pixels themselves are not hashed on every read: the entry is memory-mapped)."""
    meta = _read_meta(entry)
    arrays = {}
    for name, mmap in (("images", "r"), ("labels", None)):
        try:
            arrays[name] = np.load(entry / f"{name}.npy", mmap_mode=mmap)  # allow_pickle=False: data only
        except FileNotFoundError:
            raise DamagedEntry(entry, f"no {name}.npy") from None
        except Exception as e:  # noqa: BLE001 - numpy's header parser fails in many ways on a damaged file
            raise DamagedEntry(entry, f"{name}.npy does not read: {type(e).__name__}: {str(e)[:80]}") from None
    images, labels = arrays["images"], arrays["labels"]
    dtype = np.uint8 if len(meta["shape"]) == 4 else np.float32
    if images.dtype != dtype or list(images.shape) != meta["shape"]:
        raise DamagedEntry(entry, f"images {images.dtype} {images.shape}, meta.json says {np.dtype(dtype)} {tuple(meta['shape'])}")
    if labels.dtype != np.int64 or labels.shape != (len(images),):
        raise DamagedEntry(entry, f"labels {labels.dtype} {labels.shape} for {len(images)} examples")
    classes = max(len(meta["class_names"]), 1)  # unlabelled data: every label 0
    if len(labels) and not (labels.min() >= 0 and labels.max() < classes):
        raise DamagedEntry(entry, f"labels outside 0..{classes - 1}")
    return Dataset(images, labels, meta)
