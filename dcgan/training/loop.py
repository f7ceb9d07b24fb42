"""The training loop. Read this file first.

    data (on the device) ──batch──▶ Trainer.train_step: D step, G step(s), EMA ─▶ every tick: metrics line + monitor
                                                                                 └▶ checkpoint (by time or every N steps)

The data is images (uint8 (N, C, H, W), batches in [-1, 1]) or 2-D points (float32 (N, 2), the toy
GANs); this loop is the same for both. What differs is chosen once from the data: the models'
shapes, and the tick monitor (training/monitor.py): an image grid, or for points D's accuracy,
mode coverage and a scatter over D's decision surface (toy/monitor.py).

What training changes lives in the Trainer (training/trainer.py), and a checkpoint holds all of it:
models, EMA, optimizers, step, every RNG state. The data order is a function of (seed, step) (see
data/loader.py), so a run resumed from step s draws exactly the batches an uninterrupted run draws.
Under torchrun every process runs this loop; `ranks` (training/distributed.py) holds what they
share, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import checkpoint
from ..config import Config
from ..data.loader import make_batches
from ..data.prepare import prepare
from ..errors import UserError
from ..progress import Heartbeat
from . import distributed as dist
from .evaluation import Evaluator
from .monitor import make_monitor
from ..files import run_info
from .run import RunRecord, check_resume_config, check_run, create_run, holds_run
from .tensorboard import summary_writer_class
from .trainer import NonFinite, Trainer, seed_everything

# Under torchrun, the ranks agree on stopping (a signal, a reached target) every this many steps.
AGREE_EVERY = 50


class Stopped(Exception):
    """Training stopped cleanly on a signal after writing a checkpoint; exit code 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.exit_code = 128 + signum


def train(cfg: Config, run_dir: Path, *, resume: bool = False, data_dir: str | None = None,
          log: Callable[[str], None] | None = None, progress: Any = None,
          wrap_batches: Callable[[Any], Any] | None = None, preset: str | None = None) -> dict[str, Any]:
    """Train (or continue) the run in `run_dir` to cfg.train.steps steps. Returns a summary.

    `log` takes the messages (default: stderr); `progress` (dcgan.progress.TrainProgress, optional)
    gets start(step, total), tick(record, line) at every tick instead of log(line), and close().
    `wrap_batches` (tests) wraps the batch source: get(step) -> (x, y) (e.g. to record or poison batches).
    `preset`: what the config was made from (training/run.py preset_label), recorded in run.json and
    in every checkpoint; a resumed run keeps the one it recorded.

    Results are bitwise reproducible for the same seed, device and number of CPU threads
    (train.num_threads; the caller's thread setting is restored afterwards).

    Under torchrun (WORLD_SIZE > 1) every process calls this; see training/distributed.py for what
    each rank does. Only rank 0 logs, shows progress and writes the run folder."""
    threads = torch.get_num_threads()
    ranks = dist.launched()
    if not ranks.main:
        log, progress = (lambda msg: None), None
    log = log or (lambda msg: print(msg, file=sys.stderr))
    try:
        return _train(cfg, Path(run_dir), ranks, resume, data_dir, log, progress, wrap_batches, preset)
    finally:
        torch.set_num_threads(threads)
        if progress is not None:
            progress.close()
        ranks.shutdown()


