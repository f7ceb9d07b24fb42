"""The project's own feature extractors: small CNN classifiers trained on labelled data.

Architecture "mnist-cnn-v1" (input 1x28x28 gray in [-1, 1]), the shipped MNIST extractor:

    conv 3x3 1→32, maxpool 2, batch norm, ReLU         28x28 → 14x14
    conv 3x3 32→64, maxpool 2, batch norm, ReLU        14x14 → 7x7
    flatten, linear 3136→128, ReLU                     the 128-d feature (FID, KID, precision/recall)
    linear 128→10                                      the logits (class probabilities)

Architecture "small-cnn-v1" (any labelled image dataset: input CxSxS, C in {1, 3}, S = the data's
side, at most MAX_INPUT; larger images are resized down to MAX_INPUT): the same two conv blocks
with C input channels, then an average pool of kernel k = max(1, (S // 4) // 8) so the map is
about 8x8 whatever S is, then linear 64·m·m→128 (the feature) and linear 128→K. At S = 28 it is
mnist-cnn-v1 with C input channels (k = 1, a 7x7 map).

Pooling comes before batch norm and ReLU so that the elementwise layers run on maps a quarter
of the size: an epoch of MNIST takes about a minute on a 2-core CPU. Training is seeded and
deterministic on the CPU (`torch.use_deterministic_algorithms(True)`, a data order drawn from a
seeded generator): Adam with a one-cycle learning rate, no augmentation.

`train_classifier` (MNIST-style sources, package weights) and `train_any_classifier` (any
labelled dataset, weights in the user's cache) write the weights as safetensors and, beside
them, a JSON record (the command, seed, epochs, test accuracy, SHA-256 of the weights file,
torch version, date, the data it was trained on) that `features.load_extractor` checks the
weights against.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

ARCH = "mnist-cnn-v1"
ARCH_ANY = "small-cnn-v1"
ARCHS = (ARCH, ARCH_ANY)
INPUT_SIZE = 28
MAX_INPUT = 64  # small-cnn-v1: larger images are resized down to this side
HOLDOUT_FRACTION = 0.1  # datasets without a test split: this share of train is held out for the accuracy
HOLDOUT_SEED = 0  # which images are held out, whatever the training seed
FEATURE_DIM = 128
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DATASETS = ("mnist", "fashion-mnist")  # the 1x28x28, 10-class sources this classifier fits

DEFAULT_EPOCHS = 3
DEFAULT_BATCH = 128
DEFAULT_LR = 3e-3  # the one-cycle peak


def default_weights_path(dataset: str) -> Path:
    """Where the package ships (and `train-classifier` writes by default) a dataset's weights."""
    return WEIGHTS_DIR / f"{dataset}-classifier.safetensors"


