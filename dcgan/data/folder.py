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
* Decoding: two passes over the files, both split into runs of consecutive files over worker
  processes (`dcgan prepare --workers N`, default all CPUs): the headers (sizes, grey or colour:
  the rules above need all of them), then the pixels, each worker writing its rows straight into
  the cache entry's memory-mapped images.npy. The result is the same for any number of workers.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL.Image import DecompressionBombError

from ..config import SUPPORTED_RESOLUTIONS, DataConfig
from ..errors import UserError
from .raw import RawData

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


def open_path(handle) -> "Image.Image":
    """A file's image (the default `open_item`)."""
    from PIL import Image

    return Image.open(handle)


def open_bytes(handle: bytes) -> "Image.Image":
    """An encoded image held in memory (lmdb values)."""
    from PIL import Image

    return Image.open(io.BytesIO(handle))


# What a file that is not a readable image raises (PIL's UnidentifiedImageError is an OSError;
# a truncated file fails with OSError only when decoded; a header claiming more than twice Pillow's
# MAX_IMAGE_PIXELS, a decompression bomb or a damaged size, raises DecompressionBombError).
_UNREADABLE = (OSError, ValueError, SyntaxError, DecompressionBombError)


def _scan_chunk(chunk: list[tuple[int, object]], open_item) -> list[tuple[int, object, object]]:
    """Headers of `chunk` = [(index, handle)]: (index, (w, h), grey) per image, (index, None,
    error name) per unreadable file."""
    out = []
    for i, handle in chunk:
        try:
            with open_item(handle) as im:
                out.append((i, im.size, im.mode in GREY_MODES))
        except _UNREADABLE as e:
            out.append((i, None, type(e).__name__))
    return out


def _decode_one(handle, open_item, mode: str, crop: int, res: int) -> np.ndarray:
    """One image as uint8 (C, res, res): converted to `mode`, centre-cropped, resized."""
    with open_item(handle) as im:
        im = im.convert(mode)
        im = im.crop(_crop_box(im.size[0], im.size[1], crop))
        a = np.asarray(im, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, h, w)
    return _resize_one(a, res)


_WORKER_OUT: dict[str, np.ndarray] = {}  # in a worker process: the output files it has opened, by path


def _decode_chunk(chunk: list[tuple[int, object]], open_item, mode: str, crop: int, res: int,
                  out) -> list[tuple[int, str]]:
    """Decode `chunk` = [(row, handle)] into rows of `out`: a uint8 (N, C, res, res) array, or the
    path of a .npy file holding one (worker processes open it memory-mapped, once). Returns
    (row, error name) for each file that failed to decode (its row is left as it was)."""
    if isinstance(out, str):
        if out not in _WORKER_OUT:
            _WORKER_OUT[out] = np.load(out, mmap_mode="r+")
        out = _WORKER_OUT[out]
    bad = []
    for row, handle in chunk:
        try:
            out[row] = _decode_one(handle, open_item, mode, crop, res)
        except _UNREADABLE as e:  # a truncated file fails only on decoding
            bad.append((row, type(e).__name__))
    return bad


def _init_worker() -> None:
    torch.set_num_threads(1)  # the processes are the parallelism; one thread each avoids oversubscription


def _pool(workers: int):
    """A pool of `workers` processes (fork where the platform has it: no re-import per worker)."""
    import multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers, initializer=_init_worker)


