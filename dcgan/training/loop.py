"""The training loop. Read this file first.

    data (on the device) ──batch──▶ D step ─▶ G step(s) ─▶ EMA ─▶ every tick: metrics line + monitor
                                                               └▶ every checkpoint_every: checkpoint

The data is images (uint8 (N, C, H, W), batches in [-1, 1]) or 2-D points (float32 (N, 2), the toy
GANs); this loop is the same for both. What differs is chosen once from the data: the models'
shapes, and the tick monitor (training/monitor.py): an image grid, or for points D's accuracy,
mode coverage and a scatter over D's decision surface (toy/monitor.py).

Everything a run needs to continue exactly is in its checkpoint: models, EMA, optimizers, step,
every RNG state. The data order is a function of (seed, step) (see data/loader.py), so a run
resumed from step s draws exactly the batches an uninterrupted run draws.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import checkpoint
from ..config import Config
from ..data.loader import make_batches
from ..data.prepare import prepare
from ..errors import UserError
from ..losses import LOSSES
from ..models import build_discriminator, build_generator
from . import distributed as dist
from .distributed import Ranks
from .ema import EMA
from .evaluation import Evaluator
from .health import FiniteGuard, Health, TrainingDiverged, all_finite
from .monitor import make_monitor
from .run import MetricsLog, check_resume_config, check_run, create_run
from .steps import TrainStep
from .tensorboard import TensorBoardLog, summary_writer_class


class Stopped(Exception):
    """Training stopped cleanly on a signal after writing a checkpoint; exit code 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.exit_code = 128 + signum


def pick_device(name: str) -> torch.device:
    """The device train.device names (auto: CUDA when there is one); exit 2 when it is not here."""
    return dist.init(Ranks(), name)


# Test-only fault injection: a callable (step, x) -> x applied to each real batch (e.g. to poison
# one with NaN). None in normal use.
FAULT_HOOK: Callable[[int, torch.Tensor], torch.Tensor] | None = None


def train(cfg: Config, run_dir: Path, *, resume: bool = False, data_dir: str | None = None,
          log: Callable[[str], None] | None = None, progress: Any = None) -> dict[str, Any]:
    """Train (or continue) the run in `run_dir` to cfg.train.steps steps. Returns a summary.

    `log` takes the messages (default: stderr); `progress` (dcgan.progress.TrainProgress, optional)
    gets start(step, total), tick(record, line) at every tick instead of log(line), and close().

    Results are bitwise reproducible for the same seed, device and number of CPU threads
    (train.num_threads; the caller's thread setting is restored afterwards).

    Under torchrun (WORLD_SIZE > 1) every process calls this; see training/distributed.py for what
    each rank does. Only rank 0 logs, shows progress and writes the run folder."""
    threads = torch.get_num_threads()
    ranks = dist.launched()
    if not ranks.main:
        log, progress = (lambda msg: None), None
    try:
        return _train(cfg, run_dir, ranks, resume=resume, data_dir=data_dir, log=log, progress=progress)
    finally:
        torch.set_num_threads(threads)
        if progress is not None:
            progress.close()
        dist.shutdown(ranks)


