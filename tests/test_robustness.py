"""Property-based robustness of the `dcgan` command (hypothesis, seeded): generated bad input of every
kind the command reads ends with exit 0 or exit 2 and one `dcgan: error:` line, never a traceback, and
never changes a file the command did not mean to write.

What is generated (each a `@given` below):
  * `--set` items on `dcgan train PRESET --dry-run`: real config keys mixed with junk keys, values of
    every TOML type and of none (nan, inf, huge integers, text, lists, tables, dates, empty), items
    without '=', and the numeric flags (--steps, --batch, --kimg, ...);
  * presets / TOML files: a packaged preset with bytes flipped, cut, inserted, or lines added, dropped
    and repeated, given to `dcgan train FILE.toml --dry-run`;
  * checkpoints: a trained run's checkpoint flipped, truncated, given a random header, or damaged
    under a header that still matches it ("resealed": the hash checks, the payload is garbage), read
    by `dcgan sample`; a run folder whose checkpoints are all damaged, given to `train --resume` (must
    be exit 2 and change nothing); a run folder with a damaged config.toml / run.json / metrics.jsonl;
  * the prepared cache: an entry's images.npy / labels.npy / meta.json damaged, deleted or given
    random JSON, then read by `dcgan prepare` and `dcgan train --dry-run`;
  * IDX files: the real MNIST test files damaged (the pinned checksums refuse them), and small
    synthetic IDX files damaged or with random headers read by the parser itself through
    `dcgan prepare` with the checksum step left out (what a file without a known checksum meets);
  * CIFAR-10 tarballs (`data.path`, read without a checksum): damaged archives, damaged pickles;
  * image folders of random contents: images of random formats, modes and sizes, truncated and
    flipped ones, random bytes under image names, empty files, headers claiming huge sizes, nested
    and oddly named folders and files, with random data settings, read by `dcgan prepare folder`
    and `dcgan train folder-dcgan --dry-run`.

Example counts are small in CI; DCGAN_ROBUSTNESS_EXAMPLES=N runs N examples of each property
(docs/RELIABILITY.md says how many run by default and how long they take). The end of the run prints
how many cases ran and how they exited.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import struct
import tarfile
import tempfile
import time
import zlib
from importlib import resources
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import TINY, has_mnist, real_data_root, skip_without_mnist
from dcgan.cli import main
from dcgan.config import Config, read_preset

# ---- how many examples ---------------------------------------------------------------------------

EXAMPLES_ENV = "DCGAN_ROBUSTNESS_EXAMPLES"


def examples(default: int) -> int:
    """DCGAN_ROBUSTNESS_EXAMPLES=N: N examples of every property; else the property's CI share."""
    env = os.environ.get(EXAMPLES_ENV, "").strip()
    return int(env) if env else default


