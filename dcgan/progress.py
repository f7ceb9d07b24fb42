"""Progress on stderr: tqdm bars when stderr is a terminal, plain lines otherwise.

    TrainProgress   the `dcgan train` bar (step, images seen, img/s, losses, D(x), D(G(z)), ETA),
                    updated at ticks from the record the loop already builds and between ticks
                    by the Heartbeat (wall time and the step counter: no extra device sync);
                    messages go above the bar. Not a terminal (CI logs): the one line per tick
                    the loop has always printed, and the heartbeat's lines. quiet: nothing at all.
    Heartbeat       when a time-based progress line is due (every train.progress_seconds, the
                    first after min(10 s, that)) and what it says: step, images seen, img/s, ETA.
    bar(...)        a plain tqdm bar on stderr, off when stderr is not a terminal.
    steps(...)      a bar over a library loop that takes time (generate, feature extraction,
                    prepare), shown only inside `with showing():` (the CLI commands prepare, eval,
                    sample enter it), so that the same loops run silently inside training.

DCGAN_PROGRESS=1 forces the bars on, DCGAN_PROGRESS=0 off (whatever stderr is).
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, TextIO

from tqdm import tqdm


def bars_enabled(stream: TextIO | None = None) -> bool:
    """Bars only on a terminal, unless DCGAN_PROGRESS says otherwise."""
    forced = os.environ.get("DCGAN_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        disable: bool | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that is off when stderr is not a terminal (or `disable`)."""
    if disable is None:
        disable = not bars_enabled()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False, **kwargs)


_SHOW: contextvars.ContextVar[bool] = contextvars.ContextVar("dcgan_progress_show", default=False)


@contextmanager
def showing(enabled: bool = True):
    """Within this block, `steps` shows bars (when stderr is a terminal)."""
    token = _SHOW.set(enabled and bars_enabled())
    try:
        yield
    finally:
        _SHOW.reset(token)


def steps(iterable: Iterable, *, total: int | None = None, desc: str = "", unit: str = "batch") -> Iterable:
    """`iterable` with a bar when inside `showing()` on a terminal, else `iterable` itself."""
    if not _SHOW.get():
        return iterable
    return bar(iterable, total=total, desc=desc, unit=unit, disable=False)


class TrainProgress:
    """What `dcgan train` shows while training. The loop calls log(message) for messages,
    start(step, total) before the first step, tick(record, line) at every tick and close()."""

    def __init__(self, quiet: bool = False, enabled: bool | None = None):
        self.quiet = quiet
        self.enabled = (not quiet) and (bars_enabled() if enabled is None else enabled)
        self._bar: tqdm | None = None
        self._losses = ""  # the last tick's, shown until the next one

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            tqdm.write(message, file=sys.stderr)  # above the bar, which is redrawn below it
        else:
            print(message, file=sys.stderr)

    def start(self, step: int, total: int) -> None:
        if not self.enabled or step >= total:
            return
        self._bar = tqdm(total=total, initial=step, desc="train", unit="step", file=sys.stderr,
                         dynamic_ncols=True, smoothing=0.3, mininterval=0.0,
                         bar_format="{desc} {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}| "
                                    "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")

    def tick(self, record: dict[str, Any], line: str) -> None:
        """A tick's metrics.jsonl record (and the line printed when there is no bar)."""
        if self._bar is None:
            self.log(line)
            return
        self._losses = (f"d_loss {record['d_loss']:.3f}, g_loss {record['g_loss']:.3f}, D(x) {record['d_real']:.3f}, "
                        f"D(G(z)) {record['d_fake']:.3f}")
        self._draw(record)

    def beat(self, record: dict[str, Any], line: str) -> None:
        """A heartbeat between ticks ({step, images_seen, img_per_s, eta_s}): the bar moves on (and
        tqdm gets the rate it shows its ETA from), or the line is printed when there is no bar."""
        if self._bar is None:
            self.log(line)
            return
        self._draw(record)

    def _draw(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        # a heartbeat keeps the last tick's losses: reading the current ones would sync with the device
        self._bar.set_postfix_str(f"img {_si(record['images_seen'])}, {record['img_per_s']:.0f} img/s"
                                  + (f", {self._losses}" if self._losses else ""), refresh=False)
        if step < self._bar.n:  # a rollback went back: start the count again from there
            self._bar.reset(total=self._bar.total)
        self._bar.update(step - self._bar.n)  # draws the bar with the postfix above

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


FIRST_BEAT_S = 10.0  # the first heartbeat comes this long after the first step of a session (or sooner)


class Heartbeat:
    """Time-based progress between ticks, from the wall clock and the step counter only: a tick
    reads the losses from the device, which a line every few seconds must not do (on a GPU that
    would be a sync the loop does not otherwise make). `due(step)` is one clock read per step; the
    first call sets the reference, so the first line comes min(FIRST_BEAT_S, every_s) after the
    first step (setup, data preparation and a CUDA graph capture are not in the rate)."""

    def __init__(self, every_s: float, total: int, batch: int, clock: Callable[[], float] = time.perf_counter):
        self.every_s, self.total, self.batch, self.clock = every_s, total, batch, clock
        self._ref: tuple[float, int] | None = None  # (time, step) the rate is measured from
        self._next = math.inf

    def due(self, step: int) -> bool:
        if self.every_s <= 0:
            return False
        now = self.clock()
        if self._ref is None:
            self._ref, self._next = (now, step), now + min(FIRST_BEAT_S, self.every_s)
            return False
        return now >= self._next and step > self._ref[1]

    def beat(self, step: int, images_seen: int) -> tuple[dict[str, Any], str]:
        """The record ({step, images_seen, img_per_s, eta_s}) and line of a due heartbeat; the rate
        is over the steps since the previous one."""
        now = self.clock()
        t0, s0 = self._ref
        rate = (step - s0) / max(now - t0, 1e-9)  # steps per second
        eta = (self.total - step) / rate if rate > 0 else math.inf
        self._ref, self._next = (now, step), now + self.every_s
        record = {"step": step, "images_seen": images_seen, "img_per_s": rate * self.batch, "eta_s": eta}
        line = (f"step {step}/{self.total} ({100 * step / self.total:.1f}%)  {_si(images_seen)} images  "
                f"{rate * self.batch:.0f} img/s  ETA {duration(eta)}")
        return record, line

    def restart(self, step: int) -> None:
        """Measure the rate from here (after a rollback or an evaluation, which are not training time)."""
        if self._ref is not None:
            self._ref = (self.clock(), step)


def duration(seconds: float) -> str:
    """3:07 (m:ss), 1:02:03 (h:mm:ss); '?' when unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _si(n: int) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
