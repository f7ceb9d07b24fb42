"""Pure math of GAN evaluation metrics, on feature arrays and class probabilities.

Everything here works on numpy arrays (converted to float64 internally) and
returns plain Python floats, ints, lists and dicts, so results can be written
straight to JSON.  No torch and no feature extractor: callers compute the
features (N x D arrays) or classifier probabilities (N x K arrays) elsewhere.

Functions:

* `gaussian_stats`, `frechet_distance`, `fid` -- Fréchet (Inception) Distance.
* `kid` -- Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel).
* `precision_recall` -- k-NN manifold precision / recall (Kynkäänniemi 2019).
* `class_stats` -- class histogram, coverage, KL from uniform, Inception Score.
* `label_accuracy` -- accuracy, per-class accuracy, confusion matrix.

Invalid input (wrong shapes, too few samples, out-of-range labels) raises
`ValueError`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import xlogy

__all__ = [
    "gaussian_stats",
    "frechet_distance",
    "fid",
    "kid",
    "precision_recall",
    "class_stats",
    "label_accuracy",
]

# Rows per block when computing pairwise distances: a block is
# _CHUNK x M float64, i.e. 80 MB for M = 10,000.
_CHUNK = 1000


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _as_features(x, name: str, min_rows: int = 1) -> np.ndarray:
    """Return `x` as a finite float64 N x D array with N >= min_rows."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N x D), got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {a.shape[0]}")
    if a.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    s = 0.5 * (s + s.T)
    w, v = np.linalg.eigh(s)
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T


def _sq_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, a: n x D, b: m x D, b_sq: (m,) -> n x m (clipped at 0)."""
    a_sq = np.einsum("ij,ij->i", a, a)
    d = a @ b.T  # the only n x m allocation; the rest is in place
    d *= -2.0
    d += a_sq[:, None]
    d += b_sq[None, :]
    np.maximum(d, 0.0, out=d)
    return d


# --------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------

def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature array.

    Args:
        feats: N x D array of features, N >= 2.

    Returns:
        (mu, sigma): mu is a float64 array of shape (D,), sigma a float64
        D x D covariance matrix with ddof=1 (unbiased).  These are numpy
        arrays (not lists) because they feed `frechet_distance`.
    """
    x = _as_features(feats, "feats", min_rows=2)
    mu = x.mean(axis=0)
    sigma = np.cov(x, rowvar=False, ddof=1)
    sigma = np.atleast_2d(sigma)
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

        d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

    Args:
        mu1, mu2: arrays of shape (D,).
        sigma1, sigma2: D x D symmetric positive semi-definite matrices.

    Returns:
        The squared Fréchet distance as a Python float (this is what "FID"
        reports; no square root is taken).

    The trace of the matrix square root is computed as the sum of square
    roots of the eigenvalues of sqrt(S1) S2 sqrt(S1), which is symmetric PSD
    and has the same spectrum as S1 S2.  This avoids the complex / ill-
    conditioned results of `scipy.linalg.sqrtm` on singular covariances
    (e.g. fewer samples than dimensions).  Tiny negative eigenvalues from
    round-off are clipped to 0, and the final value is clipped at 0 only when
    it is a round-off-sized negative; the result is symmetric in its two
    Gaussians up to round-off.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must both have shape (D,), got {mu1.shape} and {mu2.shape}")
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must both be {d} x {d}, got {s1.shape} and {s2.shape}")
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")

    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    diff = mu1 - mu2
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    m = 0.5 * (m + m.T)
    ev = np.clip(np.linalg.eigvalsh(m), 0.0, None)
    tr_covmean = float(np.sqrt(ev).sum())

    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    if value < 0.0:
        scale = float(diff @ diff + abs(np.trace(s1)) + abs(np.trace(s2)))
        if value < -1e-6 * max(scale, 1e-12):
            # Should not happen for PSD inputs; signals non-PSD covariances.
            raise ValueError(
                f"Fréchet distance came out negative ({value:.3g}); "
                "are sigma1 and sigma2 positive semi-definite?")
        value = 0.0
    return value


