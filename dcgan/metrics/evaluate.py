"""Evaluate a run, a checkpoint or a file of samples against real data, with a stated protocol.

    evaluate("runs/x")                 # the newest checkpoint's EMA generator, 10,000 images vs MNIST test
    evaluate("samples.npz", n=5000)    # images (+ labels) written by 'dcgan sample --out FILE.npz'
    fid_of_generator(G, 2000)          # a cheap FID of a generator in memory (training-time evaluation)

One pipeline for every extractor (features.py): the fakes' features and the real reference's (cached)
feed the metrics of the extractor's kind (`SUITES`); the result states its protocol (docs/METRICS.md).
The reference: as many images of the test split (else train) as there are fakes (k-NN precision/recall
and the FID bias depend on it), resized to the fakes' resolution first so both then take the same
resize to the extractor's input (28→64→28 for a 64x64 generator).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..checkpoint import load_generator
from ..checkpoint import resolve as resolve_checkpoint
from ..config import Config, DataConfig
from ..data.prepare import cache_root, prepare, resize
from ..data.raw import kind_of
from ..data.sources import SOURCES
from ..device import pick_device
from ..errors import UserError
from ..files import MetricsLog, atomic_write
from ..sampling import generate, parse_labels
from ..toy import evaluate as toy
from . import stats
from .classifier import ARCH, train_command
from .features import Extractor, as_uint8_images, find_classifier, load_classifier, load_extractor
from .inception import NEED_WEIGHTS, inception_score, load_inception

METRICS = ("fid", "kid", "precision_recall", "label_accuracy", "classes")  # on the project's classifier
INCEPTION_METRICS = ("fid", "kid", "inception_score")
REFERENCES = ("test", "train")
PR_K = 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
REFERENCE_SUBSET_SEED = 0
_MIN_SAMPLES = {"fid": 2, "kid": 2, "precision_recall": PR_K + 1}  # of fakes and of real images; others: 1 fake

Log = Callable[[str], None]
def _stderr(message: str) -> None:
    print(message, file=sys.stderr)  # sys.stderr as it is now (a test or a caller may have replaced it)


@dataclass(frozen=True)
class Suite:
    """The metrics one kind of extractor serves, and how errors about them read."""

    names: tuple[str, ...]
    default: tuple[str, ...] | None  # None: all that apply (label_accuracy only for images with labels)
    needs_reference: tuple[str, ...]  # metrics that need the real reference's features
    empty: str  # messages: --metrics names nothing / names {bad} / too few fakes / too few real images
    unknown: str
    too_few: str
    too_few_real: str


SUITES = {
    "classifier": Suite(
        METRICS, None, METRICS,  # its protocol always states the reference and its accuracy there
        "--metrics is empty; choose from [{names}] (comma-separated) or all",
        "unknown metric {bad!r}; choose from [{names}] (comma-separated) or all",
        "{m} needs at least {need} samples, got {n}; raise --n or give more samples (or leave {m} out of --metrics)",
        "{m} needs at least {need} reference images, the reference has {n}"),
    "inception": Suite(
        INCEPTION_METRICS, ("fid", "inception_score"), ("fid", "kid"),
        "--metrics is empty; with Inception choose from [{names}] or all",
        "metric {bad!r} is not measured with Inception; choose from [{names}] (comma-separated) or all",
        "FID/KID need at least {need} samples, got {n}; raise --n",
        "FID/KID need at least {need} reference images, the reference has {n}"),
}


# ---- inputs --------------------------------------------------------------------------------------

def parse_metrics(spec: str | Sequence[str] | None, kind: str = "classifier") -> list[str] | None:
    """'fid,kid' or ['fid', 'kid'] → the checked list of metrics of an extractor `kind`; None or
    'all' → its default (None for the classifier: all that apply) or all of them."""
    suite = SUITES[kind]
    if spec is None:
        return None if suite.default is None else list(suite.default)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    if names == ["all"]:
        return None if suite.default is None else list(suite.names)
    if not names:
        raise UserError(suite.empty.format(names=", ".join(suite.names)))
    bad = [s for s in names if s not in suite.names]
    if bad:
        raise UserError(suite.unknown.format(bad=bad[0], names=", ".join(suite.names)))
    return list(dict.fromkeys(names))


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a samples file of 'dcgan sample': images uint8 (N, C, H, W), optional labels int (N,)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a run folder, a checkpoint or a .npz of samples")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz file ({str(e).splitlines()[0] if str(e) else type(e).__name__}"
                        f"); write samples with 'dcgan sample RUN --out FILE.npz'") from None
    expected = "a samples .npz holds 'images' (uint8 N x C x H x W) and optionally 'labels' (int64 N)"
    if "images" not in arrays:
        raise UserError(f"{path} has no 'images' array (it holds [{', '.join(arrays) or 'nothing'}]); {expected}")
    extra = [k for k in arrays if k not in ("images", "labels")]
    if extra:
        raise UserError(f"{path} holds unexpected arrays [{', '.join(extra)}]; {expected}")
    images, labels = arrays["images"], arrays.get("labels")
    if images.dtype != np.uint8:
        raise UserError(f"{path}: 'images' has dtype {images.dtype}, expected uint8 (0..255); {expected}")
    if images.ndim != 4:
        raise UserError(f"{path}: 'images' has shape {images.shape} (ndim {images.ndim}), expected 4-D N x C x H x W; "
                        f"a single-channel batch needs its channel axis, e.g. images[:, None]")
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{path}: 'labels' has dtype {labels.dtype}, expected integers (int64)")
        if labels.shape != (len(images),):
            raise UserError(f"{path}: 'labels' has shape {labels.shape}, expected ({len(images)},), one per image")
        labels = labels.astype(np.int64)
    return images, labels


def _check_counts(suite: Suite, wanted: list[str], n: int, real: bool = False) -> None:
    """UserError when `n` fake images (`real`: reference images) are too few for a metric."""
    for m in wanted:
        need = _MIN_SAMPLES.get(m, 1)
        if n < need and (not real or m in _MIN_SAMPLES):
            raise UserError((suite.too_few_real if real else suite.too_few).format(m=m, need=need, n=n))


def reference_split(data: DataConfig, reference: str | None) -> str:
    """--reference (test or train, one the dataset has), else test where there is one, else train."""
    splits = SOURCES.get(data.dataset).splits
    if reference is None:
        return "test" if "test" in splits else "train"
    if reference not in REFERENCES:
        raise UserError(f"--reference must be one of [{', '.join(REFERENCES)}], got {reference!r}")
    if reference not in splits:
        raise UserError(f"--reference {reference}: dataset {data.dataset} has only [{', '.join(splits)}]")
    return reference


# ---- the real reference --------------------------------------------------------------------------

def reference_index(size: int, n: int) -> np.ndarray:
    """Which images of a split of `size` form a reference of `n`: all of them when n >= size, else a
    fixed random subset (seed REFERENCE_SUBSET_SEED, whatever the evaluation seed), in order. Not the
    first n: MNIST's test split puts its 5,000 cleaner digits first (FID ~55 between its halves)."""
    if n >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(REFERENCE_SUBSET_SEED).permutation(size)[:n])


