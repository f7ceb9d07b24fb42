"""Tests for dcgan.data.download against a real HTTP server on 127.0.0.1.

The server serves files from a temp folder; a path can be told to drop the
connection mid-body a number of times. Tests use their own small DatasetSpec,
so nothing here touches the real mirrors.
"""

import gzip
import hashlib
import http.server
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import mnist_skip_reason, real_data_root
from dcgan.data.download import (
    DATASETS,
    MIRROR_ENV,
    Checksum,
    DatasetSpec,
    RemoteFile,
    ensure_files,
    verify_files,
)
from dcgan.errors import UserError

@dataclass
class ServerState:
    folder: Path
    drops: dict[str, int] = field(default_factory=dict)  # URL path -> times left to drop mid-body
    requests: list[str] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        state: ServerState = self.server.state
        state.requests.append(self.path)
        file = state.folder / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drops.get(self.path, 0) > 0:
            state.drops[self.path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True  # the rest never comes
            return
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(base URL, state) of an HTTP server serving tmp_path/'served'; stopped afterwards."""
    state = ServerState(tmp_path / "served")
    state.folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = state
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def no_mirror_override(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)


@pytest.fixture
def dead_url():
    """A base URL on a port where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def serve(state: ServerState, relpath: str, data: bytes) -> None:
    path = state.folder / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_spec(files: dict[str, bytes], mirrors=("http://invalid.test/",)) -> DatasetSpec:
    """A fake dataset whose files have the SHA-256 of the given raw contents."""
    return DatasetSpec(
        "Toy",
        tuple(RemoteFile(name, tuple(mirrors), Checksum("sha256", sha256(raw))) for name, raw in files.items()),
    )


def fast(sleeps: list | None = None) -> dict:
    """Keyword arguments for quick retries; sleeps are recorded instead of slept."""
    return dict(timeout=2.0, backoff=0.01, sleep=(sleeps if sleeps is not None else []).append)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_verifies_and_lands_under_final_name(tmp_path, server, monkeypatch, capsys):
    url, state = server
    raw = b"hello world" * 100
    serve(state, "a.bin", raw)
    monkeypatch.setenv(MIRROR_ENV, url)
    paths = ensure_files(tmp_path / "data", "toy", spec=make_spec({"a.bin": raw}), **fast())
    assert paths == {"a.bin": tmp_path / "data" / "toy" / "a.bin"}
    assert paths["a.bin"].read_bytes() == raw
    assert leftovers(tmp_path / "data" / "toy") == ["a.bin"]  # no temp files
    assert f"{url}a.bin" in capsys.readouterr().err
    verify_files(tmp_path / "data", "toy", spec=make_spec({"a.bin": raw}))


def test_raw_checksum_of_gz_survives_recompression(tmp_path, server, monkeypatch):
    url, state = server
    raw = bytes(range(256)) * 50
    serve(state, "a.gz", gzip.compress(raw, compresslevel=1))  # not how it was pinned
    monkeypatch.setenv(MIRROR_ENV, url)
    paths = ensure_files(tmp_path, "toy", spec=make_spec({"a.gz": raw}), **fast())
    assert gzip.decompress(paths["a.gz"].read_bytes()) == raw


def test_md5_over_file_bytes(tmp_path, server, monkeypatch):
    url, state = server
    data = gzip.compress(b"payload")
    serve(state, "a.gz", data)
    monkeypatch.setenv(MIRROR_ENV, url)
    spec = DatasetSpec("Toy", (RemoteFile("a.gz", (), Checksum("md5", hashlib.md5(data).hexdigest(), over="file")),))
    assert ensure_files(tmp_path, "toy", spec=spec, **fast())["a.gz"].read_bytes() == data


def test_checksum_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    url, state = server
    serve(state, "a.bin", b"tampered")
    monkeypatch.setenv(MIRROR_ENV, url)
    with pytest.raises(UserError, match="checksum mismatch") as err:
        ensure_files(tmp_path, "toy", spec=make_spec({"a.bin": b"original"}), **fast())
    assert "a.bin" in str(err.value)
    assert leftovers(tmp_path / "toy") == []
    assert state.requests == ["/a.bin"]  # bad bytes are not retried on the same mirror


def test_bad_gzip_from_mirror_is_rejected(tmp_path, server, monkeypatch):
    url, state = server
    serve(state, "a.gz", b"<html>oops</html>")
    monkeypatch.setenv(MIRROR_ENV, url)
    with pytest.raises(UserError, match="not valid gzip"):
        ensure_files(tmp_path, "toy", spec=make_spec({"a.gz": b"x"}), **fast())
    assert leftovers(tmp_path / "toy") == []


def test_dropped_connection_is_retried_then_fails(tmp_path, server, monkeypatch):
    url, state = server
    raw = b"x" * 10_000
    serve(state, "a.bin", raw)
    state.drops["/a.bin"] = 99
    monkeypatch.setenv(MIRROR_ENV, url)
    sleeps = []
    with pytest.raises(UserError, match="connection closed after 5000 of 10000 bytes"):
        ensure_files(tmp_path, "toy", spec=make_spec({"a.bin": raw}), **fast(sleeps))
    assert state.requests == ["/a.bin"] * 3
    assert sleeps == [0.01, 0.02]  # exponential backoff between the 3 attempts
    assert leftovers(tmp_path / "toy") == []


def test_dropped_connection_then_success(tmp_path, server, monkeypatch):
    url, state = server
    raw = b"y" * 10_000
    serve(state, "a.bin", raw)
    state.drops["/a.bin"] = 1
    monkeypatch.setenv(MIRROR_ENV, url)
    paths = ensure_files(tmp_path, "toy", spec=make_spec({"a.bin": raw}), **fast())
    assert paths["a.bin"].read_bytes() == raw
    assert state.requests == ["/a.bin"] * 2
    assert leftovers(tmp_path / "toy") == ["a.bin"]


def test_offline_error_names_every_missing_file_and_the_folder(tmp_path, dead_url, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, dead_url)
    spec = make_spec({"one.gz": b"1", "two.gz": b"2", "three.gz": b"3"})
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "two.gz").write_bytes(b"already here")
    sleeps = []
    with pytest.raises(UserError) as err:
        ensure_files(tmp_path, "toy", spec=spec, **fast(sleeps))
    message = str(err.value)
    assert f"Toy is not in {tmp_path / 'toy'}" in message
    assert f"Put one.gz, three.gz into {tmp_path / 'toy'}{os.sep}" in message
    assert "two.gz" not in message.split("Put")[1]  # present files are not asked for
    assert f"from {dead_url}, set by {MIRROR_ENV}" in message
    assert "DCGAN_DATA" in message
    assert len(sleeps) == 2  # connection refused is retried
    assert leftovers(tmp_path / "toy") == ["two.gz"]


