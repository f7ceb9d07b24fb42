"""Dataset sources: each returns its examples with int64 labels; `prepare.py` turns that into
the canonical cache. Two kinds of data flow through the same pipeline, told apart by the shape
of one example (`kind_of`):

    images  uint8 (N, C, H, W), read from raw files (downloaded when they can be): mnist, fashion-mnist,
            cifar10 (the python tarball, data/cifar.py); celeba, lsun, folder (image folders, data/folder.py)
    points  float32 (N, D), synthetic and seeded, no files: gaussian, ring8, grid25 (dcgan/toy)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UserError
from ..registry import Registry
from .raw import DecodeTarget, RawData


@dataclass(frozen=True)
class Source:
    name: str
    splits: tuple[str, ...]
    load: Callable[[Path, str], RawData]  # (data root, split) -> RawData
    files: Callable[[Path, str], list[Path]]  # files the load reads (present or not); [] for synthetic data
    target: Any = None  # synthetic points: the distribution drawn from (dcgan/toy/distributions.py)
    version: str = ""  # hashed into the cache key: what the data depends on besides its files
    configured: bool = False  # True: load(root, split, cfg, log) and files(root, split, cfg) also get the DataConfig
    decodes: bool = False  # True: load(root, split, cfg, log, into) decodes into `into` (a DecodeTarget)


SOURCES: Registry[Source] = Registry("dataset")


# ---- MNIST and Fashion-MNIST (IDX files) ----------------------------------------------------

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def _idx_source(name: str, class_names: list[str]) -> Source:
    def files(root: Path, split: str) -> list[Path]:
        return [root / name / f for f in _IDX_FILES[split]]

    def load(root: Path, split: str) -> RawData:
        from .download import ensure_files, verify_files
        from .idx import read_idx

        wanted = list(_IDX_FILES[split])
        paths = ensure_files(root, name, wanted)
        verify_files(root, name, wanted)
        images, labels = read_idx(paths[wanted[0]]), read_idx(paths[wanted[1]])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{paths[wanted[0]]} and {paths[wanted[1]]} do not match: images {images.shape}, "
                f"labels {labels.shape}; delete them so they are fetched again"
            )
        if labels.max(initial=0) >= len(class_names):
            raise UserError(f"{paths[wanted[1]]} holds label {labels.max()} but {name} has {len(class_names)} classes")
        return RawData(
            images=images[:, None].astype(np.uint8),  # (N, 1, 28, 28)
            labels=labels.astype(np.int64),
            class_names=class_names,
            files=[paths[w] for w in wanted],
        )

    return Source(name=name, splits=tuple(_IDX_FILES), load=load, files=files)


SOURCES.register("mnist")(_idx_source("mnist", MNIST_CLASSES))
SOURCES.register("fashion-mnist")(_idx_source("fashion-mnist", FASHION_CLASSES))


# ---- synthetic 2-D points (toy GANs) ---------------------------------------------------------

def _toy_source(name: str, target) -> Source:
    from ..toy.distributions import SPLITS

    def load(root: Path, split: str) -> RawData:
        n, seed = SPLITS[split]
        points, labels = target.sample(n, seed)  # (n, 2) float32, (n,) int64
        return RawData(images=points, labels=labels, class_names=[str(k) for k in range(target.num_classes)])

    return Source(name=name, splits=tuple(SPLITS), load=load, files=lambda root, split: [], target=target,
                  version=f"{target.describe()} splits={SPLITS}")


def _register_toys() -> None:
    from ..toy.distributions import TARGETS

    for name, target in TARGETS.items():
        SOURCES.register(name)(_toy_source(name, target))


_register_toys()


# ---- CIFAR-10, CelebA, LSUN, image folders (they read data.path, data.crop, ...) -------------

def _cifar_files(root: Path, split: str, cfg) -> list[Path]:
    from .cifar import TARBALL

    return [Path(cfg.path).expanduser() if cfg.path else root / "cifar10" / TARBALL]


def _cifar_load(root: Path, split: str, cfg, log=None) -> RawData:
    from .cifar import CLASSES, TARBALL, read_tarball
    from .download import CIFAR10, ensure_files, verify_files

    if cfg.path:  # the user's own copy: used as it is (no checksum: it may be a subset or a re-pack)
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise UserError(f"data.path={cfg.path}: no such file; give the path of {TARBALL}, or leave data.path "
                            f"empty to use <data root>/cifar10/{TARBALL} (downloaded when missing)")
    else:  # <root>/cifar10/cifar-10-python.tar.gz, downloaded when missing, checked against the published MD5
        path = ensure_files(root, "cifar10", [TARBALL], spec=CIFAR10)[TARBALL]
        verify_files(root, "cifar10", [TARBALL], spec=CIFAR10)
    images, labels = read_tarball(path, split)
    return RawData(images=images, labels=labels, class_names=list(CLASSES), files=[path])


SOURCES.register("cifar10")(Source(name="cifar10", splits=("train", "test"), load=_cifar_load,
                                   files=_cifar_files, configured=True))


def _folder_source(name: str, default: str, how: str, lmdb: bool = False) -> Source:
    def folder(root: Path, cfg) -> Path:
        if name == "folder" and not cfg.path:
            raise UserError(f"dataset 'folder' needs data.path: --set data.path=/path/to/images. {how}")
        return Path(cfg.path).expanduser() if cfg.path else root / default

    def files(root: Path, split: str, cfg) -> list[Path]:
        from .folder import list_files
        from .lsun import is_lmdb, lmdb_files

        f = folder(root, cfg)
        if lmdb and is_lmdb(f):
            return lmdb_files(f)
        return list_files(f)

    def load(root: Path, split: str, cfg, log=None, into: DecodeTarget | None = None) -> RawData:
        from .folder import load_folder
        from .lsun import is_lmdb, load_lmdb

        f = folder(root, cfg)
        if lmdb and is_lmdb(f):
            return load_lmdb(f, cfg, log, into)
        return load_folder(f, cfg, f"dataset {name}", how, log, into)

    return Source(name=name, splits=("train",), load=load, files=files, configured=True, decodes=True)


SOURCES.register("folder")(_folder_source(
    "folder", "folder",
    "Put PNG/JPEG/WebP images in a folder (optionally one sub-folder per class with "
    "data.labels_from_subfolders=true)."))
SOURCES.register("celeba")(_folder_source(
    "celeba", "celeba/img_align_celeba",
    "Download CelebA's aligned images (img_align_celeba.zip, from the CelebA page "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), unzip it so that <data root>/celeba/img_align_celeba/ "
    "holds 000001.jpg ..., or point data.path at that folder."))
SOURCES.register("lsun")(_folder_source(
    "lsun", "lsun",
    "Put one LSUN category into <data root>/lsun/ (or data.path): either its images exported to a folder "
    "(e.g. with the LSUN tools' export), or its lmdb folder (e.g. bedroom_train_lmdb/ holding data.mdb) "
    "with the optional lmdb package installed (pip install 'dcgan[lsun]').", lmdb=True))
