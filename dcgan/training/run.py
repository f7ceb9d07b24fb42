"""The run folder: config.toml, metrics.jsonl, grids/, checkpoints/."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import checkpoint
from ..config import RESUMABLE_CHANGES, Config, diff, load_toml, to_toml
from ..errors import UserError


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def holds_run(path: Path) -> bool:
    return (path / "config.toml").exists() or bool(checkpoint.list_checkpoints(path))


def check_resume_config(path: Path, saved: dict[str, Any], cfg: Config) -> None:
    """A resumed run may change only RESUMABLE_CHANGES (e.g. train.steps). Keys added to dcgan
    after the run was saved take their defaults, so older runs stay resumable."""
    saved = Config.from_dict(saved, where=f"{path} (saved config)").to_dict()
    changed = [k for k in diff(saved, cfg.to_dict()) if k not in RESUMABLE_CHANGES]
    if changed:
        k = changed[0]
        s, key = k.split(".", 1)
        raise UserError(
            f"cannot resume {path}: {k} is {saved.get(s, {}).get(key)!r} there but {getattr(getattr(cfg, s), key)!r} now; "
            f"only [{', '.join(sorted(RESUMABLE_CHANGES))}] may change on resume (changed: {', '.join(changed)})"
        )


def check_run(path: Path, cfg: Config, resume: bool) -> None:
    """Refuse a run folder that may not be used (writes nothing): an existing run without
    --resume, a resumed run with a changed config, a file in the way."""
    if holds_run(path):
        if not resume:
            raise UserError(f"{path} already holds a run; pass --resume to continue it, or choose another --out")
        if (path / "config.toml").exists():
            check_resume_config(path, load_toml(path / "config.toml"), cfg)
    elif path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file; give a folder for the run")


def create_run(path: Path, cfg: Config) -> None:
    """Create the run folder's layout and write config.toml (after `check_run` and after every
    other check of the setup, so that a failed start leaves nothing behind)."""
    (path / "grids").mkdir(parents=True, exist_ok=True)
    checkpoint.checkpoint_dir(path).mkdir(exist_ok=True)
    checkpoint.remove_stale_temporaries(path)  # left by a writer killed mid-checkpoint
    checkpoint.atomic_write(path / "config.toml", to_toml(cfg.to_dict()).encode())


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl. On resume from step s, lines of training
    after s (written before a crash) are dropped so that no step appears twice."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None:
            self.drop_after(resume_step)

    def drop_after(self, step: int) -> None:
        """Forget training and eval lines after `step` (a rollback returned there)."""
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line.strip() and not _after(line, step)]
            checkpoint.atomic_write(self.path, "".join(line + "\n" for line in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _after(line: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return True  # a torn last line from a crash
    return record.get("kind", "train") in ("train", "eval") and record.get("step", 0) > step


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