def robust(default: int):
    """The settings of every property: seeded (derandomize: the same examples on every run, so a
    failure repeats), no database (nothing written into the tree), no deadline (the command's first
    call imports torch)."""
    return settings(max_examples=examples(default), deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


# ---- the one helper every case goes through -------------------------------------------------------

CASES: collections.Counter = collections.Counter()  # (property, exit code) -> cases
SPAN: list[float] = []  # when the first case started and the last one ended (time.perf_counter)


HASHED_UP_TO = 4 << 20  # files up to this size are compared by content too; larger ones (the real MNIST
# files, prepared MNIST) by size, modification time and inode: any write changes the time


def _digest(path: Path, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if size <= HASHED_UP_TO else f"inode {path.stat().st_ino}"


def snapshot(paths) -> dict:
    """Every file and folder under `paths`: kind, size, modification time and SHA-256 (files); a folder's
    modification time changes when an entry is added, removed or renamed in it."""
    state = {}
    for root in map(Path, paths):
        if not root.exists():
            state[str(root)] = None
            continue
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            st_ = p.lstat()
            state[str(p)] = ("dir", st_.st_mtime_ns) if p.is_dir() else ("file", st_.st_size, st_.st_mtime_ns, _digest(p, st_.st_size))
    return state


@dataclasses.dataclass
class Result:
    rc: int
    out: str
    err: str


def run_cli(argv, *, what: str, untouched=(), absent=(), exits=(0, 2)) -> Result:
    """`dcgan ARGV` in this process. Fails the test unless: it returns an exit code in `exits` (0 or 2)
    and raises nothing (an exception is the traceback a user would see); on exit 2 stderr's last line,
    and only it, is `dcgan: error: ...` (earlier lines may be warnings or progress) and says nothing of
    a traceback; every file and folder under `untouched` is as it was (bytes and times); nothing in
    `absent` was created."""
    argv = [str(a) for a in argv]
    if not SPAN:
        SPAN.append(time.perf_counter())
    before = snapshot(untouched)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:  # argparse: the cases only generate argv that parses
        raise AssertionError(f"dcgan {argv} exited through SystemExit({e.code}); stderr: {err.getvalue()!r}") from e
    except Exception as e:  # noqa: BLE001 - the traceback a user would see: keep its type and place, add the case
        e.add_note(f"robustness case {what}: dcgan {argv}\nstderr before it: {err.getvalue()[-2000:]}")
        raise
    CASES[what, rc] += 1
    SPAN[1:] = [time.perf_counter()]
    text = err.getvalue()
    assert rc in exits, f"dcgan {argv}: exit {rc}, expected one of {exits}; stderr: {text[-2000:]!r}"
    assert "Traceback" not in text, f"dcgan {argv}: a traceback on stderr: {text[-2000:]}"
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip()]  # the lines a terminal shows
    errors = [line for line in lines if "dcgan: error" in line]
    if rc == 2:
        assert lines and lines[-1].startswith("dcgan: error: ") and len(errors) == 1, \
            f"dcgan {argv}: exit 2 must end with one line 'dcgan: error: ...'; stderr: {lines[-5:]}"
    else:
        assert not errors, f"dcgan {argv}: exit {rc} with an error line: {errors}"
    after = snapshot(untouched)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"dcgan {argv} (exit {rc}) changed files it was not meant to write: {changed[:5]}"
    made = [str(p) for p in map(Path, absent) if p.exists()]
    assert not made, f"dcgan {argv} (exit {rc}) created {made}"
    return Result(rc, out.getvalue(), text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, request):
    """A factory of per-case folders: `with scratch() as d:` gives an empty folder, the working directory
    and a cache folder of its own (DCGAN_CACHE=d/cache) for the case, all undone afterwards. Also
    prints, at the end of the run, how many cases ran and how they exited."""
    base = tmp_path_factory.mktemp("robustness")

    @contextlib.contextmanager
    def case(cache: bool = True):
        d = Path(tempfile.mkdtemp(dir=base))
        old = os.environ.get("DCGAN_CACHE")
        if cache:
            os.environ["DCGAN_CACHE"] = str(d / "cache")
        try:
            with contextlib.chdir(d):
                yield d
        finally:
            if old is None:
                os.environ.pop("DCGAN_CACHE", None)
            else:
                os.environ["DCGAN_CACHE"] = old
            shutil.rmtree(d, ignore_errors=True)

    if not request.config.pluginmanager.has_plugin("dcgan-robustness-summary"):
        request.config.pluginmanager.register(_Summary(), "dcgan-robustness-summary")
    return case


class _Summary:
    def pytest_terminal_summary(self, terminalreporter):
        if not CASES:
            return
        by_what = collections.defaultdict(dict)
        for (what, rc), n in sorted(CASES.items()):
            by_what[what][rc] = n
        total = sum(CASES.values())
        parts = "; ".join(f"{w} {sum(c.values())} ({', '.join(f'exit {rc}: {n}' for rc, n in c.items())})"
                          for w, c in by_what.items())
        took = SPAN[-1] - SPAN[0]  # from the first case's start to the last one's end (fixtures between included)
        terminalreporter.write_line(f"robustness: {total} dcgan runs in {took:.0f} s: {parts}")


# ---- damage to bytes ------------------------------------------------------------------------------

class Blob(bytes):
    """Bytes whose repr is short (a checkpoint is a megabyte): how a strategy's argument and a failing
    example print (the examples are seeded, so a failure repeats with its bytes)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:12]}>"


def damaged(data: bytes, head: int = 256):
    """`data` changed in one of the ways a disk, a download or a person changes a file (see _damaged)."""
    return _damaged(Blob(data), head)


@st.composite
def _damaged(draw, data: bytes, head: int) -> bytes:
    """`data` changed in one of the ways a disk, a download or a person changes a file: bytes flipped
    (often in the first `head` bytes, where the headers are), cut at a random length, random bytes
    inserted or written over a stretch, emptied. Always different from `data`."""
    data = bytes(data)
    n = len(data)
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "overwrite", "empty"]))
    if kind == "empty" or n == 0:
        out = b""
    elif kind == "flip":
        pos = st.one_of(st.integers(0, min(n, head) - 1), st.integers(0, n - 1))
        flips = draw(st.lists(st.tuples(pos, st.integers(1, 255)), min_size=1, max_size=8))
        buf = bytearray(data)
        for i, mask in flips:
            buf[i] ^= mask
        out = bytes(buf)
    elif kind == "truncate":
        out = data[: draw(st.one_of(st.integers(0, min(n, head)), st.integers(0, n - 1)))]
    elif kind == "insert":
        i = draw(st.integers(0, n))
        out = data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
    else:
        i = draw(st.integers(0, n - 1))
        junk = draw(st.binary(min_size=1, max_size=64))
        out = data[:i] + junk + data[i + len(junk):]
    assume(out != data)
    return Blob(out)


# ---- 1. --set keys, values and types on `train --dry-run` ------------------------------------------

CONFIG_KEYS = [f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(getattr(Config(), s.name))]
SECTIONS = [s.name for s in dataclasses.fields(Config)]
# Text with no path separator, home or drive: a generated data.path never names the filesystem's root
# or the home folder (which `dcgan` would then list); "." and ".." stay inside the case's folder.
SAFE_TEXT = st.text(st.characters(blacklist_characters="/\\~\x00", blacklist_categories=("Cs",)), max_size=12)
IDENT = st.text("abcdefghijklmnopqrstuvwxyz_0123456789-", min_size=0, max_size=12)

keys = st.one_of(
    st.sampled_from(CONFIG_KEYS),
    st.sampled_from(CONFIG_KEYS).map(str.upper),
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS), IDENT),
    st.builds(lambda s, k: f"{s}.{k}", IDENT, IDENT),
    st.builds(lambda k, extra: f"{k}.{extra}", st.sampled_from(CONFIG_KEYS), IDENT),
    st.sampled_from(["", ".", "..", "model.", ".z_dim", " train.batch ", "train..batch", "data", "=", "a=b"]),
    SAFE_TEXT,
)


def toml_string(s: str) -> str:
    return json.dumps(s)  # a JSON string is a TOML basic string (its \\uXXXX escapes included)


scalars = st.one_of(
    st.integers(-5, 300).map(str),
    st.integers().map(str),  # huge ones too
    st.sampled_from(["9223372036854775807", "-9223372036854775808", "18446744073709551616", "1" + "0" * 40]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "+inf", "1e308", "1e309", "-0.0", "5e-324", "0x10", "0o7", "0b1", "1_000"]),
    st.sampled_from(["true", "false", "True", "yes", "on", "1979-05-27", "1979-05-27T07:32:00Z", "07:32:00"]),
    SAFE_TEXT,
    SAFE_TEXT.map(toml_string),
    st.sampled_from(['"\\u0000"', '"."', '".."', '""', "''", '"a\\nb"', '"translation,cutout"', '"cuda:1"',
                     '"cuda:99999999999999999999"', '"mlp"', '"projection"', '"classes"', '"nplus1"', '"stream"']),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.sampled_from(["[]", "[[1]]", "[1, [2]]", "{a = 1}", "{}", "[", "]", "{", "= 1", "1 = 2"]),
)
# A value of the key's own type (often one a run accepts): what gets past the type check to the checks
# of ranges and combinations, and to the dry run itself.
_FIELD_TYPES = {f"{s.name}.{f.name}": f.type for s in dataclasses.fields(Config)
                for f in dataclasses.fields(getattr(Config(), s.name))}
_WORDS = ["mnist", "ring8", "folder", "test", "train", "dcgan", "mlp", "simple", "nelson", "input", "all", "projection",
          "binary", "classes", "hinge", "lsgan", "wgan-gp", "nplus1", "auto", "cpu", "fp32", "bf16", "stream", "device",
          "translation", "color,cutout", ""]
_TYPED = {"int": st.one_of(st.integers(0, 64), st.integers(0, 64), st.integers(-2, 130), st.integers()).map(str),
          "float": st.one_of(st.floats(0, 1), st.floats(0, 1), st.floats(-1, 2),
                             st.floats(allow_nan=True, allow_infinity=True)).map(repr),
          "bool": st.sampled_from(["true", "false"]),
          "str": st.one_of(st.sampled_from(_WORDS), SAFE_TEXT).map(toml_string),
          "list": st.lists(st.integers(-1, 12), max_size=3).map(str)}
typed_items = st.sampled_from(sorted(_FIELD_TYPES)).flatmap(lambda k: _TYPED[_FIELD_TYPES[k]].map(lambda v: f"{k}={v}"))
set_items = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", keys, values),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(CONFIG_KEYS), values),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(CONFIG_KEYS), values),
    keys,  # no '='
)
flags = st.one_of(
    st.builds(lambda f, v: [f"{f}={v}"], st.sampled_from(["--steps", "--batch", "--tick-every", "--checkpoint-every",
                                                            "--seed"]), st.integers().map(str)),
    st.builds(lambda f, v: [f"{f}={v}"], st.sampled_from(["--kimg", "--target-fid"]),
              st.one_of(st.sampled_from(["inf", "-inf", "nan", "1e308", "1e-300", "0", "-1", "0.5"]),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str))),
    st.builds(lambda v: ["--device", v], st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "tpu", "", "CPU"])),
    st.just(["--resume"]),
)
# Presets that train on MNIST read the test split's prepared cache (the models are then built on the
# "meta" device, so their sizes are computed too); the others have no prepared data here.
DRY_RUN_PRESETS = ["mnist-dcgan", "mnist-cdcgan", "mnist-mlp-gan", "mnist-simple-cdcgan", "mnist-nelson-dcgan",
                   "toy-ring8", "toy-ring8-conditional", "folder-dcgan", "cifar10-nelson-dcgan", "anime-dcgan-96"]


@pytest.fixture(scope="module")
def prepared():
    """The ring8 points and (when real MNIST is here) MNIST's test split in the session's cache: the dry
    runs read their meta.json and build the models on the "meta" device."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["prepare", "ring8", "--split", "train"]) == 0
        if has_mnist():
            assert main(["prepare", "mnist", "--split", "test"]) == 0


@robust(150)
@given(preset=st.sampled_from(DRY_RUN_PRESETS), typed=st.lists(typed_items, max_size=4),
       junk=st.lists(set_items, max_size=1), extra=st.lists(flags, max_size=2), order=st.randoms())
def test_random_set_items_and_flags_on_a_dry_run(scratch, prepared, preset, typed, junk, extra, order):
    items = typed + junk
    order.shuffle(items)
    base = ["data.split=test"] if read_preset(preset).get("data", {}).get("dataset") == "mnist" else []
    with scratch(cache=False) as d:  # the session's cache, where MNIST's test split is prepared
        argv = ["train", preset, "--dry-run", "--out", d / "run", *(f"--set={s}" for s in base + items),
                *(a for f in extra for a in f)]
        r = run_cli(argv, what="--set", untouched=[real_data_root(), os.environ["DCGAN_CACHE"]], absent=[d / "run"])
        if r.rc == 0:
            assert r.out.startswith("# dry run of ") and "[train]" in r.out


# ---- 2. presets / TOML files ------------------------------------------------------------------------

PRESET_DIR = resources.files("dcgan") / "presets"
PRESET_FILES = sorted(p.name for p in PRESET_DIR.iterdir() if p.name.endswith(".toml"))


@st.composite
def damaged_toml(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(PRESET_FILES))
    text = (PRESET_DIR / name).read_bytes()
    kind = draw(st.sampled_from(["bytes", "bytes", "add-line", "drop-line", "repeat-line", "text"]))
    lines = text.splitlines(keepends=True)
    if kind == "bytes":
        return name, draw(damaged(text, head=len(text)))
    i = draw(st.integers(0, len(lines)))
    if kind == "add-line":
        line = draw(st.one_of(st.builds(lambda i_: f"{i_}\n", set_items),
                              st.builds(lambda s: f"[{s}]\n", st.one_of(st.sampled_from(SECTIONS), IDENT)))).encode()
        out = b"".join(lines[:i]) + line + b"".join(lines[i:])
    elif kind == "drop-line":
        assume(i < len(lines))
        out = b"".join(lines[:i] + lines[i + 1:])
    elif kind == "repeat-line":
        assume(i < len(lines))
        out = b"".join(lines[: i + 1] + lines[i:])
    else:
        out = b"".join(lines[:i]) + draw(SAFE_TEXT).encode("utf-8", "surrogatepass") + b"".join(lines[i:])
    assume(out != text)
    return name, out


@robust(80)
@given(case=damaged_toml())
def test_damaged_presets_on_a_dry_run(scratch, prepared, case):
    name, data = case
    with scratch(cache=False) as d:
        path = d / name
        path.write_bytes(data)
        run_cli(["train", path, "--dry-run", "--out", d / "run"], what="preset/TOML",
                untouched=[path, real_data_root(), os.environ["DCGAN_CACHE"]], absent=[d / "run"])


# ---- 3. checkpoints and run folders ----------------------------------------------------------------

SETS = [a for s in [*TINY, "data.split=test"] for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    """A tiny conditional run (2 steps at TINY widths on MNIST's test split), trained once."""
    skip_without_mnist()
    out = tmp_path_factory.mktemp("robust-runs") / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "mnist-cdcgan", "--steps", "2", "--device", "cpu", "--out", str(out), "--quiet", *SETS]) == 0
    from dcgan import checkpoint

    [ckpt] = checkpoint.list_checkpoints(out)
    return out, ckpt


