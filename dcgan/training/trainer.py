"""The Trainer: everything a training run changes, and the one iteration that changes it.

It owns G and D (wrapped for DistributedDataParallel under torchrun), the EMA copy of G, both
optimizers (guarded: a step with a non-finite gradient is skipped on the device), the noise
generator, the health counters, the step / images / elapsed counters and the tick sums, and the
TrainStep that runs an iteration on them. `state_dict()` / `load_state_dict()` hold all of it, so a
checkpoint resumes exactly; `save()` writes one (every rank calls it), `roll_back()` returns to the
newest good one. `Trainer.build` makes it from (config, data, device, ranks) for both `dcgan train`
and `dcgan bench`, so the two always run the same step.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checkpoint
from ..augment import Augment
from ..config import Config, TrainConfig
from ..data.prepare import Dataset
from ..data.raw import kind_of
from ..errors import UserError
from ..losses import LOSSES
from ..models import build_discriminator, build_generator
from .distributed import Ranks, noise_seed, unwrap
from .ema import EMA
from .health import FiniteGuard, Health, TrainingDiverged, all_finite
from .steps import TrainStep

# On a GPU, the health counters (skipped steps) are read every this many steps (each read is a sync).
HEALTH_CHECK_EVERY = 25


class NonFinite(Exception):
    """A model's weights or buffers went non-finite; the loop rolls back."""


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
    """train.precision / channels_last / cuda_graphs / compile resolved for this device: the CUDA
    fast path, or eager fp32 on the CPU (bf16 there only when asked: slower on most CPUs, but tested)."""
    t, cuda = cfg.train, device.type == "cuda"
    dtype = torch.bfloat16 if t.precision == "bf16" or (t.precision == "auto" and cuda) else None
    channels_last = cuda and t.channels_last and kind == "images"
    # DDP's gradient all-reduce is not captured: a distributed run steps eagerly. A replay runs the
    # kernels the eager step runs, so a deterministic run keeps the graph (tests/test_fast_path.py)
    graphs = cuda and t.cuda_graphs and not ranks.distributed
    return FastPath(dtype, torch.channels_last if channels_last else torch.preserve_format, graphs, t.compile)


