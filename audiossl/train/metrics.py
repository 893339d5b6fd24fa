"""Classification metrics with the semantics AST, PSLA, SSAST, AudioMAE and EAT report.

Upstream computes them with scikit-learn, class by class (``src/utilities/stats.py``): average
precision (``average_precision_score``) and ROC-AUC (``roc_auc_score``) per class, their macro
means (mAP, mAUC), ``d′ = √2 · Φ⁻¹(mAUC)`` and top-1 accuracy of ``argmax``. The same numbers are
computed here in float64 torch, without scikit-learn or scipy:

* **Ties** are treated as scikit-learn does. AP steps through the *distinct* scores from high to
  low, so tied clips enter the precision–recall curve together (``AP = Σ ΔR · P`` at each distinct
  threshold). ROC-AUC is the trapezoidal area, which equals the Mann–Whitney statistic with a tied
  positive–negative pair counted as one half; it is computed from mid-ranks.
* **Classes without positives** (and, for AUC, without negatives) have no defined AP/AUC. They get
  ``nan`` per class and are left out of the macro means, as EAT's ``eval.py`` (``np.nanmean``)
  does. AST's ``np.mean`` instead returns ``nan`` (old scikit-learn) or counts them as 0 (recent
  scikit-learn, which returns AP 0 without positives), so on a test set that lacks a class the
  upstream number depends on the scikit-learn version; ours does not. The number of classes the
  means cover is returned with them (``ap_classes``, ``auc_classes``) so a report can state it.
* **Accuracy** compares ``argmax`` of the scores with the class index; a 2-D (one-hot or
  multi-hot) target is reduced with ``argmax`` as AST does, which is only meaningful for
  single-label data.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "accuracy",
    "average_precision",
    "classification_metrics",
    "d_prime",
    "mean_average_precision",
    "mean_roc_auc",
    "roc_auc",
]

ArrayLike = Union[Tensor, np.ndarray]


def _scores(scores: ArrayLike) -> Tensor:
    s = torch.as_tensor(np.asarray(scores) if not isinstance(scores, Tensor) else scores).detach()
    s = s.to("cpu", torch.float64)
    if s.dim() == 1:
        s = s[:, None]
    if s.dim() != 2:
        raise ValueError(f"scores must be (N,) or (N, C), got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores contain NaN or Inf")
    return s


def _binary_targets(targets: ArrayLike, num_classes: int) -> Tensor:
    """``(N, C)`` bool from class indices ``(N,)`` or a 0/1 matrix ``(N, C)``."""
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets).detach().cpu()
    # With one score column a 1-D target is that column's 0/1 labels, not class indices.
    if t.dim() == 1 and num_classes > 1 and not t.is_floating_point() and t.dtype != torch.bool:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"class indices must be in [0, {num_classes}), got range [{int(t.min())}, {int(t.max())}]")
        return torch.nn.functional.one_hot(t.long(), num_classes).bool()
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2 or t.shape[1] != num_classes:
        raise ValueError(f"targets must be (N,) class indices or (N, {num_classes}), got shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("targets must be 0/1 (soft targets, e.g. after mixup or label smoothing, have no AP)")
    return t.bool()


def _check_rows(scores: Tensor, targets: Tensor) -> None:
    if scores.shape[0] != targets.shape[0]:
        raise ValueError(f"{scores.shape[0]} score rows but {targets.shape[0]} target rows")


def _average_precision_1d(score: Tensor, positive: Tensor) -> float:
    n_pos = int(positive.sum())
    if n_pos == 0:
        return math.nan
    order = torch.argsort(score, descending=True, stable=True)
    sorted_score = score[order]
    hits = positive[order].to(torch.float64).cumsum(0)
    # The last index of each run of equal scores: one point of the precision-recall curve per
    # distinct threshold, with every tied clip already counted (scikit-learn's rule).
    _, counts = torch.unique_consecutive(sorted_score, return_counts=True)
    ends = counts.cumsum(0) - 1
    tp = hits[ends]
    precision = tp / (ends + 1).to(torch.float64)
    recall_step = torch.diff(tp, prepend=tp.new_zeros(1)) / n_pos
    return float((recall_step * precision).sum())


def _midranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` with ties given the mean of the ranks they span."""
    order = torch.argsort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    first = (counts.cumsum(0) - counts).to(torch.float64)  # 0-based rank where each group starts
    group_rank = first + (counts.to(torch.float64) + 1.0) / 2.0
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = group_rank[inverse]
    return ranks


