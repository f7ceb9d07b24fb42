"""The only module that knows the checkpoint format.

A checkpoint file is:
    b"DCGAN-CHECKPOINT\n"
    one JSON line: {"format_version": 1, "sha256": <hex of the payload>, "bytes": <payload length>}
    the payload: torch.save of a dict of tensors and plain Python values
and is loaded with `torch.load(weights_only=True)` after the hash is checked, so a damaged file
is detected and a file that needs arbitrary unpickling is refused, never executed.

Files are written to a temporary name in the same folder, flushed, fsynced, renamed into place
and the folder fsynced: a crash at any instant leaves either the old or the new file, whole.

The payload dict holds: config (the resolved config as a dict), data ({shape, num_classes,
class_names, dataset, content_hash}), step, images_seen, elapsed, preset, models ({G, D, G_ema}),
optim ({G, D}), rng ({...}), tick, health.

Complete and slim checkpoints. Only the newest checkpoint of a run is complete (everything an exact
resume needs); when a newer one is in place, `prune` rewrites the older kept ones as slim: config,
data, step, images seen, elapsed, preset and the generator samples come from (G_ema, or G in a run
without EMA), which is all `dcgan sample / export / report / eval` read. A complete mnist-cdcgan
checkpoint is ~190 MB (G, D, G_ema and Adam's two moments of G and D), a slim one ~27 MB, so the
default three kept ones take ~245 MB instead of ~570 MB. A slim checkpoint says so in its header
({"slim": true}), so telling the two apart reads one line; resume and rollback use the newest
*complete* readable checkpoint only (`newest_readable(run, complete=True)`): a slim one has no D,
no optimizer state and no RNG state, so training cannot continue from it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .files import atomic_write

MAGIC = b"DCGAN-CHECKPOINT\n"
FORMAT_VERSION = 1
SUFFIX = ".ckpt"
BEST = "best.ckpt"  # the checkpoint of the lowest FID measured during training
REQUIRED_KEYS = {"config", "data", "step", "models"}


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def name_for(step: int) -> str:
    return f"step-{step:09d}{SUFFIX}"


def save(state: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = {"format_version": FORMAT_VERSION, "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload),
              **({"slim": True} if state.get("slim") else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, MAGIC + json.dumps(header).encode() + b"\n" + payload)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint; UserError if it is not one, is damaged or is unsafe."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not data.startswith(MAGIC):
        raise UserError(
            f"{path} is not a dcgan checkpoint (no dcgan header); dcgan never unpickles other files — "
            f"give a run folder or a .ckpt file written by 'dcgan train'"
        )
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        version, digest, size = header["format_version"], header["sha256"], header["bytes"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} has a damaged header; use an earlier checkpoint of the run") from None
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path} has a damaged header (format_version {json.dumps(version)[:40]}); use an earlier "
                        f"checkpoint of the run")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path} has checkpoint format {version}, this dcgan reads format {FORMAT_VERSION}; "
            f"use the dcgan version that wrote it"
        )
    payload = data[end + 1 :]
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != digest:
        raise UserError(f"{path} is damaged (content check failed: truncated or corrupted); use an earlier checkpoint")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} holds objects a safe load refuses ({str(e).splitlines()[0]}); it was not loaded") from None
    except Exception as e:  # noqa: BLE001 - any other failure of the loader means a malformed payload
        raise UserError(f"{path} has a malformed payload ({type(e).__name__}); use an earlier checkpoint") from None
    if not isinstance(state, dict) or not REQUIRED_KEYS <= state.keys():
        raise UserError(f"{path} is not a complete dcgan checkpoint (missing "
                        f"{sorted(REQUIRED_KEYS - set(state) if isinstance(state, dict) else REQUIRED_KEYS)})")
    return state


def list_checkpoints(run: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(run)
    return sorted(folder.glob(f"step-*{SUFFIX}")) if folder.is_dir() else []


def latest(run: Path, complete: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint of a run and its content (complete=True: the newest complete
    one); damaged newer ones are reported and skipped."""
    found, damaged = newest_readable(run, complete)
    for path, reason in damaged:
        print(f"dcgan: warning: skipping {path.name}: {reason}", file=sys.stderr)
    return found


def newest_readable(run: Path, complete: bool = False) -> tuple[tuple[Path, dict[str, Any]] | None, list[tuple[Path, str]]]:
    """(the newest readable checkpoint and its content, or None; the newer ones that could not be
    read, each with the reason). complete=True: the newest readable *complete* one (resume, rollback);
    slim ones are passed over without being read (they are not damaged, they just cannot train)."""
    damaged = []
    for path in reversed(list_checkpoints(run)):
        if complete and is_slim(path):
            continue
        try:
            return (path, load(path)), damaged
        except UserError as e:
            damaged.append((path, str(e)))
    return None, damaged


def is_slim(path: Path) -> bool:
    """Whether the checkpoint's header says it is slim (only its first line is read; a file whose
    header cannot be read is not called slim: loading it reports what is wrong)."""
    try:
        with open(path, "rb") as f:
            data = f.read(len(MAGIC) + 4096)
    except OSError:
        return False
    end = data.find(b"\n", len(MAGIC))
    try:
        return data.startswith(MAGIC) and json.loads(data[len(MAGIC) : end]).get("slim") is True
    except (ValueError, AttributeError):
        return False


