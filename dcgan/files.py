"""Files the commands write, so that a crash or a full disk never leaves a torn one: `atomic_write` (a
file is either the old one or the new one, whole), `NpzWriter` (a large .npz written chunk by chunk),
metrics.jsonl (one JSON object per line, appended; a torn last line from a crash is skipped when
read), and `check_writable` (an output path checked before any work)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one: a temporary
    file beside it, flushed and fsynced, renamed into place, then the folder fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise UserError(f"could not write {path}: {e.strerror or e}; free space or fix permissions "
                        f"(the previous file is intact)") from None
    _fsync_dir(path.parent)


def check_writable(path: Path, flag: str = "--out") -> None:
    """Exit 2 (UserError), naming `path` and the reason, when it cannot be created or written: its
    nearest existing ancestor is a file, or not writable (permissions, a read-only filesystem).
    Creates nothing, so a command can check its output before any work."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; choose another path")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {folder} is not writable (permission denied or a read-only filesystem); "
                        f"choose another path")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


RUN_INFO = "run.json"  # in a run folder: what the run was made from, {"preset": a preset name or a TOML file's path}


def run_info(run: Path) -> dict[str, Any]:
    """RUN/run.json, or {} for a run made before it existed (or a damaged one: it only informs)."""
    try:
        info = json.loads((Path(run) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _text(path: Path) -> str:
    """A metrics.jsonl's text; bytes that are not UTF-8 (a damaged line) become U+FFFD, so that line fails
    to parse and is skipped like a torn one, and the other lines are still read."""
    return path.read_bytes().decode("utf-8", errors="replace")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records, oldest first; a torn or foreign line (e.g. the last one after a crash)
    is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in _text(path).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def newest_eval(path: Path) -> dict[str, Any] | None:
    """The last "kind": "eval" record of a metrics.jsonl, or None."""
    evals = [r for r in read_metrics(path) if r.get("kind") == "eval"]
    return evals[-1] if evals else None


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl. On resume from step s, lines of training
    after s (written before a crash) are dropped so that no step appears twice."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None:
            self.drop_after(resume_step)

    def drop_after(self, step: int) -> None:
        """Forget training and eval lines after `step` (a resume or a rollback returned there)."""
        if self.path.exists():
            kept = [line for line in _text(self.path).splitlines() if line.strip() and not _after(line, step)]
            atomic_write(self.path, "".join(line + "\n" for line in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _after(line: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return True  # a torn last line from a crash
    return record.get("kind", "train") in ("train", "eval") and record.get("step", 0) > step


class NpzWriter:
    """An .npz (numpy's zip of .npy files, uncompressed, as np.savez writes it) written array by array,
    each from chunks, so no array has to fit in memory. The file appears whole at the end (a temporary
    beside it, renamed); with the writer left by an exception, the temporary is removed.

        with NpzWriter(path) as npz:
            npz.add("images", (n, C, H, W), np.uint8, chunks)   # chunks: arrays along the first axis
    """

    def __init__(self, path: Path):
        import zipfile

        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, name: str, shape: tuple[int, ...], dtype, chunks) -> None:
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        rows = 0
        try:
            with self.zip.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=dtype)
                    if chunk.shape[1:] != tuple(shape[1:]):
                        raise ValueError(f"{name}: a chunk of shape {chunk.shape} for an array of shape {shape}")
                    f.write(chunk.tobytes())
                    rows += len(chunk)
        except OSError as e:  # e.g. the disk filled up: name the file the user asked for, not the temporary
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from None
        if rows != shape[0]:
            raise ValueError(f"{name}: {rows} rows written for an array of shape {shape}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.zip.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
            _fsync_dir(self.path.parent)
        else:
            self.tmp.unlink(missing_ok=True)
