"""One training iteration: a discriminator step, then the generator step(s).

`TrainStep` runs it the same way on every device, with what makes it fast on a GPU switched on by
the loop there:

* precision: the models' forward passes under autocast (bf16); logits are cast to fp32 before the
  losses, and the weights, gradients and Adam moments stay fp32 (no loss scaling needed);
* channels_last: the image batch in the models' memory format (the models are converted by the loop);
* graphs: the whole iteration (both steps, both fused Adam updates, the health accounting) captured
  once into a CUDA graph and replayed, so one launch replaces hundreds of small kernels. Noise and
  fake labels are drawn outside the graph into fixed buffers, from the same generator and in the
  same order as the eager path, and the real batch is copied into a fixed buffer.

Nothing in an iteration waits for the device: the statistics come back as a (4,) device tensor and
the non-finite check (training/health.py) stays on the device.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn

from ..config import LossConfig
from ..losses import GanLoss, real_probability
from .health import Health


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device` (None: full precision). The weight-cast cache is off, as a
    CUDA graph requires, and costs nothing here: each weight is cast once per forward anyway."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def d_step(G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor, y_fake: torch.Tensor | None,
           dtype: torch.dtype | None = None):
    """Update D on a real batch x (B, C, H, W) and fakes G(z, y_fake).

    Returns (fake (B, C, H, W) with G's graph kept for the G step, d_loss, mean D(x), mean D(G(z))),
    the statistics as detached 0-d tensors so nothing waits for the device.
    """
    with autocast(x.device, dtype):
        fake = G(z, y_fake)  # (B, C, H, W)
        real_logits = D(x, y).float()  # (B,) or (B, K+1); the losses in fp32
        fake_logits = D(fake.detach(), y_fake).float()
    if loss.labels:  # e.g. the K+1-class loss: real → its class, fake → class K
        d_loss = loss.d(real_logits, fake_logits, cfg, y, y_fake)
    else:
        d_loss = loss.d(real_logits, fake_logits, cfg)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    with torch.no_grad():
        d_real, d_fake = real_probability(real_logits).mean(), real_probability(fake_logits).mean()
    return fake, d_loss.detach(), d_real, d_fake


def g_step(D: nn.Module, opt_g: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           fake: torch.Tensor, y_fake: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Update G so that D scores `fake` (B, C, H, W), still attached to G's graph, as real."""
    D = getattr(D, "module", D)  # D's own module: D is not updated here, so no DDP gradient sync
    D.requires_grad_(False)  # no gradients for D's weights in G's step
    try:
        with autocast(fake.device, dtype):
            logits = D(fake, y_fake).float()
        g_loss = loss.g(logits, cfg, y_fake) if loss.labels else loss.g(logits, cfg)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    finally:
        D.requires_grad_(True)
    return g_loss.detach()


class CudaGraphs:
    """How TrainStep captures and replays its iteration on a CUDA device. TrainStep talks to it
    through three calls only (a test gives it a stand-in that records and re-runs the iteration on
    the host, so capture, the buffer copies and recapture are exercised without a GPU):

        warmup()     a context for the eager warm-up steps (a side stream, as capture requires)
        capture(fn)  record fn() (which runs nothing now) and return replay(), which runs it
        synchronize()
    """

    def __init__(self, device: torch.device):
        self.device = device

    @contextlib.contextmanager
    def warmup(self):
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(side)

    def capture(self, fn):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # a loader thread may copy meanwhile
            fn()
        return graph.replay  # keeps the graph alive

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class TrainStep:
    """Calling it with a real batch x (B, ...) and labels y (B,) runs one iteration and returns the
    (4,) device tensor [d_loss, g_loss, D(x), D(G(z))].

    With graphs=True (CUDA only) the first `warmup` calls run eagerly on a side stream (real steps:
    they also let cuDNN pick its algorithms and the optimizers create their state), the next call
    captures the iteration and every later one replays it. Anything that replaces optimizer state
    or changes a learning rate (loading a checkpoint, a rollback) must call invalidate(); the
    iteration is then warmed up and captured again. `graph_backend` replaces CudaGraphs (tests).

    A replay reads only fixed buffers: the batch is copied into one, the noise and fake labels are
    drawn into others, and the statistics are written into a fixed (4,) output, so the returned
    tensor is overwritten by the next replay (the loop adds it to its tick sums at once).
    """

    def __init__(self, G: nn.Module, D: nn.Module, opt_g, opt_d, loss: GanLoss, cfg: LossConfig, *,
                 z_dim: int, num_classes: int, g_steps: int, gen: torch.Generator, health: Health | None = None,
                 dtype: torch.dtype | None = None, channels_last: bool = False, graphs: bool = False,
                 warmup: int = 3, warn=None, graph_backend=None):
        self.G, self.D, self.opt_g, self.opt_d, self.loss, self.cfg = G, D, opt_g, opt_d, loss, cfg
        self.z_dim, self.K, self.g_steps, self.gen, self.health = z_dim, num_classes, g_steps, gen, health
        self.dtype, self.channels_last, self.graphs, self.warmup = dtype, channels_last, graphs, warmup
        self.capture_s = None  # seconds the last warm-up + capture took (graphs only)
        self.captures = 0  # how many times the iteration was captured (1 + one per invalidate() that led to a capture)
        self.warn = warn  # told (one line) when a capture fails and the steps continue eagerly
        self._backend = graph_backend
        self.invalidate()

    def invalidate(self) -> None:
        self._replay, self._static, self._eager_left, self._t_warm = None, None, self.warmup, None

    def _noise(self, B: int, device: torch.device, out: tuple | None = None):
        """z (g_steps, B, z_dim) and fake labels (B,) from `gen`, drawn in a fixed order: z for the
        D step, the labels, then z for each extra G step."""
        z = out[0] if out else torch.empty(self.g_steps, B, self.z_dim, device=device)
        torch.randn(B, self.z_dim, device=device, generator=self.gen, out=z[0])
        y_fake = None
        if self.K:
            y_fake = out[1] if out else torch.empty(B, dtype=torch.int64, device=device)
            torch.randint(self.K, (B,), device=device, generator=self.gen, out=y_fake)
        for i in range(1, self.g_steps):
            torch.randn(B, self.z_dim, device=device, generator=self.gen, out=z[i])
        return z, y_fake

    def _iteration(self, x, y, z, y_fake) -> torch.Tensor:
        if self.health is not None:
            self.health.before_step()
        fake, d_loss, d_real, d_fake = d_step(self.G, self.D, self.opt_d, self.loss, self.cfg, x,
                                              y if self.K else None, z[0], y_fake, self.dtype)
        g_loss = g_step(self.D, self.opt_g, self.loss, self.cfg, fake, y_fake, self.dtype)
        for i in range(1, self.g_steps):  # extra G steps on fresh noise
            with autocast(x.device, self.dtype):
                fake = self.G(z[i], y_fake)
            g_loss = g_step(self.D, self.opt_g, self.loss, self.cfg, fake, y_fake, self.dtype)
        if self.health is not None:
            self.health.account()
        return torch.stack([d_loss, g_loss, d_real, d_fake])

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.graphs:
            z, y_fake = self._noise(x.shape[0], x.device)
            return self._iteration(x, y, z, y_fake)
        if self._replay is not None:  # replay: the inputs into the fixed buffers, then one launch
            sx, sy, sz, syf, stats = self._static
            sx.copy_(x)
            sy.copy_(y)
            self._noise(x.shape[0], x.device, out=(sz, syf))
            self._replay()
            return stats
        if self._backend is None:
            self._backend = CudaGraphs(x.device)
        if self._eager_left > 0:  # warm-up: real steps (on a side stream on CUDA, as capture requires)
            if self._t_warm is None:
                self._t_warm = time.perf_counter()
            self._eager_left -= 1
            with self._backend.warmup():
                z, y_fake = self._noise(x.shape[0], x.device)
                stats = self._iteration(x, y, z, y_fake)
            return stats
        return self._capture(x, y)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Capture the iteration (which runs nothing yet), then replay it once for this batch."""
        if self._t_warm is None:
            self._t_warm = time.perf_counter()
        # the fixed buffers a replay reads and writes: batch, labels, noise, fake labels, statistics
        sx, sy = x.clone(), y.clone()
        sz = torch.empty(self.g_steps, x.shape[0], self.z_dim, device=x.device)
        syf = torch.empty(x.shape[0], dtype=torch.int64, device=x.device) if self.K else None
        stats = torch.zeros(4, device=x.device)
        self.opt_g.zero_grad(set_to_none=True)  # gradients are then allocated from the graph's pool
        self.opt_d.zero_grad(set_to_none=True)
        try:
            replay = self._backend.capture(lambda: stats.copy_(self._iteration(sx, sy, sz, syf)))
        except RuntimeError as e:  # an operation that cannot be captured: train on, eagerly
            self.graphs, self._replay, self._static = False, None, None
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            self._backend.synchronize()
            if self.warn is not None:
                self.warn(f"CUDA graph capture failed ({str(e).splitlines()[0][:200]}); training continues without "
                          f"graphs (set train.cuda_graphs=false to skip the attempt)")
            return self(x, y)
        self._replay, self._static = replay, (sx, sy, sz, syf, stats)
        self.captures += 1
        self._backend.synchronize()
        self.capture_s = time.perf_counter() - self._t_warm
        self._t_warm = None
        return self(x, y)