def test_offline_error_lists_every_file_of_the_dataset_at_once(tmp_path, dead_url, monkeypatch):
    """Training asks for the two training files; the message names all four that are missing (the
    test files too, which the first evaluation would otherwise ask for later) and the folder."""
    monkeypatch.setenv(MIRROR_ENV, dead_url)
    names = ["train-x.gz", "train-y.gz", "test-x.gz", "test-y.gz"]
    spec = make_spec({n: n.encode() for n in names})
    with pytest.raises(UserError) as err:
        ensure_files(tmp_path, "toy", names[:2], spec=spec, **fast())
    message = str(err.value)
    assert f"Put {', '.join(names)} into {tmp_path / 'toy'}{os.sep}" in message


def test_a_failed_download_leaves_no_empty_folder_behind(tmp_path, dead_url, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, dead_url)
    root = tmp_path / "fresh" / "data"  # neither exists yet
    with pytest.raises(UserError):
        ensure_files(root, "toy", spec=make_spec({"a.gz": b"1"}), **fast())
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "mine").mkdir()  # a folder that was there before stays
    with pytest.raises(UserError):
        ensure_files(tmp_path / "mine", "toy", spec=make_spec({"a.gz": b"1"}), **fast())
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / "toy").exists()


def test_falls_back_to_next_mirror_without_retrying_404(tmp_path, server):
    url, state = server
    raw = b"z" * 100
    serve(state, "good/a.bin", raw)
    spec = make_spec({"a.bin": raw}, mirrors=(url + "missing/", url + "good"))  # no trailing slash
    paths = ensure_files(tmp_path, "toy", spec=spec, **fast())
    assert paths["a.bin"].read_bytes() == raw
    assert state.requests == ["/missing/a.bin", "/good/a.bin"]