def _roc_auc_1d(score: Tensor, positive: Tensor) -> float:
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mann-Whitney U from mid-ranks: the trapezoidal ROC area, ties counting one half.
    rank_sum = float(_midranks(score)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(scores: ArrayLike, targets: ArrayLike) -> Tensor:
    """Per-class AP, ``(C,)`` float64; ``nan`` for a class without positives."""
    s = _scores(scores)
    t = _binary_targets(targets, s.shape[1])
    _check_rows(s, t)
    return torch.tensor([_average_precision_1d(s[:, k], t[:, k]) for k in range(s.shape[1])], dtype=torch.float64)


def roc_auc(scores: ArrayLike, targets: ArrayLike) -> Tensor:
    """Per-class ROC-AUC, ``(C,)`` float64; ``nan`` for a class with no positives or no negatives."""
    s = _scores(scores)
    t = _binary_targets(targets, s.shape[1])
    _check_rows(s, t)
    return torch.tensor([_roc_auc_1d(s[:, k], t[:, k]) for k in range(s.shape[1])], dtype=torch.float64)


def _nanmean(values: Tensor) -> Tuple[float, int]:
    valid = ~torch.isnan(values)
    n = int(valid.sum())
    return (float(values[valid].mean()) if n else math.nan), n


def mean_average_precision(scores: ArrayLike, targets: ArrayLike) -> Tuple[float, int]:
    """Macro mAP over the classes that have positives, and how many classes that is."""
    return _nanmean(average_precision(scores, targets))


def mean_roc_auc(scores: ArrayLike, targets: ArrayLike) -> Tuple[float, int]:
    """Macro ROC-AUC over the classes with both positives and negatives, and their number."""
    return _nanmean(roc_auc(scores, targets))


def d_prime(auc: float) -> float:
    """``√2 · Φ⁻¹(auc)``: the separation of two unit-variance Gaussians that gives this AUC
    (AST's ``d_prime``); ±inf at AUC 1 or 0."""
    return math.sqrt(2.0) * float(torch.special.ndtri(torch.tensor(float(auc), dtype=torch.float64)))


def accuracy(scores: ArrayLike, targets: ArrayLike) -> float:
    """Top-1 accuracy; 2-D targets are reduced with ``argmax`` (AST), 1-D ones are class indices."""
    s = _scores(scores)
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets).detach().cpu()
    if t.dim() == 2:
        t = t.argmax(dim=1)
    if t.dim() != 1:
        raise ValueError(f"targets must be (N,) or (N, C), got shape {tuple(t.shape)}")
    _check_rows(s, t)
    if t.numel() == 0:
        return math.nan
    return float((s.argmax(dim=1) == t.long()).to(torch.float64).mean())


def classification_metrics(scores: ArrayLike, targets: ArrayLike) -> Dict[str, float]:
    """Everything upstream logs per evaluation, as one JSON-able dict:
    ``acc, mAP, mAUC, d_prime, ap_classes, auc_classes``."""
    s = _scores(scores)
    t = _binary_targets(targets, s.shape[1])
    m_ap, n_ap = mean_average_precision(s, t)
    m_auc, n_auc = mean_roc_auc(s, t)
    return {
        "acc": accuracy(s, t.to(torch.int64)),
        "mAP": m_ap,
        "mAUC": m_auc,
        "d_prime": d_prime(m_auc) if not math.isnan(m_auc) else math.nan,
        "ap_classes": n_ap,
        "auc_classes": n_auc,
    }
