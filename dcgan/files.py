"""Files of a run folder that must survive a crash: `atomic_write` (a file is either the old one or
the new one, whole) and metrics.jsonl (one JSON object per line, appended; a torn last line from a
crash is skipped when read)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records, oldest first; a torn or foreign line (e.g. the last one after a crash)
    is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
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
            kept = [line for line in self.path.read_text().splitlines() if line.strip() and not _after(line, step)]
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
