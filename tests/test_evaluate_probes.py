"""audiossl/evaluate/probes.py: probes reach high accuracy on separable data, stay at chance on
shuffled labels, choose hyper-parameters on valid only, and logreg minimises sklearn's objective."""

from __future__ import annotations

import numpy as np
import pytest

from audiossl.evaluate.probes import C_GRID, fit_logreg, probe_accuracy, standardise

K = 4


def _blobs(rng, centres, n, noise=1.0):
    y = np.arange(n) % len(centres)
    rng.shuffle(y)
    return centres[y] + noise * rng.normal(size=(n, centres.shape[1])), y


@pytest.fixture(scope="module")
def separable():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(K, 16)) * 2.0
    return [_blobs(rng, centres, n) for n in (160, 80, 400)]


@pytest.mark.parametrize("probe", ["logreg", "linear", "knn"])
def test_probe_separable_reaches_high_accuracy(separable, probe):
    (xtr, ytr), (xva, yva), (xte, yte) = separable
    r = probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe=probe, seed=0)
    assert r.test_acc >= 0.95, r
    assert r.valid_acc >= 0.95
    assert r.param == {"logreg": "C", "linear": "weight_decay", "knn": "k"}[probe]


@pytest.mark.parametrize("probe", ["logreg", "linear", "knn"])
def test_probe_on_shuffled_labels_stays_at_chance(separable, probe):
    rng = np.random.default_rng(1)
    (xtr, ytr), (xva, yva), (xte, yte) = separable
    r = probe_accuracy(xtr, rng.permutation(ytr), xva, rng.permutation(yva), xte, rng.permutation(yte),
                       probe=probe, seed=0)
    # 400 balanced test clips: chance 25 %, sampling std ~2 points.
    assert abs(r.test_acc - 1 / K) < 0.1, r


def _noisy_binary(seed):
    """Few clips, many weak dimensions: accuracy moves with C."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=40)

    def draw(n):
        x = rng.normal(size=(n, 40))
        return x, (x @ w + 4.0 * rng.normal(size=n) > 0).astype(np.int64)

    return draw(40), draw(200), draw(200)


@pytest.mark.parametrize("probe", ["logreg", "linear"])
def test_selection_ignores_the_test_split(probe):
    (xtr, ytr), (xva, yva), (xte, yte) = _noisy_binary(3)
    kw = {"epochs": 20} if probe == "linear" else {}
    a = probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe=probe, seed=0, **kw)
    # Other test labels (inverted) and other test inputs: the choice cannot move.
    b = probe_accuracy(xtr, ytr, xva, yva, xte, 1 - yte, probe=probe, seed=0, **kw)
    c = probe_accuracy(xtr, ytr, xva, yva, xte[::-1] * 3.0, yte, probe=probe, seed=0, **kw)
    for other in (b, c):
        assert (other.value, other.epoch, other.valid_acc) == (a.value, a.epoch, a.valid_acc)
        assert [g["valid_acc"] for g in other.grid] == [g["valid_acc"] for g in a.grid]
    assert b.test_acc == pytest.approx(1 - a.test_acc)


def test_selection_follows_valid_where_test_disagrees():
    # Inverted test labels make the best-on-test C the worst one on the real task: a probe
    # selecting on test would pick it; selecting on valid must not.
    (xtr, ytr), (xva, yva), (xte, yte) = _noisy_binary(3)
    r = probe_accuracy(xtr, ytr, xva, yva, xte, 1 - yte, probe="logreg")
    valid = [g["valid_acc"] for g in r.grid]
    test = [g["test_acc"] for g in r.grid]
    assert len(set(valid)) > 1, "the constructed case must make C matter"
    chosen = [g["value"] for g in r.grid].index(r.value)
    assert valid[chosen] == max(valid)
    assert test[chosen] < max(test), "valid and test must disagree in this construction"
    assert r.test_acc == test[chosen]


def test_logreg_minimises_sklearns_objective():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(5)
    x, y = _blobs(rng, rng.normal(size=(3, 6)), 90, noise=1.5)
    for C in (0.01, 1.0):
        w, b = fit_logreg(x, y, C)
        ref = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(x, y)
        np.testing.assert_allclose(w.T, ref.coef_, atol=1e-4)
        np.testing.assert_allclose(b, ref.intercept_, atol=1e-4)


def test_logreg_has_no_seed_and_linear_is_seeded(separable):
    (xtr, ytr), (xva, yva), (xte, yte) = separable
    a, b = (probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe="logreg", seed=s) for s in (0, 1))
    assert (a.value, a.test_acc) == (b.value, b.test_acc)
    kw = {"epochs": 3, "grid": [1e-2]}
    l0 = probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe="linear", seed=0, **kw)
    l0b = probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe="linear", seed=0, **kw)
    l1 = probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe="linear", seed=1, **kw)
    assert l0.grid == l0b.grid
    assert l0.grid != l1.grid  # init and batch order follow the seed


def test_default_c_grid_is_log_spaced_1e_3_to_1e2():
    assert C_GRID[0] == pytest.approx(1e-3) and C_GRID[-1] == pytest.approx(1e2)
    assert np.allclose(np.diff(np.log10(C_GRID)), 0.5)


def test_extra_test_splits_are_scored_with_the_valid_choice(separable):
    (xtr, ytr), (xva, yva), (xte, yte) = separable
    r = probe_accuracy(xtr, ytr, xva, yva, xte, yte, extra_tests={"test_unseen": (xte[:50], yte[:50])})
    assert set(r.tests) == {"test", "test_unseen"}
    assert r.tests["test_unseen"] >= 0.9


def test_standardise_uses_train_statistics_and_keeps_constant_dims_finite():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    other = np.array([[2.0, 7.0]])
    s_train, s_other = standardise(train, other)
    np.testing.assert_allclose(s_train, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(s_other, [[0.0, 2.0]])


def test_bad_inputs_are_refused(separable):
    (xtr, ytr), (xva, yva), (xte, yte) = separable
    with pytest.raises(ValueError, match="probe must be"):
        probe_accuracy(xtr, ytr, xva, yva, xte, yte, probe="svm")
    with pytest.raises(ValueError, match="valid_x has"):
        probe_accuracy(xtr, ytr, xva[:, :3], yva, xte, yte)
    with pytest.raises(ValueError, match="NaN"):
        probe_accuracy(xtr, ytr, xva, yva, np.full_like(xte, np.nan), yte)
