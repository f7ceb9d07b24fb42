"""CIFAR-10 from the official python tarball `cifar-10-python.tar.gz`, parsed without trusting it.

The tarball holds `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`: pickles
(protocol 2, written by Python 2) of plain dicts {b"data": uint8 ndarray (10000, 3072),
b"labels": [int], ...}. They are read straight from the tarball (nothing is extracted) with
`SafeUnpickler`: a pickle.Unpickler whose find_class allows only what numpy's array
reconstruction needs (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) and
`_codecs.encode` (how Python 3 writes bytes at protocol 2); anything else — os.system, eval, any
other callable — raises an UnpicklingError before it is called. The result is then checked to be
the expected dict of arrays/lists/bytes of the right shapes and dtypes.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

TARBALL = "cifar-10-python.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLIT_MEMBERS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _allowed() -> dict[tuple[str, str], object]:
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str):
        allowed = _allowed()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only arrays and lists")


def safe_load(data: bytes) -> object:
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def _key(d: dict, name: str):
    return d.get(name.encode(), d.get(name))


def read_tarball(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, 32, 32) images and int64 (N,) labels of a split, read from the tarball."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # the first member is read here already
        raise UserError(f"{path} is not a readable tar archive ({type(e).__name__}: {e}); delete it and fetch "
                        f"{TARBALL} again") from None
    images, labels = [], []
    with tar:
        try:  # the members are read (and decompressed) only now: a damaged archive fails here
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            raws = {}
            for name in SPLIT_MEMBERS[split]:
                if name not in members:
                    raise UserError(f"{path} has no {name}; is it the CIFAR-10 *python* version ({TARBALL})?")
                raws[name] = tar.extractfile(members[name]).read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path} is not a readable tar archive ({type(e).__name__}: {e}); delete it and fetch "
                            f"{TARBALL} again") from None
        for name, raw in raws.items():
            try:
                batch = safe_load(raw)
            except Exception as e:  # noqa: BLE001 - any failure to unpickle (the allowed callables included) is a bad batch
                reason = (str(e).splitlines() or [""])[0][:120]
                raise UserError(f"{path}: {name} is not a plain CIFAR batch ({type(e).__name__}: {reason})") from None
            if not isinstance(batch, dict):
                raise UserError(f"{path}: {name} is not a CIFAR batch (a {type(batch).__name__})")
            data, lab = _key(batch, "data"), _key(batch, "labels")
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise UserError(f"{path}: {name}'s data is not a uint8 (N, 3072) array")
            try:  # a list of class numbers (not None, text, nested lists or integers beyond int64)
                lab = np.asarray(lab, dtype=np.int64) if isinstance(lab, (list, np.ndarray)) else None
            except (ValueError, TypeError, OverflowError):
                lab = None
            if lab is None or lab.shape != (len(data),) or lab.min(initial=0) < 0 or lab.max(initial=0) > 9:
                raise UserError(f"{path}: {name}'s labels are not {len(data)} classes in 0..9")
            images.append(data.reshape(-1, 3, 32, 32))  # rows are R plane, G plane, B plane, each 32x32
            labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)