def _split(data: bytes) -> tuple[bytes, bytes]:
    from dcgan.checkpoint import MAGIC

    end = data.find(b"\n", len(MAGIC))
    return data[:end + 1], data[end + 1:]


def _seal(payload: bytes) -> bytes:
    """A header that matches `payload`: the checks on the file pass, the payload is what is read."""
    from dcgan.checkpoint import FORMAT_VERSION, MAGIC

    head = {"format_version": FORMAT_VERSION, "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    return MAGIC + json.dumps(head).encode() + b"\n" + payload


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def damaged_checkpoint(data: bytes):
    return _damaged_checkpoint(Blob(data))


@st.composite
def _damaged_checkpoint(draw, data: bytes) -> bytes:
    from dcgan.checkpoint import MAGIC

    head, payload = _split(data)
    kind = draw(st.sampled_from(["file", "file", "resealed", "resealed", "header"]))
    if kind == "file":
        return draw(damaged(data))
    if kind == "resealed":  # the hash matches, the payload is damaged: torch's reader meets the damage
        return Blob(_seal(draw(damaged(payload, head=4096))))
    header = draw(st.one_of(
        st.dictionaries(st.sampled_from(["format_version", "sha256", "bytes", "slim"]), json_values, max_size=5),
        json_values))
    return Blob(MAGIC + json.dumps(header).encode() + b"\n" + payload)


@robust(100)
@given(data=st.data())
def test_damaged_checkpoints_are_refused_by_sample(scratch, trained, data):
    _, ckpt = trained
    bad = data.draw(damaged_checkpoint(ckpt.read_bytes()))
    with scratch() as d:
        path = d / ckpt.name
        path.write_bytes(bad)
        r = run_cli(["sample", path, "--n", "4", "--out", d / "x.png", "--device", "cpu", "--quiet"],
                    what="checkpoint", untouched=[path, trained[0]])
        assert (d / "x.png").exists() == (r.rc == 0)


@robust(15)
@given(data=st.data())
def test_resume_over_damaged_checkpoints_is_exit_2_and_changes_nothing(scratch, trained, data):
    from dcgan import checkpoint

    run, ckpt = trained
    with scratch() as d:
        copy = d / "run"
        shutil.copytree(run, copy)
        for path in checkpoint.list_checkpoints(copy):
            path.write_bytes(data.draw(damaged_checkpoint(path.read_bytes())))
            assume(_unloadable(path))  # a damage that left it readable (e.g. a space of the header made a tab)
        run_cli(["train", copy, "--resume", "--steps", "4", "--device", "cpu", "--quiet"], what="resume",
                untouched=[copy, run], exits=(2,))


def _unloadable(path: Path) -> bool:
    from dcgan import checkpoint
    from dcgan.errors import UserError

    try:
        checkpoint.load(path)
    except UserError:
        return True
    return False


@robust(25)
@given(which=st.sampled_from(["config.toml", "config.toml", "run.json", "metrics.jsonl"]), data=st.data())
def test_damaged_run_folder_files_on_a_resume_dry_run(scratch, trained, which, data):
    run, _ = trained
    with scratch() as d:
        copy = d / "run"
        shutil.copytree(run, copy)
        target = copy / which
        target.write_bytes(data.draw(damaged(target.read_bytes(), head=4096)))
        run_cli(["train", copy, "--resume", "--steps", "4", "--dry-run"], what="run folder", untouched=[copy, run])
        run_cli(["sample", copy, "--n", "2", "--out", d / "x.png", "--device", "cpu", "--quiet"], what="run folder",
                untouched=[copy, run])


# ---- 4. the prepared cache --------------------------------------------------------------------------

def _png_folder(folder: Path, n: int = 6, size: int = 32, seed: int = 0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture(scope="module")
def cached_folder(tmp_path_factory):
    """A small image folder and a cache holding its prepared entry (built once)."""
    root = tmp_path_factory.mktemp("robust-cache")
    folder = _png_folder(root / "images")
    cache = root / "cache"
    old = os.environ["DCGAN_CACHE"]
    os.environ["DCGAN_CACHE"] = str(cache)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["prepare", "folder", "--set", f"data.path={folder}", "--workers", "1"]) == 0
    finally:
        os.environ["DCGAN_CACHE"] = old
    [entry] = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return folder, cache, entry.name


@st.composite
def damaged_entry_file(draw, entry: Path) -> tuple[str, bytes | None]:
    name = draw(st.sampled_from(["images.npy", "labels.npy", "meta.json"]))
    data = (entry / name).read_bytes()
    kind = draw(st.sampled_from(["bytes", "bytes", "delete", "json"] if name == "meta.json" else ["bytes", "bytes", "delete"]))
    if kind == "delete":
        return name, None
    if kind == "bytes":
        return name, draw(damaged(data))
    meta = json.loads(data)  # a well-formed meta.json whose values are wrong
    key = draw(st.one_of(st.sampled_from(sorted(meta)), st.text(max_size=6)))
    if draw(st.booleans()) and key in meta:
        del meta[key]
    else:
        meta[key] = draw(json_values)
    if draw(st.integers(0, 4)) == 0:
        meta = draw(json_values)  # not even a dict
    return name, json.dumps(meta).encode()


@robust(40)
@given(data=st.data(), strict=st.booleans())
def test_a_damaged_cache_entry_is_rebuilt_or_refused(scratch, cached_folder, data, strict):
    folder, cache, entry = cached_folder
    damages = data.draw(st.lists(damaged_entry_file(cache / entry), min_size=1, max_size=3))
    with scratch() as d:
        shutil.copytree(cache, d / "cache")
        for name, content in damages:
            target = d / "cache" / entry / name
            if content is None:
                target.unlink(missing_ok=True)
            else:
                target.write_bytes(content)
        sets = ["--set", f"data.path={folder}", "--set", f"data.strict={str(strict).lower()}"]
        run_cli(["train", "folder-dcgan", "--dry-run", "--out", d / "run", *sets], what="cache",
                untouched=[folder, d / "cache"], absent=[d / "run"])
        r = run_cli(["prepare", "folder", "--workers", "1", *sets], what="cache", untouched=[folder, cache])
        if r.rc == 0:  # read as it is, or built again: the folder's 6 images either way
            assert {k: json.loads(r.out)[k] for k in ("n", "shape")} == {"n": 6, "shape": [1, 32, 32]}


# ---- 5. IDX files ---------------------------------------------------------------------------------

MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def mnist_test_files():
    skip_without_mnist()
    return {name: (real_data_root() / "mnist" / name).read_bytes() for name in MNIST_TEST}


@robust(20)
@given(which=st.sampled_from(MNIST_TEST), gz_level=st.booleans(), data=st.data())
def test_damaged_mnist_files_are_refused_by_their_checksum(scratch, mnist_test_files, which, gz_level, data):
    """The real test split with one file damaged, as compressed bytes or as content (compressed again):
    the pinned checksum refuses it (exit 2), or the damage left the content as it was (exit 0)."""
    with scratch() as d:
        folder = d / "data" / "mnist"
        folder.mkdir(parents=True)
        for name, raw in mnist_test_files.items():
            if name == which:
                raw = data.draw(damaged(raw)) if gz_level else gzip.compress(data.draw(damaged(gzip.decompress(raw))), compresslevel=1, mtime=0)
            (folder / name).write_bytes(raw)
        r = run_cli(["prepare", "mnist", "--split", "test", "--data-dir", d / "data"], what="IDX (checksum)",
                    untouched=[d / "data"])
        if r.rc == 2:
            assert which in r.err


def _idx(array: np.ndarray) -> bytes:
    from dcgan.data.idx import write_idx

    with tempfile.TemporaryDirectory() as t:
        write_idx(Path(t) / "x", array)
        return (Path(t) / "x").read_bytes()


@st.composite
def idx_pair(draw) -> dict[str, bytes]:
    """A small synthetic MNIST test split (IDX, gzip), then damaged: its compressed bytes, its content, or
    its header replaced by a random magic, dtype code and dimensions."""
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    raws = {MNIST_TEST[0]: _idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
            MNIST_TEST[1]: _idx(rng.integers(0, 10, n, dtype=np.uint8))}
    which = draw(st.sampled_from(MNIST_TEST))
    kind = draw(st.sampled_from(["content", "gz", "header", "none"]))
    raw = raws[which]
    if kind == "content":
        raws[which] = draw(damaged(raw))
    elif kind == "header":
        code = draw(st.one_of(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]), st.integers(0, 255)))
        dims = draw(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), max_size=5))
        zeros = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\x1f\x8b"]))
        body = draw(st.sampled_from([raw[4 + 4 * raw[3]:], b"", raw]))
        raws[which] = zeros + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body
    out = {}
    for name, content in raws.items():
        z = Blob(gzip.compress(content, mtime=0))
        out[name] = draw(damaged(z)) if kind == "gz" and name == which else z
    return out


