"""Fetch dataset files from their mirrors, checksummed and atomically.

Each dataset is a `DatasetSpec`: for every file, the mirror base URLs to try in
order and a pinned `Checksum`. `ensure_files` downloads only what is missing
from ``<root>/<dataset>/``; `verify_files` checks what is already there and is
meant to be called once (e.g. by ``prepare``), not on every load.

A download streams into a hidden temporary file in the destination folder, is
checked against the pinned checksum, fsynced, and only then renamed onto its
final name with `os.replace`, so a failed or interrupted download never leaves
a file under the final name.

The environment variable ``DCGAN_MIRROR`` (one base URL) replaces the built-in
mirror list of every dataset; the file name is appended to it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dcgan.errors import UserError

MIRROR_ENV = "DCGAN_MIRROR"
DEFAULT_TIMEOUT = 30.0  # seconds, per network operation (connect, each read)
DEFAULT_ATTEMPTS = 3  # per mirror
DEFAULT_BACKOFF = 1.0  # seconds before the 2nd attempt; doubles after that

_CHUNK = 1 << 20
_USER_AGENT = "dcgan-downloader/1.0 (python urllib)"


@dataclass(frozen=True)
class Checksum:
    """A pinned digest of one dataset file.

    ``algorithm`` is ``"sha256"`` or ``"md5"``. ``over`` says which bytes are
    hashed: ``"raw"`` is the decompressed content (gunzipped when the file name
    ends in ``.gz``), which stays the same when a mirror recompresses the file;
    ``"file"`` is the bytes exactly as downloaded.
    """

    algorithm: str
    hexdigest: str
    over: str = "raw"

    def __post_init__(self) -> None:
        if self.algorithm not in ("sha256", "md5"):
            raise ValueError(f"checksum algorithm must be sha256 or md5, not {self.algorithm!r}")
        if self.over not in ("raw", "file"):
            raise ValueError(f"checksum 'over' must be 'raw' or 'file', not {self.over!r}")
        digest = self.hexdigest.lower()
        if len(digest) != 2 * hashlib.new(self.algorithm).digest_size or digest.strip("0123456789abcdef"):
            raise ValueError(f"{self.hexdigest!r} is not a {self.algorithm} hex digest")
        object.__setattr__(self, "hexdigest", digest)

    def __str__(self) -> str:
        where = "decompressed content" if self.over == "raw" else "file"
        return f"{self.algorithm} of the {where} {self.hexdigest}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name, the mirror base URLs to try in order, its checksum."""

    name: str
    mirrors: tuple[str, ...]
    checksum: Checksum


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's remote files; ``title`` is the human-readable name used in messages."""

    title: str
    files: tuple[RemoteFile, ...]


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

DATASETS: dict[str, DatasetSpec] = {
    # SHA-256 of the decompressed files: mirrors recompress the .gz files, so
    # the hash of the .gz itself is not stable. Computed from copies whose
    # decompressed MD5s match the ones published for MNIST.
    "mnist": DatasetSpec(
        title="MNIST",
        files=tuple(
            RemoteFile(name, _MNIST_MIRRORS, Checksum("sha256", digest))
            for name, digest in (
                ("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                ("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                ("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                ("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
            )
        ),
    ),
    # Fashion-MNIST publishes MD5s of its .gz files, served from a single origin.
    "fashion-mnist": DatasetSpec(
        title="Fashion-MNIST",
        files=tuple(
            RemoteFile(name, _FASHION_MIRRORS, Checksum("md5", digest, over="file"))
            for name, digest in (
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            )
        ),
    ),
}

# CIFAR-10, python version: one tarball, the MD5 published on the CIFAR page. Kept out of DATASETS
# (the IDX datasets, four files each); pass it as `spec=CIFAR10` to ensure_files / verify_files.
CIFAR10 = DatasetSpec(
    title="CIFAR-10",
    files=(RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/",),
                      Checksum("md5", "c58f30108f718f92721af3b95e74349a", over="file")),),
)


def ensure_files(
    root: str | os.PathLike,
    dataset: str,
    files: Iterable[str] | None = None,
    *,
    spec: DatasetSpec | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Path]:
    """Make sure the dataset's files are in ``root / dataset``; return {name: path}.

    ``files`` restricts this to some of the dataset's file names (default: all).
    ``spec`` replaces the built-in `DATASETS` entry (tests use it). Files already
    present are used as they are, without checking them (see `verify_files`).
    Missing files are downloaded, trying each mirror up to ``attempts`` times
    with exponential backoff starting at ``backoff`` seconds (``sleep`` is
    injectable for tests). Raises `UserError` naming the files still missing
    and where to put them if a file cannot be downloaded from any mirror.
    """
    spec, folder, wanted = _resolve(root, dataset, files, spec)
    paths = {remote.name: folder / remote.name for remote in wanted}
    missing = [remote for remote in wanted if not paths[remote.name].exists()]
    if not missing:
        return paths

    created = _missing_parents(folder)  # removed again if the download fails and leaves them empty
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create {folder} to download {spec.title} into ({e.strerror or e}); "
            "point --data-dir / DCGAN_DATA at a writable folder"
        ) from e

    override = os.environ.get(MIRROR_ENV, "").strip()
    for remote in missing:
        mirrors = (override,) if override else remote.mirrors
        try:
            _download(remote, mirrors, paths[remote.name], timeout, attempts, backoff, sleep)
        except _DownloadFailed as e:
            _remove_if_empty(created)
            # every file of the dataset that is not there, not only the ones this call wanted: the
            # training files now and the test files at the first evaluation would be two trips
            still_missing = ", ".join(r.name for r in spec.files if not (folder / r.name).exists())
            source = f"{mirrors[0]}, set by {MIRROR_ENV}" if override else mirrors[0]
            raise UserError(
                f"{spec.title} is not in {folder} and could not be downloaded "
                f"(last error: {e}). Put {still_missing} into {folder}{os.sep} "
                f"(from {source}), or point --data-dir / DCGAN_DATA at a folder "
                f"whose {dataset}{os.sep} subfolder has them."
            ) from None
    return paths