def _train(cfg: Config, run_dir: Path, ranks: dist.Ranks, resume: bool, data_dir: str | None,
           log: Callable[[str], None], progress: Any, wrap_batches: Callable[[Any], Any] | None,
           preset: str | None = None) -> dict[str, Any]:
    t = cfg.train
    t_enter = time.perf_counter()

    # ---- the device, the run folder and the checkpoint to resume from ----------------------------
    device = ranks.init(t.device)
    ranks.batch_per_rank(t.batch)  # the global batch must split over the processes: say so before any work
    found = None
    if ranks.main:  # the run folder is rank 0's; the others get the checkpoint from it
        found = latest_for_resume(run_dir, cfg) if resume else None
        check_run(run_dir, cfg, resume)
    found = ranks.from_main(found)
    tb_writer = summary_writer_class() if t.tensorboard and ranks.main else None  # missing extra: exit 2 now
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic
    seed_everything(t.seed)

    # ---- data and models: shapes come from the data ------------------------------------------
    data = prepare(cfg.data, data_dir, log=log) if ranks.main else None  # rank 0 builds a missing cache entry ...
    ranks.barrier()
    data = data or prepare(cfg.data, data_dir)  # ... and the others read it
    if cfg.model.conditional and data.num_classes == 0:
        raise UserError(f"model.conditional is true but {cfg.data.dataset} has no labels; set model.conditional=false")
    # this rank's slice of every global batch: from device memory, or streamed from pinned host memory
    batches = make_batches(data, ranks.batch_per_rank(t.batch), t.seed, device, t.placement, t.prefetch,
                           ranks.rank, ranks.world, log)
    if wrap_batches is not None:
        batches = wrap_batches(batches)
    trainer = Trainer.build(cfg, data, device, ranks)
    evaluator = Evaluator(cfg, data.kind, log) if cfg.eval.every_kimg > 0 and ranks.main else None
    if found:  # the preset the run recorded at its creation wins over how this session names it
        preset = run_info(run_dir).get("preset") or found[1].get("preset") or preset
    trainer.preset = preset
    if ranks.main:
        create_run(run_dir, cfg, preset)  # only now: a setup that fails above leaves no run folder behind
    if found:
        resume_from(found, trainer, evaluator, run_dir, log)
    resume_step = trainer.step if resume else None
    record = RunRecord(run_dir if ranks.main else None, resume_step, tb_writer, log, progress)
    # the tick hook, from the kind of data: image grids, or the toy monitors for 2-D points
    monitor = make_monitor(cfg, data, trainer.num_classes, run_dir, device) if ranks.main else None

    announce(trainer, data, batches.placement, device, ranks, run_dir, log)
    if progress is not None:
        progress.start(trainer.step, t.steps)

    # ---- the loop ------------------------------------------------------------------------------
    trainer.start_clock()
    t_start = tick_t = ckpt_t = time.perf_counter()  # ckpt_t: the last checkpoint of this session
    # img/s and ETA every train.progress_seconds between the ticks, from the clock and the step counter
    heartbeat = Heartbeat(t.progress_seconds, t.steps, trainer.batch)
    tick_images = 0
    target_hit = target_reached = stopping = False
    with StopSignals() as stop, batches:
        while trainer.step < t.steps and not target_reached:
            # a D step, then g_steps G steps on the batch of this step (B, C, H, W) in [-1, 1] or (B, 2);
            # a step with a non-finite gradient is skipped on the device (training/health.py)
            x, y = batches.get(trainer.step)
            ok = trainer.train_step(x, y)
            for message in trainer.warnings:
                record.warn(trainer.step, message)
            trainer.warnings.clear()
            if not ok:  # too many updates skipped in a row: back to the newest good checkpoint
                roll_back(trainer, run_dir, record)
                tick_t, tick_images = time.perf_counter(), 0
                heartbeat.restart(trainer.step)
                continue
            tick_images += trainer.batch
            if heartbeat.due(trainer.step):
                record.beat(*heartbeat.beat(trainer.step, trainer.images_seen))

            # -- tick: a metrics line, the monitor (grid or toy measures), warnings
            if trainer.step % t.tick_every == 0 or trainer.step == t.steps:
                d_l, g_l, dx, dgz = trainer.tick_means()
                now = time.perf_counter()
                line = {"kind": "train", "step": trainer.step, "images_seen": trainer.images_seen,
                        "d_loss": d_l, "g_loss": g_l, "d_real": dx, "d_fake": dgz,
                        "img_per_s": tick_images / max(now - tick_t, 1e-9), "elapsed_s": trainer.elapsed_s(),
                        "time": time.time(), "skipped_steps": trainer.health.skipped_total,
                        "rollbacks": trainer.health.rollbacks}
                extra = monitor.tick(trainer.step, trainer.G, trainer.G_eval, trainer.D) if monitor else {}
                line.update(extra)
                text = (f"step {trainer.step}/{t.steps}  d_loss {d_l:.3f}  g_loss {g_l:.3f}  D(x) {dx:.3f}  "
                        f"D(G(z)) {dgz:.3f}  {line['img_per_s']:.0f} img/s" + (f"  {monitor.summary(extra)}" if extra else ""))
                record.tick(line, text)
                for message in trainer.health.tick_warnings(dx, dgz):
                    record.warn(trainer.step, message)
                tick_t, tick_images = time.perf_counter(), 0

            # -- evaluation (rank 0): FID of the EMA generator, the best checkpoint, the target
            if evaluator is not None and evaluator.due(trainer.images_seen):
                result = evaluator.run(trainer.G_eval, trainer.step, trainer.images_seen, trainer.elapsed_s())
                record.eval(result)
                for message in evaluator.warnings(result, trainer.num_classes):
                    record.warn(trainer.step, message)
                if evaluator.is_best(result) and cfg.eval.keep_best:
                    trainer.write(checkpoint.checkpoint_dir(run_dir) / checkpoint.BEST, eval=evaluator.state())
                target_hit = evaluator.reached_target(result)
                if target_hit:
                    log(f"target FID {cfg.eval.target_fid} reached at step {trainer.step}: FID {result['fid']:.3f}, "
                        f"{result['elapsed_s']:.1f} s since the run started")
                tick_t, tick_images = time.perf_counter(), 0  # evaluation time is not training throughput
                heartbeat.restart(trainer.step)

            # -- stop here? on a signal, or at the target FID; and is a checkpoint by time due? Under
            # torchrun every rank must do the same at the same step, so they agree every AGREE_EVERY steps
            ckpt_timed = not t.checkpoint_every and time.perf_counter() - ckpt_t >= 60.0 * t.checkpoint_minutes
            if not ranks.distributed:
                stopping, target_reached = bool(stop.signum), target_hit
            elif trainer.step % AGREE_EVERY == 0 or trainer.step % t.tick_every == 0 or trainer.step == t.steps:
                stopping, target_reached, ckpt_timed = ranks.agree_any([bool(stop.signum), target_hit, ckpt_timed], device)
            else:
                ckpt_timed = False

            # -- checkpoint
            ckpt_stepped = t.checkpoint_every and trainer.step % t.checkpoint_every == 0
            if ckpt_stepped or ckpt_timed or trainer.step == t.steps or stopping or target_reached:
                try:
                    trainer.save(run_dir, t.keep_checkpoints, eval=evaluator.state() if evaluator else {})
                except NonFinite:
                    roll_back(trainer, run_dir, record)
                    heartbeat.restart(trainer.step)
                    continue
                ckpt_t = time.perf_counter()
            if stopping:
                signum = stop.signum or signal.SIGTERM  # a rank the signal has not reached yet stops with the others
                log(f"stopped by signal {signum} at step {trainer.step}; checkpoint written, continue with --resume")
                raise Stopped(signum)

    # ---- the end -------------------------------------------------------------------------------
    if monitor is not None:
        monitor.finish()  # e.g. progress.gif for point data
    record.close()
    trainer.health.check()  # skipped_steps up to date when the run stopped between checks
    summary = {"run": str(run_dir), "step": trainer.step, "images_seen": trainer.images_seen,
               "elapsed_s": trainer.elapsed_s(),
               "setup_s": t_start - t_enter,  # this session's data preparation, model building, resume
               "skipped_steps": trainer.health.skipped_total, "rollbacks": trainer.health.rollbacks}
    if evaluator is not None:
        summary.update(evaluator.summary())
    if ranks.distributed:  # each process's digest of its own weights: equal when the ranks stayed in step
        summary.update(processes=ranks.world, weights_sha256=ranks.gather(dist.weights_digest(trainer.G, trainer.D)))
    return summary


