"""Evaluate a run, a checkpoint or a file of samples against real data, with a stated protocol.

    evaluate("runs/x")                 # the newest checkpoint's EMA generator, 10,000 images vs MNIST test
    evaluate("samples.npz", n=5000)    # images (+ labels) written by 'dcgan sample --out FILE.npz'
    fid_of_generator(G, 2000)          # a cheap FID of a generator in memory (training-time evaluation)

Protocol (every result carries it under "protocol"):

* Features and class probabilities come from the project's own classifier (`classifier.py`):
  the shipped MNIST one, or one trained with 'dcgan eval train-classifier' on the run's labelled
  data (found in the cache, or given as `classifier`), identified by the SHA-256 of its weights;
  the protocol names its architecture, training data and test accuracy.
* Fake images: from a run or checkpoint, `n` images of the EMA generator (raw when the checkpoint
  has no EMA or `ema=False`), noise from `seed`, labels cycling 0..K-1 for conditional models;
  from an .npz, its first `n` images (all of them when it holds fewer).
* Real reference: n_real = min(n_fake, split size) images of the reference split (`test`, 10,000
  images, by default; or `train`, 60,000), so both sets have the same size (k-NN precision/recall
  and the FID bias depend on it): the whole split when n_real equals its size, else a fixed random
  subset (seed 0, whatever the evaluation seed; see `reference_index`). Real images are
  brought to the fake images' resolution with the data cache's resize and then go through the
  same resize to 28x28 as the fakes, so a generator trained at 64x64 is compared with real
  digits that went 28→64→28 too.
* Reference features are cached under <cache>/eval-reference/, keyed by the split's content hash,
  the split, n_real, the resolution and the extractor's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import UserError
from . import stats
from .features import Extractor, load_extractor

METRICS = ("fid", "kid", "precision_recall", "label_accuracy", "classes")
REFERENCES = ("test", "train")
PR_K = 3
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
REFERENCE_CACHE_VERSION = 2
REFERENCE_SUBSET_SEED = 0

# fewest fake (and real) samples each metric can be computed from
_MIN_SAMPLES = {"fid": 2, "kid": 2, "precision_recall": PR_K + 1, "label_accuracy": 1, "classes": 1}

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# ---- inputs --------------------------------------------------------------------------------------

def parse_metrics(spec: str | Sequence[str] | None) -> list[str] | None:
    """'fid,kid' or ['fid', 'kid'] → checked list; None or 'all' → None (all that apply)."""
    if spec is None:
        return None
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    if names == ["all"]:
        return None
    if not names:
        raise UserError(f"--metrics is empty; choose from [{', '.join(METRICS)}] (comma-separated) or all")
    bad = [s for s in names if s not in METRICS]
    if bad:
        raise UserError(f"unknown metric {bad[0]!r}; choose from [{', '.join(METRICS)}] (comma-separated) or all")
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
        raise UserError(f"{path} is not a readable .npz file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"write samples with 'dcgan sample RUN --out FILE.npz'") from None
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


def _check_counts(metrics: list[str], n_fake: int, n_real: int) -> None:
    for m in metrics:
        need = _MIN_SAMPLES[m]
        if n_fake < need:
            raise UserError(f"{m} needs at least {need} samples, got {n_fake}; raise --n or give more samples "
                            f"(or leave {m} out of --metrics)")
        if m in ("fid", "kid", "precision_recall") and n_real < need:
            raise UserError(f"{m} needs at least {need} reference images, the reference has {n_real}")


# ---- the real reference --------------------------------------------------------------------------

def reference_index(size: int, n: int) -> np.ndarray:
    """Which images of a split of `size` form a reference of `n`: all of them in order when n >= size,
    else a fixed random subset (seed REFERENCE_SUBSET_SEED, independent of the evaluation seed), in
    increasing order. Not the first n: MNIST's test split puts its 5,000 cleaner digits first (the
    FID between its two halves is ~55 with the shipped extractor), so a prefix is not representative."""
    if n >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(REFERENCE_SUBSET_SEED).permutation(size)[:n])


def reference_subset(size: int, n: int) -> tuple[int, np.ndarray, str]:
    """(n, index, selection): the reference of up to `n` of a split's `size` images (reference_index)
    and how the protocol names it."""
    n = min(int(n), size)
    selection = f"all {n}" if n == size else f"random {n} of {size} (seed {REFERENCE_SUBSET_SEED})"
    return n, reference_index(size, n), selection


def read_reference_cache(path: Path, keys: Sequence[str], n: int) -> dict[str, np.ndarray] | None:
    """The arrays `keys` of a cached reference at `path` holding `n` rows; None when it is missing,
    damaged or of another size (the caller rebuilds it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            cached = {k: z[k] for k in keys}
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    return cached if len(cached[keys[0]]) == n else None


def write_reference_cache(path: Path, **arrays: np.ndarray) -> None:
    """Write a reference's arrays to `path` through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _data_config(dataset):
    """A DataConfig from a dataset name (its defaults) or a DataConfig (as it is)."""
    from ..config import DataConfig

    return DataConfig(dataset=dataset) if isinstance(dataset, str) else dataset


def reference_features(extractor: Extractor, dataset, split: str, n: int, resolution: int, *,
                       data_dir: str | None = None, log: Log = _stderr) -> dict[str, Any]:
    """Features, probabilities and labels of `n` images of a real split (see `reference_index`), as
    an evaluation at `resolution` sees them; cached. `dataset`: a name (its default DataConfig) or
    a DataConfig (image folders: data.path, ...). Returns {features, probs, labels, class_names, n,
    selection, content_hash, cache, hit, resize}."""
    from dataclasses import replace

    from ..data.prepare import cache_root, prepare, resize

    if split not in REFERENCES:
        raise UserError(f"--reference must be one of [{', '.join(REFERENCES)}], got {split!r}")
    data = _data_config(dataset)
    dataset = data.dataset
    ds = prepare(replace(data, split=split), data_dir, log=log)
    if ds.kind != "images":
        raise UserError(f"dataset {dataset} holds points, not images; the classifier metrics need images")
    n, index, selection = reference_subset(len(ds), n)
    native = ds.shape[1]
    chain = [native] + ([resolution] if resolution != native else []) + \
            ([extractor.input_size] if resolution != extractor.input_size else [])
    resize_note = "none" if len(chain) == 1 else "->".join(f"{s}x{s}" for s in chain)
    key_src = json.dumps({"v": REFERENCE_CACHE_VERSION, "dataset": dataset, "split": split, "selection": selection,
                          "content_hash": ds.meta["content_hash"], "n": n, "resolution": resolution,
                          "extractor_sha256": extractor.sha256, "input_size": extractor.input_size},
                         sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    path = cache_root() / "eval-reference" / f"{dataset}-{split}-n{n}-r{resolution}-{key}.npz"
    out = {"n": n, "content_hash": ds.meta["content_hash"], "cache": str(path), "resize": resize_note,
           "selection": selection, "class_names": list(ds.meta["class_names"])}
    cached = read_reference_cache(path, ("features", "probs", "labels"), n)
    if cached is not None:
        log(f"reference {dataset}/{split} ({selection}): cached features {path.name}")
        return {**out, **cached, "hit": True}
    log(f"reference {dataset}/{split} ({selection}): computing features")
    images = np.asarray(ds.images[index])
    if resolution != native:
        images = resize(images, resolution)
    feats, probs = extractor.extract(images)
    labels = np.asarray(ds.labels[index], dtype=np.int64)
    write_reference_cache(path, features=feats, probs=probs, labels=labels)
    return {**out, "features": feats, "probs": probs, "labels": labels, "hit": False}


# ---- the metrics ---------------------------------------------------------------------------------

def evaluate_images(images, labels: np.ndarray | None, *, extractor: Extractor, dataset="mnist",
                    metrics: str | Sequence[str] | None = None, reference: str = "test", seed: int = 0,
                    data_dir: str | None = None, batch_size: int = 500,
                    log: Log = _stderr) -> dict[str, Any]:
    """Metrics of uint8 images (N, C, H, W) against the real reference. `labels` are the classes
    the images were asked to show (conditional models), or None. `dataset`: the real data, a
    name or a DataConfig."""
    t0 = time.perf_counter()
    if isinstance(images, torch.Tensor):
        images = images.numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UserError(f"images must be uint8, got {images.dtype}")
    extractor.check(images.shape)
    wanted = parse_metrics(metrics)
    conditional = labels is not None
    if wanted is None:
        wanted = [m for m in METRICS if m != "label_accuracy" or conditional]
    if "label_accuracy" in wanted and not conditional:
        raise UserError("label_accuracy needs the labels the images were generated for: the model is unconditional "
                        "or the .npz has no 'labels' array; leave label_accuracy out of --metrics")
    if reference not in REFERENCES:
        raise UserError(f"--reference must be one of [{', '.join(REFERENCES)}], got {reference!r}")
    K = extractor.num_classes
    if conditional:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(images),):
            raise UserError(f"labels have shape {labels.shape}, expected ({len(images)},)")
        if len(labels) and (labels.min() < 0 or labels.max() >= K):
            raise UserError(f"labels must lie in 0..{K - 1} (the classes of {extractor.name}), "
                            f"got range {labels.min()}..{labels.max()}")
    n_fake = len(images)
    if n_fake < 1:
        raise UserError("there are no images to evaluate")
    _check_counts(wanted, n_fake, n_fake)  # the reference is cut to n_fake too; checked again below

    resolution = images.shape[2]
    ref = reference_features(extractor, dataset, reference, n_fake, resolution, data_dir=data_dir, log=log)
    _check_counts(wanted, n_fake, ref["n"])
    log(f"extracting features of {n_fake} images")
    fake_f, fake_p = extractor.extract(images, batch_size)
    real_f, real_p = ref["features"], ref["probs"]

    result: dict[str, Any] = {}
    for m in wanted:
        log(f"computing {m}")
        if m == "fid":
            result["fid"] = stats.fid(fake_f, real_f)
        elif m == "kid":
            mean, std = stats.kid(fake_f, real_f, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed)
            result["kid"] = {"mean": mean, "std": std, "subsets": KID_SUBSETS,
                             "subset_size": min(KID_SUBSET_SIZE, n_fake, ref["n"])}
        elif m == "precision_recall":
            p, r = stats.precision_recall(real_f, fake_f, k=PR_K)
            result["precision_recall"] = {"precision": p, "recall": r, "k": PR_K}
        elif m == "label_accuracy":
            result["label_accuracy"] = stats.label_accuracy(fake_p, labels, K)
        elif m == "classes":
            splits = min(IS_SPLITS, n_fake)
            c = stats.class_stats(fake_p, K, splits=splits)
            r = stats.class_stats(real_p, K, splits=min(IS_SPLITS, ref["n"]))
            c["reference"] = {k: r[k] for k in ("histogram", "classes_covered", "kl_from_uniform",
                                                "inception_score", "inception_score_std")}
            result["classes"] = c
    # the classifier's accuracy on the reference: only where the reference's labels are the classifier's classes
    same_classes = ref["class_names"] == extractor.record.get("class_names", ref["class_names"]) \
        and len(ref["class_names"]) == K
    ref_acc = float((real_p.argmax(1) == ref["labels"]).mean()) if ref["n"] and same_classes else None
    result["protocol"] = {
        **extractor.protocol(images.shape),
        "metrics": wanted,
        "n_fake": n_fake,
        "n_real": ref["n"],
        "reference": {"dataset": _data_config(dataset).dataset,
                      **({"path": _data_config(dataset).path} if _data_config(dataset).path else {}),
                      "split": reference, "images": ref["selection"],
                      "content_hash": ref["content_hash"], "resize": ref["resize"],
                      "classifier_accuracy": ref_acc},
        "fake_resolution": [int(s) for s in images.shape[1:]],
        "seed": seed,
        "kid": {"subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE, "kernel": "(x.y/d + 1)^3"},
        "precision_recall_k": PR_K,
        "inception_score_splits": min(IS_SPLITS, n_fake),
    }
    result["reference_cache"] = {"path": ref["cache"], "hit": ref["hit"]}
    result["elapsed_s"] = time.perf_counter() - t0
    return result


def default_reference(data) -> str:
    """The reference split when --reference is not given: test where the dataset has one, else train."""
    from ..data.sources import SOURCES

    return "test" if "test" in SOURCES.get(_data_config(data).dataset).splits else "train"


def _record_data(record: dict[str, Any]):
    """The DataConfig a classifier was trained on (from its record; mnist-cnn-v1: the dataset's defaults)."""
    from ..config import Config, DataConfig

    if not isinstance(record.get("data"), dict):
        return DataConfig(dataset=record.get("dataset", "mnist"))
    cfg = Config()
    for k, v in record["data"].items():
        if k != "split":
            cfg.set(f"data.{k}", v, "the classifier's record")
    return cfg.data


def _reference_data(extractor: Extractor, data):
    """The real data an extractor's metrics are measured against: for the shipped mnist-cnn-v1,
    the dataset's default split as always; for a classifier trained on other data, `data` itself
    (a run's own data section: path, crop, resolution, classes)."""
    from ..config import DataConfig
    from .classifier import ARCH

    return DataConfig(dataset=data.dataset) if extractor.arch == ARCH else data


def _use_inception(extractor: str | None, channels: int, data, classifier) -> bool:
    """Whether images go through Inception: asked for; or RGB under auto when no classifier was
    given and none has been trained for `data` (a DataConfig, or None when unknown)."""
    from .features import find_classifier

    if extractor == "inception":
        return True
    if classifier is not None or extractor == "classifier" or channels != 3:
        return False
    return data is None or find_classifier(data) is None


def _load_inception_or_say(inception_weights, dev, extractor: str | None, data):
    """load_inception; under auto, a failure also names the classifier route."""
    from . import inception as inc
    from .classifier import train_command

    try:
        return inc.load_inception(inception_weights, dev)
    except UserError as e:
        if extractor == "inception" or data is None:
            raise
        raise UserError(f"{e}; or measure with the project's classifier trained on this data: "
                        f"'{train_command(data)}', then evaluate again (or give --classifier PATH)") from None


def evaluate(source: str | Path, n: int = 10000, metrics: str | Sequence[str] | None = None,
             reference: str | None = None, seed: int = 0, *, dataset: str | None = None, device: str = "auto",
             ema: bool = True, batch_size: int = 500, data_dir: str | None = None, record: bool = True,
             log: Log | None = None, extractor: str | None = None,
             inception_weights: str | os.PathLike | None = None, classifier: str | os.PathLike | None = None,
             data=None) -> dict[str, Any]:
    """Evaluate a run folder, a checkpoint file or a .npz of samples (see the module docstring).

    For a run folder (and `record`), the result is appended to the run's metrics.jsonl as one
    line with "kind": "eval". Bad input raises UserError.

    `extractor`: None / "auto", "classifier" or "inception". Auto: grey images → the project's
    classifier (shipped for MNIST; for other data the one 'dcgan eval train-classifier' wrote to
    the cache for it); RGB images → that cached classifier when there is one, else Inception.
    Inception (dcgan/metrics/inception.py) needs the extra dcgan[inception] and the FID Inception
    weights (`inception_weights` or $DCGAN_INCEPTION_WEIGHTS). The reference split defaults to
    test where the dataset has one, else train.

    `classifier`: a weights file written by 'dcgan eval train-classifier' (its JSON record beside
    it); implies the classifier. For an .npz its record also names the real data unless `dataset`
    / `data` do. `data`: the DataConfig of an .npz's real data (image folders: data.path, ...).
    """
    from ..checkpoint import load_generator
    from ..config import DataConfig
    from ..sampling import generate, parse_labels
    from ..device import pick_device
    from .features import load_classifier

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
    from . import inception as inc

    if extractor == "inception":
        inc.parse_metrics(metrics)
    elif extractor == "classifier" or classifier is not None:
        parse_metrics(metrics)
    else:  # auto: fail now on a name neither extractor knows; the channels decide later
        try:
            parse_metrics(metrics)
        except UserError:
            try:
                inc.parse_metrics(metrics)
            except UserError:
                parse_metrics(metrics)
    if reference is not None and reference not in REFERENCES:
        raise UserError(f"--reference must be one of [{', '.join(REFERENCES)}], got {reference!r}")
    if data is not None:
        if dataset and dataset != data.dataset:
            raise UserError(f"--dataset {dataset} and data.dataset={data.dataset} differ; give one")
        dataset = data.dataset
    source = Path(source)
    dev = pick_device(device)
    clf = None  # the classifier given by `classifier`
    origin: dict[str, Any]
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
            rgb_hint = (f"{inc.need_weights_message()} and --dataset naming their real data (cifar10, celeba, "
                        f"lsun, ...; for an image folder evaluate the run instead)")
            if extractor == "inception":
                raise UserError(f"an .npz measured with Inception needs --dataset: {rgb_hint}")
            raise UserError(f"the MNIST classifier (--dataset defaults to mnist) needs 1-channel (grayscale) images, "
                            f"got {images.shape[1]} channels; {rgb_hint}; or --classifier PATH, a classifier "
                            f"trained on the RGB data with 'dcgan eval train-classifier DATASET'")
        dataset = dataset or "mnist"
        data_cfg = data_cfg or DataConfig(dataset=dataset)
        if len(images) > n:
            images = images[:n]
            labels = labels[:n] if labels is not None else None
        elif len(images) < n:
            log(f"{source} holds {len(images)} images, fewer than --n {n}: evaluating all {len(images)}")
        origin = {"source": "samples", "path": str(source), "checkpoint": None, "step": None, "generator": None,
                  "labels": "from the file" if labels is not None else None}
        if use_inception:
            inc_ex = _load_inception_or_say(inception_weights, dev, extractor, data_cfg)
            return _finish_inception(images, data_cfg, origin, source, metrics=metrics,
                                     reference=reference, seed=seed, data_dir=data_dir, extractor=inc_ex,
                                     device=dev, record=record, log=log, t0=t0)
        parse_metrics(metrics)
        extractor = clf or load_classifier(data_cfg, dev)
    else:
        if data is not None:
            raise UserError("--set data.* describes the real data of an .npz; a run's data comes from its checkpoint "
                            "(drop --set)")
        G, info = load_generator(source, device=dev, ema=ema)
        ckpt_dataset = info["data"].get("dataset") or info["config"].data.dataset
        if dataset and dataset != ckpt_dataset:
            raise UserError(f"--dataset {dataset}: {info['path']} was trained on {ckpt_dataset}; "
                            f"drop --dataset (it is for .npz files)")
        dataset = ckpt_dataset
        data_cfg = info["config"].data
        if classifier is not None:
            clf = load_extractor(dataset, dev, classifier)  # its record must name the run's dataset
        if _use_inception(extractor, G.out_shape[0], data_cfg, classifier):
            inc_ex = _load_inception_or_say(inception_weights, dev, extractor, data_cfg)  # before the (slow) generation
            inc_metrics = inc.parse_metrics(metrics)
            inc.reference_split(data_cfg, reference)
            labels_t = parse_labels("all", n, G.num_classes)
            log(f"generating {n} images with the {info['generator']} generator of {info['path']} (step {info['step']})")
            images = generate(G, n, labels_t, seed=seed, batch_size=batch_size).numpy()
            origin = {"source": "run" if source.is_dir() else "checkpoint", "path": str(source),
                      "checkpoint": info["path"], "step": int(info["step"]), "generator": info["generator"],
                      "labels": "all classes, cycled 0..K-1" if labels_t is not None else None,
                      "train_content_hash": info["data"].get("content_hash")}
            return _finish_inception(images, data_cfg, origin, source, metrics=inc_metrics,
                                     reference=reference, seed=seed, data_dir=data_dir, extractor=inc_ex,
                                     device=dev, record=record, log=log, t0=t0)
        parse_metrics(metrics)
        extractor = clf or load_classifier(data_cfg, dev)  # before the (slow) generation: fail early
        extractor.check((n, *G.out_shape))
        if G.num_classes and G.num_classes != extractor.num_classes:
            raise UserError(f"the generator has {G.num_classes} classes, the {extractor.name} classifier "
                            f"{extractor.num_classes}; give a classifier trained on the run's classes "
                            f"('{_train_command(data_cfg)}', then --classifier PATH or the cached one)")
        labels_t = parse_labels("all", n, G.num_classes)
        log(f"generating {n} images with the {info['generator']} generator of {info['path']} (step {info['step']})")
        images = generate(G, n, labels_t, seed=seed, batch_size=batch_size).numpy()
        labels = labels_t.numpy().astype(np.int64) if labels_t is not None else None
        origin = {"source": "run" if source.is_dir() else "checkpoint", "path": str(source),
                  "checkpoint": info["path"], "step": int(info["step"]), "generator": info["generator"],
                  "labels": "all classes, cycled 0..K-1" if labels is not None else None,
                  "train_content_hash": info["data"].get("content_hash")}
    ref_data = _reference_data(extractor, data_cfg)
    reference = reference or default_reference(ref_data)
    result = evaluate_images(images, labels, extractor=extractor, dataset=ref_data, metrics=metrics,
                             reference=reference, seed=seed, data_dir=data_dir, batch_size=batch_size, log=log)
    return _finish_result(result, origin, source, record=record, log=log, t0=t0)


def _train_command(data) -> str:
    from .classifier import train_command

    return train_command(data)


def _finish_result(result: dict[str, Any], origin: dict[str, Any], source: Path, *, record: bool, log: Log,
                   t0: float) -> dict[str, Any]:
    """Put where the images came from into the protocol, time the whole evaluation, and append the
    result to a run's metrics.jsonl (never for a checkpoint file or an .npz)."""
    result["protocol"] = {**origin, **result["protocol"]}
    result["elapsed_s"] = time.perf_counter() - t0
    if record and origin["source"] == "run":
        from ..training.run import MetricsLog

        MetricsLog(source / "metrics.jsonl").write({"kind": "eval", "step": origin["step"], "time": time.time(),
                                                   **result})
        log(f"appended the result to {source / 'metrics.jsonl'}")
    return result


def _finish_inception(images, data_cfg, origin: dict[str, Any], source: Path, *, metrics, reference, seed, data_dir,
                      device, record: bool, log: Log, t0: float, weights=None, extractor=None) -> dict[str, Any]:
    """Inception metrics of generated or loaded images, with the origin in the protocol; recorded
    in a run's metrics.jsonl like the classifier's."""
    from . import inception as inc

    result = inc.evaluate_inception(images, data_cfg, extractor=extractor, weights=weights, metrics=metrics,
                                    reference=reference, seed=seed, data_dir=data_dir, device=device, log=log)
    return _finish_result(result, origin, source, record=record, log=log, t0=t0)


def fid_of_generator(G: torch.nn.Module, n: int = 2000, reference: str = "test", seed: int = 0,
                     dataset: str = "mnist", *, metrics: Sequence[str] = ("fid",), data_dir: str | None = None,
                     batch_size: int = 500, log: Log | None = None, data=None,
                     weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """Metrics (FID by default) of a generator in memory, e.g. the EMA generator during training.

    Generates `n` images from noise `seed` (labels cycling over the classes of a conditional G),
    on G's device, and compares them with n images of the reference split (the fixed subset of
    `reference_index`; its features are cached after the first call). G's train/eval mode is restored. Returns {"fid": ..., "protocol": {...}, ...};
    with metrics=("fid", "label_accuracy") a conditional G also gets its label accuracy (cheap).

    `data`: the run's DataConfig (default: `dataset`'s defaults); the classifier is `weights`, else
    the shipped (MNIST) or cached one for that data (`features.load_classifier`).
    """
    from ..config import DataConfig
    from ..sampling import generate, parse_labels
    from .features import load_classifier

    log = log or (lambda msg: None)
    device = next(G.parameters()).device
    data = data if data is not None else DataConfig(dataset=dataset)
    extractor = load_classifier(data, device, weights)
    labels_t = parse_labels("all", n, G.num_classes)
    images = generate(G, n, labels_t, seed=seed, batch_size=batch_size)
    labels = labels_t.numpy().astype(np.int64) if labels_t is not None else None
    return evaluate_images(images, labels, extractor=extractor, dataset=_reference_data(extractor, data),
                           metrics=list(metrics), reference=reference, seed=seed, data_dir=data_dir,
                           batch_size=batch_size, log=log)
