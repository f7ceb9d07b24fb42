"""Load the shipped feature extractor and turn uint8 images into (features, class probabilities).

    ex = load_extractor("mnist")                   # checks the weights' SHA-256 against their record
    feats, probs = ex.extract(images)              # uint8 (N, 1, H, W) → (N, 128) and (N, 10) float64
    ex.protocol(images.shape)                      # what a result must say about how it was measured

Images of another size than 28x28 are resized with the same bilinear, antialiased resize the
data cache uses (`dcgan.data.prepare.resize`); the extractor refuses images that are not square
or do not have one channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .classifier import ARCH, DATASETS, FEATURE_DIM, INPUT_SIZE, MnistClassifier, default_weights_path, file_sha256, record_path


def as_uint8_images(images) -> np.ndarray:
    """Images as a uint8 numpy array (N, C, H, W), from numpy or torch; UserError for another dtype."""
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    return images


@dataclass
class Extractor:
    name: str  # e.g. "mnist-cnn-v1/mnist"
    dataset: str
    sha256: str  # of the weights file
    num_classes: int
    model: MnistClassifier = field(repr=False)
    record: dict[str, Any] = field(repr=False)
    channels: int = 1
    input_size: int = INPUT_SIZE
    feature_dim: int = FEATURE_DIM

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "Extractor":
        self.model.to(device)
        return self

    # ---- input ---------------------------------------------------------------------------------
    def check(self, shape: tuple[int, ...]) -> None:
        """UserError unless `shape` is (N, C, H, W) images this extractor can read."""
        if len(shape) != 4:
            raise UserError(f"images must be a 4-D array (N, C, H, W), got shape {tuple(shape)}")
        _, c, h, w = shape
        if c != self.channels:
            raise UserError(
                f"the {self.name} feature extractor needs {self.channels}-channel (grayscale) images, "
                f"got {c} channels (shape {tuple(shape)})"
            )
        if h != w or h < 1:
            raise UserError(f"images must be square (H == W) to be resized to {self.input_size}x{self.input_size}, "
                            f"got {h}x{w}")

    def resize_note(self, shape: tuple[int, ...]) -> str:
        """'none' or 'HxW->28x28': what `extract` does to images of this shape."""
        h, w = shape[2], shape[3]
        if (h, w) == (self.input_size, self.input_size):
            return "none"
        return f"{h}x{w}->{self.input_size}x{self.input_size} (bilinear, antialiased)"

    def protocol(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        p = {"extractor": self.name, "extractor_sha256": self.sha256,
             "extractor_test_accuracy": self.record.get("test_accuracy"),
             "input_size": [self.channels, self.input_size, self.input_size], "feature_dim": self.feature_dim}
        if shape is not None:
            p["resize"] = self.resize_note(shape)
        return p

    # ---- output --------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, images, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, C, H, W) (numpy or torch) → features (N, D) and probabilities (N, K), float64."""
        from ..data.prepare import resize

        images = as_uint8_images(images)
        self.check(images.shape)
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        self.model.eval()
        n = len(images)
        feats = np.empty((n, self.feature_dim), dtype=np.float64)
        probs = np.empty((n, self.num_classes), dtype=np.float64)
        from ..progress import steps  # a bar only inside progress.showing() (dcgan eval)

        for i in steps(range(0, n, batch_size), desc="features"):
            chunk = resize(np.ascontiguousarray(images[i : i + batch_size]), self.input_size)
            x = torch.from_numpy(np.array(chunk)).to(self.device).float().div_(127.5).sub_(1.0)  # a writable copy
            f, logits = self.model.features_and_logits(x)
            feats[i : i + len(x)] = f.double().cpu().numpy()
            probs[i : i + len(x)] = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return feats, probs


def load_extractor(dataset: str = "mnist", device: str | torch.device = "cpu",
                   weights: str | Path | None = None) -> Extractor:
    """The classifier for `dataset` (the shipped weights unless `weights` is given), checked
    against the SHA-256 in its JSON record, in eval mode on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if weights is None and dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r} has no feature extractor: dcgan eval measures image models of "
                        f"[{', '.join(DATASETS)}] (1x28x28 digits or clothes, 10 classes)")
    path = Path(weights) if weights else default_weights_path(dataset)
    rec_path = record_path(path)
    if not path.is_file() or not rec_path.is_file():
        missing = path if not path.is_file() else rec_path
        raise UserError(
            f"no feature extractor for {dataset!r}: {missing} does not exist. "
            + ("Weights are shipped only for mnist; train them with "
               f"'dcgan eval train-classifier {dataset}' (needs the {dataset} files)"
               if weights is None else "give the .safetensors file written by 'dcgan eval train-classifier'")
        )
    try:
        record = json.loads(rec_path.read_text())
        expected = record["sha256"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{rec_path} is not a valid extractor record (no sha256); retrain the classifier") from None
    actual = file_sha256(path)
    if actual != expected:
        raise UserError(
            f"{path} does not match its record {rec_path.name}: sha256 {actual[:16]}… vs {expected[:16]}…; "
            f"the weights are damaged or were replaced — reinstall dcgan or retrain the classifier"
        )
    if record.get("arch") != ARCH:
        raise UserError(f"{rec_path}: architecture {record.get('arch')!r} is not {ARCH!r}, the one this dcgan reads")
    if record.get("dataset", dataset) != dataset:
        raise UserError(f"{path} is the extractor of {record.get('dataset')!r}, not of {dataset!r}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    num_classes = int(record.get("num_classes", 10))
    model = MnistClassifier(num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit {ARCH} ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    return Extractor(name=f"{ARCH}/{dataset}", dataset=dataset, sha256=actual, num_classes=num_classes,
                     model=model, record=record)


def extract(images, dataset: str = "mnist", device: str | torch.device = "cpu",
            batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 128) and class probabilities (N, K), float64, of uint8 images (N, 1, H, W)."""
    return load_extractor(dataset, device).extract(images, batch_size)
