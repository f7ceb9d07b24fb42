"""Feature extractors: one interface for the project's classifiers and Inception-v3.

    ex = load_extractor("mnist")                   # the shipped weights; checks their SHA-256 against their record
    ex = load_extractor("folder", weights=PATH)    # weights written by 'dcgan eval train-classifier'
    ex = load_classifier(data_cfg)                 # the shipped (MNIST) or cached classifier of a DataConfig
    feats, probs = ex.extract(images)              # uint8 (N, C, H, W) → (N, 128) and (N, K) float64
    ex.protocol(images.shape)                      # what a result must say about how it was measured
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..data.prepare import resize
from ..errors import UserError
from ..images import from_uint8
from ..progress import steps
from .classifier import (ARCH, ARCH_ANY, DATASETS, FEATURE_DIM, INPUT_SIZE, Classifier, cached_weights_path,
                         default_weights_path, file_sha256, record_path, train_command)


def as_uint8_images(images) -> np.ndarray:
    """Images as a uint8 numpy array (N, C, H, W), from numpy or torch; UserError for another dtype."""
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    return images


class Extractor:
    """uint8 images (N, C, H, W) → float64 features (N, feature_dim) for FID, KID and precision/recall,
    and outputs (N, num_outputs): class probabilities, Inception's logits. A subclass sets the attributes
    below and implements `_forward` (a uint8 batch → both), `check_channels`, `resize_note` (fakes),
    `reference_resize` (real images), `identity` (protocol fields) and `cache_key` (of the reference)."""

    kind: str  # "classifier" or "inception": which metrics it serves (evaluate.SUITES)
    name: str
    sha256: str  # of the weights file
    model: torch.nn.Module
    feature_dim: int
    num_outputs: int
    output_name: str  # "probs" or "logits", also their name in the reference cache
    noun: str  # what progress lines call its features
    max_batch: int = 1 << 30  # images per forward pass at most, whatever the caller asks
    cache_dtype: type = np.float64  # of the cached reference features

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check(self, shape: tuple[int, ...]) -> None:
        """UserError unless `shape` is (N, C, H, W) images this extractor can read."""
        if len(shape) != 4:
            raise UserError(f"images must be a 4-D array (N, C, H, W), got shape {tuple(shape)}")
        self.check_channels(shape)

    def protocol(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """How this extractor measures images of `shape`, for a result's protocol."""
        return {"extractor": self.name, "extractor_sha256": self.sha256, **self.identity(),
                "resize": self.resize_note(shape)}

    @torch.no_grad()
    def extract(self, images, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (numpy or torch) → features (N, D) and outputs (N, K), float64; a progress bar
        only inside progress.showing() (dcgan eval)."""
        images = as_uint8_images(images)
        self.check(images.shape)
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        batch_size = min(batch_size, self.max_batch)
        self.model.eval()
        feats = np.empty((len(images), self.feature_dim), dtype=np.float64)
        outs = np.empty((len(images), self.num_outputs), dtype=np.float64)
        for i in steps(range(0, len(images), batch_size), desc="features"):
            f, o = self._forward(np.ascontiguousarray(images[i : i + batch_size]))
            feats[i : i + len(f)] = f.double().cpu().numpy()
            outs[i : i + len(f)] = o.double().cpu().numpy()
        return feats, outs


@dataclass
class ClassifierExtractor(Extractor):
    """The project's classifier: fc1's features, class probabilities; images resized with the data cache's resize."""

    dataset: str
    sha256: str
    model: Classifier = field(repr=False)  # owns the architecture, the classes and the input shape
    record: dict[str, Any] = field(repr=False)
    weights: str = ""  # the weights file

    kind, output_name, noun, feature_dim = "classifier", "probs", "features", FEATURE_DIM
    arch = property(lambda self: self.model.arch)
    num_classes = num_outputs = property(lambda self: self.model.num_classes)
    channels = property(lambda self: self.model.in_channels)
    input_size = property(lambda self: self.model.input_size)
    name = property(lambda self: f"{self.arch}/{self.dataset}")  # e.g. "mnist-cnn-v1/mnist"

    def check_channels(self, shape: tuple[int, ...]) -> None:
        _, c, h, w = shape
        if c != self.channels:
            kind = "grayscale" if self.channels == 1 else "RGB"
            raise UserError(f"the {self.name} feature extractor needs {self.channels}-channel ({kind}) images, "
                            f"got {c} channels (shape {tuple(shape)}); use a classifier trained on {c}-channel data "
                            f"(dcgan eval train-classifier DATASET, then --classifier PATH)")
        if h != w or h < 1:
            raise UserError(f"images must be square (H == W) to be resized to {self.input_size}x{self.input_size}, "
                            f"got {h}x{w}")

    def resize_note(self, shape: tuple[int, ...]) -> str:
        if tuple(shape[2:]) == (self.input_size, self.input_size):
            return "none"
        return f"{shape[2]}x{shape[3]}->{self.input_size}x{self.input_size} (bilinear, antialiased)"

    def reference_resize(self, native: int, resolution: int) -> str:
        chain = [native] + ([resolution] if resolution != native else []) + \
                ([self.input_size] if resolution != self.input_size else [])
        return "none" if len(chain) == 1 else "->".join(f"{s}x{s}" for s in chain)

    def identity(self) -> dict[str, Any]:
        rec, s = self.record, self.input_size
        p = {"extractor_test_accuracy": rec.get("test_accuracy"), "input_size": [self.channels, s, s],
             "feature_dim": self.feature_dim, "extractor_arch": self.arch, "extractor_dataset": self.dataset,
             "extractor_test_split": rec.get("test_split", "test"),
             "extractor_train_content_hash": rec.get("train_content_hash"), "extractor_classes": self.num_classes}
        if self.arch != ARCH:  # trained by the user: where its weights are and on what data
            p["extractor_weights"] = self.weights
            p["extractor_data"] = self.record.get("data_identity")
        return p

    def cache_key(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"v": 2, "extractor_sha256": self.sha256, "input_size": self.input_size}

    def _forward(self, chunk: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = from_uint8(torch.from_numpy(np.array(resize(chunk, self.input_size))).to(self.device))  # a writable copy
        f, logits = self.model.features_and_logits(x)
        return f, torch.softmax(logits.double(), dim=1)


def load_extractor(dataset: str | None = "mnist", device: str | torch.device = "cpu",
                   weights: str | Path | None = None) -> ClassifierExtractor:
    """The classifier for `dataset` (the shipped weights unless `weights` is given), checked
    against the SHA-256 in its JSON record, in eval mode on `device`. With `weights`, `dataset`
    None takes the dataset from the record; otherwise the record must name `dataset`."""
    if weights is None and dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r} has no feature extractor: dcgan eval measures image models of "
                        f"[{', '.join(DATASETS)}] (1x28x28 digits or clothes, 10 classes)")
    path = Path(weights) if weights else default_weights_path(dataset)
    rec_path = record_path(path)
    if not path.is_file() or not rec_path.is_file():
        raise UserError(f"no feature extractor for {dataset!r}: {rec_path if path.is_file() else path} does not exist. "
                        + (f"Weights are shipped only for mnist; train them with 'dcgan eval train-classifier "
                           f"{dataset}' (needs the {dataset} files)" if weights is None else
                           "give the .safetensors file written by 'dcgan eval train-classifier' (its .json record "
                           "must lie beside it)"))
    try:
        record = json.loads(rec_path.read_text())
        expected = record["sha256"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{rec_path} is not a valid extractor record (no sha256); retrain the classifier") from None
    actual = file_sha256(path)
    if actual != expected:
        raise UserError(f"{path} does not match its record {rec_path.name}: sha256 {actual[:16]}… vs "
                        f"{expected[:16]}…; the weights are damaged or were replaced — reinstall dcgan or retrain the "
                        f"classifier")
    arch = record.get("arch")
    if arch not in (ARCH, ARCH_ANY):
        raise UserError(f"{rec_path}: architecture {arch!r} is not one this dcgan reads ({ARCH}, {ARCH_ANY})")
    dataset = record.get("dataset", "mnist") if dataset is None else dataset
    if record.get("dataset", dataset) != dataset:
        raise UserError(f"{path} is the extractor of {record.get('dataset')!r}, not of {dataset!r}; give the "
                        f"classifier trained on {dataset} ('dcgan eval train-classifier {dataset}')")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    num_classes, channels, input_size = int(record.get("num_classes", 10)), 1, INPUT_SIZE
    if arch == ARCH_ANY:
        try:
            channels, input_size, w = (int(v) for v in record["input_shape"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{rec_path}: no valid input_shape [C, H, W]; retrain the classifier") from None
        if input_size != w:
            raise UserError(f"{rec_path}: input_shape {record['input_shape']} is not square; retrain the classifier")
    model = Classifier(num_classes, channels, input_size, arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit {arch} ({str(e).splitlines()[0]})") from None
    return ClassifierExtractor(dataset, actual, model.to(device).eval(), record, str(path))


def find_classifier(data) -> Path | None:
    """The weights that measure DataConfig `data`: the shipped ones for mnist / fashion-mnist if there are
    any, else those 'dcgan eval train-classifier' cached for this data; None when there are none."""
    if data.dataset in DATASETS and default_weights_path(data.dataset).is_file():
        return default_weights_path(data.dataset)
    cached = cached_weights_path(data)
    return cached if cached.is_file() and record_path(cached).is_file() else None


def load_classifier(data, device: str | torch.device = "cpu", weights: str | Path | None = None) -> ClassifierExtractor:
    """The classifier extractor for DataConfig `data`: `weights` when given (its record must name
    data.dataset), else `find_classifier(data)`; UserError saying how to train one when there is none."""
    if weights is None:
        weights = find_classifier(data)
        if weights is None:
            if data.dataset in DATASETS:
                return load_extractor(data.dataset, device)  # says how to train it
            from ..data.sources import SOURCES

            if data.dataset in SOURCES and getattr(SOURCES.get(data.dataset), "target", None) is not None:
                raise UserError(f"no feature extractor for {data.dataset!r}: it holds 2-D points, not images; a toy "
                                f"run is measured against its target by 'dcgan eval RUN' (modes covered, D accuracy, "
                                f"...), and its samples by 'dcgan eval FILE.npz --dataset {data.dataset}'")
            where = f"{data.dataset}" + (f" (data.path={data.path})" if data.path else "")
            raise UserError(f"no feature extractor for {data.dataset!r}: no classifier has been trained for {where}; "
                            f"train one with '{train_command(data)}' (it writes {cached_weights_path(data)}), or "
                            f"give --classifier PATH")
    return load_extractor(data.dataset, device, weights)
