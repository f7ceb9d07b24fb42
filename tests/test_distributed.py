"""torchrun + DistributedDataParallel on CPU (gloo): two processes train one run in step, only rank 0
writes the run folder, and the run resumes with two processes (exactly) or with one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import TINY, needs_mnist
from dcgan import checkpoint
from dcgan.cli import main
from dcgan.training import distributed as dist

pytestmark = needs_mnist

SETS = [a for s in TINY + ["train.batch=16", "train.num_threads=1"] for a in ("--set", s)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "dcgan", "train", "mnist-cdcgan", "--device", "cpu", *SETS, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def summaries(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def final_state(run):
    return checkpoint.load(checkpoint.list_checkpoints(run)[-1])


def test_noise_seeds_differ_per_rank_and_rank_0_keeps_the_single_process_seed():
    seeds = {dist.noise_seed(7, r) for r in range(4)}
    assert len(seeds) == 4 and dist.noise_seed(7, 0) == 8
    assert dist.noise_seed(7, 1, step=10) != dist.noise_seed(7, 1)


def test_batch_must_split_over_the_processes():
    from dcgan.errors import UserError

    assert dist.Ranks(0, 4).batch_per_rank(64) == 16
    with pytest.raises(UserError, match="multiple of 3"):
        dist.Ranks(0, 3).batch_per_rank(64)


def test_two_processes_train_in_step_write_once_and_resume(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    # a: 6 steps straight; b: 4 steps, then resumed with two processes to 6
    pa = torchrun(2, "--steps", "6", "--checkpoint-every", "2", "--out", str(a))
    assert pa.returncode == 0, pa.stderr[-3000:]
    out = summaries(pa)
    assert len(out) == 1  # rank 0 alone prints the summary
    s = out[0]
    assert s["processes"] == 2 and s["step"] == 6 and s["images_seen"] == 6 * 16
    assert len(s["weights_sha256"]) == 2 and s["weights_sha256"][0] == s["weights_sha256"][1]  # ranks agree
    assert "effective batch 16 = 2 x 8 per process" in pa.stderr

    # one run folder, written once: one metrics file with one line per tick, rank 0's checkpoints
    records = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [5, 6]
    assert sorted(p.name for p in a.rglob("metrics*.jsonl")) == ["metrics.jsonl"]
    state = final_state(a)
    assert state["step"] == 6 and len(state["rng"]["noise_ranks"]) == 2

    pb = torchrun(2, "--steps", "4", "--checkpoint-every", "2", "--out", str(b))
    assert pb.returncode == 0, pb.stderr[-3000:]
    pb = torchrun(2, "--steps", "6", "--checkpoint-every", "2", "--out", str(b), "--resume")
    assert pb.returncode == 0, pb.stderr[-3000:]
    sb = final_state(b)
    for which in ("G", "D", "G_ema"):  # the same world size resumes exactly
        for k, v in state["models"][which].items():
            assert torch.equal(v, sb["models"][which][k]), f"{which}.{k}"

    # and one process continues the two-process run
    assert main(["train", str(a), "--resume", "--steps", "8", "--device", "cpu", "--quiet", *SETS]) == 0
    s1 = json.loads(capsys.readouterr().out)
    assert s1["step"] == 8 and "processes" not in s1
    assert final_state(a)["step"] == 8


# ---- what each process trains on, as the training path sees it ---------------------------------

PROBE = '''
import json, sys
import torch
from dcgan.config import resolve
from dcgan.training import loop, steps
from dcgan.training.distributed import Ranks, launched, leave

out, sets = sys.argv[1], sys.argv[2:]
rank = launched().rank
seen = {"x": [], "y": [], "z": [], "bn_before": [], "bn_after": []}

class Recorded:  # the batch source, recording every batch this process trains on
    def __init__(self, batches):
        self.batches, self.placement = batches, batches.placement
    def get(self, step):
        x, y = self.batches.get(step)
        seen["x"].append(x.clone()); seen["y"].append(y.clone())
        return x, y
    def __enter__(self):
        self.batches.__enter__(); return self
    def __exit__(self, *exc):
        return self.batches.__exit__(*exc)

draw = steps.TrainStep._draws
def noise(self, B, device, out=None):  # the noise of each D step
    z, y_fake, u, eps = draw(self, B, device, out)
    seen["z"].append(z[0].clone())
    return z, y_fake, u, eps
steps.TrainStep._draws = noise

average = Ranks.average_buffers
def averaged(self, modules):  # D's batch-norm running statistics before and after the averaging
    seen["bn_before"].append([b.clone() for b in modules[1].buffers() if b.is_floating_point()])
    average(self, modules)
    seen["bn_after"].append([b.clone() for b in modules[1].buffers() if b.is_floating_point()])
Ranks.average_buffers = averaged

cfg, _ = resolve("mnist-cdcgan", sets, {"train.device": "cpu"})
summary = loop.train(cfg, out + "/run", wrap_batches=Recorded)
torch.save(seen, f"{out}/seen-{rank}.pt")
leave(0)  # as `dcgan train` ends under torchrun: no interpreter finalization (see leave)
'''


def test_each_process_trains_on_its_own_shard_with_its_own_noise_and_averaged_statistics(tmp_path):
    """Recorded inside two torchrun processes: at every step the two shards together are the global
    batch a one-process run reads (rank 0 the first half), each process draws other noise (rank 0
    the one-process run's), and the checkpoint holds D's batch-norm statistics averaged over both."""
    from dcgan.config import resolve
    from dcgan.data.loader import DeviceBatches
    from dcgan.data.prepare import prepare

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    sets = [s for s in TINY + ["train.batch=16", "train.num_threads=1", "train.steps=6", "train.checkpoint_every=3"]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(probe), str(tmp_path), *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [torch.load(tmp_path / f"seen-{r}.pt") for r in range(2)]

    cfg, _ = resolve("mnist-cdcgan", sets, {})
    data = prepare(cfg.data)
    whole = DeviceBatches(data.images, data.labels, 16, cfg.train.seed, "cpu")  # one process, the global batch
    assert len(seen[0]["x"]) == len(seen[1]["x"]) == 6
    for step in range(6):
        xg, yg = whole.get(step)
        (x0, y0), (x1, y1) = ((s["x"][step], s["y"][step]) for s in seen)
        assert x0.shape[0] == x1.shape[0] == 8
        assert torch.equal(torch.cat([x0, x1]), xg) and torch.equal(torch.cat([y0, y1]), yg), step
        assert not torch.equal(seen[0]["z"][step], seen[1]["z"][step]), step  # each process its own noise
    one_process = torch.randn(8, cfg.model.z_dim, generator=torch.Generator().manual_seed(cfg.train.seed + 1))
    assert torch.equal(seen[0]["z"][0], one_process)  # rank 0 continues a one-process run's noise stream

    # at each checkpoint (steps 3 and 6) the statistics of the two processes differ and are averaged
    assert len(seen[0]["bn_before"]) == 2
    for k in range(2):
        b0, b1 = seen[0]["bn_before"][k], seen[1]["bn_before"][k]
        assert any(not torch.equal(u, v) for u, v in zip(b0, b1))
        for u, v, a0, a1 in zip(b0, b1, seen[0]["bn_after"][k], seen[1]["bn_after"][k]):
            assert torch.allclose(a0, (u + v) / 2) and torch.equal(a0, a1)
    saved = [v for k, v in final_state(tmp_path / "run")["models"]["D"].items() if "running" in k]
    assert all(torch.equal(s, a) for s, a in zip(saved, [b for b in seen[0]["bn_after"][1]]))


LEAVER = '''
import atexit, os, sys
import torch, torch.distributed as dist
from dcgan.training.distributed import leave
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
model(torch.zeros(1, 2)).sum().backward()
out = [None, None]
dist.all_gather_object(out, dist.get_rank())
del model
dist.destroy_process_group()
atexit.register(lambda: open(os.path.join(sys.argv[1], f"finalized-{os.environ['RANK']}"), "w").close())
sys.stdout.write(f"done {out}\\n")  # one write: the two workers share the pipe
leave(3)
'''


def test_a_worker_leaves_without_finalizing_the_interpreter(tmp_path):
    """DDP keeps the gloo process group, and so its worker threads, alive past destroy_process_group();
    finalizing the interpreter beside such a thread can abort the process (distributed.leave). A worker
    must therefore leave with its exit code and without finalization: no atexit handler runs."""
    script = tmp_path / "leaver.py"
    script.write_text(LEAVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "exitcode  : 3" in proc.stderr, proc.stderr[-2000:]  # the code is kept
    assert proc.stdout.splitlines().count("done [0, 1]") == 2  # streams flushed before leaving
    assert not list(tmp_path.glob("finalized-*"))  # no interpreter finalization in either worker


def test_leave_outside_torchrun_is_an_ordinary_exit(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as e:
        dist.leave(4)
    assert e.value.code == 4
