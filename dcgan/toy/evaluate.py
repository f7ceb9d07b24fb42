"""`dcgan eval` of a toy run: the measures its monitor writes every tick (measures.py), taken once on
n samples of a checkpoint's generator (or of an .npz of points), with the protocol they were taken under.

    evaluate_points(points, labels, "ring8")      # samples (N, 2) against the ring8 target
    evaluate_checkpoint(G, info, "runs/r", n=10000, seed=0)   # G and info of checkpoint.load_generator

Measured (the keys are the tick lines' keys, grouped by the measure that computes them):
  mode_coverage   a mixture target (ring8, grid25): modes covered, high-quality fraction, and for a
                  conditional generator the label match (high quality and nearest the asked-for mode)
  moment_errors   the Gaussian target: |sample mean - mean| per coordinate, relative covariance error
  d_accuracy      the checkpoint's D at threshold logit 0 on the real points and on as many fakes of
                  the raw generator (the one D is trained against, as in the tick lines)
  real            the target's measures of the real points themselves: the floor a perfect generator
                  reaches with that many points
The real points are the first n of the reference split (test by default): i.i.d. draws of the target
from the split's fixed data seed, the same in every evaluation.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.sources import SOURCES
from ..errors import UserError
from .distributions import SPLITS, LinearGaussian, Mixture
from .measures import COVERED_FRACTION, HQ_SIGMAS, d_accuracy, mode_coverage, moment_errors

Log = Callable[[str], None]


def toy_datasets() -> list[str]:
    """The datasets whose examples are synthetic 2-D points (a target distribution)."""
    return [name for name in SOURCES.names() if getattr(SOURCES.get(name), "target", None) is not None]


def toy_target(dataset: str) -> LinearGaussian | Mixture:
    """The target distribution of a toy dataset; UserError naming the toy datasets otherwise."""
    source = SOURCES.get(dataset)  # an unknown name: UserError naming the known ones
    if getattr(source, "target", None) is None:
        raise UserError(f"dataset {dataset} holds images, not 2-D points; the toy measures need one of "
                        f"[{', '.join(toy_datasets())}]")
    return source.target


def measure(points: np.ndarray, target: LinearGaussian | Mixture, labels: np.ndarray | None = None) -> dict[str, Any]:
    """The target's measures of points (N, 2): {"mode_coverage": ...} for a mixture (with `labels`, the
    classes a conditional generator was asked for: also label_match), {"moment_errors": ...} for a Gaussian."""
    if isinstance(target, Mixture):
        return {"mode_coverage": mode_coverage(points, np.asarray(target.centres), target.sigma, labels)}
    return {"moment_errors": moment_errors(points, target.mean, target.cov)}


def describe(target: LinearGaussian | Mixture) -> dict[str, Any]:
    """The target as plain JSON: a mixture's modes and σ, or a Gaussian's mean and covariance."""
    if isinstance(target, Mixture):
        return {"kind": "mixture", "modes": target.num_classes, "sigma": float(target.sigma),
                "centres": [[float(c) for c in centre] for centre in target.centres]}
    return {"kind": "gaussian", "mean": target.mean.tolist(), "cov": target.cov.tolist()}


def real_points(dataset: str, split: str, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The first min(n, size) points (float32) and labels of a toy dataset's split, and the split's size."""
    raw = SOURCES.get(dataset).load(Path("."), split)  # synthetic: drawn from the split's fixed seed, no files
    k = min(int(n), len(raw.images))
    return np.asarray(raw.images[:k], np.float32), np.asarray(raw.labels[:k], np.int64), len(raw.images)


def reference_split(reference: str | None) -> str:
    if reference is None:
        return "test"
    if reference not in SPLITS:
        raise UserError(f"--reference must be one of [{', '.join(SPLITS)}], got {reference!r}")
    return reference


