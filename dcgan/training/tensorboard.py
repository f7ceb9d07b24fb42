"""TensorBoard logging of a run (train.tensorboard = true): RUN/tensorboard/.

    scalars  loss/d_loss, loss/g_loss, D/real (D(x)), D/fake (D(G(z))), speed/img_per_s at every
             tick (the tick's metrics.jsonl record), the tick monitor's numeric extras under
             monitor/, and eval/fid, eval/label_accuracy, eval/classes_covered at evaluations
    images   grid: the fixed-noise grid the monitor wrote for the tick (grids/step-*.png)

A resumed run continues the same curves: the writer is opened with purge_step = resume step + 1,
so TensorBoard drops what an interrupted run logged after its checkpoint (as metrics.jsonl drops
those lines) and each step appears once. Needs the optional extra: pip install dcgan[tensorboard].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

INSTALL_HINT = "train.tensorboard = true needs TensorBoard: pip install dcgan[tensorboard] (or pip install tensorboard)"


def summary_writer_class():
    """torch's SummaryWriter, or a UserError (exit 2) saying how to install the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard is not installed
        raise UserError(f"{INSTALL_HINT} ({e})") from None
    return SummaryWriter


SCALARS = {"d_loss": "loss/d_loss", "g_loss": "loss/g_loss", "d_real": "D/real", "d_fake": "D/fake",
           "img_per_s": "speed/img_per_s"}
NOT_SCALARS = {"kind", "step", "images_seen", "elapsed_s", "time", "skipped_steps", "rollbacks"}


class TensorBoardLog:
    def __init__(self, run_dir: Path, resume_step: int | None, writer_class=None):
        self.writer_class = writer_class or summary_writer_class()
        self.run_dir = Path(run_dir)
        self.writer = None
        self.reopen(resume_step)

    def reopen(self, resume_step: int | None) -> None:
        """A new event file that continues the curves after `resume_step` (resume, rollback):
        with purge_step, events at steps > resume_step logged before are dropped on reading."""
        if self.writer is not None:
            self.writer.close()
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = self.writer_class(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def tick(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, tag in SCALARS.items():
            self.writer.add_scalar(tag, float(record[key]), step)
        for key, value in record.items():  # the monitor's extras (toy GANs: accuracy, coverage, ...)
            if key not in SCALARS and key not in NOT_SCALARS and _is_number(value):
                self.writer.add_scalar(f"monitor/{key}", float(value), step)
        grid = self._grid(step)
        if grid is not None:
            self.writer.add_image("grid", grid, step, dataformats="HWC")
        self.writer.flush()

    def eval(self, line: dict[str, Any]) -> None:
        step = int(line["step"])
        self.writer.add_scalar("eval/fid", float(line["fid"]), step)
        acc = (line.get("label_accuracy") or {}).get("accuracy")
        if acc is not None:
            self.writer.add_scalar("eval/label_accuracy", float(acc), step)
        covered = (line.get("classes") or {}).get("classes_covered")
        if _is_number(covered):
            self.writer.add_scalar("eval/classes_covered", float(covered), step)
        self.writer.flush()

    def _grid(self, step: int) -> np.ndarray | None:
        """The tick's picture (grids/step-<step>.png), else the newest one; (H, W, 3) uint8."""
        grids = self.run_dir / "grids"
        path = grids / f"step-{step:09d}.png"
        if not path.exists():
            found = sorted(grids.glob("step-*.png"))
            if not found:
                return None
            path = found[-1]
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    def close(self) -> None:
        self.writer.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