def reference_features(ex: Extractor, data: DataConfig, split: str, n: int, resolution: int, *,
                       data_dir: str | None = None, log: Log = _stderr) -> dict[str, Any]:
    """Features (N, D), outputs (N, K), labels (N,) of `n` images of a real split (`reference_index`) seen
    through `ex` as at `resolution`, cached in <cache>/eval-reference/ (`cache`: the file; `hit`)."""
    ds = prepare(replace(data, split=split), data_dir, log=log)
    if ds.kind != "images":
        what = "the classifier metrics" if ex.kind == "classifier" else "Inception metrics"
        raise UserError(f"dataset {data.dataset} holds points, not images; {what} need images")
    size, n = len(ds), min(int(n), len(ds))
    selection = f"all {n}" if n == size else f"random {n} of {size} (seed {REFERENCE_SUBSET_SEED})"
    index = reference_index(size, n)
    key = json.dumps({"dataset": data.dataset, "split": split, "selection": selection, "n": n, "resolution": resolution,
                      "content_hash": ds.meta["content_hash"], **ex.cache_key(ds.shape)}, sort_keys=True)
    prefix = "inception-" if ex.kind == "inception" else ""
    path = cache_root() / "eval-reference" / \
        f"{prefix}{data.dataset}-{split}-n{n}-r{resolution}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    out = {"n": n, "content_hash": ds.meta["content_hash"], "cache": str(path), "selection": selection,
           "resize": ex.reference_resize(ds.shape[1], resolution), "class_names": list(ds.meta["class_names"]),
           "labels": np.asarray(ds.labels[index], dtype=np.int64)}
    try:
        with np.load(path, allow_pickle=False) as z:
            feats, outputs = z["features"], z[ex.output_name]
        if len(feats) == n:
            log(f"reference {data.dataset}/{split} ({selection}): cached {ex.noun} {path.name}")
            return {**out, "features": feats.astype(np.float64), "outputs": outputs.astype(np.float64), "hit": True}
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError):
        pass  # missing or damaged: computed again and rewritten
    log(f"reference {data.dataset}/{split} ({selection}): computing {ex.noun}")
    images = np.asarray(ds.images[index])
    if resolution != ds.shape[1]:
        images = resize(images, resolution)
    feats, outputs = (a.astype(ex.cache_dtype) for a in ex.extract(images))
    buf = io.BytesIO()
    np.savez(buf, features=feats, **{ex.output_name: outputs})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())  # a reader never sees half of it
    # what a cache hit returns (Inception: a float32 round trip), so a first and a cached run agree exactly
    return {**out, "features": feats.astype(np.float64), "outputs": outputs.astype(np.float64), "hit": False}