def fid(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature arrays.

    Args:
        feats_a: N_a x D features (N_a >= 2).
        feats_b: N_b x D features (N_b >= 2), same D.

    Returns:
        FID as a Python float.
    """
    a = _as_features(feats_a, "feats_a", min_rows=2)
    b = _as_features(feats_b, "feats_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    return frechet_distance(mu1, s1, mu2, s2)


# --------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------

def _mmd2_unbiased_poly3(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3; x, y: m x D each."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018).

    The unbiased estimator of MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / D + 1)^3, averaged over `subsets` random subsets.  Each
    subset draws `subset_size` rows from each array without replacement
    (independently per subset); `subset_size` is capped at
    min(N_a, N_b).

    Args:
        feats_a: N_a x D features.
        feats_b: N_b x D features, same D.
        subsets: number of random subsets (>= 1).
        subset_size: rows per subset from each array.
        seed: seed of the numpy Generator choosing subsets; the result is
            deterministic for a given seed.

    Returns:
        (mean, std): mean and population std (ddof=0) of the per-subset
        MMD^2 estimates, as Python floats.  The mean can be slightly
        negative when both samples come from the same distribution.

    Raises:
        ValueError: fewer than 2 samples in either array (after capping),
            mismatched D, or subsets < 1.
    """
    a = _as_features(feats_a, "feats_a")
    b = _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if int(subsets) < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(
            f"KID needs at least 2 samples per set (got {a.shape[0]} and {b.shape[0]}, "
            f"subset_size={subset_size})")
    rng = np.random.default_rng(seed)
    vals = np.empty(int(subsets), dtype=np.float64)
    for i in range(int(subsets)):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        vals[i] = _mmd2_unbiased_poly3(a[ia], b[ib])
    return float(vals.mean()), float(vals.std())


# --------------------------------------------------------------------------
# precision / recall
# --------------------------------------------------------------------------

def _knn_radii_sq(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each row of x to its k-th nearest other row."""
    n = x.shape[0]
    x_sq = np.einsum("ij,ij->i", x, x)
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d = _sq_dists(x[start:stop], x, x_sq)
        # Self-distance is exactly 0 on the diagonal; the k-th neighbour
        # excluding self is then index k of the sorted row.
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        d.partition(k, axis=1)  # in place
        out[start:stop] = d[:, k]
    return out


def _inside_fraction(points: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray,
                     chunk: int) -> float:
    """Fraction of `points` within distance radius_j of some centre j."""
    c_sq = np.einsum("ij,ij->i", centres, centres)
    inside = 0
    for start in range(0, points.shape[0], chunk):
        d = _sq_dists(points[start:start + chunk], centres, c_sq)
        inside += int(np.count_nonzero((d <= radii_sq[None, :]).any(axis=1)))
    return inside / points.shape[0]


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifolds.

    The real manifold is the union of closed balls around each real feature
    with radius = Euclidean distance to its k-th nearest *other* real feature;
    the fake manifold likewise from the fake features.

    * precision = fraction of fake features inside the real manifold;
    * recall    = fraction of real features inside the fake manifold.

    Pairwise distances are computed in blocks of 1000 rows, so memory stays
    around one 1000 x max(N_real, N_fake) float64 block (80 MB for 10,000
    samples) plus float64 copies of the inputs: under 200 MB peak and a few
    seconds for 10,000 x 10,000 at D=128.  Both arrays are centred on the real mean first, which
    reduces cancellation in the |a|^2 + |b|^2 - 2 a.b expansion.

    Args:
        real: N_r x D real features, N_r > k.
        fake: N_f x D fake features, N_f > k, same D.
        k: neighbourhood size (>= 1).

    Returns:
        (precision, recall) as Python floats in [0, 1].
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    r = _as_features(real, "real", min_rows=k + 1)
    f = _as_features(fake, "fake", min_rows=k + 1)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    centre = r.mean(axis=0)
    r = r - centre
    f = f - centre
    r_rad = _knn_radii_sq(r, k, _CHUNK)
    f_rad = _knn_radii_sq(f, k, _CHUNK)
    precision = _inside_fraction(f, r, r_rad, _CHUNK)
    recall = _inside_fraction(r, f, f_rad, _CHUNK)
    return float(precision), float(recall)


# --------------------------------------------------------------------------
# class statistics / Inception Score
# --------------------------------------------------------------------------

def _inception_score_of(p: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for an n x K row-stochastic array."""
    py = p.mean(axis=0)
    kl = (xlogy(p, p) - xlogy(p, py[None, :])).sum(axis=1)
    return float(math.exp(float(kl.mean())))


def class_stats(probs, num_classes: int, splits: int = 1) -> dict:
    """Class histogram, coverage, KL from uniform and Inception Score.

    Args:
        probs: N x K array of classifier probabilities (K == num_classes),
            non-negative; each row is renormalised to sum to 1.
        num_classes: K.
        splits: number of splits for the Inception Score (as in the classic
            IS code, but of a fixed random permutation of the rows, so the
            order of the samples does not matter); 1 gives the score on all
            N samples with std 0.  Must satisfy 1 <= splits <= N.

    Returns:
        dict with
          * ``histogram``: list of K ints, count of samples whose argmax is
            each class;
          * ``num_samples``: N; ``num_classes``: K;
          * ``classes_covered``: number of classes that are *covered*, i.e.
            receive at least max(1, 0.1 * N / K) argmax samples -- at least
            10% of their share under a uniform distribution;
          * ``coverage_threshold``: that threshold as a float;
          * ``coverage_rule``: a sentence stating the rule;
          * ``kl_from_uniform``: KL(p_hist || uniform) in nats, where p_hist is
            the normalised histogram; empty classes contribute 0 (0 log 0 = 0).
            0 for a perfectly uniform histogram, log K for full collapse;
          * ``inception_score``: mean over splits of
            exp(E_x KL(p(y|x) || p(y))), p(y) being the split's mean
            prediction;
          * ``inception_score_std``: population std over splits (0 if 1 split);
          * ``inception_score_splits``: the number of splits used.
    """
    K = int(num_classes)
    if K < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != K:
        raise ValueError(f"probs must be an N x {K} array, got shape {p.shape}")
    n = p.shape[0]
    if n < 1:
        raise ValueError("probs has no rows")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probs must be finite and non-negative")
    row = p.sum(axis=1, keepdims=True)
    if np.any(row <= 0):
        raise ValueError("every row of probs must have a positive sum")
    p = p / row
    splits = int(splits)
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be between 1 and N={n}, got {splits}")

    hist = np.bincount(p.argmax(axis=1), minlength=K)
    threshold = max(1.0, 0.1 * n / K)
    covered = int(np.count_nonzero(hist >= threshold))
    ph = hist / n
    kl_uniform = float(xlogy(ph, ph * K).sum())
    kl_uniform = max(kl_uniform, 0.0)

    # splits of a fixed random permutation: samples stored class by class (an image folder's
    # order, or labels requested 0,0,...,1,1,...) would otherwise give each split one class
    order = np.random.default_rng(0).permutation(n)
    scores = np.array([_inception_score_of(part) for part in np.array_split(p[order], splits)])

    return {
        "histogram": [int(c) for c in hist],
        "num_samples": int(n),
        "num_classes": K,
        "classes_covered": covered,
        "coverage_threshold": float(threshold),
        "coverage_rule": ("a class is covered when at least max(1, 0.1 * N / K) samples "
                          "have it as argmax (10% of its uniform share)"),
        "kl_from_uniform": kl_uniform,
        "inception_score": float(scores.mean()),
        "inception_score_std": float(scores.std()),
        "inception_score_splits": splits,
    }


# --------------------------------------------------------------------------
# conditional label accuracy
# --------------------------------------------------------------------------

def label_accuracy(pred, target, num_classes: int) -> dict:
    """Accuracy of predicted labels against requested labels.

    Args:
        pred: (N,) integer predicted classes, or an N x K array of scores /
            probabilities (argmax is taken).
        target: (N,) integer requested (conditioning) classes.
        num_classes: K; all labels must lie in [0, K).

    Returns:
        dict with
          * ``accuracy``: overall fraction correct (float);
          * ``per_class_accuracy``: list of K floats, accuracy on samples whose
            target is that class; None for classes absent from target;
          * ``per_class_count``: list of K ints, number of samples per target
            class;
          * ``confusion_matrix``: K x K list of ints, rows = requested (target)
            label, columns = predicted label;
          * ``num_samples``: N.
    """
    K = int(num_classes)
    if K < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = np.asarray(pred)
    if p.ndim == 2:
        if p.shape[1] != K:
            raise ValueError(f"pred scores must be N x {K}, got shape {p.shape}")
        p = p.argmax(axis=1)
    t = np.asarray(target)
    if p.ndim != 1 or t.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"pred and target must be 1-D of equal length, got {p.shape} and {t.shape}")
    n = t.shape[0]
    if n < 1:
        raise ValueError("no samples")
    for name, arr in (("pred", p), ("target", t)):
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise ValueError(f"{name} must contain integer class labels")
        if arr.min() < 0 or arr.max() >= K:
            raise ValueError(f"{name} labels must lie in [0, {K}), got range "
                             f"[{arr.min()}, {arr.max()}]")
    p = p.astype(np.int64)
    t = t.astype(np.int64)

    cm = np.bincount(t * K + p, minlength=K * K).reshape(K, K)
    counts = cm.sum(axis=1)
    diag = np.diag(cm)
    per_class = [float(diag[c] / counts[c]) if counts[c] > 0 else None for c in range(K)]
    return {
        "accuracy": float(diag.sum() / n),
        "per_class_accuracy": per_class,
        "per_class_count": [int(c) for c in counts],
        "confusion_matrix": [[int(v) for v in r] for r in cm],
        "num_samples": int(n),
    }
