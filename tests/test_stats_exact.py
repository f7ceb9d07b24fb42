"""dcgan.metrics.stats on tiny hand-made cases with exact answers: the boundaries of every check (the
smallest valid input is accepted, one less is refused with a message that names the argument), the
defaults of the protocol (KID's 100 subsets of 1000, k = 3), ties on the k-NN radius, exact float64
arithmetic on other dtypes, and inputs far from the origin. Each test is a few milliseconds.
(docs/MUTATION.md: these tests kill the mutants the older tests let survive.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import xlogy

from dcgan.metrics.stats import (
    _knn_radii_sq,
    _sq_dists,
    class_stats,
    fid,
    frechet_distance,
    gaussian_stats,
    kid,
    label_accuracy,
    precision_recall,
)


# ---------------------------------------------------------------- FID

def test_gaussian_stats_of_two_rows_is_exact():
    """N = 2 is the smallest sample with a covariance (ddof = 1): rows (0, 0) and (2, 4) have mean
    (1, 2) and covariance [[2, 4], [4, 8]] exactly; one row is refused naming the argument."""
    mu, sigma = gaussian_stats([[0.0, 0.0], [2.0, 4.0]])
    assert mu.tolist() == [1.0, 2.0]
    assert sigma.tolist() == [[2.0, 4.0], [4.0, 8.0]]
    with pytest.raises(ValueError, match=r"^feats needs at least 2 rows \(samples\), got 1$"):
        gaussian_stats([[1.0, 2.0]])


def test_fid_of_two_rows_each_is_the_closed_form():
    """1-D, two rows each: a = {0, 2} (mean 1, variance 2), b = {1, 3} (mean 2, variance 2): FID =
    (1 - 2)^2 + 2 + 2 - 2 sqrt(2 * 2) = 1."""
    assert fid([[0.0], [2.0]], [[1.0], [3.0]]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"^feats_a needs at least 2 rows \(samples\), got 1$"):
        fid([[0.0]], [[1.0], [3.0]])
    with pytest.raises(ValueError, match=r"^feats_b needs at least 2 rows \(samples\), got 1$"):
        fid([[1.0], [3.0]], [[0.0]])
    with pytest.raises(ValueError, match=r"^feature dimensions differ: 1 vs 2$"):
        fid([[0.0], [2.0]], [[1.0, 0.0], [3.0, 0.0]])


def test_a_negative_frechet_distance_beyond_round_off_is_refused():
    """Non-PSD covariances: sigma1 = [[-0.5]] gives d^2 = -0.5 against a scale of 0.5 (far beyond the
    1e-6 relative round-off), and sigma1 = [[-1e-8]] gives -1e-8 against a scale of 1e-8 (the
    tolerance is relative even for tiny covariances): both are refused; -1e-9 against a scale of 2
    is round-off and comes out as 0."""
    with pytest.raises(ValueError, match=r"^Fréchet distance came out negative \(-0\.5\); "
                                         r"are sigma1 and sigma2 positive semi-definite\?$"):
        frechet_distance([0.0], [[-0.5]], [0.0], [[0.0]])
    with pytest.raises(ValueError, match=r"^Fréchet distance came out negative \(-1e-08\)"):
        frechet_distance([0.0], [[-1e-8]], [0.0], [[0.0]])
    assert frechet_distance([0.0], [[1.0]], [0.0], [[-1.0 - 1e-9]]) == 0.0


def test_a_small_positive_frechet_distance_is_not_clipped():
    """Only negative round-off is clipped to 0: a mean shift of 0.5 with equal covariances is 0.25."""
    assert frechet_distance([0.0, 0.0], np.eye(2), [0.5, 0.0], np.eye(2)) == pytest.approx(0.25, abs=1e-12)
    assert frechet_distance([0.0], [[1.0]], [0.1], [[1.0]]) == pytest.approx(0.01, abs=1e-12)


def test_frechet_distance_computes_in_float64_whatever_the_input_dtype():
    """float32 means and covariances give exactly the float64 result of the same values."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (rng.normal(size=(40, 5)) * 1.7 + 0.3).astype(np.float32)
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False).astype(np.float32), np.cov(y, rowvar=False).astype(np.float32)
    want = frechet_distance(mu1.astype(np.float64), s1.astype(np.float64), mu2.astype(np.float64), s2.astype(np.float64))
    assert frechet_distance(mu1, s1, mu2, s2) == want