def _train(cfg: Config, run_dir: Path, ranks: Ranks, *, resume: bool, data_dir: str | None,
           log: Callable[[str], None] | None, progress: Any = None) -> dict[str, Any]:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    t_enter = time.perf_counter()
    t, o = cfg.train, cfg.optim
    run_dir = Path(run_dir)
    device = dist.init(ranks, t.device)
    B = dist.per_rank_batch(t.batch, ranks) * ranks.world  # the global batch (checked to split evenly)
    found = None
    if ranks.main:  # the run folder is rank 0's; the others get the checkpoint from it
        found = checkpoint.latest(run_dir) if resume else None
        if found:
            check_resume_config(run_dir, found[1]["config"], cfg)
        check_run(run_dir, cfg, resume)
    found = dist.from_main(found, ranks)

    tb_writer = summary_writer_class() if t.tensorboard and ranks.main else None  # missing extra: exit 2 before any file is written
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic
    random.seed(t.seed)
    np.random.seed(t.seed % 2**32)
    torch.manual_seed(t.seed)

    # ---- data and models: shapes come from the data ------------------------------------------
    if ranks.main:  # rank 0 builds the cache entry (when missing) while the others wait, then they read it
        data = prepare(cfg.data, data_dir, log=log)
    dist.barrier(ranks)
    if not ranks.main:
        data = prepare(cfg.data, data_dir)
    if cfg.model.conditional and data.num_classes == 0:
        raise UserError(f"model.conditional is true but {cfg.data.dataset} has no labels; set model.conditional=false")
    num_classes = data.num_classes if cfg.model.conditional else 0
    # this rank's slice of every global batch: from device memory, or streamed from pinned host memory
    batches = make_batches(data, B // ranks.world, t.seed, device, t.placement, t.prefetch,
                           ranks.rank, ranks.world, log)
    # G_train / D_train: what the steps call (DistributedDataParallel wrappers under torchrun);
    # G / D: the models themselves (optimizers, EMA, checkpoints, grids)
    fast = fast_path(cfg, device, data.kind, ranks)
    G_train = dist.wrap(build_generator(cfg.model, data.shape, num_classes).to(device, memory_format=fast.memory_format),
                        ranks, device, t.sync_bn)
    D_train = dist.wrap(build_discriminator(cfg.model, data.shape, num_classes).to(device, memory_format=fast.memory_format),
                        ranks, device, t.sync_bn)
    G, D = dist.unwrap(G_train), dist.unwrap(D_train)
    ema = EMA(G, t.ema_decay) if t.ema_decay > 0 else None
    # fused Adam: one kernel per step, and it skips an update on the device when FiniteGuard finds
    # a non-finite gradient; capturable (its step count on the device) when the step is a CUDA graph
    adam = dict(betas=(o.beta1, o.beta2), fused=True, capturable=fast.graphs)
    opt_g = FiniteGuard(torch.optim.Adam(G.parameters(), lr=o.lr_g, **adam))
    opt_d = FiniteGuard(torch.optim.Adam(D.parameters(), lr=o.lr_d, **adam))
    loss = LOSSES.get(cfg.loss.kind)
    # noise and fake labels of the training steps; each rank has its own stream
    gen = torch.Generator(device).manual_seed(dist.noise_seed(t.seed, ranks.rank))
    health = Health([opt_g, opt_d], [G, D], t.max_bad_steps, t.max_rollbacks)
    step_fn = TrainStep(fast.step_module(G_train), fast.step_module(D_train), opt_g, opt_d, loss, cfg.loss, z_dim=cfg.model.z_dim, num_classes=num_classes,
                        g_steps=o.g_steps, gen=gen, health=health, dtype=fast.dtype,
                        channels_last=fast.memory_format == torch.channels_last, graphs=fast.graphs,
                        warn=lambda message: warn(message))
    check_every = 1 if device.type == "cpu" else HEALTH_CHECK_EVERY  # reading the health counters is a sync
    evaluator = Evaluator(cfg, data.kind, log) if cfg.eval.every_kimg > 0 and ranks.main else None
    if ranks.main:
        create_run(run_dir, cfg)  # only now: a setup that fails above leaves no run folder behind

    step, images_seen, elapsed = 0, 0, 0.0
    tick_sums = torch.zeros(4, device=device)  # d_loss, g_loss, D(x), D(G(z)) summed since the last tick
    tick_steps = 0

    def restore(state: dict[str, Any], rollback: bool = False) -> None:
        """Put every piece of training state back as a checkpoint holds it (resume and rollback;
        a rollback keeps the health counters, which count what happened since)."""
        nonlocal step, images_seen, elapsed, tick_sums, tick_steps
        G.load_state_dict(state["models"]["G"])
        D.load_state_dict(state["models"]["D"])
        if ema is not None:
            ema.model.load_state_dict(state["models"]["G_ema"])
        opt_g.load_state_dict(state["optim"]["G"])
        opt_d.load_state_dict(state["optim"]["D"])
        step, images_seen, elapsed = state["step"], state["images_seen"], state["elapsed"]
        tick_sums = state["tick"]["sums"].to(device)
        tick_steps = state["tick"]["steps"]
        set_rng_state(state["rng"], gen)
        noise = state["rng"].get("noise_ranks", [state["rng"]["noise"]])
        if len(noise) == ranks.world:  # the same number of processes: each continues its own noise
            gen.set_state(noise[ranks.rank])
        elif not ranks.main:  # another number: rank 0 continues the saved noise, the others start afresh
            gen.manual_seed(dist.noise_seed(t.seed, ranks.rank, step))
        if "health" in state and not rollback:
            health.load(state["health"])
        if evaluator is not None and "eval" in state and not rollback:
            evaluator.load(state["eval"])
        step_fn.invalidate()  # new optimizer state tensors (and learning rates): capture the graph again

    if found:
        restore(found[1])
        log(f"resumed {run_dir} from {found[0].name} (step {step})")
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=step if resume else None) if ranks.main else None
    tb = TensorBoardLog(run_dir, step if resume else None, tb_writer) if tb_writer is not None else None

    def training_state(noise_ranks: list | None = None) -> dict[str, Any]:
        return {
            "config": cfg.to_dict(),
            "data": {"dataset": cfg.data.dataset, "shape": list(data.shape), "num_classes": num_classes,
                     "class_names": data.meta["class_names"] if num_classes else [],
                     "content_hash": data.meta["content_hash"]},
            "step": step, "images_seen": images_seen, "elapsed": elapsed + (time.perf_counter() - t_start),
            "models": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": ema.model.state_dict() if ema else None},
            "optim": {"G": opt_g.state_dict(), "D": opt_d.state_dict()},
            "tick": {"sums": tick_sums.cpu(), "steps": tick_steps},
            "rng": {**get_rng_state(gen), **({"noise_ranks": noise_ranks} if noise_ranks else {})},
            "health": health.state(),
            "eval": evaluator.state() if evaluator else {},
        }

    def save_checkpoint() -> None:
        """Every rank calls this at the same step; rank 0 writes."""
        models = [G, D, *([ema.model] if ema else [])]
        dist.average_buffers(models, ranks)  # batch-norm running statistics of all ranks' data
        if not all_finite(*models):  # the same answer on every rank: weights are equal, buffers averaged
            raise _NonFinite()  # never write a non-finite model
        noise_ranks = dist.gather(gen.get_state(), ranks) if ranks.distributed else None
        if ranks.main:
            checkpoint.save(training_state(noise_ranks), checkpoint.checkpoint_dir(run_dir) / checkpoint.name_for(step))
            checkpoint.prune(run_dir, t.keep_checkpoints)

    def warn(message: str) -> None:
        if ranks.main:
            metrics.write({"kind": "warning", "step": step, "message": message, "time": time.time()})
        log(f"warning: {message}")

    def roll_back() -> None:
        """Return to the newest good checkpoint with lower learning rates (or stop, past the limit)."""
        health.rolled_back()
        good = dist.from_main(checkpoint.latest(run_dir) if ranks.main else None, ranks)
        if good is None:
            raise TrainingDiverged("training produced non-finite values before its first checkpoint; "
                                   "lower the learning rates (optim.lr_g / optim.lr_d) or check the data")
        bad_step = step + 1  # the step being taken (steps count from 1, as in metrics.jsonl)
        restore(good[1], rollback=True)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] *= t.rollback_lr_factor
        step_fn.invalidate()
        if ranks.main:
            metrics.drop_after(step)
        if tb is not None:  # continue the curves from the checkpoint's step (TensorBoard drops the rest)
            tb.reopen(step)
        warn(f"non-finite values at step {bad_step}: rolled back to step {step} (rollback {health.rollbacks} of "
             f"{t.max_rollbacks}), learning rates x{t.rollback_lr_factor}")

    # the tick hook, from the kind of data: image grids, or the toy monitors for 2-D points
    monitor = make_monitor(cfg, data, num_classes, run_dir, device) if ranks.main else None

    if step >= t.steps:
        log(f"{run_dir} is already at step {step} of {t.steps}; raise --steps to train further")
    else:
        log(f"training {cfg.data.dataset} {data.shape} ({len(data)} {data.kind}, {num_classes or 'no'} classes) on {device}, "
            f"steps {step} → {t.steps}, batch {t.batch}, {batches.placement} data, {fast.describe()}, run {run_dir}")
        if ranks.distributed:
            log(f"{ranks.world} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}): effective batch {B} = "
                f"{ranks.world} x {B // ranks.world} per process; train.batch is the global batch, so the learning "
                f"rates apply unchanged (lr_g {o.lr_g}, lr_d {o.lr_d}); batch norm: "
                f"{'SyncBatchNorm' if t.sync_bn else 'per-process statistics'}")

    if progress is not None:
        progress.start(step, t.steps)
    K = num_classes
    t_start = time.perf_counter()
    tick_t, tick_images = t_start, 0
    ckpt_t = t_start  # the last checkpoint written in this session (train.checkpoint_every = 0: by time)
    target_hit = target_reached = stopping = ckpt_timed = False
    with StopSignals() as stop, batches:
        while step < t.steps and not target_reached:
            x, y = batches.get(step)  # (B, C, H, W) in [-1, 1] or (B, 2) points, (B,)
            if FAULT_HOOK is not None:
                x = FAULT_HOOK(step, x)
            # a D step, then g_steps G steps; noise and fake labels drawn from `gen`; a step with a
            # non-finite gradient is skipped on the device (training/health.py)
            stats = step_fn(x, y)
            due = (step + 1) % check_every == 0 or (step + 1) % t.tick_every == 0 or step + 1 == t.steps
            if due and health.check():  # too many updates skipped in a row
                roll_back()
                tick_t, tick_images = time.perf_counter(), 0
                continue
            if ema is not None:
                ema.update(G, step)
            step += 1
            images_seen += B
            tick_images += B
            tick_sums += stats.nan_to_num(0.0)  # d_loss, g_loss, D(x), D(G(z)); a skipped step adds nothing
            tick_steps += 1

            if step % t.tick_every == 0 or step == t.steps:
                d_l, g_l, dx, dgz = (dist.mean_(tick_sums, ranks) / tick_steps).tolist()  # the only device sync of a tick
                now = time.perf_counter()
                record = {"kind": "train", "step": step, "images_seen": images_seen,
                          "d_loss": d_l, "g_loss": g_l, "d_real": dx, "d_fake": dgz,
                          "img_per_s": tick_images / max(now - tick_t, 1e-9),
                          "elapsed_s": elapsed + now - t_start, "time": time.time(),
                          "skipped_steps": health.skipped_total, "rollbacks": health.rollbacks}
                extra = monitor.tick(step, G, ema.model if ema else G, D) if ranks.main else {}  # grid / scatter, extra metrics
                record.update(extra)
                if ranks.main:
                    metrics.write(record)
                line = (f"step {step}/{t.steps}  d_loss {d_l:.3f}  g_loss {g_l:.3f}  D(x) {dx:.3f}  "
                        f"D(G(z)) {dgz:.3f}  {record['img_per_s']:.0f} img/s" + (f"  {monitor.summary(extra)}" if extra else ""))
                if progress is not None:
                    progress.tick(record, line)  # a bar on a terminal, else this line
                else:
                    log(line)
                if tb is not None:
                    tb.tick(record)
                for message in health.tick_warnings(dx, dgz):
                    warn(message)
                tick_sums.zero_()
                tick_steps, tick_t, tick_images = 0, time.perf_counter(), 0

            if evaluator is not None and evaluator.due(images_seen):
                result = evaluator.run(ema.model if ema else G, step, images_seen, elapsed + time.perf_counter() - t_start)
                metrics.write(result)
                if tb is not None:
                    tb.eval(result)
                for message in evaluator.warnings(result, num_classes):
                    warn(message)
                if evaluator.is_best(result) and cfg.eval.keep_best and all_finite(G, D):
                    checkpoint.save(training_state(), checkpoint.checkpoint_dir(run_dir) / checkpoint.BEST)
                target_hit = evaluator.reached_target(result)
                if target_hit:
                    log(f"target FID {cfg.eval.target_fid} reached at step {step}: FID {result['fid']:.3f}, "
                        f"{result['elapsed_s']:.1f} s since the run started")
                tick_t, tick_images = time.perf_counter(), 0  # evaluation time is not training throughput

            # stop here? on a signal, or at the target FID; under torchrun every rank must stop at the same
            # step, so they agree every AGREE_EVERY steps (rank 0 alone evaluates, a signal may reach one rank)
            # and a checkpoint by time is due on every rank at once, so they agree on that too
            ckpt_timed = not t.checkpoint_every and time.perf_counter() - ckpt_t >= 60.0 * t.checkpoint_minutes
            if not ranks.distributed:
                stopping, target_reached = bool(stop.signum), target_hit
            elif step % AGREE_EVERY == 0 or step % t.tick_every == 0 or step == t.steps:
                stopping, target_reached, ckpt_timed = dist.agree_any([bool(stop.signum), target_hit, ckpt_timed],
                                                                      ranks, device)
            else:
                ckpt_timed = False

            ckpt_stepped = t.checkpoint_every and step % t.checkpoint_every == 0
            if ckpt_stepped or ckpt_timed or step == t.steps or stopping or target_reached:
                try:
                    save_checkpoint()
                except _NonFinite:
                    roll_back()
                    continue
                ckpt_t = time.perf_counter()
            if stopping:
                signum = stop.signum or signal.SIGTERM  # a rank the signal has not reached yet stops with the others
                log(f"stopped by signal {signum} at step {step}; checkpoint written, continue with --resume")
                raise Stopped(signum)
    if monitor is not None:
        monitor.finish()  # e.g. progress.gif for point data
    if tb is not None:
        tb.close()
    if progress is not None:
        progress.close()

    health.check()  # skipped_steps up to date when the run stopped between checks
    summary = {"run": str(run_dir), "step": step, "images_seen": images_seen,
               "elapsed_s": elapsed + time.perf_counter() - t_start,
               "setup_s": t_start - t_enter,  # this session's data preparation, model building, resume
               "skipped_steps": health.skipped_total, "rollbacks": health.rollbacks}
    if evaluator is not None:
        summary.update(evaluator.summary())
    if ranks.distributed:  # each process's digest of its own weights: equal when the ranks stayed in step
        summary.update(processes=ranks.world, weights_sha256=dist.gather(dist.weights_digest(G, D), ranks))
    return summary