# ---- the metrics ---------------------------------------------------------------------------------

def evaluate_images(images, labels: np.ndarray | None, *, extractor: Extractor, dataset="mnist",
                    metrics: str | Sequence[str] | None = None, reference: str | None = None, seed: int = 0,
                    data_dir: str | None = None, batch_size: int = 500, log: Log = _stderr) -> dict[str, Any]:
    """Metrics of uint8 images (N, C, H, W) against the real data `dataset` (a name or a DataConfig) through
    `extractor`; `labels` (N,): the classes the images were asked to show (conditional models), or None."""
    t0 = time.perf_counter()
    ex = extractor
    images = as_uint8_images(images)
    ex.check(images.shape)
    suite = SUITES[ex.kind]
    wanted = parse_metrics(metrics, ex.kind)
    conditional = labels is not None and "label_accuracy" in suite.names
    if wanted is None:
        wanted = [m for m in suite.names if m != "label_accuracy" or conditional]
    if "label_accuracy" in wanted and not conditional:
        raise UserError("label_accuracy needs the labels the images were generated for: the model is unconditional "
                        "or the .npz has no 'labels' array; leave label_accuracy out of --metrics")
    data = DataConfig(dataset=dataset) if isinstance(dataset, str) else dataset
    if ex.kind == "classifier" and ex.arch == ARCH:  # the shipped classifier: against its dataset as it ships
        data = DataConfig(dataset=data.dataset)
    split = reference_split(data, reference)
    if conditional:
        K = ex.num_classes
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise UserError(f"labels have shape {labels.shape}, expected ({len(images)},)")
        if len(labels) and (labels.min() < 0 or labels.max() >= K):
            raise UserError(f"labels must lie in 0..{K - 1} (the classes of {ex.name}), "
                            f"got range {labels.min()}..{labels.max()}")
    n_fake = len(images)
    if n_fake < 1:
        raise UserError("there are no images to evaluate")
    _check_counts(suite, wanted, n_fake)
    ref = None
    if set(wanted) & set(suite.needs_reference):  # the reference is cut to n_fake images
        ref = reference_features(ex, data, split, n_fake, images.shape[2], data_dir=data_dir, log=log)
        _check_counts(suite, wanted, ref["n"], real=True)
    log(f"extracting {ex.noun} of {n_fake} images")
    fake_f, fake_o = ex.extract(images, batch_size)

    result: dict[str, Any] = {}
    for m in wanted:
        log(f"computing {m}")
        if m == "fid":
            try:
                result["fid"] = stats.fid(fake_f, ref["features"])
            except ValueError as e:  # n <= D: rank-deficient covariances, a 0 up to rounding can come out negative
                if "came out negative" not in str(e) or min(n_fake, ref["n"]) > ex.feature_dim:
                    raise
                result["fid"] = 0.0
        elif m == "kid":
            mean, std = stats.kid(fake_f, ref["features"], subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed)
            result["kid"] = {"mean": mean, "std": std, "subsets": KID_SUBSETS,
                             "subset_size": min(KID_SUBSET_SIZE, n_fake, ref["n"])}
        elif m == "precision_recall":
            p, r = stats.precision_recall(ref["features"], fake_f, k=PR_K)
            result["precision_recall"] = {"precision": p, "recall": r, "k": PR_K}
        elif m == "label_accuracy":
            result["label_accuracy"] = stats.label_accuracy(fake_o, labels, ex.num_classes)
        elif m == "classes":
            c = stats.class_stats(fake_o, ex.num_classes, splits=min(IS_SPLITS, n_fake))
            r = stats.class_stats(ref["outputs"], ex.num_classes, splits=min(IS_SPLITS, ref["n"]))
            c["reference"] = {k: r[k] for k in ("histogram", "classes_covered", "kl_from_uniform",
                                                "inception_score", "inception_score_std")}
            result["classes"] = c
        elif m == "inception_score":
            mean, std = inception_score(fake_o, min(IS_SPLITS, n_fake))
            result["inception_score"] = {"mean": mean, "std": std, "splits": min(IS_SPLITS, n_fake)}
    result["protocol"] = _protocol(ex, wanted, images.shape, ref, data, split, seed)
    if ref:
        result["reference_cache"] = {"path": ref["cache"], "hit": ref["hit"]}
    result["elapsed_s"] = time.perf_counter() - t0
    return result


