"""`dcgan bench`: training throughput of a preset, measured the way the training loop runs it.

Reports real images per second (median over timing windows after warm-up), milliseconds per D
step and per G step, warm-up time, peak memory, the model's FLOPs per image and the achieved
TFLOP/s. With `baseline=True` it also times, in the same process, the same model in a plain eager
fp32 loop fed by a CPU `DataLoader` (what a user writes by hand) and reports the ratio.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import numpy as np
import torch

from .config import Config
from .data.loader import make_batches
from .data.prepare import prepare
from .device import pick_device
from .images import from_uint8
from .losses import LOSSES
from .models import build_discriminator, build_generator
from .training.steps import TrainStep, d_step, g_step
from .training.trainer import Trainer, seed_everything

# Dense bf16 / fp32 tensor throughput used for "fraction of peak"; unknown devices report none.
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _models(cfg: Config, shape, num_classes, device, memory_format=torch.preserve_format, fused: bool = True,
            capturable: bool = False):
    """G, D and their Adam optimizers as training builds them (fused=False: torch's default Adam)."""
    G = build_generator(cfg.model, shape, num_classes).to(device, memory_format=memory_format)
    D = build_discriminator(cfg.model, shape, num_classes).to(device, memory_format=memory_format)
    o = cfg.optim
    adam = dict(betas=(o.beta1, o.beta2), fused=fused or None, capturable=capturable)
    opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, **adam)
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, **adam)
    return G, D, opt_g, opt_d