def record_path(weights: str | Path) -> Path:
    """The JSON record beside a weights file: same name, .json suffix."""
    return Path(weights).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class MnistClassifier(nn.Module):
    """mnist-cnn-v1; `forward` → logits (N, K), `features_and_logits` → ((N, 128), (N, K))."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(F.max_pool2d(self.conv1(x), 2)))  # (N, 32, 14, 14)
        x = F.relu(self.bn2(F.max_pool2d(self.conv2(x), 2)))  # (N, 64, 7, 7)
        f = F.relu(self.fc1(x.flatten(1)))  # (N, 128)
        return f, self.fc2(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def pool_kernel(input_size: int) -> int:
    """small-cnn-v1: the average-pool kernel after the two conv blocks (a map of about 8x8)."""
    return max(1, (input_size // 4) // 8)


def feature_map_side(input_size: int) -> int:
    return (input_size // 4) // pool_kernel(input_size)


class SmallClassifier(MnistClassifier):
    """small-cnn-v1: mnist-cnn-v1's blocks for C x S x S input, an average pool to about 8x8, fc → 128 → K."""

    def __init__(self, num_classes: int, in_channels: int, input_size: int):
        if in_channels not in (1, 3):
            raise UserError(f"the classifier reads 1- or 3-channel images, got {in_channels} channels")
        if not 8 <= input_size <= MAX_INPUT:
            raise UserError(f"the classifier's input side must be in 8..{MAX_INPUT}, got {input_size}")
        super().__init__(num_classes, in_channels)
        self.in_channels, self.input_size = in_channels, input_size
        self.pool = pool_kernel(input_size)
        side = feature_map_side(input_size)
        self.fc1 = nn.Linear(64 * side * side, FEATURE_DIM)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(F.max_pool2d(self.conv1(x), 2)))  # (N, 32, S/2, S/2)
        x = F.relu(self.bn2(F.max_pool2d(self.conv2(x), 2)))  # (N, 64, S/4, S/4)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)  # (N, 64, m, m), m ~ 8
        f = F.relu(self.fc1(x.flatten(1)))  # (N, 128)
        return f, self.fc2(f)


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → float in [-1, 1], the scale the generators produce."""
    return images_uint8.float().div_(127.5).sub_(1.0)


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000,
             device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of `model` (switched to eval mode) on uint8 images (N, C, H, W) of its input size."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = to_input(torch.from_numpy(np.array(images[i : i + batch])).to(device))  # a writable copy
        pred = model(x).argmax(1).cpu().numpy()
        correct += int((pred == np.asarray(labels[i : i + batch])).sum())
    return correct / max(len(images), 1)


def _fit(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, *, epochs: int, batch: int, lr: float,
         seed: int, log: Callable[[str], None], what: str, dev: torch.device) -> float:
    """Train `model` on uint8 images `x_all` (N, C, H, W) and labels `y_all`: Adam, one-cycle
    learning rate, data order from a generator seeded by (seed, epoch). Returns the seconds taken."""
    n = len(x_all)
    steps_per_epoch = math.ceil(n / batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    log(f"training {what} ({n} images) for {epochs} epochs, batch {batch}, "
        f"seed {seed}, {torch.get_num_threads()} threads, on {dev}")
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).to(dev)
        loss_sum, t_epoch = 0.0, time.perf_counter()
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            loss = F.cross_entropy(model(to_input(x_all[idx])), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / steps_per_epoch:.4f}, "
            f"{time.perf_counter() - t_epoch:.0f} s")
    return time.perf_counter() - t0


def _check_options(epochs: int, batch: int, train_images: int | None, test_images: int | None, out: Path, *,
                   batch_name: str) -> Path:
    """UserError for training options no run can use; returns `out`, the weights file."""
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if batch < 1:
        raise UserError(f"{batch_name} must be >= 1, got {batch}")
    for flag, value in (("--train-images", train_images), ("--test-images", test_images)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the weights file must end in .safetensors")
    return out


def _train_and_measure(make_model: Callable[[], nn.Module], train_x, train_y, test_x, test_y, *, epochs: int,
                       batch: int, lr: float, seed: int, log: Callable[[str], None], what: str,
                       dev: torch.device) -> tuple[nn.Module, float, float]:
    """Build the model from `seed`, train it on uint8 train_x (N, C, H, W) / int64 train_y with
    deterministic algorithms (the caller's setting is restored), measure it on test_x / test_y.
    Returns (model, training seconds, test accuracy)."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = make_model().to(dev)
        x_all = torch.from_numpy(np.array(train_x)).to(dev)  # (N, C, H, W) uint8
        y_all = torch.from_numpy(np.array(train_y)).to(dev)
        train_s = _fit(model, x_all, y_all, epochs=epochs, batch=batch, lr=lr, seed=seed, log=log, what=what, dev=dev)
        test_acc = accuracy(model, test_x, test_y, device=dev)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    return model, train_s, test_acc


def _recipe(seed: int, epochs: int, batch: int, lr: float) -> dict[str, Any]:
    """How a classifier was trained, for its record."""
    return {"seed": seed, "epochs": epochs, "batch": batch, "lr_max": lr,
            "schedule": "one-cycle (torch OneCycleLR defaults), Adam, no augmentation"}


def _environment(dev: torch.device) -> dict[str, Any]:
    """Where and when a classifier was trained, for its record."""
    return {"device": str(dev), "num_threads": torch.get_num_threads(), "deterministic": True,
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train_classifier(dataset: str = "mnist", *, epochs: int = DEFAULT_EPOCHS, seed: int = 0,
                     out: str | Path | None = None, batch: int = DEFAULT_BATCH, lr: float = DEFAULT_LR,
                     device: str = "cpu", data_dir: str | None = None, command: str | None = None,
                     train_images: int | None = None, test_images: int | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train mnist-cnn-v1 on the train split of `dataset` (mnist, fashion-mnist), measure it on
    the test split, write the safetensors weights to `out` (default: the package's weights
    folder) and the JSON record beside them. Returns the record. Other labelled datasets:
    `train_any_classifier`.

    `train_images` / `test_images` limit training / measuring to the first that many images of
    the split (quick checks; weights to ship use all of both)."""
    from ..config import DataConfig
    from ..data.prepare import prepare
    from ..device import pick_device

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if dataset not in DATASETS:
        raise UserError(f"train_classifier supports the datasets [{', '.join(DATASETS)}] "
                        f"(1x28x28, 10 classes, arch {ARCH}), got {dataset!r}; for any other labelled dataset use "
                        f"train_any_classifier (dcgan eval train-classifier {dataset})")
    out = _check_options(epochs, batch, train_images, test_images, Path(out) if out else default_weights_path(dataset),
                         batch_name="batch")
    command = command or f"dcgan eval train-classifier {dataset} --epochs {epochs} --seed {seed}"
    dev = pick_device(device)

    train = prepare(DataConfig(dataset=dataset, split="train"), data_dir, log=log)
    test = prepare(DataConfig(dataset=dataset, split="test"), data_dir, log=log)
    for name, ds in (("train", train), ("test", test)):
        if ds.shape != (1, INPUT_SIZE, INPUT_SIZE) or ds.num_classes < 2:
            raise UserError(f"{dataset}/{name} holds {ds.shape} images with {ds.num_classes} classes; "
                            f"the classifier needs 1x28x28 labelled images")

    limit = len(train) if train_images is None else min(train_images, len(train))
    n_test = len(test) if test_images is None else min(test_images, len(test))
    model, train_s, test_acc = _train_and_measure(
        lambda: MnistClassifier(train.num_classes), train.images[:limit], train.labels[:limit],
        test.images[:n_test], test.labels[:n_test], epochs=epochs, batch=batch, lr=lr, seed=seed, log=log,
        what=f"{ARCH} on {dataset}/train", dev=dev)
    log(f"{dataset}/test accuracy {test_acc:.4f} ({n_test} images); training took {train_s:.0f} s")

    _save_weights(model, out)
    record = {
        "arch": ARCH,
        "dataset": dataset,
        "weights": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "command": command,
        **_recipe(seed, epochs, batch, lr),
        "test_accuracy": test_acc,
        "test_images": n_test,
        "train_images": limit,
        "train_content_hash": train.meta["content_hash"],
        "test_content_hash": test.meta["content_hash"],
        "input": "1x28x28 gray, uint8 / 127.5 - 1 (range [-1, 1])",
        "feature": "128-d ReLU output of fc1 (penultimate layer)",
        "num_classes": train.num_classes,
        "class_names": train.meta["class_names"],
        "train_seconds": round(train_s, 1),
        **_environment(dev),
    }
    _write_record(out, record, log)
    return record


def _save_weights(model: nn.Module, out: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    # No safetensors metadata: its order in the header varies from process to process, which would
    # make the bytes (and the SHA-256) of identical weights differ. The JSON record holds it instead.
    tmp.write_bytes(save(state))
    tmp.replace(out)


def _write_record(out: Path, record: dict[str, Any], log: Callable[[str], None]) -> None:
    tmp = record_path(out).with_name(f".{record_path(out).name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(record_path(out))
    log(f"wrote {out} ({record['bytes']} bytes, sha256 {record['sha256'][:12]}…) and {record_path(out).name}")


# ---- any labelled dataset: small-cnn-v1, weights in the user's cache -----------------------------

# DataConfig keys that say which data a classifier fits. Not the resolution (samples are resized to
# the classifier's input) nor labels_from_subfolders (a run on an image folder may ignore the labels
# the classifier was trained with).
IDENTITY_KEYS = ("dataset", "path", "crop", "channels", "classes")


def data_identity(data) -> dict[str, Any]:
    """What names the data of a DataConfig for the classifier cache: the dataset, the absolute
    data.path ("" = the source's default place), crop, channels and class filter."""
    ident = {k: getattr(data, k) for k in IDENTITY_KEYS}
    if ident["path"]:
        ident["path"] = str(Path(ident["path"]).expanduser().resolve())
    ident["classes"] = list(ident["classes"])
    return ident


def data_key(data) -> str:
    return hashlib.sha256(json.dumps(data_identity(data), sort_keys=True).encode()).hexdigest()[:16]


def classifier_cache_dir() -> Path:
    """<cache>/classifiers ($DCGAN_CACHE/classifiers, else ~/.cache/dcgan/prepared/classifiers)."""
    from ..data.prepare import cache_root

    return cache_root() / "classifiers"


def cached_weights_path(data) -> Path:
    """Where `train_any_classifier` writes (and evaluation looks for) the classifier of `data`."""
    return classifier_cache_dir() / f"{data.dataset}-{data_key(data)}.safetensors"


def train_command(data) -> str:
    """The `dcgan eval train-classifier` command line that trains the classifier of `data`."""
    from ..config import DataConfig

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


def holdout_index(size: int, fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of a split without a test split: a fixed random `fraction`
    (at least one image, seed HOLDOUT_SEED) is held out; both in increasing order."""
    n_out = max(1, int(round(size * fraction)))
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(size)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def train_any_classifier(data, *, epochs: int = DEFAULT_EPOCHS, seed: int = 0, out: str | Path | None = None,
                         batch: int = DEFAULT_BATCH, lr: float = DEFAULT_LR, device: str = "cpu",
                         data_dir: str | None = None, command: str | None = None, train_images: int | None = None,
                         test_images: int | None = None,
                         log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train small-cnn-v1 on the labelled image dataset `data` (a DataConfig: mnist, fashion-mnist,
    cifar10, or an image folder / CelebA / LSUN export with data.labels_from_subfolders=true).

    Accuracy is measured on the dataset's test split, or, without one, on a fixed held-out
    HOLDOUT_FRACTION of its train split (not trained on). The weights go to `out` (default:
    `cached_weights_path(data)`, where evaluation finds them) with the JSON record beside them.
    Nothing is downloaded: missing source files are an error that says to run 'dcgan prepare'.
    Returns the record."""
    from dataclasses import asdict, replace

    from ..data.prepare import data_root, prepare, resize
    from ..data.sources import SOURCES
    from ..device import pick_device

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = _check_options(epochs, batch, train_images, test_images, Path(out) if out else cached_weights_path(data),
                         batch_name="--batch-size")
    source = SOURCES.get(data.dataset)  # UserError naming the known datasets
    command = command or train_command(data) + f" --epochs {epochs} --seed {seed}"
    dev = pick_device(device)

    what = f"{data.dataset}" + (f" ({data.path})" if data.path else "")
    root = data_root(data_dir)
    for split in source.splits if "test" in source.splits else ("train",):
        wanted = source.files(root, split, replace(data, split=split)) if source.configured \
            else source.files(root, split)
        missing = [f for f in wanted if not Path(f).exists()]
        if missing:  # never a download from here: the data must be on disk already
            raise UserError(f"{what}: {missing[0]} is missing; fetch the data first with 'dcgan prepare "
                            f"{data.dataset}' (or point data.path at your copy), then train the classifier")
    train = prepare(replace(data, split="train"), data_dir, log=log)
    if train.kind != "images":
        raise UserError(f"{what} holds 2-D points, not images; the classifier measures image data")
    if train.num_classes < 2:
        how = ("put one sub-folder per class under data.path and add --set data.labels_from_subfolders=true"
               if data.dataset in ("folder", "celeba", "lsun") else "choose a labelled dataset")
        raise UserError(
            f"{what} has {'no labels' if train.num_classes == 0 else 'a single class'}: the classifier needs at "
            f"least 2 labelled classes; {how}. Unlabelled image data can be measured with Inception instead "
            f"(dcgan eval RUN --extractor inception --inception-weights PATH)")
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
        keep, held = holdout_index(len(train))
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

    model, train_s, test_acc = _train_and_measure(
        lambda: SmallClassifier(train.num_classes, channels, input_size), train_x, np.asarray(train_y, dtype=np.int64),
        test_x, test_y, epochs=epochs, batch=batch, lr=lr, seed=seed, log=log,
        what=f"{ARCH_ANY} ({channels}x{input_size}x{input_size}) on {what}", dev=dev)
    log(f"{what} accuracy {test_acc:.4f} on {n_test} {'test' if test_split == 'test' else 'held-out'} images; "
        f"training took {train_s:.0f} s")

    _save_weights(model, out)
    data_dict = {k: v for k, v in asdict(data).items() if k != "split"}
    side_m = feature_map_side(input_size)
    record = {
        "arch": ARCH_ANY,
        "dataset": data.dataset,
        "data": data_dict,
        "data_identity": data_identity(data),
        "data_key": data_key(data),
        "weights": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "command": command,
        **_recipe(seed, epochs, batch, lr),
        "test_split": test_split,
        "test_accuracy": test_acc,
        "test_images": n_test,
        "train_images": limit,
        "train_content_hash": train.meta["content_hash"],
        "test_content_hash": test_hash,
        "input_shape": [channels, input_size, input_size],
        "input": f"{channels}x{input_size}x{input_size}, uint8 / 127.5 - 1 (range [-1, 1])"
                 + (f"; the {side}x{side} data resized (bilinear, antialiased)" if input_size != side else ""),
        "feature": f"128-d ReLU output of fc1 (after avg-pool {pool_kernel(input_size)} to {side_m}x{side_m})",
        "num_classes": train.num_classes,
        "class_names": train.meta["class_names"],
        "train_seconds": round(train_s, 1),
        **_environment(dev),
    }
    _write_record(out, record, log)
    return record