def resume_from(found: tuple[Path, dict[str, Any]], trainer: Trainer, evaluator: Evaluator | None, run_dir: Path,
                log: Callable[[str], None]) -> None:
    """Load the checkpoint `found` (path, state) into the trainer and the evaluator; say from where, and
    that a changed train.steps stretches a decaying learning-rate schedule."""
    path, state = found
    trainer.load_state_dict(state)
    if evaluator is not None:
        evaluator.load(state.get("eval", {}))
    log(f"resumed {run_dir} from {path.name} (step {trainer.step})")
    t, o = trainer.cfg.train, trainer.cfg.optim
    saved_steps = state["config"]["train"]["steps"]
    if o.lr_decay > 0 and saved_steps != t.steps:
        log(f"note: optim.lr_decay={o.lr_decay} follows train.steps, now {t.steps} (was {saved_steps}): the learning "
            f"rates continue on the schedule of the new length, so this run will not equal one trained to "
            f"{t.steps} steps without a stop")


def announce(trainer: Trainer, data: Any, placement: str, device: torch.device, ranks: dist.Ranks, run_dir: Path,
             log: Callable[[str], None]) -> None:
    """The line that says what is about to train, where and how (and, under torchrun, how the batch splits)."""
    cfg, t, o = trainer.cfg, trainer.cfg.train, trainer.cfg.optim
    if trainer.step >= t.steps:
        log(f"{run_dir} is already at step {trainer.step} of {t.steps}; raise --steps to train further")
        return
    log(f"training {cfg.data.dataset} {data.shape} ({len(data)} {data.kind}, {trainer.num_classes or 'no'} classes) "
        f"on {device}, steps {trainer.step} → {t.steps}, batch {t.batch}, {placement} data, "
        f"{trainer.fast.describe()}, run {run_dir}")
    if ranks.distributed:
        log(f"{ranks.world} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}): effective batch {t.batch} = "
            f"{ranks.world} x {t.batch // ranks.world} per process; train.batch is the global batch, so the learning "
            f"rates apply unchanged (lr_g {o.lr_g}, lr_d {o.lr_d}); batch norm: "
            f"{'SyncBatchNorm' if t.sync_bn else 'per-process statistics'}")