@pytest.mark.parametrize("bad", ["mu1", "mu2", "sigma1", "sigma2"])
def test_frechet_distance_names_the_argument_with_a_wrong_shape_or_a_nan(bad):
    args = {"mu1": np.zeros(2), "sigma1": np.eye(2), "mu2": np.zeros(2), "sigma2": np.eye(2)}
    shaped = dict(args)
    if bad.startswith("mu"):
        shaped[bad] = np.zeros(3)
        msg = r"^mu1 and mu2 must both have shape \(D,\), got \(\d,\) and \(\d,\)$"
    else:
        shaped[bad] = np.eye(3)
        msg = r"^sigma1 and sigma2 must both be 2 x 2, got \(\d, \d\) and \(\d, \d\)$"
    if bad != "mu1":  # mu1 sets D
        with pytest.raises(ValueError, match=msg):
            frechet_distance(**shaped)
    nan = dict(args)
    nan[bad] = args[bad].copy()
    nan[bad][0] = np.nan
    with pytest.raises(ValueError, match=rf"^{bad} contains NaN or infinite values$"):
        frechet_distance(**nan)


def test_features_are_float64_inside_whatever_their_dtype():
    """float32 features give exactly the float64 answer of the same values (KID's kernel and the
    k-NN distances would round differently in float32); no feature column at all is refused."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 4)).astype(np.float32), (rng.normal(size=(30, 4)) + 0.2).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert kid(a, b, subsets=3, subset_size=20) == kid(a64, b64, subsets=3, subset_size=20)
    assert fid(a, b) == fid(a64, b64)
    assert precision_recall(a * 1000 + 1e4, b * 1000 + 1e4) == precision_recall(a64 * 1000 + 1e4, b64 * 1000 + 1e4)
    with pytest.raises(ValueError, match=r"^feats must have at least one feature column, got shape \(3, 0\)$"):
        gaussian_stats(np.zeros((3, 0)))


# ---------------------------------------------------------------- KID

def test_kid_defaults_are_100_subsets_of_1000_rows_with_seed_0(monkeypatch):
    """The protocol's defaults: 100 subsets of min(1000, N_a, N_b) rows drawn with seed 0. The MMD of
    each subset is replaced by a cheap stand-in that records the subset's size and returns the sum
    of its rows, so the call without defaults equals the one that spells them out (1,001 rows each,
    so 1000 < N)."""
    import dcgan.metrics.stats as stats

    sizes = []

    def stand_in(x, y):
        sizes.append((len(x), len(y)))
        return float(x.sum() - 2.0 * y.sum())

    monkeypatch.setattr(stats, "_mmd2_unbiased_poly3", stand_in)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1001, 2)), rng.normal(size=(1001, 2))
    got = kid(a, b)
    assert sizes == [(1000, 1000)] * 100
    assert got == kid(a, b, subsets=100, subset_size=1000, seed=0)
    assert got != kid(a, b, subsets=100, subset_size=1000, seed=1)
    vals = [stand_in(a[ia], b[ib]) for ia, ib in _subsets(1001, 1001, 1000, 100, seed=0)]
    assert got == (float(np.mean(vals)), float(np.std(vals)))


def _subsets(na, nb, m, subsets, seed):
    """The rows KID draws: per subset, m of na then m of nb without replacement, one Generator."""
    rng = np.random.default_rng(seed)
    return [(rng.choice(na, m, replace=False), rng.choice(nb, m, replace=False)) for _ in range(subsets)]


def test_kid_smallest_valid_inputs_and_the_messages_of_the_invalid_ones():
    """One subset of two rows is valid and is the unbiased MMD^2 of those rows, by hand; the
    subset size is capped by the smaller set, whichever it is."""
    x, y = np.array([[1.0], [0.0]]), np.array([[0.0], [2.0]])
    k = lambda u, v: (u * v + 1.0) ** 3  # noqa: E731 - D = 1
    want = (2 * k(1, 0)) / 2 + (2 * k(0, 2)) / 2 - 2 * (k(1, 0) + k(1, 2) + k(0, 0) + k(0, 2)) / 4
    mean, std = kid(x, y, subsets=1)
    assert mean == pytest.approx(want, abs=1e-12) and std == 0.0
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(5, 3))
    assert kid(a, b, subsets=3) == kid(a, b, subsets=3, subset_size=5)  # capped at b's 5 rows
    assert kid(b, a, subsets=3) == kid(b, a, subsets=3, subset_size=5)
    with pytest.raises(ValueError, match=r"^subsets must be >= 1, got 0$"):
        kid(x, y, subsets=0)
    with pytest.raises(ValueError, match=r"^KID needs at least 2 samples per set \(got 1 and 5, subset_size=1000\)$"):
        kid(a[:1], b)
    with pytest.raises(ValueError, match=r"^KID needs at least 2 samples per set \(got 10 and 5, subset_size=1\)$"):
        kid(a, b, subset_size=1)
    with pytest.raises(ValueError, match=r"^feats_a must be a 2-D array"):
        kid(np.zeros(3), b)
    with pytest.raises(ValueError, match=r"^feats_b contains NaN or infinite values$"):
        kid(a, np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match=r"^feature dimensions differ: 3 vs 2$"):
        kid(a, b[:, :2])


# ---------------------------------------------------------------- precision / recall

def test_squared_distances_are_clipped_at_zero():
    """Far from the origin, a point's squared distance to itself comes out of a.a + b.b - 2 a.b as
    a round-off of either sign; the negative ones are clipped to 0 (never a negative radius)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32)) * 1e3 + rng.normal(size=32) * 1e4
    x_sq = np.einsum("ij,ij->i", x, x)
    raw = x_sq[:, None] + x_sq[None, :] - 2.0 * (x @ x.T)
    assert (raw < 0).any()  # the round-off this test is about happens on this data
    d = _sq_dists(x, x, x_sq)
    assert d.min() == 0.0 and (np.diag(d) < 1e-3).all()


