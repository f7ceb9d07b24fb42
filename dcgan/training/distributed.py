"""Several processes, one run: torchrun and DistributedDataParallel.

`torchrun --nproc_per_node N -m dcgan train PRESET ...` starts N copies of `dcgan train`; each reads
its place (RANK, WORLD_SIZE, LOCAL_RANK) from the environment torchrun sets. The rules:

* train.batch is the global batch, the one the learning rates were chosen for; each rank trains
  on a disjoint train.batch / N slice of every global batch (data/loader.py), so the run sees the
  same images in the same order whatever N is, and the learning rates stay as they are.
* G and D are wrapped in DistributedDataParallel (NCCL on GPUs, gloo on CPUs) with
  broadcast_buffers=False: D runs two forwards (real, fake) before one backward, and broadcasting
  the batch-norm buffers at the second forward modifies in place a tensor the backward needs.
  Batch norm therefore normalises with per-rank statistics (train.sync_bn=true: SyncBatchNorm,
  statistics over the global batch, one extra all-reduce per layer); the running statistics,
  which only sampling uses, are averaged over the ranks before every checkpoint.
* Noise: rank r draws from its own generator, seeded from (train.seed, r); rank 0's is the one a
  single-process run uses.
* Rank 0 alone writes the run folder (metrics, grids, checkpoints, TensorBoard) and evaluates;
  decisions that steer the loop (stop on a signal, a rollback, a reached target) are agreed by
  all ranks, so they stay in step.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from ..device import pick_device
from ..errors import UserError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run, and the few collective operations training needs. In a
    single process (world 1) every operation is a no-op or the identity, so the training code reads
    the same either way."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    # ---- joining and leaving -----------------------------------------------------------------
    def init(self, device_name: str) -> torch.device:
        """Join the process group (when distributed) and return this rank's device."""
        if not self.distributed:
            return pick_device(device_name)
        if device_name == "auto":
            device_name = "cuda" if torch.cuda.is_available() else "cpu"
        if device_name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UserError(f"--device {device_name}: no CUDA device is available here; use --device cpu")
            if torch.cuda.device_count() <= self.local_rank:
                raise UserError(f"local rank {self.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                                f"start at most {torch.cuda.device_count()} processes per node")
            device = torch.device("cuda", self.local_rank)  # one GPU per process, whatever cuda:N said
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return device

    def shutdown(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # ---- what the loop needs -----------------------------------------------------------------
    def batch_per_rank(self, batch: int) -> int:
        """This rank's share of the global batch `batch` (train.batch), which must split evenly."""
        if batch % self.world:
            raise UserError(f"train.batch={batch} does not split over {self.world} processes; "
                            f"use a multiple of {self.world} (train.batch is the global batch)")
        return batch // self.world

    def wrap(self, model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
        """DistributedDataParallel around `model` (the model itself when not distributed)."""
        if not self.distributed:
            return model
        if sync_bn:
            if device.type != "cuda":
                raise UserError("train.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU kernel); "
                                "leave it false on CPU processes (per-process batch statistics)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # no buffer broadcast at each forward (the keyword was renamed in torch 2.13)
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else "broadcast_buffers")
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None, **{no_sync: False})

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def agree_any(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Each flag true on every rank when it is true on any rank (one all-reduce)."""
        if not self.distributed:
            return flags
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled; for small objects and checkpoints)."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """Average `t` over the ranks, in place."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(self.world)
        return t

    def average_buffers(self, modules: list[nn.Module]) -> None:
        """Average the floating-point buffers (batch-norm running statistics) over the ranks."""
        if not self.distributed:
            return
        for m in modules:
            for b in m.buffers():
                if b.is_floating_point():
                    self.mean_(b.data)


def launched() -> Ranks:
    """This process's place from the torchrun environment (one process when there is none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def noise_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank `rank`'s noise generator at the start of a run (step 0: rank 0 keeps a
    single-process run's seed + 1), or when a resume with another number of ranks starts it afresh."""
    if rank == 0 and step == 0:
        return seed + 1
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def weights_digest(*modules: nn.Module) -> str:
    """SHA-256 of the parameters' bytes: equal on every rank of a healthy distributed run."""
    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def leave(code: int) -> None:
    """End this process with `code`; a torchrun worker ends without finalizing the interpreter.

    Under DDP the gloo process group outlives destroy_process_group(): DistributedDataParallel keeps
    references to it from C++, so its worker threads ('pt_gloo_runloop', measured with
    /proc/self/task after the training loop returned) are still alive, and one of them can still be
    releasing the tensors of a finished collective when the main thread finalizes the interpreter.
    Releasing a tensor that has a Python object needs the GIL, which a finalizing interpreter no
    longer hands out: the thread is unwound and the process aborts (SIGABRT, 'terminate called
    without an active exception', about 1 in 25 two-process runs on a loaded machine). Everything is
    written and closed by the time this is called, so a worker flushes its streams and leaves with
    os._exit before any finalization. Call it last in any script that trains under torchrun."""
    if launched().distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