def latest_for_resume(run_dir: Path, cfg: Config):
    """The newest readable *complete* checkpoint of the run (path, state), checked against the config;
    None when the run has none yet. Refused (exit 2) before anything is written: a run whose
    checkpoints are all unreadable (resuming it from step 0 would overwrite its record), and a run
    whose complete checkpoint is unreadable and whose readable ones are slim (checkpoint.py): those
    hold no discriminator, optimizer or RNG state, so no exact resume, nor any resume worth the
    name, can start from them; they still serve sample / export / eval."""
    if not holds_run(run_dir):
        raise UserError(f"no run at {run_dir}; drop --resume to start one there")
    found, damaged = checkpoint.newest_readable(run_dir, complete=True)
    if found is None:  # no complete checkpoint can be read: refuse before anything is written
        readable, unreadable = checkpoint.newest_readable(run_dir)  # any kind: slim ones, if any, are readable
        if readable is not None:  # an exact resume needs D, the optimizers and the RNG states, which slim ones lack
            names = "; ".join(f"{p.name}: {reason}" for p, reason in damaged) or "none is left"
            bad = {p for p, _ in unreadable}
            slim = [p.name for p in checkpoint.list_checkpoints(run_dir) if checkpoint.is_slim(p) and p not in bad]
            raise UserError(f"cannot resume {run_dir}: its newest complete checkpoint cannot be read ({names}) and the "
                            f"readable ones ({', '.join(slim)}) are slim: the generator only, without the discriminator "
                            f"and optimizer state training needs. Nothing was changed. 'dcgan sample/export/eval "
                            f"{run_dir}' still read them; to train, start a new run with another --out")
        if unreadable:
            names = "; ".join(f"{p.name}: {reason}" for p, reason in unreadable)
            raise UserError(f"cannot resume {run_dir}: none of its {len(unreadable)} checkpoint(s) can be read ({names}). "
                            f"Nothing was changed. Move them out of {checkpoint.checkpoint_dir(run_dir)} to start the run "
                            f"again from step 0, or start a new run with another --out")
    for path, reason in damaged:
        print(f"dcgan: warning: skipping {path.name}: {reason}", file=sys.stderr)
    if found:
        check_resume_config(run_dir, found[1]["config"], cfg)
    return found


def roll_back(trainer: Trainer, run_dir: Path, record: RunRecord) -> None:
    """Back to the newest good checkpoint with lower learning rates; the record continues from there."""
    bad_step = trainer.roll_back(run_dir)
    record.rolled_back(trainer.step)  # TensorBoard and metrics.jsonl drop what came after the checkpoint
    t = trainer.cfg.train
    record.warn(trainer.step, f"non-finite values at step {bad_step}: rolled back to step {trainer.step} (rollback "
                              f"{trainer.health.rollbacks} of {t.max_rollbacks}), learning rates x{t.rollback_lr_factor}")


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