@robust(40)
@given(files=idx_pair())
def test_the_idx_parser_through_prepare_on_files_without_a_known_checksum(scratch, files):
    """Synthetic IDX files read through `dcgan prepare mnist` with the checksum step left out: every
    damage reaches the parser and the checks after it; an entry it accepts is also read by a dry run."""
    with scratch() as d, mock.patch("dcgan.data.download.verify_files", lambda *a, **k: None):
        folder = d / "data" / "mnist"
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        r = run_cli(["prepare", "mnist", "--split", "test", "--data-dir", d / "data"], what="IDX (parser)",
                    untouched=[d / "data"])
        if r.rc == 0:
            run_cli(["train", "mnist-dcgan", "--dry-run", "--data-dir", d / "data", "--out", d / "run",
                     "--set", "data.split=test"], what="IDX (parser)", untouched=[d / "data", d / "cache"],
                    absent=[d / "run"])


# ---- 6. CIFAR-10 tarballs -----------------------------------------------------------------------------

CIFAR_MEMBERS = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _cifar_pickles(n: int = 3, protocol: int = 2) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for name in CIFAR_MEMBERS[:-1]:
        out[name] = pickle.dumps({b"batch_label": name.encode(), b"labels": [i % 10 for i in range(n)],
                                  b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                  b"filenames": [b"x.png"] * n}, protocol=protocol)
    out["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=protocol)
    return out


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@st.composite
def cifar_tarball(draw) -> bytes:
    members = _cifar_pickles(protocol=draw(st.sampled_from([2, 4])))
    kind = draw(st.sampled_from(["gz", "tar", "pickle", "pickle", "object"]))
    if kind == "gz":
        return draw(damaged(_tar(members)))
    if kind == "tar":
        return draw(damaged(_tar(members, "w"), head=1024))  # a plain tar under the .tar.gz name: read as one
    name = draw(st.sampled_from(CIFAR_MEMBERS))
    if kind == "pickle":
        members[name] = draw(damaged(members[name], head=len(members[name])))
    else:  # a well-formed pickle of the wrong thing
        bad = draw(st.one_of(json_values, st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels"]),
                                                          st.one_of(json_values, st.just(np.zeros((2, 3072), np.uint8)),
                                                                    st.just(np.zeros((2, 5), np.float32))),
                                                          max_size=2)))
        members[name] = pickle.dumps(bad, protocol=2)
    return Blob(_tar(members))