def test_knn_radii_of_points_on_a_line_every_row_and_chunk():
    """1-D points 0, 1, 3, 7, 15: each one's nearest other point is 1, 1, 2, 4, 8 away; the second
    nearest 3, 2, 3, 6, 12. Checked for chunks of 1, 2 and 5 rows (every row is filled)."""
    x = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    for chunk in (1, 2, 5):
        assert _knn_radii_sq(x, 1, chunk).tolist() == [1.0, 1.0, 4.0, 16.0, 64.0]
        assert _knn_radii_sq(x, 2, chunk).tolist() == [9.0, 4.0, 9.0, 36.0, 144.0]


def test_a_point_exactly_on_the_radius_is_inside():
    """Reals 0, 1, 2, 3 (k = 1: every radius is 1); a fake at 4 is exactly 1 from the real 3, so it
    is inside the real manifold (the ball is closed); one at 4.5 is not."""
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    p, _ = precision_recall(real, np.array([[4.0], [4.0]]), k=1)
    assert p == 1.0
    p, _ = precision_recall(real, np.array([[4.5], [4.5]]), k=1)
    assert p == 0.0


def test_precision_recall_default_k_is_3():
    """Reals 0, 1, 2, 3, 4 (1-D): the real 4's 3rd nearest other real is 1 (radius 3), its 4th is
    0 (radius 4), and no other real reaches further towards 7.5: fakes at 7.5 (3.5 from 4) are
    outside the real manifold with k = 3 and inside with k = 4. The default is k = 3."""
    real = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    fake = np.full((5, 1), 7.5)
    assert precision_recall(real, fake, k=3)[0] == 0.0
    assert precision_recall(real, fake, k=4)[0] == 1.0
    assert precision_recall(real, fake) == precision_recall(real, fake, k=3)