def evaluate_points(points, labels: np.ndarray | None = None, dataset: str = "ring8", *, reference: str | None = None,
                    seed: int | None = None, D: torch.nn.Module | None = None, fakes: np.ndarray | None = None,
                    fake_labels: np.ndarray | None = None, log: Log | None = None) -> dict[str, Any]:
    """The toy measures of `points` (N, 2) against the target of `dataset`, and of the first N points of
    the `reference` split (test) as "real". `labels` (N,): the classes a conditional generator was asked
    for (→ label_match), or None. With `D`: its accuracy on those real points (with their labels when
    `fake_labels` is given: a conditional D) and on `fakes` (default `points`). `seed`: the noise seed
    the points came from, stated in the protocol."""
    t0 = time.perf_counter()
    log = log or (lambda m: None)
    target = toy_target(dataset)
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise UserError(f"points have shape {tuple(points.shape)}, expected (N, 2): the 2-D samples of a toy run")
    n = len(points)
    if n < 1:
        raise UserError("there are no points to evaluate")
    if isinstance(target, LinearGaussian) and n < 2:
        raise UserError(f"the covariance error needs at least 2 points, got {n}; raise --n")
    if labels is not None:
        labels = np.asarray(labels, np.int64)
        if labels.shape != (n,):
            raise UserError(f"labels have shape {labels.shape}, expected ({n},), one per point")
        if isinstance(target, Mixture) and n and (labels.min() < 0 or labels.max() >= target.num_classes):
            raise UserError(f"labels must lie in 0..{target.num_classes - 1} (the modes of {dataset}), "
                            f"got range {labels.min()}..{labels.max()}")
    split = reference_split(reference)
    real, real_labels, size = real_points(dataset, split, n)
    log(f"measuring {n} points against the {dataset} target (and {len(real)} real points of its {split} split)")
    result: dict[str, Any] = measure(points, target, labels if isinstance(target, Mixture) else None)
    result["real"] = measure(real, target, real_labels if labels is not None and isinstance(target, Mixture) else None)
    if D is not None:
        device = next(D.parameters()).device
        fake = torch.from_numpy(np.asarray(points if fakes is None else fakes, np.float32)).to(device)
        conditional = fake_labels is not None
        result["d_accuracy"] = d_accuracy(
            D, torch.from_numpy(real).to(device), fake,
            torch.from_numpy(real_labels).to(device) if conditional else None,
            torch.from_numpy(np.asarray(fake_labels, np.int64)).to(device) if conditional else None)
    measures = [k for k in ("mode_coverage", "moment_errors", "d_accuracy") if k in result]
    p: dict[str, Any] = {
        "data_kind": "points", "dataset": dataset, "target": describe(target), "measures": measures,
        "n_fake": n, "n_real": len(real), "seed": seed,
        "reference": {"dataset": dataset, "split": split,
                      "points": f"the first {len(real)} of {size} (i.i.d. draws of the target, data seed "
                                f"{SPLITS[split][1]})"},
    }
    if isinstance(target, Mixture):
        p["mode_coverage"] = {"high_quality": f"within {HQ_SIGMAS:g} sigma of the nearest mode (sigma {target.sigma})",
                              "covered": f"a mode holding at least {COVERED_FRACTION:.0%} of the points within "
                                         f"{HQ_SIGMAS:g} sigma of it"}
    if D is not None:
        p["d_accuracy"] = "D's logit > 0 on the real points, < 0 on the fakes" + \
                          (" (a conditional D: each with its label)" if fake_labels is not None else "")
    result["protocol"] = p
    result["elapsed_s"] = time.perf_counter() - t0
    return result