@robust(60)
@given(tar=cifar_tarball(), split=st.sampled_from(["train", "test"]))
def test_damaged_cifar_tarballs(scratch, tar, split):
    with scratch() as d:
        path = d / "cifar-10-python.tar.gz"
        path.write_bytes(tar)
        run_cli(["prepare", "cifar10", "--split", split, "--set", f"data.path={path}"], what="CIFAR",
                untouched=[path])


# ---- 7. image folders of random contents -------------------------------------------------------------

FORMATS = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"], "JPEG": ["L", "RGB", "CMYK"], "BMP": ["1", "L", "P", "RGB"],
           "GIF": ["L", "P"], "WEBP": ["RGB", "RGBA"], "TIFF": ["1", "L", "RGB", "RGBA", "F", "I;16", "CMYK"]}
EXTS = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".PNG", ".tif", ".txt", "", ".npy"]


def _image_bytes(fmt: str, mode: str, w: int, h: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _png_claiming(w: int, h: int) -> bytes:
    """A well-formed PNG that claims a w x h grey image and holds a few bytes of it (a decompression
    bomb's header, or a damaged size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# Claimed sizes: up to 2**25 pixels (opened, then found truncated when decoded) or more than Pillow's
# bomb limit (2 * MAX_IMAGE_PIXELS, refused when opened); not the sizes between, which Pillow opens with
# a warning and decodes into hundreds of megabytes before finding them truncated.
claimed_sides = st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).filter(
    lambda wh: wh[0] * wh[1] <= 2**25 or wh[0] * wh[1] > 2 * 89_478_485)


@st.composite
def file_content(draw) -> bytes:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    side = st.one_of(st.integers(28, 72), st.integers(1, 72))  # most at least 28 (the smallest resolution)
    image = st.builds(_image_bytes, st.just(fmt), st.sampled_from(FORMATS[fmt]), side, side, st.integers(0, 1000))
    kind = draw(st.sampled_from(["image", "image", "image", "damaged", "bytes", "empty", "claim", "text"]))
    if kind == "image":
        return Blob(draw(image))
    if kind == "damaged":
        return draw(damaged(draw(image)))
    if kind == "bytes":
        return draw(st.binary(max_size=256))
    if kind == "claim":
        return _png_claiming(*draw(claimed_sides))
    if kind == "text":
        return draw(SAFE_TEXT).encode("utf-8", "surrogatepass")
    return b""


NAME = st.text(st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)), min_size=1, max_size=16)


@st.composite
def image_folder(draw) -> list[tuple[tuple[str, ...], bytes]]:
    """Files as (path parts, content): 0 to 2 folders deep, odd names (spaces, unicode, leading dots or
    dashes, any extension), contents of every kind."""
    entries = draw(st.lists(st.tuples(st.lists(NAME, max_size=2), NAME, st.sampled_from(EXTS), file_content()),
                            min_size=0, max_size=8))
    return [((*dirs, stem + ext), content) for dirs, stem, ext, content in entries]


def _write_folder(root: Path, files) -> int:
    root.mkdir(parents=True)
    written = 0
    for parts, content in files:
        path = root.joinpath(*parts)
        if any(part in (".", "..") for part in parts) or len(path.name.encode()) > 200:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            path.write_bytes(content)
            written += 1
        except (FileExistsError, NotADirectoryError):  # a file and a folder of the same name: keep the first
            continue
    return written


data_sets = st.fixed_dictionaries({}, optional={
    "data.crop": st.one_of(st.integers(0, 80), st.integers(-2, 0)),
    "data.channels": st.sampled_from([0, 1, 3, 2]),
    "data.labels_from_subfolders": st.booleans(),
    "data.strict": st.booleans(),
    "data.classes": st.sampled_from(["[0]", "[1, 0]", "[5]", "[]"]),
})


@robust(60)
@given(files=image_folder(), resolution=st.sampled_from([0, 0, 28, 32, 64]), sets=data_sets)
def test_image_folders_of_random_contents(scratch, files, resolution, sets):
    with scratch() as d:
        folder = d / "images"
        _write_folder(folder, files)
        items = [a for k, v in sets.items() for a in ("--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}")]
        r = run_cli(["prepare", "folder", "--set", f"data.path={folder}", "--workers", "1", "--resolution", resolution,
                     *items], what="image folder", untouched=[folder])
        if r.rc == 0:
            assert json.loads(r.out)["n"] >= 1
            run_cli(["train", "folder-dcgan", "--data", folder, "--dry-run", "--out", d / "run",
                     "--set", f"data.resolution={resolution}", *items], what="image folder",
                    untouched=[folder, d / "cache"], absent=[d / "run"])


# ---- the tracebacks these properties found, each kept as a case of its own ----------------------------

def _error(r: Result) -> str:
    return r.err.strip().splitlines()[-1]


@pytest.mark.parametrize("kimg", ["inf", "1e308", "nan", "-inf"])
def test_kimg_that_no_step_count_holds_is_one_line(scratch, kimg):
    """--kimg inf (or 1e308: inf once multiplied by 1000) raised OverflowError converting to steps."""
    with scratch() as d:
        r = run_cli(["train", "toy-ring8", "--dry-run", "--out", d / "run", f"--kimg={kimg}"], what="regression",
                    exits=(2,), absent=[d / "run"])
        assert "--kimg must be a finite number > 0" in _error(r)
        r = run_cli(["sweep", "toy-ring8", "--out", d / "sweep", f"--kimg={kimg}", "--device", "cpu"], what="regression",
                    exits=(2,), absent=[d / "sweep"])
        assert "--kimg must be a finite number > 0" in _error(r)


@pytest.mark.parametrize("z_dim", [2**51, 2**63])
def test_model_sizes_no_layer_can_have_are_one_line(scratch, prepared, z_dim):
    """model.z_dim=2**51 overflowed torch's storage size (RuntimeError), 2**63 an int64 (TypeError)."""
    skip_without_mnist()  # the dry run builds the models only for prepared data
    with scratch(cache=False) as d:
        r = run_cli(["train", "mnist-dcgan", "--dry-run", "--out", d / "run", "--set", "data.split=test",
                     "--set", f"model.z_dim={z_dim}"], what="regression", exits=(2,), absent=[d / "run"])
        assert f"model.z_dim={z_dim}" in _error(r) and "cannot be built" in _error(r)


def test_a_toml_file_that_is_not_utf8_is_one_line(scratch):
    """A damaged byte that is not UTF-8 raised UnicodeDecodeError reading a TOML file."""
    with scratch() as d:
        path = d / "bad.toml"
        path.write_bytes(b"[model]\nz_dim = 3\n\xe4\n")
        r = run_cli(["train", path, "--dry-run", "--out", d / "run"], what="regression", exits=(2,), untouched=[path])
        assert "is not valid TOML: not UTF-8 text (byte 0xe4 at offset 18)" in _error(r)


def test_a_checkpoint_header_holding_a_line_break_is_one_line(scratch, trained):
    """format_version "\\n" in a checkpoint's header printed an error of two lines."""
    _, ckpt = trained
    _, payload = _split(ckpt.read_bytes())
    from dcgan.checkpoint import MAGIC

    with scratch() as d:
        path = d / "x.ckpt"
        path.write_bytes(MAGIC + json.dumps({"format_version": "\n", "sha256": "", "bytes": 0}).encode() + b"\n" + payload)
        r = run_cli(["sample", path, "--out", d / "x.png", "--device", "cpu"], what="regression", exits=(2,),
                    untouched=[path])
        assert "has a damaged header" in _error(r)


def test_error_messages_quoting_a_line_break_stay_one_line(scratch):
    """A file named with a line break, refused under data.strict: the message shows it escaped."""
    with scratch() as d:
        folder = _png_folder(d / "images", n=2)
        (folder / "bad\nname.png").write_bytes(b"not an image")
        r = run_cli(["prepare", "folder", "--set", f"data.path={folder}", "--set", "data.strict=true", "--workers", "1"],
                    what="regression", exits=(2,), untouched=[folder])
        assert "bad\\nname.png is not a readable image" in _error(r)


def test_a_metrics_log_with_bytes_that_are_not_utf8(scratch, trained):
    """metrics.jsonl with a damaged byte raised UnicodeDecodeError on a resume (its dry run too)."""
    run, _ = trained
    with scratch() as d:
        copy = d / "run"
        shutil.copytree(run, copy)
        (copy / "metrics.jsonl").write_bytes((run / "metrics.jsonl").read_bytes() + b"{\"step\": \xff}\n")
        run_cli(["train", copy, "--resume", "--steps", "4", "--dry-run"], what="regression", exits=(0,), untouched=[copy])
        from dcgan.files import read_metrics

        assert read_metrics(copy / "metrics.jsonl") == [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("damage", ["meta-not-json", "meta-not-utf8", "meta-shape", "images-truncated", "images-header",
                                    "labels-missing", "labels-out-of-range"])
def test_a_damaged_cache_entry_is_built_again(scratch, cached_folder, damage):
    """Each of these raised from numpy or json (ValueError, KeyError, TypeError, tokenize errors) when the
    entry was read: now the entry is built again, with a warning naming it; a dry run passes it over."""
    folder, cache, entry = cached_folder
    with scratch() as d:
        shutil.copytree(cache, d / "cache")
        e = d / "cache" / entry
        if damage == "meta-not-json":
            (e / "meta.json").write_text("{'shape': [6, 1, 32, 32]}")
        elif damage == "meta-not-utf8":
            (e / "meta.json").write_bytes(b"\x80" + (e / "meta.json").read_bytes())
        elif damage == "meta-shape":
            meta = json.loads((e / "meta.json").read_text())
            (e / "meta.json").write_text(json.dumps({**meta, "shape": "6x1x32x32"}))
        elif damage == "images-truncated":
            (e / "images.npy").write_bytes((e / "images.npy").read_bytes()[:6])
        elif damage == "images-header":
            (e / "images.npy").write_bytes((e / "images.npy").read_bytes().replace(b"'descr'", b"'\x01descr'", 1))
        elif damage == "labels-missing":
            (e / "labels.npy").unlink()
        else:
            np.save(e / "labels.npy", np.full(6, 3, dtype=np.int64))  # unlabelled data: every label is 0
        sets = ["--set", f"data.path={folder}"]
        run_cli(["train", "folder-dcgan", "--dry-run", "--out", d / "run", *sets], what="regression", exits=(0,),
                untouched=[d / "cache"], absent=[d / "run"])
        r = run_cli(["prepare", "folder", "--workers", "1", *sets], what="regression", exits=(0,))
        assert f"the cache entry {e} is damaged" in r.err and "building it again" in r.err
        assert json.loads(r.out)["n"] == 6
        assert json.loads(r.out)["content_hash"] == json.loads((cache / entry / "meta.json").read_text())["content_hash"]
        r = run_cli(["prepare", "folder", "--workers", "1", *sets], what="regression", exits=(0,))
        assert "damaged" not in r.err  # the entry built again reads as it was written


@pytest.mark.parametrize("damage", ["truncated-gzip", "labels-none", "labels-text", "labels-huge", "codec"])
def test_damaged_cifar_batches_are_one_line(scratch, damage):
    """A tarball cut mid-stream raised EOFError from tarfile; labels [None] / ["a"] / [2**70] raised from
    numpy; a pickle calling _codecs.encode with an unknown codec raised LookupError."""
    members = _cifar_pickles()
    if damage == "labels-none":
        members["test_batch"] = pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [None] * 3}, protocol=2)
    elif damage == "labels-text":
        members["test_batch"] = pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": ["a"] * 3}, protocol=2)
    elif damage == "labels-huge":
        members["test_batch"] = pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [2**70] * 3}, protocol=2)
    elif damage == "codec":  # protocol 2 writes bytes as _codecs.encode(text, "latin1"); here the codec is unknown
        members["test_batch"] = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x07\x00\x00\x00nocodecq\x01\x86q\x02Rq\x03."
    tar = _tar(members)
    if damage == "truncated-gzip":
        tar = tar[: len(tar) // 2]
    with scratch() as d:
        path = d / "cifar-10-python.tar.gz"
        path.write_bytes(tar)
        r = run_cli(["prepare", "cifar10", "--split", "test", "--set", f"data.path={path}"], what="regression",
                    exits=(2,), untouched=[path])
        assert str(path) in _error(r)


def test_an_image_claiming_a_huge_size_is_skipped_or_refused_under_strict(scratch):
    """A PNG header claiming 100000 x 100000 pixels raised Pillow's DecompressionBombError (not an OSError)."""
    with scratch() as d:
        folder = _png_folder(d / "images", n=3)
        (folder / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
        r = run_cli(["prepare", "folder", "--set", f"data.path={folder}", "--workers", "1", "--set", "data.strict=true"],
                    what="regression", exits=(2,), untouched=[folder])
        assert "bomb.png is not a readable image (DecompressionBombError)" in _error(r)
        r = run_cli(["prepare", "folder", "--set", f"data.path={folder}", "--workers", "1"], what="regression",
                    exits=(0,), untouched=[folder])
        assert json.loads(r.out)["n"] == 3 and "skipped 1 unreadable file(s): bomb.png" in r.err