# Under torchrun, the ranks agree on stopping (a signal, a reached target) every this many steps.
AGREE_EVERY = 50
# On a GPU, the health counters (skipped steps) are read every this many steps (each read is a sync).
HEALTH_CHECK_EVERY = 25


class FastPath:
    """What the training step uses on this device: autocast dtype, memory format, CUDA graphs,
    torch.compile."""

    def __init__(self, dtype: torch.dtype | None, memory_format: torch.memory_format, graphs: bool,
                 compile: bool = False):
        self.dtype, self.memory_format, self.graphs, self.compile = dtype, memory_format, graphs, compile

    def step_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """What the training step calls for `module`: itself, or its torch.compile wrapper (which
        shares its weights, so optimizers, EMA and checkpoints keep using the module itself)."""
        # dynamic=False: one static graph per batch shape (a dynamic batch dimension measured slower)
        return torch.compile(module, dynamic=False) if self.compile else module

    def describe(self) -> str:
        parts = ["bf16 autocast" if self.dtype == torch.bfloat16 else "fp32"]
        if self.memory_format == torch.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("torch.compile")
        if self.graphs:
            parts.append("CUDA graph")
        return " + ".join(parts)


def fast_path(cfg: Config, device: torch.device, kind: str, ranks: Ranks) -> FastPath:
    """train.precision / channels_last / cuda_graphs resolved for this device: the CUDA fast path, or
    eager fp32 on the CPU (bf16 there only when asked: it is slower on most CPUs, but tests it)."""
    t, cuda = cfg.train, device.type == "cuda"
    dtype = torch.bfloat16 if t.precision == "bf16" or (t.precision == "auto" and cuda) else None
    channels_last = cuda and t.channels_last and kind == "images"
    # DDP's gradient all-reduce is not captured: a distributed run steps eagerly. A replay runs the
    # kernels the eager step runs, so a deterministic run keeps the graph (tests/test_fast_path.py)
    graphs = cuda and t.cuda_graphs and not ranks.distributed
    return FastPath(dtype, torch.channels_last if channels_last else torch.preserve_format, graphs, t.compile)


class _NonFinite(Exception):
    """A model's weights or buffers went non-finite; handled by a rollback in the loop."""


class StopSignals:
    """On the first SIGINT/SIGTERM, ask the loop to finish its step, checkpoint and stop;
    on a second one, exit at once (checkpoints are written atomically, so none is torn)."""

    def __init__(self):
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum:
            os._exit(128 + signum)
        self.signum = signum

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        return False


# ---- RNG state, stored as tensors so checkpoints load with weights_only=True -------------------

def get_rng_state(gen: torch.Generator) -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": torch.tensor(mt, dtype=torch.int64), "python_version": version, "python_gauss": gauss,
        "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
        "numpy_gauss": (int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "noise": gen.get_state(),
    }


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gen.set_state(state["noise"])
