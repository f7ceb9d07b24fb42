"""The run folder: config.toml, run.json, metrics.jsonl, grids/, checkpoints/; what rank 0 records while training."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import checkpoint
from ..config import RESUMABLE_CHANGES, Config, diff, load_toml, to_toml
from ..errors import UserError
from ..files import RUN_INFO, MetricsLog, atomic_write, check_writable, run_info


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def preset_label(preset_or_path: str) -> str | None:
    """What `dcgan train PRESET_OR_TOML` builds the run from, as the run records it: the preset's name,
    the absolute path of a TOML file, or for a run folder the preset that run records (None if none)."""
    p = Path(preset_or_path)
    if p.is_dir():
        return run_info(p).get("preset")
    if preset_or_path.endswith(".toml"):
        return str(p.resolve())
    return preset_or_path


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
    check_writable(path)


def create_run(path: Path, cfg: Config, preset: str | None = None) -> None:
    """Create the run folder's layout and write config.toml (after `check_run` and after every
    other check of the setup, so that a failed start leaves nothing behind), and run.json with the
    preset when it is known and not recorded yet (a resumed run keeps what its creation wrote)."""
    try:
        (path / "grids").mkdir(parents=True, exist_ok=True)
        checkpoint.checkpoint_dir(path).mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {path}: cannot create the run folder ({e.strerror or e}); choose another path") from None
    checkpoint.remove_stale_temporaries(path)  # left by a writer killed mid-checkpoint
    atomic_write(path / "config.toml", to_toml(cfg.to_dict()).encode())
    if preset and not run_info(path).get("preset"):
        atomic_write(path / RUN_INFO, (json.dumps({"preset": preset}) + "\n").encode())


class RunRecord:
    """What rank 0 writes while training besides checkpoints: metrics.jsonl (train, eval and warning
    lines), TensorBoard (train.tensorboard), and the tick lines for a person (a progress bar on a
    terminal, else the log). On the other ranks (`run_dir` None) it writes nothing."""

    def __init__(self, run_dir: Path | None, resume_step: int | None, tb_writer_class, log, progress=None):
        from .tensorboard import TensorBoardLog

        self.log, self.progress = log, progress
        self.metrics = MetricsLog(Path(run_dir) / "metrics.jsonl", resume_step) if run_dir is not None else None
        self.tb = TensorBoardLog(run_dir, resume_step, tb_writer_class) if run_dir is not None and tb_writer_class else None

    def tick(self, record: dict[str, Any], line: str) -> None:
        if self.metrics is not None:
            self.metrics.write(record)
        if self.progress is not None:
            self.progress.tick(record, line)  # a bar on a terminal, else this line
        else:
            self.log(line)
        if self.tb is not None:
            self.tb.tick(record)

    def beat(self, record: dict[str, Any], line: str) -> None:
        """A time-based progress line between ticks (progress.Heartbeat): for a person only, not in
        metrics.jsonl, whose lines are the ticks."""
        if self.progress is not None:
            self.progress.beat(record, line)
        else:
            self.log(line)

    def eval(self, result: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(result)
        if self.tb is not None:
            self.tb.eval(result)

    def warn(self, step: int, message: str) -> None:
        if self.metrics is not None:
            self.metrics.write({"kind": "warning", "step": step, "message": message, "time": time.time()})
        self.log(f"warning: {message}")

    def rolled_back(self, step: int) -> None:
        """Continue the record from `step` (a rollback returned there): later lines are dropped."""
        if self.metrics is not None:
            self.metrics.drop_after(step)
        if self.tb is not None:
            self.tb.reopen(step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
