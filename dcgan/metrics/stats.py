"""Pure math of GAN evaluation metrics on feature arrays (N x D) and class probabilities (N x K): FID,
KID, k-NN precision / recall (Kynkäänniemi 2019), class statistics with the Inception Score, label
accuracy. numpy in (float64 inside), plain Python floats, ints, lists and dicts out (straight to JSON);
no torch, no feature extractor. Invalid input (wrong shapes, too few samples, bad labels) raises ValueError.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import xlogy

__all__ = ["gaussian_stats", "frechet_distance", "fid", "kid", "precision_recall", "class_stats", "label_accuracy"]

_CHUNK = 1000  # rows per block of pairwise distances: _CHUNK x M float64, 80 MB for M = 10,000


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


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D, ddof=1) of N x D features, N >= 2, as float64 numpy arrays
    (not lists: they feed `frechet_distance`)."""
    x = _as_features(feats, "feats", min_rows=2)
    mu = x.mean(axis=0)
    sigma = np.cov(x, rowvar=False, ddof=1)
    sigma = np.atleast_2d(sigma)
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between N(mu1, sigma1) and N(mu2, sigma2)
    (means (D,), PSD covariances D x D): what "FID" reports, no square root taken. Tr (S1 S2)^{1/2} sums
    the square roots of the eigenvalues of sqrt(S1) S2 sqrt(S1) (symmetric PSD, S1 S2's spectrum): no
    complex or ill-conditioned `scipy.linalg.sqrtm` on singular covariances. Round-off-sized negatives
    are clipped to 0; a larger negative result (non-PSD input) raises. Symmetric up to round-off."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must both have shape (D,), got {mu1.shape} and {mu2.shape}")
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"sigma1 and sigma2 must both be {d} x {d}, got {s1.shape} and {s2.shape}")
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
            raise ValueError(f"Fréchet distance came out negative ({value:.3g}); "
                             "are sigma1 and sigma2 positive semi-definite?")
        value = 0.0
    return value


def fid(feats_a, feats_b) -> float:
    """FID (a Python float): the Fréchet distance between Gaussians fitted to N_a x D and N_b x D
    features (N >= 2 each)."""
    a = _as_features(feats_a, "feats_a", min_rows=2)
    b = _as_features(feats_b, "feats_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    return frechet_distance(mu1, s1, mu2, s2)


def _mmd2_unbiased_poly3(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3; x, y: m x D each."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018) of N_a x D and N_b x D features: mean and population std of the unbiased
    MMD^2 with k(x, y) = (x.y / D + 1)^3 over `subsets` random subsets of min(subset_size, N_a, N_b) rows
    of each array, drawn without replacement by a numpy Generator of `seed`. The mean can be slightly
    negative for samples of one distribution."""
    a = _as_features(feats_a, "feats_a")
    b = _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if int(subsets) < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set (got {a.shape[0]} and {b.shape[0]}, "
                         f"subset_size={subset_size})")
    rng = np.random.default_rng(seed)
    vals = np.empty(int(subsets), dtype=np.float64)
    for i in range(int(subsets)):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        vals[i] = _mmd2_unbiased_poly3(a[ia], b[ib])
    return float(vals.mean()), float(vals.std())


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


def _inside_fraction(points: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray, chunk: int) -> float:
    """Fraction of `points` within distance radius_j of some centre j."""
    c_sq = np.einsum("ij,ij->i", centres, centres)
    inside = 0
    for start in range(0, points.shape[0], chunk):
        d = _sq_dists(points[start:start + chunk], centres, c_sq)
        inside += int(np.count_nonzero((d <= radii_sq[None, :]).any(axis=1)))
    return inside / points.shape[0]


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision / recall (Kynkäänniemi 2019) of N_r x D real and N_f x D fake features (N > k):
    the fraction of fakes inside the real manifold (the union of balls around each real feature reaching
    its k-th nearest other real feature), and of reals inside the fake one. Distances in blocks of 1000
    rows (under 200 MB for 10,000 x 10,000), on arrays centred on the real mean (less cancellation)."""
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


def _inception_score_of(p: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) for an n x K row-stochastic array."""
    py = p.mean(axis=0)
    kl = (xlogy(p, p) - xlogy(p, py[None, :])).sum(axis=1)
    return float(math.exp(float(kl.mean())))


def class_stats(probs, num_classes: int, splits: int = 1) -> dict:
    """Statistics of N x K classifier probabilities (rows renormalised): the argmax ``histogram``, the
    ``classes_covered`` (argmax of at least max(1, 0.1 N / K) samples), ``kl_from_uniform`` of the
    histogram (nats: 0 uniform, log K collapsed), and the ``inception_score`` exp(E_x KL(p(y|x) || p(y)))
    with its std over `splits` (1..N) of a fixed random permutation of the rows (order does not matter)."""
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

    return {"histogram": [int(c) for c in hist], "num_samples": int(n), "num_classes": K, "classes_covered": covered,
            "coverage_threshold": float(threshold),
            "coverage_rule": ("a class is covered when at least max(1, 0.1 * N / K) samples "
                              "have it as argmax (10% of its uniform share)"),
            "kl_from_uniform": kl_uniform, "inception_score": float(scores.mean()),
            "inception_score_std": float(scores.std()), "inception_score_splits": splits}


def label_accuracy(pred, target, num_classes: int) -> dict:
    """Accuracy of predicted classes `pred` ((N,) ints or N x K scores) against the requested ones
    `target` (N,), all in [0, K): overall, per requested class (None where absent), and the confusion
    matrix (rows requested, columns predicted)."""
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
            raise ValueError(f"{name} labels must lie in [0, {K}), got range [{arr.min()}, {arr.max()}]")
    p = p.astype(np.int64)
    t = t.astype(np.int64)

    cm = np.bincount(t * K + p, minlength=K * K).reshape(K, K)
    counts = cm.sum(axis=1)
    diag = np.diag(cm)
    per_class = [float(diag[c] / counts[c]) if counts[c] > 0 else None for c in range(K)]
    return {"accuracy": float(diag.sum() / n), "per_class_accuracy": per_class,
            "per_class_count": [int(c) for c in counts], "confusion_matrix": [[int(v) for v in r] for r in cm],
            "num_samples": int(n)}
