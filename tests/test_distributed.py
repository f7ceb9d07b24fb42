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