def flops_per_image(cfg: Config, shape, num_classes: int, batch: int = 8) -> float:
    """FLOPs of one training iteration (D step + G steps) per real image, counted on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    G, D, opt_g, opt_d = _models(cfg, shape, num_classes, torch.device("cpu"))
    x = torch.zeros(batch, *shape)
    y = torch.zeros(batch, dtype=torch.int64)
    step = TrainStep(G, D, opt_g, opt_d, LOSSES.get(cfg.loss.kind), cfg.loss, z_dim=cfg.model.z_dim,
                     num_classes=num_classes, g_steps=cfg.optim.g_steps, gen=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return counter.get_total_flops() / batch


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_device_memory_bytes": torch.cuda.max_memory_allocated(device)}
    return {"peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def bench(cfg: Config, *, steps: int = 200, warmup: int = 20, windows: int = 5, baseline: bool = False,
          baseline_workers: int = 2, profile: str | None = None, data_dir: str | None = None,
          log=None) -> dict[str, Any]:
    """Time the training iteration exactly as `dcgan train` runs it on this device: the same Trainer
    (train.precision, channels_last, cuda_graphs, compile) and batch source (placement). `profile`:
    also profile PROFILE_STEPS iterations, write their Chrome trace to that path and summarise them."""
    device = pick_device(cfg.train.device)
    torch.backends.cudnn.deterministic = cfg.train.deterministic  # as training sets them
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    seed_everything(cfg.train.seed)
    data = prepare(cfg.data, data_dir, log=log)
    B = cfg.train.batch
    batches = make_batches(data, B, cfg.train.seed, device, cfg.train.placement, cfg.train.prefetch, log=log)
    trainer = Trainer.build(cfg, data, device)
    fast, K, loss = trainer.fast, trainer.num_classes, LOSSES.get(cfg.loss.kind)
    G, D, opt_g, opt_d, gen = trainer.G, trainer.D, trainer.opt_g, trainer.opt_d, trainer.gen
    if fast.graphs:  # the capture happens after the eager warm-up steps; time only replays
        warmup = max(warmup, trainer.step_fn.warmup + 2)

    def iteration(step: int) -> None:  # what the training loop does per step, minus its ticks
        trainer.train_step(*batches.get(step))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with batches:
        t0 = time.perf_counter()
        for s in range(warmup):
            iteration(s)
        _sync(device)
        warmup_s = time.perf_counter() - t0

        per_window = max(1, steps // windows)
        rates, step = [], warmup
        for _ in range(windows):
            t = time.perf_counter()
            for _ in range(per_window):
                iteration(step)
                step += 1
            _sync(device)
            rates.append(per_window * B / (time.perf_counter() - t))

        prof = None
        if profile:
            prof = profile_iterations(lambda s: iteration(s), step, PROFILE_STEPS, device, profile)
            step += PROFILE_STEPS

        # D step and G step timed apart, eagerly (synchronising around each, so slightly pessimistic)
        d_ms, g_ms = [], []
        for _ in range(max(5, per_window // 2)):
            x, y = batches.get(step)
            step += 1
            if fast.memory_format == torch.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            z = torch.randn(B, cfg.model.z_dim, device=device, generator=gen)
            yf = torch.randint(K, (B,), device=device, generator=gen) if K else None
            _sync(device)
            t = time.perf_counter()
            fake, *_ = d_step(G, D, opt_d, loss, cfg.loss, x, y if K else None, z, yf, fast.dtype)
            _sync(device)
            t1 = time.perf_counter()
            g_step(D, opt_g, loss, cfg.loss, fake, yf, fast.dtype)
            _sync(device)
            d_ms.append((t1 - t) * 1e3)
            g_ms.append((time.perf_counter() - t1) * 1e3)

    img_s = statistics.median(rates)
    fpi = flops_per_image(cfg, data.shape, K)
    achieved = img_s * fpi / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    precision = "bf16" if fast.dtype == torch.bfloat16 else "fp32"
    peak_tflops = peak[precision] if peak else None
    result = {
        "device": name, "batch": B, "precision": precision,
        "channels_last": fast.memory_format == torch.channels_last, "compile": fast.compile,
        "cuda_graphs": trainer.step_fn.graphs,  # false if a capture failed
        "placement": batches.placement,
        "img_per_s": img_s, "img_per_s_windows": rates, "steps_timed": per_window * windows,
        "ms_per_iteration": 1e3 * B / img_s,
        "ms_per_d_step": statistics.median(d_ms), "ms_per_g_step": statistics.median(g_ms),
        "warmup_s": warmup_s, "capture_s": trainer.step_fn.capture_s,
        "flops_per_image": fpi, "achieved_tflops": achieved,
        "peak_tflops": peak_tflops, "fraction_of_peak": achieved / peak_tflops if peak_tflops else None,
        **_peak_memory(device),
    }
    if prof is not None:
        result["profile"] = prof
    if baseline:
        base = baseline_img_per_s(cfg, data.images, data.labels, K, device, steps=per_window * windows,
                                  warmup=warmup, workers=baseline_workers)
        result["baseline_img_per_s"] = base
        result["speedup_vs_baseline"] = img_s / base
    return result


PROFILE_STEPS = 10  # iterations under the profiler (after the timing windows)


def profile_iterations(iteration, first_step: int, n: int, device: torch.device, trace_path: str) -> dict[str, Any]:
    """Run n iterations under torch.profiler; write the Chrome trace to `trace_path` and return where
    the time goes: per iteration, the kernel launches (CUDA runtime calls) and graph launches, and
    the operators that take the most device time (CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for i in range(n):
            iteration(first_step + i)
        _sync(device)
    prof.export_chrome_trace(trace_path)
    averages = prof.key_averages()

    def self_time_us(e) -> float:  # the attribute was renamed from *_cuda_* to *_device_* in torch 2.x
        if cuda:
            return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))
        return float(e.self_cpu_time_total)

    total = sum(self_time_us(e) for e in averages) or 1.0
    top = sorted(averages, key=self_time_us, reverse=True)[:15]
    launches = sum(e.count for e in averages if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"))
    graph_launches = sum(e.count for e in averages if e.key == "cudaGraphLaunch")
    return {
        "trace": str(trace_path), "iterations": n, "time": "device" if cuda else "cpu",
        "ms_per_iteration": total / 1e3 / n,
        "kernel_launches_per_iteration": launches / n, "graph_launches_per_iteration": graph_launches / n,
        "top": [{"op": e.key, "calls_per_iteration": e.count / n, "ms_per_iteration": self_time_us(e) / 1e3 / n,
                 "fraction": self_time_us(e) / total} for e in top],
    }


class _HandWrittenDataset(torch.utils.data.Dataset):
    """Per-item conversion to float in [-1, 1], as ToTensor + Normalize would do it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = from_uint8(torch.from_numpy(np.array(self.images[i])))
        return x, int(self.labels[i])


def baseline_img_per_s(cfg: Config, images: np.ndarray, labels: np.ndarray, K: int, device: torch.device,
                       steps: int, warmup: int, workers: int) -> float:
    """The same model trained in a plain eager fp32 loop fed by a CPU DataLoader; real img/s."""
    B = cfg.train.batch
    torch.manual_seed(cfg.train.seed)
    G, D, opt_g, opt_d = _models(cfg, tuple(images.shape[1:]), K, device, fused=False)  # torch's default Adam
    loss = LOSSES.get(cfg.loss.kind)
    loader = torch.utils.data.DataLoader(_HandWrittenDataset(images, labels), batch_size=B, shuffle=True,
                                         drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    done, t_start = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                t_start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            z = torch.randn(B, cfg.model.z_dim, device=device)
            yf = torch.randint(K, (B,), device=device) if K else None
            fake, *_ = d_step(G, D, opt_d, loss, cfg.loss, x, y if K else None, z, yf)
            g_step(D, opt_g, loss, cfg.loss, fake, yf)
            done += 1
            if done >= warmup + steps:
                break
    _sync(device)
    return steps * B / (time.perf_counter() - t_start)