def _protocol(ex: Extractor, wanted: list[str], shape: tuple[int, ...], ref: dict[str, Any] | None,
              data: DataConfig, split: str, seed: int) -> dict[str, Any]:
    """How a result was measured (`evaluate` adds where the images came from)."""
    n_fake, classifier = shape[0], ex.kind == "classifier"
    reference = None
    if ref:
        reference = {"dataset": data.dataset, **({"path": data.path} if classifier and data.path else {}),
                     "split": split, "images": ref["selection"], "content_hash": ref["content_hash"],
                     "resize": ref["resize"]}
        if classifier:  # its accuracy on the reference, where the reference's labels are its classes
            names = ref["class_names"]
            same = names == ex.record.get("class_names", names) and len(names) == ex.num_classes
            reference["classifier_accuracy"] = \
                float((ref["outputs"].argmax(1) == ref["labels"]).mean()) if ref["n"] and same else None
    p = {**ex.protocol(shape), "metrics": wanted, "n_fake": n_fake, "n_real": ref["n"] if ref else 0,
         "reference": reference, "fake_resolution": [int(s) for s in shape[1:]], "seed": seed}
    if classifier:
        p["kid"] = {"subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE, "kernel": "(x.y/d + 1)^3"}
        p["precision_recall_k"] = PR_K
    p["inception_score_splits"] = min(IS_SPLITS, n_fake)
    if not classifier and n_fake <= ex.feature_dim:
        p["note"] = (f"n_fake {n_fake} <= {ex.feature_dim} feature dimensions: rank-deficient covariances, FID "
                     f"biased high; the usual protocol takes 10,000 or 50,000 images")
    return p


# ---- runs, checkpoints and sample files ----------------------------------------------------------

def _record_data(record: dict[str, Any]) -> DataConfig:
    """The DataConfig a classifier was trained on (from its record; mnist-cnn-v1: the dataset's defaults)."""
    if not isinstance(record.get("data"), dict):
        return DataConfig(dataset=record.get("dataset", "mnist"))
    cfg = Config()
    for k, v in record["data"].items():
        if k != "split":
            cfg.set(f"data.{k}", v, "the classifier's record")
    return cfg.data


def _use_inception(extractor: str | None, channels: int, data: DataConfig | None, classifier) -> bool:
    """Inception when asked for, or under auto for RGB images of data (None: unknown) no classifier fits."""
    if extractor == "inception":
        return True
    if classifier is not None or extractor == "classifier" or channels != 3:
        return False
    return data is None or find_classifier(data) is None


def _fakes(G: torch.nn.Module, n: int, seed: int, batch_size: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """`n` uint8 images (N, C, H, W) of G from noise `seed`, labels (N,) cycling 0..K-1 if G is conditional."""
    labels_t = parse_labels("all", n, G.num_classes)
    images = generate(G, n, labels_t, seed=seed, batch_size=batch_size)
    return images, labels_t.numpy().astype(np.int64) if labels_t is not None else None


def evaluate(source: str | Path, n: int = 10000, metrics: str | Sequence[str] | None = None,
             reference: str | None = None, seed: int = 0, *, dataset: str | None = None, device: str = "auto",
             ema: bool = True, batch_size: int = 500, data_dir: str | None = None, record: bool = True,
             log: Log | None = None, extractor: str | None = None, inception_weights: str | os.PathLike | None = None,
             classifier: str | os.PathLike | None = None, data: DataConfig | None = None) -> dict[str, Any]:
    """Evaluate a run folder (its result also appended to its metrics.jsonl, "kind": "eval", if `record`),
    a checkpoint file or a .npz of samples: `n` images of the EMA (`ema`) generator from noise `seed`, or
    the file's first `n`. `extractor`: auto (None), "classifier" or "inception"; auto takes the project's
    classifier for grey images, and for RGB the one trained on the data if any, else Inception
    (`inception_weights` or $DCGAN_INCEPTION_WEIGHTS). `classifier`: weights from 'dcgan eval
    train-classifier', whose record names an .npz's real data unless `dataset` / `data` do."""
    log = log or _stderr
    t0 = time.perf_counter()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"--n must be an integer >= 1, got {n!r}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if extractor not in (None, "auto", "classifier", "inception"):
        raise UserError(f"--extractor must be one of [auto, classifier, inception], got {extractor!r}")
    if classifier is not None and extractor == "inception":
        raise UserError("--classifier names the project's classifier; it does not go with --extractor inception "
                        "(drop one of them)")
    # fail now on a metric no extractor that may be chosen knows (auto: the channels decide later)
    kinds = ["inception"] if extractor == "inception" else ["classifier"] \
        if extractor == "classifier" or classifier is not None else ["classifier", "inception"]
    try:
        for kind in kinds[1:]:
            with contextlib.suppress(UserError):
                parse_metrics(metrics, kind)
                break
        else:
            parse_metrics(metrics, kinds[0])  # the first kind's error when none knows them all
    except UserError:
        if _holds_points(source):  # a toy run: its own measures, whatever --metrics named
            raise UserError(TOY_OPTIONS.format(flag="--metrics")) from None
        raise
    if data is not None:
        if dataset and dataset != data.dataset:
            raise UserError(f"--dataset {dataset} and data.dataset={data.dataset} differ; give one")
        dataset = data.dataset
    source = Path(source)
    dev = pick_device(device)
    clf = G = None  # the classifier given by `classifier`; the generator of a run or checkpoint
    if source.suffix == ".npz" and toy.holds_points(source):  # 'dcgan sample TOY_RUN --out FILE.npz'
        _refuse_toy_options(metrics, extractor, classifier, inception_weights, data)
        if not dataset:
            raise UserError(f"{source} holds 2-D points (a toy run's samples): give --dataset, the target they are "
                            f"measured against: one of [{', '.join(toy.toy_datasets())}]")
        points, labels = toy.load_points(source)
        if len(points) > n:
            points, labels = points[:n], labels[:n] if labels is not None else None
        result = toy.evaluate_points(points, labels, dataset, reference=reference, log=log)
        result["protocol"] = {"source": "samples", "path": str(source), "checkpoint": None, "step": None,
                              "generator": None, "labels": "from the file" if labels is not None else None,
                              **result["protocol"]}
        result["elapsed_s"] = time.perf_counter() - t0
        return result
    if source.suffix == ".npz":
        images, labels = load_samples(source)
        if classifier is not None:
            clf = load_extractor(dataset, dev, classifier)  # dataset None: the record's
            if data is None and dataset is None:
                data = _record_data(clf.record)
            dataset = clf.dataset
        data_cfg = data if data is not None else (DataConfig(dataset=dataset) if dataset else None)
        use_inception = _use_inception(extractor, images.shape[1], data_cfg, classifier)
        if use_inception and not dataset:
            rgb_hint = (f"{NEED_WEIGHTS} and --dataset naming their real data (cifar10, celeba, "
                        f"lsun, ...; for an image folder evaluate the run instead)")
            if extractor == "inception":
                raise UserError(f"an .npz measured with Inception needs --dataset: {rgb_hint}")
            raise UserError(f"the MNIST classifier (--dataset defaults to mnist) needs 1-channel (grayscale) images, "
                            f"got {images.shape[1]} channels; {rgb_hint}; or --classifier PATH, a classifier "
                            f"trained on the RGB data with 'dcgan eval train-classifier DATASET'")
        data_cfg = data_cfg or DataConfig(dataset=dataset or "mnist")
        if len(images) > n:
            images, labels = images[:n], labels[:n] if labels is not None else None
        elif len(images) < n:
            log(f"{source} holds {len(images)} images, fewer than --n {n}: evaluating all {len(images)}")
        origin = {"source": "samples", "path": str(source), "checkpoint": None, "step": None, "generator": None,
                  "labels": "from the file" if labels is not None else None}
    else:
        if data is not None:
            raise UserError("--set data.* describes the real data of an .npz; a run's data comes from its checkpoint "
                            "(drop --set)")
        G, info = load_generator(source, device=dev, ema=ema)
        ckpt_dataset = info["data"].get("dataset") or info["config"].data.dataset
        if dataset and dataset != ckpt_dataset:
            raise UserError(f"--dataset {dataset}: {info['path']} was trained on {ckpt_dataset}; "
                            f"drop --dataset (it is for .npz files)")
        if kind_of(G.out_shape) == "points":  # a toy run: the measures of its monitor, once, on n points
            _refuse_toy_options(metrics, extractor, classifier, inception_weights, data)
            result = toy.evaluate_checkpoint(G, info, source, n=n, seed=seed, reference=reference,
                                             batch_size=batch_size, log=log)
            result["elapsed_s"] = time.perf_counter() - t0
            if record:
                record_result(result, log)
            return result
        data_cfg = info["config"].data
        if classifier is not None:
            clf = load_extractor(ckpt_dataset, dev, classifier)  # its record must name the run's dataset
        use_inception = _use_inception(extractor, G.out_shape[0], data_cfg, classifier)
    # the extractor, and what can be checked of its metrics, before the (slow) generation
    if use_inception:
        try:
            ex = load_inception(inception_weights, dev)
        except UserError as e:
            if extractor == "inception":
                raise
            raise UserError(f"{e}; or measure with the project's classifier trained on this data: "  # auto
                            f"'{train_command(data_cfg)}', then evaluate again (or give --classifier PATH)") from None
        parse_metrics(metrics, "inception")
    else:
        parse_metrics(metrics, "classifier")
        ex = clf or load_classifier(data_cfg, dev)
    if G is not None:
        if not use_inception:
            ex.check((n, *G.out_shape))
            if G.num_classes and G.num_classes != ex.num_classes:
                raise UserError(f"the generator has {G.num_classes} classes, the {ex.name} classifier "
                                f"{ex.num_classes}; give a classifier trained on the run's classes "
                                f"('{train_command(data_cfg)}', then --classifier PATH or the cached one)")
        reference_split(data_cfg, reference)
        log(f"generating {n} images with the {info['generator']} generator of {info['path']} (step {info['step']})")
        images, labels = _fakes(G, n, seed, batch_size)
        origin = {"source": "run" if source.is_dir() else "checkpoint", "path": str(source),
                  "checkpoint": info["path"], "step": int(info["step"]), "generator": info["generator"],
                  "labels": "all classes, cycled 0..K-1" if labels is not None else None,
                  "train_content_hash": info["data"].get("content_hash")}
    result = evaluate_images(images, labels, extractor=ex, dataset=data_cfg, metrics=metrics, reference=reference,
                             seed=seed, data_dir=data_dir, batch_size=batch_size, log=log)
    result["protocol"] = {**origin, **result["protocol"]}
    result["elapsed_s"] = time.perf_counter() - t0
    if record:
        record_result(result, log)
    return result


TOY_OPTIONS = ("{flag} is for image data; a toy run (2-D points) is measured against its target distribution "
               "with the measures of its tick lines (D accuracy, modes covered, high-quality fraction or mean/"
               "covariance error): drop {flag}")


def _holds_points(source: Path) -> bool:
    """Whether `source` (a run, a checkpoint or an .npz) holds 2-D points; False when it cannot be read."""
    source = Path(source)
    if source.suffix == ".npz":
        return toy.holds_points(source)
    try:
        return kind_of(tuple(resolve_checkpoint(source)[1]["data"]["shape"])) == "points"
    except Exception:  # noqa: BLE001 - unreadable: the caller's own error stands
        return False


def _refuse_toy_options(metrics, extractor, classifier, inception_weights, data) -> None:
    """The image options a toy evaluation has no use for: exit 2 saying to drop them."""
    if metrics is not None and parse_metrics_spec(metrics) != ["all"]:
        raise UserError(TOY_OPTIONS.format(flag="--metrics"))
    for flag, value in (("--extractor", extractor if extractor != "auto" else None), ("--classifier", classifier),
                        ("--inception-weights", inception_weights), ("--set data.*", data)):
        if value is not None:
            raise UserError(TOY_OPTIONS.format(flag=flag))


def parse_metrics_spec(spec: str | Sequence[str]) -> list[str]:
    """--metrics as a list of names (unchecked)."""
    return [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]


def record_result(result: dict[str, Any], log: Log = _stderr) -> None:
    """Append a run's result to its metrics.jsonl ("kind": "eval"); nothing for a checkpoint file or an
    .npz. A folder that cannot be written costs the record, not the result: one warning line."""
    if result["protocol"].get("source") != "run":
        return
    path = Path(result["protocol"]["path"]) / "metrics.jsonl"
    try:
        MetricsLog(path).write({"kind": "eval", "step": result["protocol"]["step"], "time": time.time(), **result})
        log(f"appended the result to {path}")
    except OSError as e:
        log(f"warning: the result was not recorded in {path} ({e.strerror or e}); --no-record skips recording")


# Real MNIST training images vs the test split, n = 10,000, shipped classifier (docs/METRICS.md, "The real-data floor")
MNIST_FLOOR = {"fid": 4.29, "precision": 0.864, "recall": 0.869}


def summary_line(result: dict[str, Any]) -> str:
    """One line for a person: FID, precision / recall, label accuracy, classes covered, and the real-data
    floor when the protocol is the one it was measured under."""
    if result["protocol"].get("data_kind") == "points":
        return toy.summary_line(result)  # a toy run's measures
    p, pr, acc, c = (result.get(k) for k in ("protocol", "precision_recall", "label_accuracy", "classes"))
    split = (p.get("reference") or {}).get("split")
    floor = MNIST_FLOOR if (p.get("extractor_arch"), split, p["n_fake"]) == ("mnist-cnn-v1", "test", 10000) else None
    parts = [f"FID {result['fid']:.2f}" + (f" (real data: {floor['fid']})" if floor else "")] if "fid" in result else []
    if pr:
        parts.append(f"precision {pr['precision']:.3f} / recall {pr['recall']:.3f}"
                     + (f" (real: {floor['precision']} / {floor['recall']})" if floor else ""))
    parts += [f"label accuracy {100 * acc['accuracy']:.2f}%"] if acc else []
    parts += [f"{c['classes_covered']}/{c['num_classes']} classes covered"] if c else []
    return "; ".join(parts) + f" (n = {p['n_fake']} vs the {split} split)"


def fid_of_generator(G: torch.nn.Module, n: int = 2000, reference: str = "test", seed: int = 0, dataset: str = "mnist",
                     *, metrics: Sequence[str] = ("fid",), data_dir: str | None = None, batch_size: int = 500,
                     log: Log | None = None, data: DataConfig | None = None,
                     weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """Metrics (FID by default) of a generator in memory, e.g. the EMA generator during training: `n`
    images on G's device (`_fakes`; G's train/eval mode is restored) against n of the reference split.
    `data`: the run's DataConfig (default: `dataset`'s defaults); the classifier is `weights`, else
    the shipped (MNIST) or cached one for that data (`features.load_classifier`)."""
    log = log or (lambda msg: None)
    data = data if data is not None else DataConfig(dataset=dataset)
    extractor = load_classifier(data, next(G.parameters()).device, weights)
    images, labels = _fakes(G, n, seed, batch_size)
    return evaluate_images(images, labels, extractor=extractor, dataset=data, metrics=list(metrics),
                           reference=reference, seed=seed, data_dir=data_dir, batch_size=batch_size, log=log)
