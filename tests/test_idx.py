"""Tests for dcgan.data.idx: round trips, strict checks, the real MNIST labels."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import mnist_skip_reason, real_data_root
from dcgan.data.idx import read_idx, write_idx
from dcgan.errors import UserError

def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """A hand-built IDX file, independent of write_idx."""
    return bytes((0, 0, code, len(shape))) + struct.pack(f">{len(shape)}I", *shape) + payload


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (0, 28, 28), ()])
def test_round_trip(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / f"data-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)  # native byte order
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_big_endian_input_is_written_correctly(tmp_path):
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    write_idx(tmp_path / "a.idx", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)


def test_file_layout_matches_the_format(tmp_path):
    write_idx(tmp_path / "a.idx", np.array([[1, 2], [3, 4]], dtype=np.int16))
    expected = idx_bytes(0x0B, (2, 2), struct.pack(">4h", 1, 2, 3, 4))
    assert (tmp_path / "a.idx").read_bytes() == expected


def test_gz_output_is_reproducible_and_gzip(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == first
    assert gzip.decompress(first) == idx_bytes(0x08, (100,), array.tobytes())


def test_unsupported_dtype_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_wrong_magic(tmp_path, suffix):
    path = tmp_path / f"bad-idx{suffix}"
    data = b"<html>not found</html>"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(UserError, match=r"bad-idx.* is not an IDX file \(magic 0x3c68746d\).*re-download"):
        read_idx(path)


def test_unknown_dtype_code_is_wrong_magic(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(0x07, (1,), b"\0"))
    with pytest.raises(UserError, match="a.idx is not an IDX file"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.idx"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="empty.idx is not an IDX file .*empty"):
        read_idx(path)


def test_gzip_data_without_gz_name_gets_a_hint(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (1,), b"\x05")))
    with pytest.raises(UserError, match="labels-idx1-ubyte is not an IDX file.*should end in .gz"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_payload(tmp_path, suffix):
    path = tmp_path / f"short-idx{suffix}"
    data = idx_bytes(0x0C, (10, 2), b"\0" * 79)  # 80 bytes needed
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(UserError, match=r"short-idx.* is truncated.*needs 80 bytes.*only 79"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(bytes((0, 0, 8, 3)) + b"\0\0\0\x05")
    with pytest.raises(UserError, match="short.idx is truncated: its header declares 3 dimensions"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_trailing_bytes(tmp_path, suffix):
    path = tmp_path / f"long-idx{suffix}"
    data = idx_bytes(0x08, (4,), b"\1\2\3\4" + b"junk")
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(UserError, match=r"long-idx.* has 4 bytes of trailing garbage"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    good = gzip.compress(idx_bytes(0x08, (1000,), bytes(range(256)) * 3 + bytes(232)))
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="cut-idx1-ubyte.gz is not a valid gzip file"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(idx_bytes(0x08, (1,), b"\0"))  # raw IDX under a .gz name
    with pytest.raises(UserError, match="plain.gz is not a valid gzip file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="nothere.gz does not exist"):
        read_idx(tmp_path / "nothere.gz")


def test_directory_is_not_readable(tmp_path):
    with pytest.raises(UserError, match=f"cannot read {tmp_path}"):
        read_idx(tmp_path)


def test_real_mnist_test_labels():
    path = real_data_root() / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if not path.exists():
        pytest.skip(mnist_skip_reason())
    labels = read_idx(path)
    assert labels.shape == (10000,)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == set(range(10))
