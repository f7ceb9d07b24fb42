"""One training iteration: a discriminator step, then the generator step(s).

`TrainStep` runs it the same way on every device, with what makes it fast on a GPU switched on by
the loop there:

* precision: the models' forward passes under autocast (bf16); logits are cast to fp32 before the
  losses, and the weights, gradients and Adam moments stay fp32 (no loss scaling needed);
* channels_last: the image batch in the models' memory format (the models are converted by the loop);
* graphs: the whole iteration (both steps, both fused Adam updates, the health accounting) captured
  once into a CUDA graph and replayed, so one launch replaces hundreds of small kernels. Everything
  random (noise, fake labels, the DiffAugment numbers, the WGAN-GP interpolation weights) is drawn
  outside the graph into fixed buffers, from the same generator and in the same order as the eager
  path, and the real batch is copied into a fixed buffer. With lazy R1 (loss.r1_every > 1) the
  iterations with and without the penalty are two graphs, each replayed on its steps.

Nothing in an iteration waits for the device: the statistics come back as a (4,) device tensor and
the non-finite check (training/health.py) stays on the device.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn

from ..augment import PARAMS, Augment
from ..config import LossConfig
from ..losses import GanLoss, gradient_penalty, r1_penalty, real_probability
from .health import Health


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device` (None: full precision). The weight-cast cache is off, as a
    CUDA graph requires, and costs nothing here: each weight is cast once per forward anyway."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def _seen(x: torch.Tensor, augment: Augment | None, u: torch.Tensor | None) -> torch.Tensor:
    """What D sees of the images x: x itself, or x through DiffAugment with the numbers u (B, PARAMS)."""
    return augment.apply(x, u) if augment else x


def d_step(G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor, y_fake: torch.Tensor | None,
           dtype: torch.dtype | None = None, *, augment: Augment | None = None, u: torch.Tensor | None = None,
           eps: torch.Tensor | None = None, r1: bool = False):
    """Update D on a real batch x (B, C, H, W) and fakes G(z, y_fake); u (2, B, PARAMS): the DiffAugment
    numbers of the real and the fake batch; eps (B,): WGAN-GP's interpolation weights; r1: add the R1
    penalty (weighted by loss.r1_every, the lazy interval).

    Returns (fake (B, C, H, W) with G's graph kept for the G step, d_loss, mean D(x), mean D(G(z))),
    the statistics as detached 0-d tensors so nothing waits for the device.
    """
    real_in = x.detach().requires_grad_(True) if r1 else x  # R1 differentiates D(x) with respect to x
    with autocast(x.device, dtype):
        fake = G(z, y_fake)  # (B, C, H, W)
        real_logits = D(_seen(real_in, augment, u[0] if augment else None), y).float()  # (B,) or (B, K+1); losses in fp32
        fake_logits = D(_seen(fake.detach(), augment, u[1] if augment else None), y_fake).float()
    if loss.labels:  # e.g. the K+1-class loss: real → its class, fake → class K
        d_loss = loss.d(real_logits, fake_logits, cfg, y, y_fake)
    else:
        d_loss = loss.d(real_logits, fake_logits, cfg)
    if r1:
        d_loss = d_loss + r1_penalty(real_logits, real_in, cfg.r1_gamma * cfg.r1_every)
    if loss.interpolates:  # WGAN-GP: the critic's gradient norm pulled to 1 between real and fake images
        e = eps.view(-1, *([1] * (x.dim() - 1)))
        x_hat = (e * x.detach() + (1 - e) * fake.detach().float()).requires_grad_(True)
        with autocast(x.device, dtype):
            out_hat = D(x_hat, y).float()
        d_loss = d_loss + gradient_penalty(out_hat, x_hat, cfg.gp_weight)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    with torch.no_grad():
        d_real, d_fake = real_probability(real_logits).mean(), real_probability(fake_logits).mean()
    return fake, d_loss.detach(), d_real, d_fake


def g_step(D: nn.Module, opt_g: torch.optim.Optimizer, loss: GanLoss, cfg: LossConfig,
           fake: torch.Tensor, y_fake: torch.Tensor | None, dtype: torch.dtype | None = None, *,
           augment: Augment | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
    """Update G so that D scores `fake` (B, C, H, W), still attached to G's graph, as real."""
    D = getattr(D, "module", D)  # D's own module: D is not updated here, so no DDP gradient sync
    D.requires_grad_(False)  # no gradients for D's weights in G's step
    try:
        with autocast(fake.device, dtype):
            logits = D(_seen(fake, augment, u), y_fake).float()
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
    """Calling it with a real batch x (B, ...), labels y (B,) and the step number runs one iteration
    and returns the (4,) device tensor [d_loss, g_loss, D(x), D(G(z))].

    With graphs=True (CUDA only) the first `warmup` calls run eagerly on a side stream (real steps:
    they also let cuDNN pick its algorithms and the optimizers create their state), the next call
    captures the iteration and every later one replays it. Anything that replaces optimizer state
    or changes a learning rate's place (loading a checkpoint, a rollback) must call invalidate();
    the iteration is then warmed up and captured again. `graph_backend` replaces CudaGraphs (tests).

    A replay reads only fixed buffers: the batch is copied into one, the random numbers are drawn into
    others, and the statistics are written into a fixed (4,) output, so the returned tensor is
    overwritten by the next replay (the loop adds it to its tick sums at once). The step number picks
    the lazy R1 steps (step % loss.r1_every == 0); each kind of iteration is its own graph.
    """

    def __init__(self, G: nn.Module, D: nn.Module, opt_g, opt_d, loss: GanLoss, cfg: LossConfig, *,
                 z_dim: int, num_classes: int, g_steps: int, gen: torch.Generator, health: Health | None = None,
                 dtype: torch.dtype | None = None, channels_last: bool = False, graphs: bool = False,
                 warmup: int = 3, warn=None, graph_backend=None, augment: Augment | None = None):
        self.G, self.D, self.opt_g, self.opt_d, self.loss, self.cfg = G, D, opt_g, opt_d, loss, cfg
        self.z_dim, self.K, self.g_steps, self.gen, self.health = z_dim, num_classes, g_steps, gen, health
        self.dtype, self.channels_last, self.graphs, self.warmup = dtype, channels_last, graphs, warmup
        self.augment = augment if augment else None
        self.capture_s = None  # seconds the first warm-up + capture took (graphs only)
        self.captures = 0  # how many times an iteration was captured
        self.warn = warn  # told (one line) when a capture fails and the steps continue eagerly
        self._backend = graph_backend
        self.invalidate()

    def invalidate(self) -> None:
        self._replays: dict[bool, object] = {}  # r1 or not → the replay of that iteration's graph
        self._static = None  # the fixed buffers every graph reads and writes
        self._eager_left = {False: self.warmup, True: self.warmup}  # eager warm-up steps of each kind
        self._t_warm = None

    def r1_due(self, step: int) -> bool:
        return self.cfg.r1_gamma > 0 and step % self.cfg.r1_every == 0

    def _draws(self, B: int, device: torch.device, out: tuple | None = None):
        """The iteration's random numbers from `gen`, in a fixed order: z (g_steps, B, z_dim) for the
        D step, the fake labels (B,), z for each extra G step; then, when used, the DiffAugment
        numbers (2 + g_steps, B, PARAMS) (real and fake of the D step, each G step) and WGAN-GP's
        interpolation weights (B,). Into the buffers `out` when given (a graph's)."""
        z = out[0] if out else torch.empty(self.g_steps, B, self.z_dim, device=device)
        torch.randn(B, self.z_dim, device=device, generator=self.gen, out=z[0])
        y_fake = None
        if self.K:
            y_fake = out[1] if out else torch.empty(B, dtype=torch.int64, device=device)
            torch.randint(self.K, (B,), device=device, generator=self.gen, out=y_fake)
        for i in range(1, self.g_steps):
            torch.randn(B, self.z_dim, device=device, generator=self.gen, out=z[i])
        u = eps = None
        if self.augment:
            u = out[2] if out else torch.empty(2 + self.g_steps, B, PARAMS, device=device)
            torch.rand(2 + self.g_steps, B, PARAMS, device=device, generator=self.gen, out=u)
        if self.loss.interpolates:
            eps = out[3] if out else torch.empty(B, device=device)
            torch.rand(B, device=device, generator=self.gen, out=eps)
        return z, y_fake, u, eps

    def _iteration(self, x, y, z, y_fake, u, eps, r1: bool) -> torch.Tensor:
        if self.health is not None:
            self.health.before_step()
        aug = dict(augment=self.augment)
        fake, d_loss, d_real, d_fake = d_step(self.G, self.D, self.opt_d, self.loss, self.cfg, x,
                                              y if self.K else None, z[0], y_fake, self.dtype,
                                              u=u[:2] if u is not None else None, eps=eps, r1=r1, **aug)
        g_loss = g_step(self.D, self.opt_g, self.loss, self.cfg, fake, y_fake, self.dtype,
                        u=u[2] if u is not None else None, **aug)
        for i in range(1, self.g_steps):  # extra G steps on fresh noise
            with autocast(x.device, self.dtype):
                fake = self.G(z[i], y_fake)
            g_loss = g_step(self.D, self.opt_g, self.loss, self.cfg, fake, y_fake, self.dtype,
                            u=u[2 + i] if u is not None else None, **aug)
        if self.health is not None:
            self.health.account()
        return torch.stack([d_loss, g_loss, d_real, d_fake])

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int = 0) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        r1 = self.r1_due(step)
        if not self.graphs:
            return self._iteration(x, y, *self._draws(x.shape[0], x.device), r1)
        if r1 in self._replays:  # replay: the inputs into the fixed buffers, then one launch
            sx, sy, sz, syf, su, seps, stats = self._static
            sx.copy_(x)
            sy.copy_(y)
            self._draws(x.shape[0], x.device, out=(sz, syf, su, seps))
            self._replays[r1]()
            return stats
        if self._backend is None:
            self._backend = CudaGraphs(x.device)
        if self._eager_left[r1] > 0:  # warm-up: real steps (on a side stream on CUDA, as capture requires)
            if self._t_warm is None:
                self._t_warm = time.perf_counter()
            self._eager_left[r1] -= 1
            with self._backend.warmup():
                stats = self._iteration(x, y, *self._draws(x.shape[0], x.device), r1)
            return stats
        return self._capture(x, y, step, r1)

    def _capture(self, x: torch.Tensor, y: torch.Tensor, step: int, r1: bool) -> torch.Tensor:
        """Capture this kind of iteration (which runs nothing yet), then replay it once for this batch."""
        if self._t_warm is None:
            self._t_warm = time.perf_counter()
        if self._static is None:  # the fixed buffers a replay reads and writes: batch, labels, randoms, statistics
            B = x.shape[0]
            self._static = (x.clone(), y.clone(), torch.empty(self.g_steps, B, self.z_dim, device=x.device),
                            torch.empty(B, dtype=torch.int64, device=x.device) if self.K else None,
                            torch.empty(2 + self.g_steps, B, PARAMS, device=x.device) if self.augment else None,
                            torch.empty(B, device=x.device) if self.loss.interpolates else None,
                            torch.zeros(4, device=x.device))
        sx, sy, sz, syf, su, seps, stats = self._static
        self.opt_g.zero_grad(set_to_none=True)  # gradients are then allocated from the graph's pool
        self.opt_d.zero_grad(set_to_none=True)
        try:
            replay = self._backend.capture(lambda: stats.copy_(self._iteration(sx, sy, sz, syf, su, seps, r1)))
        except RuntimeError as e:  # an operation that cannot be captured: train on, eagerly
            self.graphs, self._replays, self._static = False, {}, None
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            self._backend.synchronize()
            if self.warn is not None:
                self.warn(f"CUDA graph capture failed ({str(e).splitlines()[0][:200]}); training continues without "
                          f"graphs (set train.cuda_graphs=false to skip the attempt)")
            return self(x, y, step)
        self._replays[r1] = replay
        self.captures += 1
        self._backend.synchronize()
        if self.capture_s is None:
            self.capture_s = time.perf_counter() - self._t_warm
        return self(x, y, step)