SLIM_KEYS = ("config", "data", "step", "images_seen", "elapsed", "preset")


def slim(state: dict[str, Any]) -> dict[str, Any]:
    """The slim form of a complete checkpoint's content: what sampling, export, reports and metrics
    read (SLIM_KEYS and the generator samples come from: G_ema, or G in a run without EMA)."""
    models = state["models"]
    keep = {"G_ema": models["G_ema"]} if models.get("G_ema") is not None else {"G": models["G"]}
    return {**{k: state[k] for k in SLIM_KEYS if k in state}, "models": keep, "slim": True}


def estimate_bytes(G: torch.nn.Module, D: torch.nn.Module, ema: bool) -> tuple[int, int]:
    """(complete, slim) checkpoint sizes of these models, from their tensors' sizes (modules on the
    "meta" device work: nothing is allocated): a complete one holds G, D, G_ema and Adam's two moments
    of every parameter of G and D; a slim one the sampling generator. The pickle's own overhead
    (names, the config) is a few kB more."""
    def state_bytes(m):
        return sum(t.numel() * t.element_size() for t in m.state_dict().values())

    def param_bytes(m):
        return sum(p.numel() * p.element_size() for p in m.parameters())

    g, d = state_bytes(G), state_bytes(D)
    return g * (2 if ema else 1) + d + 2 * (param_bytes(G) + param_bytes(D)), g


def intact(path: Path) -> bool:
    """Whether `path` is a whole checkpoint (header, length and content hash; no unpickling). Remembered
    per (path, size, modification time), so pruning checks each file once."""
    try:
        st = Path(path).stat()
    except OSError:
        return False
    return _intact(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _intact(path: str, size: int, mtime_ns: int) -> bool:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC) : end])
        payload = data[end + 1 :]
        return (data.startswith(MAGIC) and header["format_version"] == FORMAT_VERSION and len(payload) == header["bytes"]
                and hashlib.sha256(payload).hexdigest() == header["sha256"])
    except (ValueError, KeyError, TypeError):
        return False


def remove_stale_temporaries(run: Path) -> int:
    """Delete temporary files a killed writer left in the run's checkpoint folder (a run folder has
    one trainer, so at the start of a run no write is in flight). Returns how many were removed."""
    folder = checkpoint_dir(run)
    stale = list(folder.glob(f".*{SUFFIX}.tmp-*")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def prune(run: Path, keep: int, written: Path | None = None) -> None:
    """Keep the newest `keep` intact checkpoints of the run and delete the older intact ones (call only
    after a new one is in place; `written`: that one, known intact), and make the kept ones other than
    the newest slim (see the module docstring). A damaged file counts for nothing: it is never kept
    in place of an intact one, and it is left for a person to look at."""
    kept: list[Path] = []
    for path in reversed(list_checkpoints(run)):
        if path != written and not intact(path):
            continue
        if len(kept) >= keep:
            path.unlink(missing_ok=True)
        else:
            kept.append(path)
    for path in kept[1:]:
        if not is_slim(path):
            try:
                state = load(path)
            except UserError:  # damaged since it was checked: left as it is, like any damaged file
                continue
            save(slim(state), path)  # atomic: a crash leaves the complete file or the slim one


def resolve(run_or_file: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or a run folder's newest readable checkpoint → (path, content)."""
    p = Path(run_or_file)
    if p.is_dir():
        found = latest(p)
        if found is None:
            raise UserError(f"{p} holds no readable checkpoint (looked in {checkpoint_dir(p)}); train it first")
        return found
    if not p.exists():
        raise UserError(f"{p} does not exist; give a run folder or a checkpoint file")
    return p, load(p)


def load_generator(run_or_file: str | Path, device: str | torch.device = "cpu", ema: bool = True):
    """Build the generator a checkpoint holds, load its weights (EMA when present) and return
    (G in eval mode on `device`, info dict)."""
    from .config import Config
    from .models import build_generator

    path, state = resolve(run_or_file)
    cfg = Config.from_dict(state["config"], where=str(path))
    data = state["data"]
    G = build_generator(cfg.model, tuple(data["shape"]), data["num_classes"])
    weights = state["models"].get("G_ema") if ema else None
    which = "ema" if weights is not None else "raw"
    if weights is None and state["models"].get("G") is None:
        raise UserError(f"{path} is a slim checkpoint holding only the EMA generator; for the raw generator use "
                        f"the run's newest checkpoint ({checkpoint_dir(Path(path).parent.parent)})")
    try:
        G.load_state_dict(weights if weights is not None else state["models"]["G"])
    except RuntimeError as e:
        raise UserError(f"{path}: the generator weights do not fit model {cfg.model.arch!r} ({str(e).splitlines()[0]})") from None
    G.to(device).eval()
    info = {"path": str(path), "config": cfg, "data": data, "step": state["step"], "generator": which}
    return G, info
