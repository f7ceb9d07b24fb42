"""Tests for dcgan.metrics.stats: FID, KID, precision/recall, class stats, label accuracy."""

import json
import math

import numpy as np
import pytest

from dcgan.metrics.stats import (
    class_stats,
    fid,
    frechet_distance,
    gaussian_stats,
    kid,
    label_accuracy,
    precision_recall,
)


def _rotation(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------- FID

def test_gaussian_stats_shapes_and_ddof():
    x = np.random.default_rng(0).normal(size=(50, 4))
    mu, sigma = gaussian_stats(x)
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False, ddof=1))


def test_fid_self_is_zero():
    x = np.random.default_rng(1).normal(scale=5.0, size=(500, 32))
    mu, s = gaussian_stats(x)
    scale = np.trace(s)
    assert abs(fid(x, x)) < 1e-6 * scale


def test_fid_self_zero_when_singular():
    # fewer samples than dimensions: singular covariance, sqrtm would struggle
    x = np.random.default_rng(2).normal(size=(20, 64))
    assert abs(fid(x, x)) < 1e-6 * np.trace(gaussian_stats(x)[1])


def test_fid_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 16))
    b = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)) + 0.5
    ab, ba = fid(a, b), fid(b, a)
    assert ab > 0.1
    assert ab == pytest.approx(ba, rel=1e-9)


def test_frechet_closed_form_diagonal():
    rng = np.random.default_rng(4)
    d = 10
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10)
    # a zero eigenvalue (degenerate Gaussian) is still exact
    s1[0] = 0.0
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_closed_form_commuting_rotated():
    rng = np.random.default_rng(5)
    d = 8
    q = _rotation(d, 6)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    e1, e2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    s1 = q @ np.diag(e1) @ q.T
    s2 = q @ np.diag(e2) @ q.T
    assert not np.allclose(s1, np.diag(np.diag(s1)))  # genuinely non-diagonal
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(e1) - np.sqrt(e2)) ** 2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-9)


def test_frechet_non_commuting_matches_reference():
    # non-commuting covariances: compare with the scipy.linalg.sqrtm formula
    import scipy.linalg
    rng = np.random.default_rng(7)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ref = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
           - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fid_grows_with_mean_shift():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(2000, 8))
    base = rng.normal(size=(2000, 8))
    values = [fid(a, base + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(values, values[1:]))
    # shift s along all 8 dims -> ~8 s^2
    assert values[-1] == pytest.approx(8 * 4.0, rel=0.1)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------- KID

def test_kid_same_distribution_near_zero():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(1000, 16))
    b = rng.normal(size=(1000, 16))
    mean, std = kid(a, b, subsets=20, subset_size=200, seed=0)
    assert std > 0
    assert abs(mean) < 3 * std + 1e-3


def test_kid_shifted_clearly_positive():
    rng = np.random.default_rng(10)
    a = rng.normal(size=(1000, 16))
    b = rng.normal(size=(1000, 16)) + 1.0
    same_mean, _ = kid(a, rng.normal(size=(1000, 16)), subsets=20, subset_size=200)
    mean, std = kid(a, b, subsets=20, subset_size=200)
    assert mean > 10 * std
    assert mean > 50 * abs(same_mean)


def test_kid_deterministic_capped_and_validated():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(80, 4))
    assert kid(a, b, subsets=5, seed=3) == kid(a, b, subsets=5, seed=3)
    assert kid(a, b, subsets=5, seed=3) != kid(a, b, subsets=5, seed=4)
    # subset_size 1000 is capped at 50 without error
    mean, std = kid(a, b, subsets=3, subset_size=1000)
    assert isinstance(mean, float) and isinstance(std, float)
    with pytest.raises(ValueError):
        kid(a[:1], b)


def test_kid_matches_bruteforce_estimator():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = 7
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    # subset_size == N: every subset is a permutation of all rows -> same value
    mean, std = kid(x, y, subsets=4, subset_size=7)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- precision / recall

def test_pr_identical_sets():
    x = np.random.default_rng(13).normal(size=(300, 8))
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_pr_far_away():
    rng = np.random.default_rng(14)
    real = rng.normal(size=(300, 8))
    fake = rng.normal(size=(300, 8)) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_pr_half_the_modes():
    rng = np.random.default_rng(15)
    d = 2  # low dimension: k-NN balls cover their own mode well
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    per = 400
    real = np.concatenate([c + rng.normal(size=(per, d)) for c in centres])
    fake = np.concatenate([c + rng.normal(size=(2 * per, d)) for c in centres[:2]])
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.9
    assert 0.4 < r < 0.55


def test_pr_chunked_matches_bruteforce():
    rng = np.random.default_rng(16)
    real = rng.normal(size=(1300, 5))  # > one 1000-row chunk
    fake = rng.normal(size=(1100, 5)) * 1.3 + 0.2
    k = 3

    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]

    def frac(pts, cen, rad):
        d = np.sqrt(((pts[:, None] - cen[None]) ** 2).sum(-1))
        return float((d <= rad[None]).any(1).mean())

    exp_p = frac(fake, real, radii(real))
    exp_r = frac(real, fake, radii(fake))
    p, r = precision_recall(real, fake, k=k)
    assert p == pytest.approx(exp_p, abs=1.5 / 1100)
    assert r == pytest.approx(exp_r, abs=1.5 / 1300)
    assert 0.0 < p < 1.0 and 0.0 < r < 1.0


