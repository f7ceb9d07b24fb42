"""The numbers a refactoring must not move, as hashes: train a fixed-seed 30-step `mnist-cdcgan`
run on the CPU, hash every tensor of its newest checkpoint, sample a fixed .npz from it and hash
the JSON `dcgan eval` gives for that file.

    python scripts/fingerprint.py OUT [--code DIR] [--set KEY=VALUE ...]

--code DIR runs the package found in DIR (e.g. a `git worktree` of an older commit) instead of the
installed one, so two commits can be compared on the same machine; --set is passed to the training
(e.g. a key whose default changed since). Prints one JSON object: the overall hash of the tensors,
their count, the eval JSON's hash (wall times and dates removed) and per-tensor hashes in
OUT/tensors.json. Equal hashes mean bitwise equal tensors and an equal eval result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

VOLATILE = {"time", "date", "elapsed_s", "seconds", "wall_s", "extract_s", "command", "path", "reference_cache"}  # differ from run to run (or name OUT)


def tensors(obj, prefix=""):
    """(path, tensor) for every tensor inside nested dicts / lists of a checkpoint."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from tensors(obj[k], f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}/{i}")


def stable(obj):
    if isinstance(obj, dict):
        return {k: stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [stable(v) for v in obj]
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a new folder for the run, the samples and the hashes")
    ap.add_argument("--code", type=Path, help="a checkout whose package to run (default: the installed one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to dcgan train")
    args = ap.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.code:
        args.code = args.code.resolve()
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = str(args.code)
    env.setdefault("OMP_NUM_THREADS", "2")

    def dcgan(*argv: str) -> str:
        # `python -m` puts the working folder first on sys.path: run from the checkout asked for (or from OUT,
        # so that no dcgan/ folder in the caller's working folder shadows the installed package)
        proc = subprocess.run([sys.executable, "-m", "dcgan", *argv], env=env, capture_output=True, text=True,
                              cwd=args.code or args.out)
        if proc.returncode != 0:
            sys.exit(f"dcgan {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout

    run = args.out / "run"
    sets = [a for s in args.set for a in ("--set", s)]
    if not (run / "run.json").exists():  # a rerun on the same OUT measures the run already trained there
        dcgan("train", "mnist-cdcgan", "--steps", "30", "--seed", "0", "--device", "cpu", "--quiet", "--out", str(run),
              "--set", "train.num_threads=2", *sets)
    ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    from dcgan import checkpoint  # this checkout's reader (it reads the files of older versions too)

    state = checkpoint.load(ckpt)
    per = {p: hashlib.sha256(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                             + str((t.dtype, tuple(t.shape))).encode()).hexdigest()
           for p, t in tensors(state)}
    overall = hashlib.sha256(json.dumps(per, sort_keys=True).encode()).hexdigest()

    npz = args.out / "samples.npz"
    dcgan("sample", str(run), "--n", "2000", "--seed", "0", "--device", "cpu", "--out", str(npz))
    result = json.loads(dcgan("eval", str(npz), "--n", "2000", "--device", "cpu"))
    eval_hash = hashlib.sha256(json.dumps(stable(result), sort_keys=True).encode()).hexdigest()
    (args.out / "tensors.json").write_text(json.dumps(per, indent=1, sort_keys=True))
    (args.out / "eval.json").write_text(json.dumps(stable(result), indent=1, sort_keys=True))
    print(json.dumps({"checkpoint": ckpt.name, "tensors": len(per), "tensors_sha256": overall,
                      "eval_sha256": eval_hash, "fid": result.get("fid")}))


if __name__ == "__main__":
    main()