class Trainer:
    def __init__(self, cfg: Config, shape: tuple[int, ...], num_classes: int, device: torch.device,
                 ranks: Ranks = Ranks(), data_info: dict[str, Any] | None = None):
        t, o = cfg.train, cfg.optim
        self.cfg, self.device, self.ranks, self.num_classes = cfg, device, ranks, num_classes
        self.data_info = data_info or {}
        self.batch = ranks.batch_per_rank(t.batch) * ranks.world  # the global batch (checked to split evenly)
        self.fast = fast_path(cfg, device, kind_of(shape), ranks)
        # G_train / D_train: what the step calls (DistributedDataParallel wrappers under torchrun);
        # G / D: the models themselves (optimizers, EMA, checkpoints, grids)
        G_train = ranks.wrap(build_generator(cfg.model, shape, num_classes).to(device, memory_format=self.fast.memory_format),
                             device, t.sync_bn)
        D_train = ranks.wrap(build_discriminator(cfg.model, shape, num_classes).to(device, memory_format=self.fast.memory_format),
                             device, t.sync_bn)
        self.G, self.D = unwrap(G_train), unwrap(D_train)
        self.ema = EMA(self.G, ema_decay(t, self.batch)) if t.ema_decay > 0 or t.ema_kimg > 0 else None
        # fused Adam: one kernel per step, and it skips an update on the device when FiniteGuard finds
        # a non-finite gradient; capturable (its step count on the device) when the step is a CUDA graph.
        # With optim.lr_decay the learning rates are 0-d tensors on the device, set before each step, so a
        # captured step reads the new value (a float would be frozen into the graph)
        lr = (lambda v: torch.tensor(v, device=device)) if o.lr_decay > 0 else (lambda v: v)
        adam = dict(betas=(o.beta1, o.beta2), fused=True, capturable=self.fast.graphs)
        self.opt_g = FiniteGuard(torch.optim.Adam(self.G.parameters(), lr=lr(o.lr_g), **adam))
        self.opt_d = FiniteGuard(torch.optim.Adam(self.D.parameters(), lr=lr(o.lr_d), **adam))
        self.lr_scale = 1.0  # rollbacks multiply it by train.rollback_lr_factor
        # noise and fake labels of the training steps; each rank has its own stream
        self.gen = torch.Generator(device).manual_seed(noise_seed(t.seed, ranks.rank))
        self.health = Health([self.opt_g, self.opt_d], [self.G, self.D], t.max_bad_steps, t.max_rollbacks)
        self.warnings: list[str] = []  # said by the step (a failed graph capture); the loop records them
        if t.augment and kind_of(shape) != "images":
            raise UserError(f"train.augment={t.augment!r} changes images; {cfg.data.dataset} holds points: "
                            f"leave train.augment empty")
        self.step_fn = TrainStep(self.fast.step_module(G_train), self.fast.step_module(D_train), self.opt_g, self.opt_d,
                                 LOSSES.get(cfg.loss.kind), cfg.loss, z_dim=cfg.model.z_dim, num_classes=num_classes,
                                 g_steps=o.g_steps, gen=self.gen, health=self.health, dtype=self.fast.dtype,
                                 channels_last=self.fast.memory_format == torch.channels_last, graphs=self.fast.graphs,
                                 warn=self.warnings.append, augment=Augment(t.augment))
        # reading the health counters waits for the device: every step on a CPU, every few on a GPU
        self.check_every = 1 if device.type == "cpu" else HEALTH_CHECK_EVERY
        self.step, self.images_seen, self.elapsed = 0, 0, 0.0
        self._clock = time.perf_counter()  # elapsed_s() = elapsed + the time since this
        self.tick_sums = torch.zeros(4, device=device)  # d_loss, g_loss, D(x), D(G(z)) summed since the last tick
        self.tick_steps = 0
        self.preset: str | None = None  # what the run was made from (training/run.py), recorded in every checkpoint

    @classmethod
    def build(cls, cfg: Config, data: Dataset, device: torch.device, ranks: Ranks = Ranks()) -> "Trainer":
        """The trainer for `data` (shapes and classes come from it), as `dcgan train` and `dcgan bench` run it."""
        num_classes = data.num_classes if cfg.model.conditional else 0
        info = {"dataset": cfg.data.dataset, "shape": list(data.shape), "num_classes": num_classes,
                "class_names": data.meta["class_names"] if num_classes else [], "content_hash": data.meta["content_hash"]}
        return cls(cfg, tuple(data.shape), num_classes, device, ranks, info)

    @property
    def G_eval(self) -> torch.nn.Module:
        """The generator samples and metrics use: the EMA copy, or G without one."""
        return self.ema.model if self.ema is not None else self.G

    # ---- the iteration ------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """One iteration on a real batch x (B, C, H, W) or (B, D) and labels y (B,): a D step and the
        G step(s) (skipped on the device when a gradient is non-finite), the EMA, the counters.
        False when too many steps in a row were skipped: nothing else happened, and the caller rolls
        back (the health counters are read every `check_every` steps and at ticks and the end)."""
        if self.cfg.optim.lr_decay > 0:
            self._set_lr()
        stats = self.step_fn(x, y, self.step)  # (4,) on the device: d_loss, g_loss, D(x), D(G(z))
        t = self.cfg.train
        due = (self.step + 1) % self.check_every == 0 or (self.step + 1) % t.tick_every == 0 or self.step + 1 == t.steps
        if due and self.health.check():
            return False
        if self.ema is not None:
            self.ema.update(self.G, self.step)
        self.step += 1
        self.images_seen += self.batch
        self.tick_sums += stats.nan_to_num(0.0)  # a skipped step adds nothing
        self.tick_steps += 1
        return True

    def tick_means(self) -> list[float]:
        """d_loss, g_loss, D(x), D(G(z)) averaged over the steps since the last tick and the ranks;
        starts the next tick's sums. The only device sync of a tick."""
        means = (self.ranks.mean_(self.tick_sums) / self.tick_steps).tolist()
        self.tick_sums.zero_()
        self.tick_steps = 0
        return means

    def lr_factor(self, step: int) -> float:
        """What the learning rates are multiplied by at `step`: the rollbacks' factor, and with
        optim.lr_decay = f the linear fall to 0 over the last f of train.steps."""
        o, total = self.cfg.optim, self.cfg.train.steps
        decay = 1.0
        if o.lr_decay > 0:
            decay = min(1.0, max(0.0, (total - step) / (o.lr_decay * total)))
        return self.lr_scale * decay

    def _set_lr(self) -> None:
        """Set both optimizers' learning rates for the current step (a tensor is filled in place)."""
        factor = self.lr_factor(self.step)
        for opt, base in ((self.opt_g, self.cfg.optim.lr_g), (self.opt_d, self.cfg.optim.lr_d)):
            for group in opt.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(base * factor)
                else:
                    group["lr"] = base * factor

    def elapsed_s(self) -> float:
        """Seconds of training in this run, over all its sessions."""
        return self.elapsed + time.perf_counter() - self._clock

    def start_clock(self) -> None:
        self._clock = time.perf_counter()

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self, noise_ranks: list | None = None) -> dict[str, Any]:
        """Everything a run needs to continue exactly (the data order is a function of (seed, step))."""
        return {
            "config": self.cfg.to_dict(),
            "data": self.data_info,
            "step": self.step, "images_seen": self.images_seen, "elapsed": self.elapsed_s(),
            "models": {"G": self.G.state_dict(), "D": self.D.state_dict(),
                       "G_ema": self.ema.model.state_dict() if self.ema else None},
            "optim": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "tick": {"sums": self.tick_sums.cpu(), "steps": self.tick_steps},
            "rng": {**get_rng_state(self.gen), **({"noise_ranks": noise_ranks} if noise_ranks else {})},
            "health": self.health.state(),
            "lr_scale": self.lr_scale,
            "preset": self.preset,
        }

    def load_state_dict(self, state: dict[str, Any], rollback: bool = False) -> None:
        """Put every piece of training state back as a checkpoint holds it (resume and rollback; a
        rollback keeps the health counters, which count what happened since)."""
        self.G.load_state_dict(state["models"]["G"])
        self.D.load_state_dict(state["models"]["D"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["models"]["G_ema"])
        self.opt_g.load_state_dict(state["optim"]["G"])
        self.opt_d.load_state_dict(state["optim"]["D"])
        # the rollbacks' factor (older checkpoints: from the learning rate they saved)
        self.lr_scale = state.get("lr_scale", float(state["optim"]["G"]["param_groups"][0]["lr"]) / self.cfg.optim.lr_g)
        if self.cfg.optim.lr_decay > 0:  # the tensors this run steps with, whatever the checkpoint saved
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.step, self.images_seen, self.elapsed = state["step"], state["images_seen"], state["elapsed"]
        self.start_clock()
        self.tick_sums = state["tick"]["sums"].to(self.device)
        self.tick_steps = state["tick"]["steps"]
        set_rng_state(state["rng"], self.gen)
        noise = state["rng"].get("noise_ranks", [state["rng"]["noise"]])
        if len(noise) == self.ranks.world:  # the same number of processes: each continues its own noise
            self.gen.set_state(noise[self.ranks.rank])
        elif not self.ranks.main:  # another number: rank 0 continues the saved noise, the others start afresh
            self.gen.manual_seed(noise_seed(self.cfg.train.seed, self.ranks.rank, self.step))
        if "health" in state and not rollback:
            self.health.load(state["health"])
        self.step_fn.invalidate()  # new optimizer state tensors (and learning rates): capture the graph again

    def save(self, run_dir: Path, keep: int, **extra: Any) -> None:
        """Write the checkpoint of this step (every rank calls it at the same step; rank 0 writes) and
        keep the newest `keep`. `extra`: more state for the checkpoint (e.g. the evaluator's).
        Raises NonFinite, on every rank alike, instead of writing a non-finite model."""
        models = [self.G, self.D, *([self.ema.model] if self.ema else [])]
        self.ranks.average_buffers(models)  # batch-norm running statistics of all ranks' data
        if not all_finite(*models):  # the same answer on every rank: weights are equal, buffers averaged
            raise NonFinite()
        noise_ranks = self.ranks.gather(self.gen.get_state()) if self.ranks.distributed else None
        if self.ranks.main:
            path = checkpoint.checkpoint_dir(run_dir) / checkpoint.name_for(self.step)
            checkpoint.save({**self.state_dict(noise_ranks), **extra}, path)
            checkpoint.prune(run_dir, keep, written=path)

    def write(self, path: Path, **extra: Any) -> None:
        """Write this process's state to `path` without the ranks (rank 0's best.ckpt)."""
        if all_finite(self.G, self.D):
            checkpoint.save({**self.state_dict(), **extra}, path)

    def roll_back(self, run_dir: Path) -> int:
        """Return to the newest good checkpoint with lower learning rates (or stop, past the limit);
        returns the step that went wrong."""
        self.health.rolled_back()
        # the newest *complete* one: a slim checkpoint has no D and no optimizer state to go back to
        good = self.ranks.from_main(checkpoint.latest(run_dir, complete=True) if self.ranks.main else None)
        if good is None:
            when = ("and its newest complete checkpoint cannot be read (the older kept ones are slim, the generator "
                    "only)" if checkpoint.list_checkpoints(run_dir) else "before its first checkpoint")
            raise TrainingDiverged(f"training produced non-finite values {when}; "
                                   "lower the learning rates (optim.lr_g / optim.lr_d) or check the data")
        bad_step = self.step + 1  # the step being taken (steps count from 1, as in metrics.jsonl)
        self.load_state_dict(good[1], rollback=True)
        self.lr_scale *= self.cfg.train.rollback_lr_factor
        self._set_lr()
        self.step_fn.invalidate()
        return bad_step


def ema_decay(t: TrainConfig, batch: int) -> float:
    """The EMA's per-step decay: from its half-life train.ema_kimg (thousands of images) when set, so
    the horizon in images does not depend on the batch, else train.ema_decay."""
    return 0.5 ** (batch / (1000.0 * t.ema_kimg)) if t.ema_kimg > 0 else t.ema_decay


# ---- RNG state, stored as tensors so checkpoints load with weights_only=True -------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
