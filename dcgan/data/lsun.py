"""LSUN categories as lmdb databases (the official download: <category>_train_lmdb/ holding
data.mdb, each value one encoded image — WebP or JPEG). Read with the optional `lmdb` package
(pip install 'dcgan[lsun]'); a folder of exported images needs no extra package (data/folder.py).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .raw import RawData


def is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").is_file() or (path.is_file() and path.suffix == ".mdb")


def lmdb_files(path: Path) -> list[Path]:
    return [path / "data.mdb"] if path.is_dir() else [path]


def load_lmdb(path: Path, cfg, log=None, into=None) -> RawData:
    try:
        import lmdb
    except ImportError:
        raise UserError(f"{path} is an lmdb database; reading it needs the lmdb package: pip install 'dcgan[lsun]' "
                        f"(or export its images to a folder and point data.path there)") from None
    from .folder import open_bytes, read_images

    folder = path if path.is_dir() else path.parent
    env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, subdir=True)
    try:
        with env.begin(write=False) as txn:
            items = [(key.decode(errors="replace"), bytes(value)) for key, value in txn.cursor()]
    finally:
        env.close()
    if not items:
        raise UserError(f"the lmdb database {folder} is empty")
    workers, out = (into.workers, into.path) if into is not None else (1, None)
    images, kept = read_images(items, cfg, str(folder), log, open_item=open_bytes, workers=workers, out=out)
    import numpy as np

    left_out = sorted(set(range(len(items))) - set(kept))
    return RawData(images=images, labels=np.zeros(len(images), dtype=np.int64), class_names=[],
                   files=lmdb_files(path), skipped=[items[i][0] for i in left_out])