def evaluate_checkpoint(G: torch.nn.Module, info: dict[str, Any], source: str | Path, *, n: int = 10000,
                        seed: int = 0, reference: str | None = None, batch_size: int = 500,
                        log: Log | None = None) -> dict[str, Any]:
    """The toy measures of a toy run or checkpoint: `n` points of G (from checkpoint.load_generator, with
    its `info`) from noise `seed`, classes cycled 0..K-1 for a conditional G; D's accuracy on the real
    points and on the raw generator's points from the same noise (left out, with the reason in the
    protocol, for a slim checkpoint, which holds no D)."""
    from ..checkpoint import load_generator
    from ..sampling import generate, load_discriminator, parse_labels

    t0 = time.perf_counter()
    log = log or (lambda m: None)
    dataset = info["data"].get("dataset") or info["config"].data.dataset
    toy_target(dataset)
    reference_split(reference)  # a bad --reference before the generation
    device = next(G.parameters()).device
    labels_t = parse_labels("all", n, G.num_classes)
    log(f"generating {n} points with the {info['generator']} generator of {info['path']} (step {info['step']})")
    points = generate(G, n, labels_t, seed=seed, batch_size=batch_size).numpy()
    labels = labels_t.numpy().astype(np.int64) if labels_t is not None else None
    D = fakes = None
    try:
        D = load_discriminator(info["path"], device=device)
        G_train = G if info["generator"] == "raw" else load_generator(info["path"], device=device, ema=False)[0]
        fakes = generate(G_train, n, labels_t, seed=seed, batch_size=batch_size).numpy()
        why_not = None
    except UserError as e:  # a slim checkpoint: the generator only
        D, why_not = None, str(e)
    result = evaluate_points(points, labels, dataset, reference=reference, seed=seed, D=D, fakes=fakes,
                             fake_labels=labels, log=log)
    origin = {"source": "run" if Path(source).is_dir() else "checkpoint", "path": str(source),
              "checkpoint": info["path"], "step": int(info["step"]), "generator": info["generator"],
              "labels": "all classes, cycled 0..K-1" if labels is not None else None,
              "train_content_hash": info["data"].get("content_hash")}
    if D is not None:
        result["protocol"]["d_accuracy"] += \
            f"; the fakes: the raw generator (the one D is trained against), noise seed {seed}"
    else:
        result["protocol"]["d_accuracy"] = f"not measured: {why_not}"
    result["protocol"] = {**origin, **result["protocol"]}
    result["elapsed_s"] = time.perf_counter() - t0
    return result


def holds_points(path: str | Path) -> bool:
    """Whether an .npz is a samples file of a toy run ('dcgan sample TOY_RUN --out FILE.npz': 'points')."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "points" in z.files
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        return False


def load_points(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """points float (N, 2) and optional labels int (N,) of a toy run's samples .npz."""
    expected = "a toy samples .npz holds 'points' (float32 N x 2) and optionally 'labels' (int64 N)"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    extra = [k for k in arrays if k not in ("points", "labels")]
    if extra:
        raise UserError(f"{path} holds unexpected arrays [{', '.join(extra)}]; {expected}")
    points, labels = arrays["points"], arrays.get("labels")
    if not np.issubdtype(points.dtype, np.floating) or points.ndim != 2 or points.shape[1] != 2:
        raise UserError(f"{path}: 'points' has dtype {points.dtype} and shape {points.shape}; {expected}")
    if labels is not None and (not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(points),)):
        raise UserError(f"{path}: 'labels' has dtype {labels.dtype} and shape {labels.shape}; {expected}")
    return points.astype(np.float32), labels.astype(np.int64) if labels is not None else None


def summary_line(result: dict[str, Any]) -> str:
    """One line for a person: the target's measures beside the real points' (the floor), D's accuracy."""
    p, real = result["protocol"], result.get("real") or {}
    parts = []
    if "mode_coverage" in result:
        m, r = result["mode_coverage"], real.get("mode_coverage") or {}
        text = f"{m['modes_covered']}/{m['num_modes']} modes covered, {100 * m['hq_frac']:.1f}% high quality"
        text += f", label match {100 * m['label_match']:.1f}%" if "label_match" in m else ""
        if r:
            text += f" (real data: {r['modes_covered']}/{r['num_modes']}, {100 * r['hq_frac']:.1f}%" + \
                    (f", {100 * r['label_match']:.1f}%" if "label_match" in r else "") + ")"
        parts.append(text)
    if "moment_errors" in result:
        m, r = result["moment_errors"], real.get("moment_errors") or {}
        text = "mean error " + " ".join(f"{e:.3f}" for e in m["mean_err"]) + \
            f", covariance error {m['cov_rel_err']:.3f}"
        if r:
            text += " (real data: " + " ".join(f"{e:.3f}" for e in r["mean_err"]) + f", {r['cov_rel_err']:.3f})"
        parts.append(text)
    if "d_accuracy" in result:
        d = result["d_accuracy"]
        parts.append(f"D accuracy {d['d_acc']:.2f} (real {d['d_acc_real']:.2f}, fake {d['d_acc_fake']:.2f}; "
                     f"0.50 at equilibrium)")
    split = (p.get("reference") or {}).get("split")
    return "; ".join(parts) + f" (n = {p['n_fake']} vs the {split} split of {p['dataset']})"
