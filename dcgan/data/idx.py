"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number -- two zero bytes, a dtype code and the
number of dimensions -- followed by one big-endian uint32 per dimension and
then the array itself in C order, big-endian. Files whose name ends in ``.gz``
are gzip-compressed; any other name is read as raw IDX.

`read_idx` checks the file strictly (magic, header, exact payload size) and
turns every problem into a `UserError` that names the file and says how to fix
it, because a corrupt download is the usual cause.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from dcgan.errors import UserError

# IDX dtype code -> numpy dtype, big-endian as stored in the file.
_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (numpy kind, itemsize) -> IDX dtype code, for writing any byte order.
_KIND_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}

_REFETCH = "re-download it or delete it so it is fetched again"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``).

    Returns a writable array in native byte order with the file's dtype and
    shape. Raises `UserError` if the file is missing, unreadable, not valid
    gzip, not IDX, truncated, or has bytes after the data.
    """
    path = Path(path)
    data = _read_bytes(path)

    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _CODE_TO_DTYPE:
        magic = "0x" + data[:4].hex() if data else "none, the file is empty"
        hint = ""
        if data[:2] == b"\x1f\x8b":
            hint = " -- it looks gzip-compressed, so its name should end in .gz"
        raise UserError(f"{path} is not an IDX file (magic {magic}){hint}; {_REFETCH}")

    dtype = _CODE_TO_DTYPE[data[2]]
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise UserError(
            f"{path} is truncated: its header declares {ndim} dimensions but the "
            f"file ends after {len(data)} bytes; {_REFETCH}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])

    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise UserError(
            f"{path} is truncated: shape {shape} needs {expected} bytes of data "
            f"but only {actual} are there; {_REFETCH}"
        )
    if actual > expected:
        raise UserError(
            f"{path} has {actual - expected} bytes of trailing garbage: shape {shape} "
            f"needs {expected} bytes of data but {actual} are there; {_REFETCH}"
        )

    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_size)
    # astype copies, which both converts to native byte order and makes the
    # result writable (frombuffer over bytes is read-only).
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when the name ends in ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (any byte
    order). Raises `ValueError` for other dtypes or shapes IDX cannot hold.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _KIND_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, "
            "float32 or float64"
        )
    if array.ndim > 255 or any(dim > 0xFFFFFFFF for dim in array.shape):
        raise ValueError(f"IDX cannot store shape {array.shape}")

    header = bytes((0, 0, code, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    if path.name.endswith(".gz"):
        # mtime=0 and no embedded name make the output byte-for-byte reproducible.
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            out.write(header + payload)
    else:
        path.write_bytes(header + payload)


def _read_bytes(path: Path) -> bytes:
    """The file's (decompressed) contents; every failure becomes a `UserError`."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError as e:
        raise UserError(f"{path} does not exist; download it or check the path") from e
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        # EOFError: the gzip stream ends early (truncated download);
        # BadGzipFile / zlib.error: not gzip at all, or corrupt (bad CRC, bad data).
        raise UserError(f"{path} is not a valid gzip file ({e}); {_REFETCH}") from e
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); check that it is a readable file") from e