def test_precision_recall_needs_k_plus_one_rows_and_says_which():
    """k + 1 rows of each set are the fewest that have a k-th nearest other row."""
    four = np.array([[0.0], [1.0], [3.0], [6.0]])
    assert precision_recall(four, four + 0.5, k=3) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"^real needs at least 4 rows \(samples\), got 3$"):
        precision_recall(four[:3], four, k=3)
    with pytest.raises(ValueError, match=r"^fake needs at least 4 rows \(samples\), got 3$"):
        precision_recall(four, four[:3], k=3)
    assert precision_recall(four[:2], four[:2], k=1) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"^k must be >= 1, got 0$"):
        precision_recall(four, four, k=0)
    with pytest.raises(ValueError, match=r"^feature dimensions differ: 1 vs 2$"):
        precision_recall(four, np.zeros((4, 2)), k=1)


def test_precision_recall_is_exact_far_from_the_origin():
    """A grid of integer points offset by (1e8, -1e8): centred on the real mean (per feature) the
    distances are exact, so the answer is that of the grid at the origin. (Centring on one number
    for all features would leave the offset, and squared norms of 2e16 have a rounding step of 4.)"""
    g = np.array([[i, j] for i in range(-2, 3) for j in range(-2, 3)], dtype=np.float64)  # 25 points, mean 0
    fake = np.array([[0.5, 0.0], [2.0, 2.0], [3.0, 0.0], [4.0, 4.0], [0.0, 2.5]])
    offset = np.array([1e8, -1e8])
    at_origin = precision_recall(g, fake, k=1)
    # every grid point's nearest other one is 1 away: (0.5, 0), (2, 2), (3, 0) and (0, 2.5) are
    # within 1 of a grid point, (4, 4) is not
    assert at_origin[0] == 0.8
    assert precision_recall(g + offset, fake + offset, k=1) == at_origin


# ---------------------------------------------------------------- class stats / IS

def test_class_stats_of_one_sample_and_one_class():
    """The smallest valid inputs: one row (splits = N = 1) and one class (IS 1, nothing to cover
    but the one class)."""
    s = class_stats([[0.2, 0.8]], 2, splits=1)
    assert s["histogram"] == [0, 1] and s["classes_covered"] == 1 and s["num_samples"] == 1
    assert s["num_classes"] == 2 and s["inception_score"] == pytest.approx(1.0, abs=1e-12)
    s = class_stats(np.ones((3, 1)), 1)
    assert s["histogram"] == [3] and s["classes_covered"] == 1 and s["kl_from_uniform"] == 0.0
    assert s["inception_score"] == 1.0 and s["num_classes"] == 1 and s["num_samples"] == 3


def test_class_stats_renormalises_rows():
    """Rows are divided by their sums: probabilities scaled by 2 or 10 score as the originals."""
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]])
    want = class_stats(p, 3)
    got = class_stats(p * np.array([[2.0], [10.0], [1.0], [3.0]]), 3)
    assert got["inception_score"] == pytest.approx(want["inception_score"], rel=1e-12)
    assert got["histogram"] == want["histogram"] == [1, 1, 2]


def test_class_stats_computes_in_float64_whatever_the_input_dtype():
    p = np.random.default_rng(6).dirichlet(np.ones(5) * 0.5, size=64)
    assert class_stats(p.astype(np.float32), 5, splits=2) == class_stats(p.astype(np.float32).astype(np.float64), 5, splits=2)


def test_class_stats_splits_up_to_n_and_their_fixed_permutation():
    """splits = N is allowed (one sample per split: each scores exactly 1); the splits cut the rows
    in the order of np.random.default_rng(0).permutation(N), the same at every call."""
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4), size=12)
    s = class_stats(p, 4, splits=12)
    assert s["inception_score"] == pytest.approx(1.0, abs=1e-12) and s["inception_score_std"] == pytest.approx(0.0, abs=1e-12)
    got = class_stats(p, 4, splits=3)
    assert got == class_stats(p, 4, splits=3)
    order = np.random.default_rng(0).permutation(12)

    def score(q):
        py = q.mean(axis=0)
        return math.exp(float((xlogy(q, q) - xlogy(q, py[None, :])).sum(axis=1).mean()))

    parts = [score(q) for q in np.array_split(p[order], 3)]
    assert got["inception_score"] == pytest.approx(np.mean(parts), rel=1e-12)
    assert got["inception_score_std"] == pytest.approx(np.std(parts), rel=1e-12)
    with pytest.raises(ValueError, match=r"^splits must be between 1 and N=12, got 13$"):
        class_stats(p, 4, splits=13)


