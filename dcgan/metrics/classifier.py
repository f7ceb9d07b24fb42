"""The project's own feature extractors: small CNN classifiers trained on labelled data.

"mnist-cnn-v1", the shipped MNIST extractor (input 1x28x28 gray in [-1, 1]):

    conv 3x3 1→32, maxpool 2, batch norm, ReLU         28x28 → 14x14
    conv 3x3 32→64, maxpool 2, batch norm, ReLU        14x14 → 7x7
    flatten, linear 3136→128, ReLU                     the 128-d feature (FID, KID, precision/recall)
    linear 128→10                                      the logits (class probabilities)

"small-cnn-v1" (any labelled data, C x S x S, C in {1, 3}, S <= MAX_INPUT) adds an average pool to a
map of about 8x8 before fc1. Pooling comes before batch norm and ReLU so those run on maps a quarter
of the size. `train_any_classifier` trains either, seeded and deterministic on the CPU, and writes
the safetensors weights with a JSON record beside them (command, seed, test accuracy, SHA-256, torch
version, date, data) that `features.load_extractor` checks them against.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save

from ..config import DataConfig
from ..data.prepare import cache_root, data_root, prepare, resize
from ..data.sources import SOURCES
from ..device import pick_device
from ..errors import UserError
from ..files import atomic_write
from ..images import from_uint8

ARCH = "mnist-cnn-v1"
ARCH_ANY = "small-cnn-v1"
INPUT_SIZE = 28
MAX_INPUT = 64  # small-cnn-v1: larger images are resized down to this side
HOLDOUT_FRACTION = 0.1  # datasets without a test split: this share of train is held out for the accuracy
HOLDOUT_SEED = 0  # which images are held out, whatever the training seed
FEATURE_DIM = 128
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DATASETS = ("mnist", "fashion-mnist")  # the 1x28x28, 10-class sources mnist-cnn-v1 fits

DEFAULT_EPOCHS = 3
DEFAULT_BATCH = 128
DEFAULT_LR = 3e-3  # the one-cycle peak

Log = Callable[[str], None]


def default_weights_path(dataset: str) -> Path:
    """Where the package ships (and `train-classifier` writes by default) a dataset's weights."""
    return WEIGHTS_DIR / f"{dataset}-classifier.safetensors"