def _missing_parents(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    out = []
    while not folder.exists() and folder.parent != folder:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created (deepest first), as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (something else put a file there), or already gone
            return


def verify_files(
    root: str | os.PathLike,
    dataset: str,
    files: Iterable[str] | None = None,
    *,
    spec: DatasetSpec | None = None,
) -> None:
    """Check the dataset files present in ``root / dataset`` against their pinned checksums.

    Missing files are skipped (`ensure_files` fetches them). Raises `UserError`
    on a mismatch or an unreadable / corrupt file, telling the user to delete it
    so it is downloaded again.
    """
    _, folder, wanted = _resolve(root, dataset, files, spec)
    for remote in wanted:
        path = folder / remote.name
        if not path.exists():
            continue
        try:
            actual = _digest(path, remote.checksum, remote.name)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(
                f"{path} is unreadable or corrupt ({e}); delete it so it is downloaded again"
            ) from e
        if actual != remote.checksum.hexdigest:
            raise UserError(
                f"{path} checksum mismatch: expected {remote.checksum}, got {actual}; "
                "delete it so it is downloaded again"
            )


class _DownloadFailed(Exception):
    """Every mirror failed for one file; the message is the last error."""


class _BadContent(Exception):
    """The server answered, but with the wrong bytes; retrying that mirror is pointless."""


class _IncompleteBody(OSError):
    """The connection closed before Content-Length bytes arrived (urllib does not detect this)."""


def _resolve(
    root: str | os.PathLike,
    dataset: str,
    files: Iterable[str] | None,
    spec: DatasetSpec | None,
) -> tuple[DatasetSpec, Path, list[RemoteFile]]:
    """The spec, the dataset folder and the requested `RemoteFile`s."""
    if spec is None:
        spec = DATASETS.get(dataset)
        if spec is None:
            raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    by_name = {remote.name: remote for remote in spec.files}
    if files is None:
        wanted = list(spec.files)
    else:
        names = list(files)
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise ValueError(f"{spec.title} has no files named {unknown}; it has {list(by_name)}")
        wanted = [by_name[name] for name in names]
    return spec, Path(root) / dataset, wanted


def _download(
    remote: RemoteFile,
    mirrors: tuple[str, ...],
    dest: Path,
    timeout: float,
    attempts: int,
    backoff: float,
    sleep: Callable[[float], None],
) -> None:
    """Fetch `remote` to `dest`, trying each mirror in turn; raise `_DownloadFailed` if none works."""
    last_error = "no mirror configured"
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += remote.name
        for attempt in range(1, attempts + 1):
            tag = f" (attempt {attempt}/{attempts})" if attempt > 1 else ""
            print(f"Downloading {url} -> {dest}{tag}", file=sys.stderr, flush=True)
            try:
                _fetch_once(url, dest, remote.checksum, timeout)
                return
            except (_BadContent, ValueError) as e:
                # Wrong bytes or an unusable URL: the next mirror may do better.
                last_error = f"{url}: {e}"
                break
            except urllib.error.HTTPError as e:
                last_error = f"{url}: HTTP {e.code} {e.reason}"
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    break  # permanent (e.g. 404); retrying will not help
            except urllib.error.URLError as e:
                last_error = f"{url}: {e.reason}"
            except (OSError, http.client.HTTPException) as e:
                # Timeouts, resets, truncated bodies: worth retrying.
                last_error = f"{url}: {e or type(e).__name__}"
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                print(f"  failed ({last_error}); retrying in {delay:g} s", file=sys.stderr, flush=True)
                sleep(delay)
        print(f"  failed ({last_error})", file=sys.stderr, flush=True)
    raise _DownloadFailed(last_error)


def _fetch_once(url: str, dest: Path, checksum: Checksum, timeout: float) -> None:
    """One attempt: stream `url` into a temp file beside `dest`, verify, fsync, rename.

    On any failure the temp file is removed and nothing exists under `dest`.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                declared = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
            if declared is not None and received != int(declared):
                raise _IncompleteBody(f"connection closed after {received} of {declared} bytes")
            out.flush()
            try:
                actual = _digest(tmp, checksum, dest.name)
            except (OSError, EOFError, zlib.error) as e:
                raise _BadContent(f"downloaded file is not valid gzip ({e})") from e
            if actual != checksum.hexdigest:
                raise _BadContent(f"checksum mismatch: expected {checksum}, got {actual}")
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _digest(path: Path, checksum: Checksum, name: str) -> str:
    """Hex digest of `path` as `checksum` specifies.

    `name` is the file's final name (a download's temp file has another one):
    with over="raw", a name ending in .gz means the content is gunzipped first.
    """
    hasher = hashlib.new(checksum.algorithm)
    decompress = checksum.over == "raw" and name.endswith(".gz")
    with (gzip.open(path, "rb") if decompress else open(path, "rb")) as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