def test_a_class_with_one_sample_is_covered_when_the_threshold_is_one():
    """N / K small: the threshold is max(1, 0.1 N / K) = 1, so one sample covers a class."""
    s = class_stats(np.eye(3)[[0, 0, 0, 1]], 3)
    assert s["coverage_threshold"] == 1.0 and s["classes_covered"] == 2
    assert s["coverage_rule"] == ("a class is covered when at least max(1, 0.1 * N / K) samples "
                                  "have it as argmax (10% of its uniform share)")


def test_class_stats_refuses_bad_probabilities_with_their_reason():
    with pytest.raises(ValueError, match=r"^num_classes must be >= 1, got 0$"):
        class_stats(np.ones((2, 1)), 0)
    with pytest.raises(ValueError, match=r"^probs must be an N x 3 array, got shape \(2, 2\)$"):
        class_stats(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match=r"^probs has no rows$"):
        class_stats(np.ones((0, 2)), 2)
    with pytest.raises(ValueError, match=r"^probs must be finite and non-negative$"):
        class_stats([[0.5, -0.1, 0.6]], 3)  # one negative entry, a positive row sum
    with pytest.raises(ValueError, match=r"^probs must be finite and non-negative$"):
        class_stats([[0.5, np.nan, 0.5]], 3)
    with pytest.raises(ValueError, match=r"^every row of probs must have a positive sum$"):
        class_stats([[0.5, 0.5], [0.0, 0.0]], 2)


# ---------------------------------------------------------------- label accuracy

def test_label_accuracy_of_one_sample_and_a_class_seen_once():
    out = label_accuracy([1], [1], 2)
    assert out == {"accuracy": 1.0, "per_class_accuracy": [None, 1.0], "per_class_count": [0, 1],
                   "confusion_matrix": [[0, 0], [0, 1]], "num_samples": 1}
    out = label_accuracy([0, 0], [0, 1], 2)
    assert out["per_class_accuracy"] == [1.0, 0.0]  # class 1, requested once, missed once
    assert label_accuracy([0, 0], [0, 0], 1)["accuracy"] == 1.0  # one class


def test_label_accuracy_takes_integral_floats_and_refuses_fractions():
    assert label_accuracy(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0]), 2) == label_accuracy([0, 1, 1], [0, 1, 0], 2)
    with pytest.raises(ValueError, match=r"^pred must contain integer class labels$"):
        label_accuracy([0.5, 1.0], [0, 1], 2)
    with pytest.raises(ValueError, match=r"^target must contain integer class labels$"):
        label_accuracy([0, 1], [0.0, 1.5], 2)


def test_label_accuracy_refuses_bad_labels_with_their_reason():
    with pytest.raises(ValueError, match=r"^num_classes must be >= 1, got 0$"):
        label_accuracy([0], [0], 0)
    with pytest.raises(ValueError, match=r"^pred scores must be N x 3, got shape \(2, 2\)$"):
        label_accuracy(np.ones((2, 2)), [0, 1], 3)
    with pytest.raises(ValueError, match=r"^pred and target must be 1-D of equal length, got \(2,\) and \(3,\)$"):
        label_accuracy([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match=r"^pred and target must be 1-D of equal length, got \(1,\) and \(1, 1\)$"):
        label_accuracy([0], [[0]], 2)
    with pytest.raises(ValueError, match=r"^no samples$"):
        label_accuracy([], [], 2)
    with pytest.raises(ValueError, match=r"^pred labels must lie in \[0, 2\), got range \[0, 2\]$"):
        label_accuracy([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match=r"^target labels must lie in \[0, 2\), got range \[-1, 1\]$"):
        label_accuracy([0, 1], [-1, 1], 2)
