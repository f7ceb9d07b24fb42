"""scripts/gpu_check.sh, the one-command GPU check, rehearsed on the CPU with tiny widths and counts:
every part runs and records its figures, so the script works the first time a GPU is lent. Its eighteen
torch commands run in children of one warm Python (tests/warm_python.py): 40 s instead of 110 s here."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, needs_mnist

PARTS = ["environment", "bench-dcgan64", "bench-cdcgan", "bench-dcgan64-baseline", "bench-dcgan64-graphed-profile",
         "bench-dcgan64-large-profile", "bench-cdcgan-large-profile", "bench-dcgan64-eager-profile",
         "bench-cdcgan-stream", "bench-dcgan64-nchw", "train-60s", "eval-60s", "sample-10k", "sample-cli",
         "train-with-eval", "total"]


WARM = [sys.executable, str(REPO_ROOT / "tests" / "warm_python.py")]  # the client; with --serve SOCKET, the server


@pytest.fixture
def warm_python():
    """The server of tests/warm_python.py, started for one test from the checkout (as the script runs
    `python3 -m dcgan` there); yields the environment its clients need. The server and every command it
    started are killed at the end (they share a new session)."""
    folder = Path(tempfile.mkdtemp(prefix="warm-"))  # short: a unix socket's path has at most 107 bytes
    sock = folder / "s"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([*WARM, "--serve", str(sock)],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)  # the imports take seconds, not minutes
        assert ready and server.stdout.readline().strip() == "ready", "the warm Python did not start"
        yield {"CHECK_PY": " ".join(WARM), "WARM_PYTHON_SOCKET": str(sock)}  # the script word-splits CHECK_PY
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_warm_python_keeps_arguments_streams_exit_status_and_signals(tmp_path, warm_python):
    env = {**os.environ, **warm_python, "WARM_CHECK": "seen"}
    script = "import os, sys; print(sys.argv[1:], os.getcwd(), os.environ['WARM_CHECK']); print('e', file=sys.stderr); sys.exit(3)"
    proc = subprocess.run([*WARM, "-", "a b", "c"], input=script, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, f"['a b', 'c'] {tmp_path} seen\n", "e\n")
    proc = subprocess.run([*WARM, "-m", "dcgan", "train", "no-such-preset"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("dcgan: error: unknown preset")
    # a SIGTERM to the client stops the command as it would stop it, and the status says so
    sleeper = subprocess.Popen([*WARM, "-"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sleeper.stdin.write("import time; print('up', flush=True); time.sleep(60)")
    sleeper.stdin.close()
    assert sleeper.stdout.readline() == "up\n"
    sleeper.terminate()
    assert sleeper.wait(timeout=30) == 128 + 15
    # a client killed outright (`timeout -k`'s SIGKILL) takes its command with it, as a real process would go
    marker = tmp_path / "still-running"
    sleeper = subprocess.Popen([*WARM, "-"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sleeper.stdin.write(f"import time; print('up', flush=True); time.sleep(2); open({str(marker)!r}, 'w')")
    sleeper.stdin.close()
    assert sleeper.stdout.readline() == "up\n"
    sleeper.kill()
    sleeper.wait()
    time.sleep(3)
    assert not marker.exists()
    proc = subprocess.run([*WARM, "-"], input="print('next')", env=env, capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "next\n")  # and the server takes the next command


@needs_mnist
def test_gpu_check_rehearsal_runs_every_part_on_the_cpu(tmp_path, warm_python):
    out = tmp_path / "check"
    # the pytest part would run this suite's own files again, --compile needs a C++ toolchain and ~30 s a
    # process on a CPU, and the checkout is installed already: those three are switched off here. The
    # SIGTERM comes 8 s after launch: the warm Python starts a command in well under a second, and the
    # first checkpoint needs one step (367 steps were done in 15 s here)
    env = {**os.environ, **warm_python, "DEVICE": "cpu", "REHEARSAL": "1", "RUN_TESTS": "0", "COMPILE": "0",
           "INSTALL": "0", "TRAIN_SECONDS": "8"}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r for r in results if r.get("failed")] == []
    assert sorted({r["part"] for r in results}) == sorted(PARTS)
    by_part = {}
    for r in results:
        by_part.setdefault(r["part"], []).append(r)

    assert [r["batch"] for r in by_part["bench-dcgan64"]] == [8, 16, 32]  # one process, one line per batch
    assert all(r["img_per_s"] > 0 and r["device"] == "cpu" for r in by_part["bench-cdcgan"])
    (base,) = by_part["bench-dcgan64-baseline"]
    assert base["baseline_img_per_s"] > 0 and base["speedup_vs_baseline"] > 0
    for part in ("bench-dcgan64-graphed-profile", "bench-dcgan64-eager-profile", "bench-cdcgan-large-profile"):
        assert by_part[part][0]["profile"]["iterations"] == 10
    assert by_part["bench-cdcgan-stream"][0]["placement"] == "stream"
    assert {r["channels_last"] for r in by_part["bench-dcgan64-nchw"]} == {False}

    (train,) = by_part["train-60s"]
    assert train["exit"] == 124 and train["step"] > 0 and len(train["checkpoints"]) == 1  # stopped by the SIGTERM
    assert train["checkpoints"][0] == f"step-{train['step']:09d}.ckpt"
    (ev,) = by_part["eval-60s"]
    assert ev["protocol"]["step"] == train["step"] and ev["fid"] > 0 and "accuracy" in ev["label_accuracy"]
    (sample,) = by_part["sample-10k"]
    assert sample["shape"] == [200, 1, 28, 28] and sample["seconds"] > 0
    evals = [r for r in by_part["train-with-eval"] if "fid" in r]
    assert evals and all(r["fid"] > 0 for r in evals)

    with tarfile.open(out / "details.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"details/trace-dcgan64-b8-graphed.json", "details/train-metrics.jsonl", "details/samples.png"} <= names
