"""Progress on stderr: tqdm bars when stderr is a terminal, plain lines otherwise.

    TrainProgress   the `dcgan train` bar (step, images seen, img/s, losses, D(x), D(G(z)), ETA),
                    updated only at ticks from the record the loop already builds (no extra
                    device sync); messages go above the bar. Not a terminal (CI logs): the one
                    line per tick the loop has always printed. quiet: nothing at all.
    bar(...)        a plain tqdm bar on stderr, off when stderr is not a terminal.
    steps(...)      a bar over a library loop that takes time (generate, feature extraction,
                    prepare), shown only inside `with showing():` (the CLI commands prepare, eval,
                    sample enter it), so that the same loops run silently inside training.

DCGAN_PROGRESS=1 forces the bars on, DCGAN_PROGRESS=0 off (whatever stderr is).
"""

from __future__ import annotations

import contextvars
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterable, TextIO

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
        step = int(record["step"])
        self._bar.set_postfix_str(
            f"img {_si(record['images_seen'])}, {record['img_per_s']:.0f} img/s, d_loss {record['d_loss']:.3f}, "
            f"g_loss {record['g_loss']:.3f}, D(x) {record['d_real']:.3f}, D(G(z)) {record['d_fake']:.3f}",
            refresh=False)
        if step < self._bar.n:  # a rollback went back: start the count again from there
            self._bar.reset(total=self._bar.total)
        self._bar.update(step - self._bar.n)  # draws the bar with the postfix above

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _si(n: int) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
