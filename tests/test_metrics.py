"""audiossl.train.metrics: hand-worked cases, ties, classes without positives, and agreement with
a brute-force reference (and with scikit-learn, which upstream calls, where librosa brought it)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiossl.train.metrics import (
    accuracy,
    average_precision,
    classification_metrics,
    d_prime,
    mean_average_precision,
    mean_roc_auc,
    roc_auc,
)


# --------------------------------------------------------------------------- hand-worked cases
def test_ap_and_auc_hand_worked():
    # scikit-learn's documented example: y = [0, 0, 1, 1], s = [0.1, 0.4, 0.35, 0.8].
    # Sorted by score: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-).
    #   AP: at 0.8 recall 1/2 with precision 1/1; at 0.35 recall 2/2 with precision 2/3
    #       -> 1/2 * 1 + 1/2 * 2/3 = 5/6.
    #   AUC: positive 0.8 beats both negatives (2), 0.35 beats only 0.1 (1) -> 3 / (2 * 2) = 0.75.
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert average_precision(s, y).item() == pytest.approx(5 / 6, abs=1e-12)
    assert roc_auc(s, y).item() == pytest.approx(0.75, abs=1e-12)


def test_ties_are_grouped_like_sklearn():
    # s = [0.9, 0.8, 0.8, 0.1], y = [1, 1, 0, 0]: the tied 0.8 pair (+, -) enters together.
    #   AP: at 0.9 recall 1/2, precision 1; at 0.8 recall 1, precision 2/3 -> 5/6 (not 1.0, which
    #       ranking the tied positive first would give).
    #   AUC: 0.9 beats both negatives (2); the tied 0.8 counts 1/2 against the 0.8 negative and 1
    #        against 0.1 -> 3.5 / 4 = 0.875.
    for order in ([0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0]):
        s = np.array([0.9, 0.8, 0.8, 0.1])[order]
        y = np.array([1, 1, 0, 0])[order]
        assert average_precision(s, y).item() == pytest.approx(5 / 6, abs=1e-12)
        assert roc_auc(s, y).item() == pytest.approx(0.875, abs=1e-12)


def test_all_tied_scores():
    # One threshold holding everything: precision = prevalence = 2/5, AUC = 1/2.
    s = np.full(5, 0.3)
    y = np.array([1, 0, 0, 1, 0])
    assert average_precision(s, y).item() == pytest.approx(0.4, abs=1e-12)
    assert roc_auc(s, y).item() == pytest.approx(0.5, abs=1e-12)


def test_macro_means_skip_classes_without_positives_and_count_them():
    # Class 0: s = [.9, .1, .5], y = [1, 0, 0] -> AP 1, AUC 1.
    # Class 1: s = [.2, .7, .6], y = [0, 1, 0] -> AP 1, AUC 1.
    # Class 2: s = [.3, .4, .8], y = [1, 1, 0] -> ranking .8(-), .4(+), .3(+):
    #   AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12; AUC = 0/2 = 0.
    # Class 3: no positives -> AP and AUC nan, left out. Class 4: all positive -> AUC nan, AP = 1.
    s = np.array([[0.9, 0.2, 0.3, 0.5, 0.1], [0.1, 0.7, 0.4, 0.2, 0.2], [0.5, 0.6, 0.8, 0.9, 0.3]])
    y = np.array([[1, 0, 1, 0, 1], [0, 1, 1, 0, 1], [0, 0, 0, 0, 1]])
    ap = average_precision(s, y)
    auc = roc_auc(s, y)
    assert ap[:3].tolist() == pytest.approx([1.0, 1.0, 7 / 12])
    assert math.isnan(ap[3]) and ap[4] == pytest.approx(1.0)
    assert auc[:3].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert math.isnan(auc[3]) and math.isnan(auc[4])
    m_ap, n_ap = mean_average_precision(s, y)
    m_auc, n_auc = mean_roc_auc(s, y)
    assert (n_ap, n_auc) == (4, 3)
    assert m_ap == pytest.approx((1 + 1 + 7 / 12 + 1) / 4)
    assert m_auc == pytest.approx(2 / 3)


def test_d_prime_values():
    # Phi^-1(0.75) = 0.6744897501960817; Phi^-1(0.5) = 0.
    assert d_prime(0.75) == pytest.approx(math.sqrt(2) * 0.6744897501960817, abs=1e-12)
    assert d_prime(0.5) == 0.0
    assert d_prime(1.0) == math.inf


def test_accuracy_index_and_multi_hot_targets():
    s = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    # argmax rows: 1, 0, 2, 0 (the first maximum, as numpy/AST)
    assert accuracy(s, torch.tensor([1, 0, 1, 0])) == pytest.approx(0.75)
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2, 2, 1]), 3)
    assert accuracy(s, one_hot) == pytest.approx(0.5)


def test_classification_metrics_dict():
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    # Class 0 column: .9(+) .6(-) .3(-) .2(-) -> AP 1, AUC 1.  Class 1: .8(+) .7(+) .4(+) .1(-) -> AP 1, AUC 1.
    out = classification_metrics(s, y)
    assert out["acc"] == pytest.approx(0.75)
    assert out["mAP"] == pytest.approx(1.0) and out["mAUC"] == pytest.approx(1.0)
    assert out["d_prime"] == math.inf
    assert (out["ap_classes"], out["auc_classes"]) == (2, 2)


def test_soft_targets_are_refused():
    with pytest.raises(ValueError, match="0/1"):
        average_precision(np.array([[0.1, 0.9]]), np.array([[0.2, 0.8]]))


# --------------------------------------------------------------------------- references
def _brute_ap(score: np.ndarray, pos: np.ndarray) -> float:
    """Precision at every distinct threshold, weighted by the recall it adds."""
    total, prev_recall = 0.0, 0.0
    for thr in sorted(set(score.tolist()), reverse=True):
        sel = score >= thr
        tp = float((sel & pos).sum())
        recall = tp / pos.sum()
        total += (recall - prev_recall) * tp / sel.sum()
        prev_recall = recall
    return total


def _brute_auc(score: np.ndarray, pos: np.ndarray) -> float:
    p, n = score[pos], score[~pos]
    wins = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return wins / (len(p) * len(n))


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    n, c = 60, 7
    y = rng.random((n, c)) < rng.uniform(0.1, 0.6, size=c)
    y[0, :] = True
    y[1, :] = False
    # Coarse scores (1 decimal) so ties are frequent; correlated with the labels.
    s = np.round(np.clip(0.3 * y + rng.random((n, c)) * 0.8, 0, 1), 1)
    return s, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force(seed):
    s, y = _random_case(seed)
    ap = average_precision(s, y.astype(np.int64)).numpy()
    auc = roc_auc(s, y.astype(np.int64)).numpy()
    for k in range(s.shape[1]):
        assert ap[k] == pytest.approx(_brute_ap(s[:, k], y[:, k]), abs=1e-12)
        assert auc[k] == pytest.approx(_brute_auc(s[:, k], y[:, k]), abs=1e-12)


def test_against_sklearn_when_available():
    sk = pytest.importorskip("sklearn.metrics")
    s, y = _random_case(3)
    ap = average_precision(s, y.astype(np.int64)).numpy()
    auc = roc_auc(s, y.astype(np.int64)).numpy()
    np.testing.assert_allclose(ap, sk.average_precision_score(y, s, average=None), atol=1e-12)
    np.testing.assert_allclose(auc, sk.roc_auc_score(y, s, average=None), atol=1e-12)
