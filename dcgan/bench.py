"""`dcgan bench`: training throughput of a preset, measured the way the training loop runs it.

Reports real images per second (median over timing windows after warm-up), milliseconds per D
step and per G step, warm-up time, peak memory, the model's FLOPs per image and the achieved
TFLOP/s. With `baseline=True` it also times, in the same process, the same model in a plain eager
fp32 loop fed by a CPU `DataLoader` (what a user writes by hand) and reports the ratio.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from typing import Any

import numpy as np
import torch

from .config import Config
from .data.loader import DeviceBatches
from .data.prepare import prepare
from .losses import LOSSES
from .models import build_discriminator, build_generator
from .training.ema import EMA
from .training.loop import pick_device
from .training.steps import d_step, g_step, train_step

# Dense bf16 / fp32 tensor throughput used for "fraction of peak"; unknown devices report none.
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: str):
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _models(cfg: Config, shape, num_classes, device, channels_last: bool):
    G = build_generator(cfg.model, shape, num_classes).to(device)
    D = build_discriminator(cfg.model, shape, num_classes).to(device)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    o = cfg.optim
    opt_g = torch.optim.Adam(G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
    return G, D, opt_g, opt_d


def flops_per_image(cfg: Config, shape, num_classes: int, batch: int = 8) -> float:
    """FLOPs of one training iteration (D step + G steps) per real image, counted on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    G, D, opt_g, opt_d = _models(cfg, shape, num_classes, torch.device("cpu"), False)
    x = torch.zeros(batch, *shape)
    y = torch.zeros(batch, dtype=torch.int64) if num_classes else None
    gen = torch.Generator().manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        train_step(G, D, opt_g, opt_d, LOSSES.get(cfg.loss.kind), cfg.loss, x, y, gen,
                   cfg.model.z_dim, num_classes, cfg.optim.g_steps)
    return counter.get_total_flops() / batch


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_device_memory_bytes": torch.cuda.max_memory_allocated(device)}
    return {"peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def bench(cfg: Config, *, steps: int = 200, warmup: int = 20, windows: int = 5, amp: str = "none",
          channels_last: bool = False, baseline: bool = False, baseline_workers: int = 2,
          data_dir: str | None = None, log=None) -> dict[str, Any]:
    device = pick_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    torch.backends.cudnn.benchmark = True
    data = prepare(cfg.data, data_dir, log=log)
    K = data.num_classes if cfg.model.conditional else 0
    B = cfg.train.batch
    loss = LOSSES.get(cfg.loss.kind)
    batches = DeviceBatches(data.images, data.labels, B, cfg.train.seed, device)
    G, D, opt_g, opt_d = _models(cfg, data.shape, K, device, channels_last)
    ema = EMA(G, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    gen = torch.Generator(device).manual_seed(cfg.train.seed)

    def iteration(step: int) -> torch.Tensor:
        x, y = batches.get(step)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            stats = train_step(G, D, opt_g, opt_d, loss, cfg.loss, x, y, gen, cfg.model.z_dim, K, cfg.optim.g_steps)
        if ema is not None:
            ema.update(G, step)
        return stats

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
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

    # D step and G step timed apart (synchronising around each, so slightly pessimistic)
    d_ms, g_ms = [], []
    for _ in range(max(5, per_window // 2)):
        x, y = batches.get(step)
        step += 1
        z = torch.randn(B, cfg.model.z_dim, device=device, generator=gen)
        yf = torch.randint(K, (B,), device=device, generator=gen) if K else None
        _sync(device)
        t = time.perf_counter()
        with _autocast(device, amp):
            fake, *_ = d_step(G, D, opt_d, loss, cfg.loss, x, y if K else None, z, yf)
        _sync(device)
        t1 = time.perf_counter()
        with _autocast(device, amp):
            g_step(D, opt_g, loss, cfg.loss, fake, yf)
        _sync(device)
        d_ms.append((t1 - t) * 1e3)
        g_ms.append((time.perf_counter() - t1) * 1e3)

    img_s = statistics.median(rates)
    fpi = flops_per_image(cfg, data.shape, K)
    achieved = img_s * fpi / 1e12
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    peak_tflops = peak["bf16" if amp == "bf16" else "fp32"] if peak else None
    result = {
        "device": name, "batch": B, "amp": amp, "channels_last": channels_last, "cuda_graphs": False,
        "img_per_s": img_s, "img_per_s_windows": rates, "steps_timed": per_window * windows,
        "ms_per_d_step": statistics.median(d_ms), "ms_per_g_step": statistics.median(g_ms),
        "warmup_s": warmup_s, "capture_s": None,
        "flops_per_image": fpi, "achieved_tflops": achieved,
        "peak_tflops": peak_tflops, "fraction_of_peak": achieved / peak_tflops if peak_tflops else None,
        **_peak_memory(device),
    }
    if baseline:
        base = baseline_img_per_s(cfg, data.images, data.labels, K, device, steps=per_window * windows,
                                  warmup=warmup, workers=baseline_workers)
        result["baseline_img_per_s"] = base
        result["speedup_vs_baseline"] = img_s / base
    return result


class _HandWrittenDataset(torch.utils.data.Dataset):
    """Per-item conversion to float in [-1, 1], as ToTensor + Normalize would do it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32)) / 127.5 - 1.0
        return x, int(self.labels[i])


def baseline_img_per_s(cfg: Config, images: np.ndarray, labels: np.ndarray, K: int, device: torch.device,
                       steps: int, warmup: int, workers: int) -> float:
    """The same model trained in a plain eager fp32 loop fed by a CPU DataLoader; real img/s."""
    B = cfg.train.batch
    torch.manual_seed(cfg.train.seed)
    G, D, opt_g, opt_d = _models(cfg, tuple(images.shape[1:]), K, device, False)
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