def test_mirror_env_replaces_builtin_mirrors(tmp_path, server, dead_url, monkeypatch):
    url, state = server
    serve(state, "alt/a.bin", b"data")
    monkeypatch.setenv(MIRROR_ENV, url + "alt/")
    spec = make_spec({"a.bin": b"data"}, mirrors=(dead_url,))
    assert ensure_files(tmp_path, "toy", spec=spec, **fast())["a.bin"].read_bytes() == b"data"


def test_only_requested_files_are_fetched(tmp_path, server, monkeypatch):
    url, state = server
    serve(state, "a.bin", b"a")
    monkeypatch.setenv(MIRROR_ENV, url)
    spec = make_spec({"a.bin": b"a", "b.bin": b"b"})
    assert list(ensure_files(tmp_path, "toy", ["a.bin"], spec=spec, **fast())) == ["a.bin"]
    assert state.requests == ["/a.bin"]
    with pytest.raises(ValueError, match="c.bin"):
        ensure_files(tmp_path, "toy", ["c.bin"], spec=spec)


def test_present_files_are_used_without_checking(tmp_path, dead_url, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, dead_url)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "a.bin").write_bytes(b"not what the spec says")
    paths = ensure_files(tmp_path, "toy", spec=make_spec({"a.bin": b"a"}), **fast())
    assert paths["a.bin"].read_bytes() == b"not what the spec says"


def test_verify_files(tmp_path):
    spec = make_spec({"a.bin": b"a", "b.gz": b"b"})
    verify_files(tmp_path, "toy", spec=spec)  # nothing present: nothing to check
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "a.bin").write_bytes(b"a")
    (tmp_path / "toy" / "b.gz").write_bytes(gzip.compress(b"b"))
    verify_files(tmp_path, "toy", spec=spec)

    (tmp_path / "toy" / "a.bin").write_bytes(b"A")
    with pytest.raises(UserError, match=rf"a.bin checksum mismatch: expected sha256 .* {sha256(b'a')}, "
                                        rf"got {sha256(b'A')}; delete it"):
        verify_files(tmp_path, "toy", spec=spec)

    (tmp_path / "toy" / "a.bin").write_bytes(b"a")
    (tmp_path / "toy" / "b.gz").write_bytes(gzip.compress(b"b")[:-4])
    with pytest.raises(UserError, match="b.gz is unreadable or corrupt .*delete it"):
        verify_files(tmp_path, "toy", spec=spec)


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'cifar'.*mnist, fashion-mnist"):
        ensure_files(Path("/nonexistent"), "cifar")


def test_checksum_validation():
    with pytest.raises(ValueError):
        Checksum("sha1", "0" * 40)
    with pytest.raises(ValueError):
        Checksum("md5", "0" * 32, over="gz")
    with pytest.raises(ValueError):
        Checksum("sha256", "xyz")
    assert Checksum("md5", "A" * 32).hexdigest == "a" * 32


def test_builtin_specs_cover_the_four_files():
    names = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    for spec in DATASETS.values():
        assert {f.name for f in spec.files} == names


def test_builtin_mnist_pins_match_real_files():
    root = real_data_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(mnist_skip_reason())
    verify_files(root, "mnist")
    assert set(ensure_files(root, "mnist")) == {f.name for f in DATASETS["mnist"].files}