def _chunks(jobs: list, workers: int, most: int = 256) -> list[list]:
    """`jobs` cut into runs of consecutive items, enough of them to keep every worker busy."""
    size = max(1, min(most, -(-len(jobs) // (workers * 8))))
    return [jobs[k : k + size] for k in range(0, len(jobs), size)]


def _run(pool, fn, chunks: list[list], args: tuple, desc: str):
    """fn(chunk, *args) for every chunk, in the pool (or here when pool is None), with a bar over
    the items (shown inside progress.showing()); yields the results as they come."""
    from ..progress import steps

    bar = steps(range(sum(map(len, chunks))), desc=desc, unit="img")  # a tqdm bar, or the range itself
    jobs = [(fn, c, args) for c in chunks]
    try:
        for n, result in (map(_star, jobs) if pool is None else pool.imap_unordered(_star, jobs)):
            if hasattr(bar, "update"):
                bar.update(n)
            yield result
    finally:
        if hasattr(bar, "close"):
            bar.close()


def _star(job):
    fn, chunk, args = job
    return len(chunk), fn(chunk, *args)


def _unreadable(where: str, name: str, err: str) -> UserError:
    return UserError(f"{where}: {name} is not a readable image ({err}); remove it, "
                     f"or drop data.strict to skip such files")


def read_images(items: list[tuple[str, object]], cfg: DataConfig, where: str, log=None,
                open_item=None, workers: int = 1, out: Path | None = None) -> tuple[np.ndarray, list[int]]:
    """Decode, crop and resize images. `items` are (name, handle) pairs; `open_item(handle)` gives
    a PIL image (default: open_path; with workers > 1 it must be a module-level function, as
    open_path and open_bytes are). Returns uint8 (N, C, R, R) and the indices of `items` that
    were read (unreadable ones skipped unless data.strict).

    `workers` processes read the headers and then decode, each a run of consecutive images at a
    time; the result does not depend on their number. With `out` (a .npy path) the images are
    written straight into that file, memory-mapped, and the returned array maps it: a dataset
    larger than memory can be decoded. Without `out` they are decoded here, into memory."""
    open_item = open_item or open_path
    if out is None:
        workers = 1  # the workers write into a file; in memory, decode here
    workers = max(1, min(workers, len(items)))
    pool = _pool(workers) if workers > 1 else None
    threads = torch.get_num_threads()
    if pool is None:
        torch.set_num_threads(1)  # per-image resizes are too small to share between threads (4x slower with 2)
    try:
        result = _read_images(items, cfg, where, log, open_item, workers, out, pool)
    except BaseException:
        if pool is not None:
            pool.terminate()  # an error (or Ctrl-C): stop decoding what is no longer wanted
        raise
    finally:
        torch.set_num_threads(threads)
    if pool is not None:
        pool.close()
        pool.join()
    return result


def _read_images(items, cfg, where, log, open_item, workers, out, pool) -> tuple[np.ndarray, list[int]]:
    # ---- pass 1: headers (size, grey or colour) of every file, in parallel; kept in item order
    scanned = []
    for part in _run(pool, _scan_chunk, _chunks([(i, h) for i, (_, h) in enumerate(items)], workers),
                     (open_item,), "scan"):
        scanned.extend(part)
    scanned.sort(key=lambda r: r[0])
    unreadable = [(i, err) for i, size, err in scanned if size is None]
    if unreadable and cfg.strict:
        i, err = unreadable[0]
        raise _unreadable(where, items[i][0], err)
    bad: list[str] = [items[i][0] for i, _ in unreadable]
    heads = [(i, size, grey) for i, size, grey in scanned if size is not None]  # (index, (w, h), grey)
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

    # ---- pass 2: decode row k of the output from heads[k], in parallel
    mode = "RGB" if channels == 3 else "L"
    shape = (len(heads), channels, res, res)
    if out is None:
        images = np.empty(shape, dtype=np.uint8)
        target = images
    else:
        images = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=shape)
        target = str(out) if pool is not None else images
    jobs = [(k, items[i][1]) for k, (i, _, _) in enumerate(heads)]
    failed = []
    for part in _run(pool, _decode_chunk, _chunks(jobs, workers), (open_item, mode, cfg.crop, res, target), "decode"):
        failed.extend(part)
    failed.sort()
    if failed and cfg.strict:
        k, err = failed[0]
        raise _unreadable(where, items[heads[k][0]][0], err)
    bad += [items[heads[k][0]][0] for k, _ in failed]
    if bad and log:
        log(f"{where}: skipped {len(bad)} unreadable file(s): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    gone = {k for k, _ in failed}
    rows = [k for k in range(len(heads)) if k not in gone]
    if not rows:
        raise UserError(f"{where} holds no readable image")
    kept = [heads[k][0] for k in rows]
    if gone:  # files that failed only when decoded: keep the other rows, in order
        images = _take_rows(images, rows, out)
    elif out is not None:
        images.flush()
    return images, kept


def _take_rows(images: np.ndarray, rows: list[int], out: Path | None, chunk: int = 4096) -> np.ndarray:
    """images[rows], in memory, or (with `out`, the file `images` maps) written chunk by chunk to
    a new file that then replaces `out`."""
    if out is None:
        return images[rows]
    out = Path(out)
    part = out.with_name(out.stem + ".part.npy")
    dst = np.lib.format.open_memmap(part, mode="w+", dtype=images.dtype, shape=(len(rows), *images.shape[1:]))
    for k in range(0, len(rows), chunk):
        dst[k : k + chunk] = images[rows[k : k + chunk]]
    dst.flush()
    del images, dst
    os.replace(part, out)
    return np.load(out, mmap_mode="r+")


def load_folder(folder: Path, cfg: DataConfig, what: str, how: str, log=None, into=None) -> RawData:
    """Read an image folder as described in the module docstring; with `into` (a
    sources.DecodeTarget) in into.workers processes, into the memory-mapped file into.path."""
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
    workers, out = (into.workers, into.path) if into is not None else (1, None)
    images, kept = read_images(items, cfg, str(folder), log, workers=workers, out=out)
    labels = np.asarray([labels_of[i] for i in kept], dtype=np.int64)
    left_out = sorted(set(range(len(items))) - set(kept))
    return RawData(images=images, labels=labels, class_names=class_names, files=all_files,
                   skipped=[items[i][0] for i in left_out])
