"""Training batches: uint8 images are scaled to [-1, 1] on the device; float points (synthetic
2-D data) are used as they are.

The data order is a pure function of (seed, step): epoch e visits the examples in the order of
a permutation drawn from a generator seeded with (seed, e), so a resumed run sees exactly the
batches an uninterrupted one would, with no loader state to save. With `world` ranks, global
batch i of an epoch is perm[i*B*world : (i+1)*B*world] (B: the per-rank batch) and rank r takes
its slice [r*B : (r+1)*B]: the ranks' batches are disjoint and together make the global batch.
An epoch has N // (B*world) steps; the last partial global batch is dropped.

Two placements yield the same batches, bit for bit:

    DeviceBatches   the whole dataset copied to the device once; a batch is an index gather
                    there (the fastest, when the dataset fits).
    StreamBatches   the dataset stays in host memory as the cache holds it (memory-mapped: pages
                    are read from disk as needed, never the whole file at once); a background
                    thread gathers the rows of the next `prefetch` steps into staging buffers
                    (pinned on CUDA) and copies them to the device on a side stream, so the copy
                    overlaps the training step. Reading steps in order is the fast case; any
                    other step (a resume, a rollback) restarts the pipeline there.

make_batches picks one (train.placement = auto | device | stream).
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np
import torch

from ..errors import UserError
from ..images import from_uint8

PLACEMENTS = ("auto", "device", "stream")


def _check(n: int, batch: int, rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"rank {rank} of world {world}: the world must be >= 1 and 0 <= rank < world")
    if batch < 1:
        raise UserError(f"train.batch={batch}: the batch must be >= 1")
    if n < batch * world:
        across = f" across {world} ranks ({batch} each)" if world > 1 else ""
        raise UserError(
            f"the dataset has {n} images, fewer than one batch of {batch * world}{across}; "
            f"lower train.batch or add data"
        )


def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of example indices for one epoch: (N,) int64 on the CPU."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _to_model_input(x: torch.Tensor, scale: bool) -> torch.Tensor:
    """uint8 (B, C, H, W) → float (B, C, H, W) in [-1, 1]; float points (B, D) → float (B, D)."""
    return from_uint8(x) if scale else x.float()


class _Batches:
    """What both placements share: the (seed, step) → example indices rule, closing."""

    placement = ""

    def _setup(self, n: int, batch: int, seed: int, device, rank: int, world: int) -> None:
        _check(n, batch, rank, world)
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # pinned down: a background thread's current device may differ
            device = torch.device("cuda", torch.cuda.current_device())
        self.n, self.batch, self.seed, self.device = n, batch, seed, device
        self.rank, self.world = rank, world
        self.steps_per_epoch = n // (batch * world)  # the last partial global batch of an epoch is dropped

    def _span(self, step: int) -> tuple[int, int, int]:
        """(epoch, start, stop): this rank's slice of the epoch's permutation at `step`."""
        epoch, i = divmod(step, self.steps_per_epoch)
        start = (i * self.world + self.rank) * self.batch
        return epoch, start, start + self.batch

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DeviceBatches(_Batches):
    """Batches sliced on the device from a copy of the whole dataset held there."""

    placement = "device"

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch: int, seed: int, device: torch.device,
                 rank: int = 0, world: int = 1):
        self._setup(len(images), batch, seed, device, rank, world)
        self.images = torch.from_numpy(np.array(images)).to(self.device)  # (N, C, H, W) uint8 or (N, D) float32; a copy of the (read-only) cache
        self.scale = self.images.dtype == torch.uint8  # uint8 images → [-1, 1]; float data is never rescaled
        self.labels = torch.from_numpy(np.array(labels)).to(self.device)  # (N,) int64
        self._epoch, self._perm = -1, None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of example indices for one epoch, (N,) int64 on the device."""
        return _permutation(self.n, self.seed, epoch).to(self.device)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `step`: x (B, C, H, W) float in [-1, 1] (images) or (B, D) float (points), y (B,) int64."""
        epoch, start, stop = self._span(step)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self.order(epoch)
        idx = self._perm[start:stop]
        return _to_model_input(self.images[idx], self.scale), self.labels[idx]


class StreamBatches(_Batches):
    """Batches gathered on the host from the dataset where it lies (a memory map of the cache
    entry, or any array) and copied to the device ahead of use by a background thread."""

    placement = "stream"

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch: int, seed: int, device: torch.device,
                 rank: int = 0, world: int = 1, prefetch: int = 4):
        self._setup(len(images), batch, seed, device, rank, world)
        if prefetch < 1:
            raise UserError(f"train.prefetch={prefetch}: prefetch at least 1 batch")
        self.images = images  # (N, C, H, W) uint8 or (N, D) float32, not copied: rows are read when gathered
        self.labels = np.asarray(labels)  # (N,) int64
        self.scale = np.dtype(images.dtype) == np.uint8
        self.prefetch = prefetch
        self.cuda = self.device.type == "cuda"
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._next = -1  # the step the pipeline delivers next

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of example indices for one epoch, (N,) int64 on the host."""
        return _permutation(self.n, self.seed, epoch).numpy()

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `step`: x (B, C, H, W) float in [-1, 1] (images) or (B, D) float (points), y (B,) int64."""
        if self._thread is None or step != self._next:
            self._start(step)  # first call, or a jump (resume, rollback): the prefetched steps are not wanted
        got, x, y, ready = self._take()
        if got != step:
            raise RuntimeError(f"the batch stream delivered step {got} for step {step}")
        self._next = step + 1
        if ready is not None:  # CUDA: the copy and conversion ran on the side stream
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            x.record_stream(current)  # the allocator must not reuse the memory before this stream is done with it
            y.record_stream(current)
        return x, y

    def close(self) -> None:
        """Stop the background thread (get() starts it again)."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room so that a producer blocked on a full queue sees the stop
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread = self._queue = self._stop = None

    def __del__(self):
        stop = getattr(self, "_stop", None)
        if stop is not None:  # the thread ends within its next put; no join here (this may run at exit)
            stop.set()

    # ---- the pipeline ------------------------------------------------------------------------
    def _start(self, step: int) -> None:
        self.close()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(step, self._queue, self._stop),
                                        name="dcgan-stream-batches", daemon=True)
        self._thread.start()
        self._next = step

    def _take(self):
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the batch-streaming thread stopped without a batch") from None
                continue
            if isinstance(item, BaseException):
                self._thread.join()
                self._thread = self._queue = self._stop = None
                raise item
            return item

    def _produce(self, step: int, out: queue.Queue, stop: threading.Event) -> None:
        """Put (step, x, y, ready) for step, step + 1, ... on `out` until `stop` is set."""
        try:
            if self.cuda:
                with torch.cuda.device(self.device):
                    self._produce_cuda(step, out, stop)
            else:
                self._produce_host(step, out, stop)
        except BaseException as e:  # handed to get(), which raises it
            self._put(out, stop, e)

    def _rows(self, step: int, cache: list) -> np.ndarray:
        """This rank's example indices at `step`, (B,) int64; cache = [epoch, permutation]."""
        epoch, start, stop = self._span(step)
        if cache[0] != epoch:
            cache[0], cache[1] = epoch, self.order(epoch)
        return cache[1][start:stop]

    def _produce_host(self, step: int, out: queue.Queue, stop: threading.Event) -> None:
        cache = [-1, None]
        while not stop.is_set():
            idx = self._rows(step, cache)
            x = torch.from_numpy(np.take(self.images, idx, axis=0))  # (B, ...) a fresh array: never aliased
            y = torch.from_numpy(np.take(self.labels, idx))
            x, y = _to_model_input(x.to(self.device), self.scale), y.to(self.device)
            if not self._put(out, stop, (step, x, y, None)):
                return
            step += 1

    def _produce_cuda(self, step: int, out: queue.Queue, stop: threading.Event) -> None:
        side = torch.cuda.Stream(self.device)
        x_dtype = torch.from_numpy(np.empty(0, dtype=self.images.dtype)).dtype
        # staging slots, pinned: (B, C, H, W) uint8 or (B, D) float32 and (B,) int64; one is refilled
        # only once the copy that last read it has finished (its event)
        slots = [(torch.empty((self.batch, *self.images.shape[1:]), dtype=x_dtype, pin_memory=True),
                  torch.empty(self.batch, dtype=torch.int64, pin_memory=True)) for _ in range(self.prefetch + 2)]
        copied: list[torch.cuda.Event | None] = [None] * len(slots)
        cache, k = [-1, None], 0
        while not stop.is_set():
            idx = self._rows(step, cache)
            xs, ys = slots[k]
            if copied[k] is not None:
                copied[k].synchronize()
            np.take(self.images, idx, axis=0, out=xs.numpy(), mode="clip")  # "clip": no buffering (idx is in range)
            np.take(self.labels, idx, out=ys.numpy(), mode="clip")
            with torch.cuda.stream(side):
                x = _to_model_input(xs.to(self.device, non_blocking=True), self.scale)
                y = ys.to(self.device, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(side)
            copied[k], k = ready, (k + 1) % len(slots)
            if not self._put(out, stop, (step, x, y, ready)):
                return
            step += 1

    @staticmethod
    def _put(out: queue.Queue, stop: threading.Event, item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


# ---- choosing the placement -------------------------------------------------------------------

def _host_available() -> int | None:
    """Bytes of host memory available (MemAvailable on Linux), None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


SMALL_BYTES = 1 << 30  # where the host's available memory is unknown: datasets up to this go to the device


def placement_budget(device, world: int = 1) -> tuple[int, str]:
    """The most dataset bytes the device placement takes: half of the device's free memory on
    CUDA; elsewhere (the "device" is host memory) half of the available host memory, shared by
    the `world` ranks of this host. Returns (bytes, how it was found)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2, f"half of the {free / 2**30:.1f} GiB free on {device}"
    avail = _host_available()
    if avail is None:
        return SMALL_BYTES, "available host memory unknown"
    share = f", shared by {world} ranks" if world > 1 else ""
    return avail // (2 * world), f"half of the {avail / 2**30:.1f} GiB of available host memory{share}"


def make_batches(data, batch: int, seed: int, device, placement: str = "auto", prefetch: int = 4,
                 rank: int = 0, world: int = 1, log=None, budget: int | None = None):
    """The loader for `data` (a prepare.Dataset, or anything with .images and .labels):
    DeviceBatches or StreamBatches as `placement` says; "auto" takes the device placement when
    the dataset's bytes are within `budget` (default: placement_budget(device, world)), else
    streams."""
    if placement not in PLACEMENTS:
        raise UserError(f"train.placement={placement!r}: choose one of {', '.join(PLACEMENTS)}")
    device = torch.device(device)
    images, labels = data.images, data.labels
    if placement == "auto":
        need = int(images.nbytes) + int(labels.nbytes)
        how = "the given budget"
        if budget is None:
            budget, how = placement_budget(device, world)
        placement = "device" if need <= budget else "stream"
        why = f"{need / 2**30:.2f} GiB of data, {'within' if need <= budget else 'over'} {budget / 2**30:.2f} GiB ({how})"
    else:
        why = "train.placement"
    if log:
        log(f"data: {placement} placement on {device} ({why})")
    if placement == "device":
        return DeviceBatches(images, labels, batch, seed, device, rank=rank, world=world)
    return StreamBatches(images, labels, batch, seed, device, rank=rank, world=world, prefetch=prefetch)