def record_path(weights: str | Path) -> Path:
    """The JSON record beside a weights file: same name, .json suffix."""
    return Path(weights).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in blocks of 1 MiB (Inception's weights are ~100 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Classifier(nn.Module):
    """mnist-cnn-v1 (1x28x28) or small-cnn-v1 (C x S x S); `forward` → logits (N, K),
    `features_and_logits` → ((N, 128), (N, K))."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = INPUT_SIZE, arch: str = ARCH):
        if arch == ARCH_ANY and in_channels not in (1, 3):
            raise UserError(f"the classifier reads 1- or 3-channel images, got {in_channels} channels")
        if arch == ARCH_ANY and not 8 <= input_size <= MAX_INPUT:
            raise UserError(f"the classifier's input side must be in 8..{MAX_INPUT}, got {input_size}")
        super().__init__()
        self.arch, self.num_classes, self.in_channels, self.input_size = arch, num_classes, in_channels, input_size
        self.pool = max(1, (input_size // 4) // 8)  # the average pool's kernel (1 at 28: none)
        self.side = (input_size // 4) // self.pool  # of the map fc1 reads, about 8
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)
        if arch == ARCH_ANY:  # fc1 drawn again after fc2, at any S: the initialisation small-cnn-v1 was trained with
            self.fc1 = nn.Linear(64 * self.side * self.side, FEATURE_DIM)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(F.max_pool2d(self.conv1(x), 2)))  # (N, 32, S/2, S/2)
        x = F.relu(self.bn2(F.max_pool2d(self.conv2(x), 2)))  # (N, 64, S/4, S/4)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)  # (N, 64, m, m), m ~ 8
        f = F.relu(self.fc1(x.flatten(1)))  # (N, 128)
        return f, self.fc2(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000,
             device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of `model` (switched to eval mode) on uint8 images (N, C, H, W) of its input size."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = from_uint8(torch.from_numpy(np.array(images[i : i + batch])).to(device))  # a writable copy
        pred = model(x).argmax(1).cpu().numpy()
        correct += int((pred == np.asarray(labels[i : i + batch])).sum())
    return correct / max(len(images), 1)


def _fit(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, *, epochs: int, batch: int, lr: float,
         seed: int, log: Log, what: str, dev: torch.device) -> float:
    """Train `model` on uint8 images `x_all` (N, C, H, W) and labels `y_all` (N,): Adam, one-cycle learning
    rate, data order from a generator seeded by (seed, epoch). Returns the seconds taken."""
    n = len(x_all)
    steps_per_epoch = math.ceil(n / batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    log(f"training {what} ({n} images) for {epochs} epochs, batch {batch}, seed {seed}, "
        f"{torch.get_num_threads()} threads, on {dev}")
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).to(dev)
        loss_sum, t_epoch = 0.0, time.perf_counter()
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(from_uint8(x_all[idx])), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / steps_per_epoch:.4f}, {time.perf_counter() - t_epoch:.0f} s")
    return time.perf_counter() - t0


# ---- which data a classifier fits, and where its weights live -----------------------------------

IDENTITY_KEYS = ("dataset", "path", "crop", "channels", "classes")


def data_identity(data) -> dict[str, Any]:
    """What names the data of a DataConfig for the classifier cache (`IDENTITY_KEYS`, the path made absolute).
    Not the resolution (samples are resized to the classifier's input) nor labels_from_subfolders (a
    run on an image folder may ignore the labels its classifier was trained with)."""
    ident = {k: getattr(data, k) for k in IDENTITY_KEYS}
    if ident["path"]:
        ident["path"] = str(Path(ident["path"]).expanduser().resolve())
    ident["classes"] = list(ident["classes"])
    return ident


def data_key(data) -> str:
    return hashlib.sha256(json.dumps(data_identity(data), sort_keys=True).encode()).hexdigest()[:16]


def cached_weights_path(data) -> Path:
    """Where `train_any_classifier` writes (and evaluation looks for) the classifier of `data`:
    <cache>/classifiers ($DCGAN_CACHE, else ~/.cache/dcgan/prepared) / DATASET-KEY.safetensors."""
    return cache_root() / "classifiers" / f"{data.dataset}-{data_key(data)}.safetensors"


def train_command(data) -> str:
    """The `dcgan eval train-classifier` command line that trains the classifier of `data`."""
    default = DataConfig()
    sets = []
    for k in ("path", "crop", "channels", "classes", "labels_from_subfolders", "resolution"):
        v = getattr(data, k)
        if k == "labels_from_subfolders" and data.dataset in ("folder", "celeba", "lsun"):
            v = True  # the classifier needs labels; a run may have trained without them
        if v != getattr(default, k):
            value = json.dumps(v).replace(" ", "") if not isinstance(v, str) else v
            sets.append(f" --set data.{k}={value}")
    return f"dcgan eval train-classifier {data.dataset}" + "".join(sets)


# ---- the trainer ---------------------------------------------------------------------------------

def train_classifier(dataset: str = "mnist", *, out: str | Path | None = None, **options) -> dict[str, Any]:
    """The shipped extractor's recipe: `train_any_classifier` (`options`) of mnist-cnn-v1 on `dataset`
    (mnist, fashion-mnist), weights to `out` (default: the package's), with the shipped record format."""
    if dataset not in DATASETS:
        raise UserError(f"train_classifier supports the datasets [{', '.join(DATASETS)}] "
                        f"(1x28x28, 10 classes, arch {ARCH}), got {dataset!r}; for any other labelled dataset use "
                        f"train_any_classifier (dcgan eval train-classifier {dataset})")
    return train_any_classifier(DataConfig(dataset=dataset), out=out or default_weights_path(dataset), arch=ARCH,
                                **options)


def train_any_classifier(data, *, epochs: int = DEFAULT_EPOCHS, seed: int = 0, out: str | Path | None = None,
                         batch: int = DEFAULT_BATCH, lr: float = DEFAULT_LR, device: str = "cpu",
                         data_dir: str | None = None, command: str | None = None, train_images: int | None = None,
                         test_images: int | None = None, log: Log | None = None,
                         arch: str = ARCH_ANY) -> dict[str, Any]:
    """Train small-cnn-v1 (`arch` mnist-cnn-v1: see `train_classifier`) on labelled image data (a DataConfig:
    mnist, fashion-mnist, cifar10, image folders with data.labels_from_subfolders=true), measure it on
    the test split (else on a fixed held-out HOLDOUT_FRACTION of train), write the weights to `out`
    (default `cached_weights_path(data)`, where evaluation finds them); returns the record. Missing
    source files are an error saying to run 'dcgan prepare' (the shipped recipe fetches MNIST itself)."""
    shipped = arch == ARCH
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if batch < 1:
        raise UserError(f"{'batch' if shipped else '--batch-size'} must be >= 1, got {batch}")
    for flag, value in (("--train-images", train_images), ("--test-images", test_images)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    out = Path(out) if out else cached_weights_path(data)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the weights file must end in .safetensors")
    source = SOURCES.get(data.dataset)  # UserError naming the known datasets
    command = command or train_command(data) + f" --epochs {epochs} --seed {seed}"
    dev = pick_device(device)

    what = f"{data.dataset}" + (f" ({data.path})" if data.path else "")
    root = data_root(data_dir)
    for split in (() if shipped else source.splits if "test" in source.splits else ("train",)):
        where = (root, split, replace(data, split=split)) if source.configured else (root, split)
        missing = [f for f in source.files(*where) if not Path(f).exists()]
        if missing:  # never a download from here (the shipped recipe fetches MNIST, as it always has)
            raise UserError(f"{what}: {missing[0]} is missing; fetch the data first with 'dcgan prepare "
                            f"{data.dataset}' (or point data.path at your copy), then train the classifier")
    train = prepare(replace(data, split="train"), data_dir, log=log)
    if train.kind != "images":
        raise UserError(f"{what} holds 2-D points, not images; the classifier measures image data. A toy run needs "
                        f"no classifier: 'dcgan eval RUN' measures it against its target (modes covered, D accuracy, "
                        f"...)")
    if train.num_classes < 2:
        how = ("put one sub-folder per class under data.path and add --set data.labels_from_subfolders=true"
               if data.dataset in ("folder", "celeba", "lsun") else "choose a labelled dataset")
        raise UserError(f"{what} has {'no labels' if train.num_classes == 0 else 'a single class'}: the classifier "
                        f"needs at least 2 labelled classes; {how}. Unlabelled image data can be measured with "
                        f"Inception instead (dcgan eval RUN --extractor inception --inception-weights PATH)")
    channels, side = train.shape[0], train.shape[1]
    if channels not in (1, 3) or train.shape[1] != train.shape[2]:
        raise UserError(f"{what} holds {train.shape} images; the classifier needs square 1- or 3-channel images")
    input_size = min(side, MAX_INPUT)
    if input_size < 8:
        raise UserError(f"{what} holds {side}x{side} images; the classifier needs at least 8x8")

    train_x, train_y = np.asarray(train.images), np.asarray(train.labels)
    if "test" in source.splits:
        test = prepare(replace(data, split="test"), data_dir, log=log)
        if test.meta["class_names"] != train.meta["class_names"] or test.shape != train.shape:
            raise UserError(f"{what}: the test split's classes or shape differ from the train split's")
        test_x, test_y = np.asarray(test.images), np.asarray(test.labels)
        test_split, test_hash = "test", test.meta["content_hash"]
    else:
        # a fixed random HOLDOUT_FRACTION (at least one image), whatever the training seed; both in order
        perm = np.random.default_rng(HOLDOUT_SEED).permutation(len(train))
        n_out = max(1, int(round(len(train) * HOLDOUT_FRACTION)))
        keep, held = np.sort(perm[n_out:]), np.sort(perm[:n_out])
        if len(keep) < 1:
            raise UserError(f"{what} holds {len(train)} image(s), too few to hold some out; add images")
        test_x, test_y, train_x, train_y = train_x[held], train_y[held], train_x[keep], train_y[keep]
        test_split = f"held out: random {len(held)} of the {len(train)} train images (seed {HOLDOUT_SEED})"
        test_hash = None
    limit = len(train_x) if train_images is None else min(train_images, len(train_x))
    n_test = len(test_x) if test_images is None else min(test_images, len(test_x))
    train_x, train_y, test_x, test_y = train_x[:limit], train_y[:limit], test_x[:n_test], test_y[:n_test]
    if input_size != side:
        log(f"resizing {side}x{side} images to the classifier's {input_size}x{input_size}")
        train_x, test_x = resize(train_x, input_size), resize(test_x, input_size)

    # Deterministic algorithms for the training (the caller's setting is restored); the weights
    # are drawn right after seeding, so they depend on the seed alone.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = Classifier(train.num_classes, channels, input_size, arch).to(dev)
        x_all = torch.from_numpy(np.array(train_x)).to(dev)  # (N, C, S, S) uint8
        y_all = torch.from_numpy(np.array(train_y, dtype=np.int64)).to(dev)
        train_s = _fit(model, x_all, y_all, epochs=epochs, batch=batch, lr=lr, seed=seed, log=log, dev=dev,
                       what=f"{arch} ({channels}x{input_size}x{input_size}) on {what}")
        test_acc = accuracy(model, test_x, test_y, device=dev)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    log(f"{what} accuracy {test_acc:.4f} on {n_test} {'test' if test_split == 'test' else 'held-out'} images; "
        f"training took {train_s:.0f} s")

    # No safetensors metadata: its order in the header varies from process to process, which would
    # make the bytes (and the SHA-256) of identical weights differ. The JSON record holds it instead.
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    # the shipped record keeps the fields (and their order) it was first written with
    s = input_size
    of_data = {} if shipped else {"data": {k: v for k, v in asdict(data).items() if k != "split"},
                                  "data_identity": data_identity(data), "data_key": data_key(data)}
    io = {"input": "1x28x28 gray, uint8 / 127.5 - 1 (range [-1, 1])",
          "feature": "128-d ReLU output of fc1 (penultimate layer)"} if shipped else {
        "input_shape": [channels, s, s], "input": f"{channels}x{s}x{s}, uint8 / 127.5 - 1 (range [-1, 1])"
        + (f"; the {side}x{side} data resized (bilinear, antialiased)" if s != side else ""),
        "feature": f"128-d ReLU output of fc1 (after avg-pool {model.pool} to {model.side}x{model.side})"}
    record = {"arch": arch, "dataset": data.dataset, **of_data, "weights": out.name, "sha256": file_sha256(out),
              "bytes": out.stat().st_size, "command": command, "seed": seed, "epochs": epochs, "batch": batch,
              "lr_max": lr, "schedule": "one-cycle (torch OneCycleLR defaults), Adam, no augmentation",
              **({} if shipped else {"test_split": test_split}), "test_accuracy": test_acc, "test_images": n_test,
              "train_images": limit, "train_content_hash": train.meta["content_hash"], "test_content_hash": test_hash,
              **io, "num_classes": train.num_classes, "class_names": train.meta["class_names"],
              "train_seconds": round(train_s, 1), "device": str(dev), "num_threads": torch.get_num_threads(),
              "deterministic": True, "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(record_path(out), (json.dumps(record, indent=1) + "\n").encode())
    log(f"wrote {out} ({record['bytes']} bytes, sha256 {record['sha256'][:12]}…) and {record_path(out).name}")
    return record