def test_pr_validates():
    with pytest.raises(ValueError):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(ValueError):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))


# ---------------------------------------------------------------- class stats / IS

def test_class_stats_collapsed_two_classes():
    K, n = 10, 200
    labels = np.array([3] * (n // 2) + [7] * (n // 2))
    probs = np.eye(K)[labels] * 0.9 + 0.01  # rows sum to 1, argmax = label
    s = class_stats(probs, K)
    assert s["histogram"] == [0, 0, 0, 100, 0, 0, 0, 100, 0, 0]
    assert s["classes_covered"] == 2
    assert s["kl_from_uniform"] == pytest.approx(math.log(K / 2), rel=1e-12)
    assert "coverage_rule" in s and "0.1" in s["coverage_rule"]
    json.dumps(s)


def test_class_stats_coverage_threshold():
    K, n = 4, 400  # threshold = max(1, 0.1 * 100) = 10
    labels = np.array([0] * 290 + [1] * 100 + [2] * 10 + [3] * 0)
    s = class_stats(np.eye(K)[labels], K)
    assert s["coverage_threshold"] == 10.0
    assert s["classes_covered"] == 3
    labels = np.array([0] * 291 + [1] * 100 + [2] * 9)
    assert class_stats(np.eye(K)[labels], K)["classes_covered"] == 2


def test_kl_uniform_histogram_is_zero():
    K = 5
    s = class_stats(np.eye(K)[np.arange(100) % K], K)
    assert s["kl_from_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert s["classes_covered"] == K


def test_inception_score_one_hot_uniform_is_k():
    K = 10
    probs = np.eye(K)[np.arange(1000) % K]
    s = class_stats(probs, K)
    assert s["inception_score"] == pytest.approx(K, rel=1e-12)
    s = class_stats(probs, K, splits=10)  # random splits of 100: nearly, not exactly, balanced
    assert s["inception_score"] == pytest.approx(K, rel=0.05) and s["inception_score"] <= K
    assert s["inception_score_splits"] == 10


def test_inception_score_does_not_depend_on_the_order_of_the_samples():
    """Samples stored class by class (an image folder's order) score as a shuffled set does."""
    K = 10
    rng = np.random.default_rng(3)
    probs = np.eye(K)[np.sort(rng.integers(0, K, 2000))] * 0.9 + 0.01  # sorted by class
    shuffled = probs[rng.permutation(len(probs))]
    a, b = class_stats(probs, K, splits=10), class_stats(shuffled, K, splits=10)
    assert a["inception_score"] == pytest.approx(b["inception_score"], rel=0.02)
    assert a["inception_score"] > 0.8 * class_stats(probs, K)["inception_score"]  # not ~1 per one-class split


def test_inception_score_identical_predictions_is_one():
    K = 6
    row = np.random.default_rng(17).dirichlet(np.ones(K))
    s = class_stats(np.tile(row, (50, 1)), K)
    assert s["inception_score"] == pytest.approx(1.0, abs=1e-12)


def test_inception_score_splits_std_positive():
    rng = np.random.default_rng(18)
    probs = rng.dirichlet(np.ones(8) * 0.3, size=400)
    s = class_stats(probs, 8, splits=4)
    assert 1.0 < s["inception_score"] < 8.0
    assert s["inception_score_std"] > 0.0


def test_class_stats_validates():
    with pytest.raises(ValueError):
        class_stats(np.ones((4, 3)) / 3, 5)
    with pytest.raises(ValueError):
        class_stats(-np.ones((4, 3)), 3)


# ---------------------------------------------------------------- label accuracy

def test_label_accuracy_hand_built():
    target = [0, 0, 0, 1, 1, 2, 2, 2]
    pred = [0, 1, 0, 1, 1, 0, 2, 1]
    out = label_accuracy(pred, target, num_classes=4)
    assert out["confusion_matrix"] == [
        [2, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 0, 0],
    ]
    assert out["accuracy"] == pytest.approx(5 / 8)
    assert out["per_class_accuracy"][:3] == pytest.approx([2 / 3, 1.0, 1 / 3])
    assert out["per_class_accuracy"][3] is None
    assert out["per_class_count"] == [3, 2, 3, 0]
    json.dumps(out)


def test_label_accuracy_accepts_scores_and_validates():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    out = label_accuracy(scores, np.array([0, 1, 1]), 2)
    assert out["confusion_matrix"] == [[1, 0], [1, 1]]
    with pytest.raises(ValueError):
        label_accuracy([0, 2], [0, 1], 2)
    with pytest.raises(ValueError):
        label_accuracy([0, 1, 1], [0, 1], 2)


# ---------------------------------------------------------------- scale

def test_precision_recall_large_is_fast():
    # 5000 x 5000 at D=128 crosses several 1000-row chunks; 10k x 10k takes
    # about 4x as long (a few seconds) and stays within ~100 MB of buffers.
    import time
    rng = np.random.default_rng(19)
    real = rng.normal(size=(5_000, 128)).astype(np.float32)
    fake = rng.normal(size=(5_000, 128)).astype(np.float32)
    t = time.perf_counter()
    p, r = precision_recall(real, fake)
    elapsed = time.perf_counter() - t
    assert 0.0 < p <= 1.0 and 0.0 < r <= 1.0
    assert elapsed < 20.0
