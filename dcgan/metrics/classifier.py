"""The feature extractor of the MNIST domain: a small CNN classifier this project trains itself.

Architecture "mnist-cnn-v1" (input 1x28x28 gray in [-1, 1]):

    conv 3x3 1→32, maxpool 2, batch norm, ReLU         28x28 → 14x14
    conv 3x3 32→64, maxpool 2, batch norm, ReLU        14x14 → 7x7
    flatten, linear 3136→128, ReLU                     the 128-d feature (FID, KID, precision/recall)
    linear 128→10                                      the logits (class probabilities)

Pooling comes before batch norm and ReLU so that the elementwise layers run on maps a quarter
of the size: an epoch of MNIST takes about a minute on a 2-core CPU. Training is seeded and
deterministic on the CPU (`torch.use_deterministic_algorithms(True)`, a data order drawn from a
seeded generator): Adam with a one-cycle learning rate, no augmentation.

`train_classifier` writes the weights as safetensors and, beside them, a JSON record (the
command, seed, epochs, test accuracy, SHA-256 of the weights file, torch version, date) that
`features.load_extractor` checks the weights against.
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
INPUT_SIZE = 28
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


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → float in [-1, 1], the scale the generators produce."""
    return images_uint8.float().div_(127.5).sub_(1.0)


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000,
             device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of `model` (switched to eval mode) on uint8 images (N, 1, 28, 28)."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = to_input(torch.from_numpy(np.array(images[i : i + batch])).to(device))  # a writable copy
        pred = model(x).argmax(1).cpu().numpy()
        correct += int((pred == np.asarray(labels[i : i + batch])).sum())
    return correct / max(len(images), 1)


def train_classifier(dataset: str = "mnist", *, epochs: int = DEFAULT_EPOCHS, seed: int = 0,
                     out: str | Path | None = None, batch: int = DEFAULT_BATCH, lr: float = DEFAULT_LR,
                     device: str = "cpu", data_dir: str | None = None, command: str | None = None,
                     train_images: int | None = None, test_images: int | None = None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train mnist-cnn-v1 on the train split of `dataset`, measure it on the test split, write
    the safetensors weights to `out` (default: the package's weights folder) and the JSON
    record beside them. Returns the record.

    `train_images` / `test_images` limit training / measuring to the first that many images of
    the split (quick checks; weights to ship use all of both)."""
    from safetensors.torch import save

    from ..config import DataConfig
    from ..data.prepare import prepare
    from ..training.loop import pick_device

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if dataset not in DATASETS:
        raise UserError(f"train-classifier supports the datasets [{', '.join(DATASETS)}] "
                        f"(1x28x28, 10 classes), got {dataset!r}")
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    for flag, value in (("--train-images", train_images), ("--test-images", test_images)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    out = Path(out) if out else default_weights_path(dataset)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the weights file must end in .safetensors")
    command = command or f"dcgan eval train-classifier {dataset} --epochs {epochs} --seed {seed}"
    dev = pick_device(device)

    train = prepare(DataConfig(dataset=dataset, split="train"), data_dir, log=log)
    test = prepare(DataConfig(dataset=dataset, split="test"), data_dir, log=log)
    for name, ds in (("train", train), ("test", test)):
        if ds.shape != (1, INPUT_SIZE, INPUT_SIZE) or ds.num_classes < 2:
            raise UserError(f"{dataset}/{name} holds {ds.shape} images with {ds.num_classes} classes; "
                            f"the classifier needs 1x28x28 labelled images")

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        model = MnistClassifier(train.num_classes).to(dev)
        limit = len(train) if train_images is None else min(train_images, len(train))
        x_all = torch.from_numpy(np.array(train.images[:limit])).to(dev)  # (N, 1, 28, 28) uint8
        y_all = torch.from_numpy(np.array(train.labels[:limit])).to(dev)
        n = len(x_all)
        steps_per_epoch = math.ceil(n / batch)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        log(f"training {ARCH} on {dataset}/train ({n} images) for {epochs} epochs, batch {batch}, "
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
        train_s = time.perf_counter() - t0
        n_test = len(test) if test_images is None else min(test_images, len(test))
        test_acc = accuracy(model, test.images[:n_test], test.labels[:n_test], device=dev)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    log(f"{dataset}/test accuracy {test_acc:.4f} ({n_test} images); training took {train_s:.0f} s")

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    # No safetensors metadata: its order in the header varies from process to process, which would
    # make the bytes (and the SHA-256) of identical weights differ. The JSON record holds it instead.
    tmp.write_bytes(save(state))
    tmp.replace(out)
    record = {
        "arch": ARCH,
        "dataset": dataset,
        "weights": out.name,
        "sha256": file_sha256(out),
        "bytes": out.stat().st_size,
        "command": command,
        "seed": seed,
        "epochs": epochs,
        "batch": batch,
        "lr_max": lr,
        "schedule": "one-cycle (torch OneCycleLR defaults), Adam, no augmentation",
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
        "device": str(dev),
        "num_threads": torch.get_num_threads(),
        "deterministic": True,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = record_path(out).with_name(f".{record_path(out).name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(record_path(out))
    log(f"wrote {out} ({record['bytes']} bytes, sha256 {record['sha256'][:12]}…) and {record_path(out).name}")
    return record
