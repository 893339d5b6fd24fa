"""audiossl.train.finetune_data: the validation hold-out, matching split values, and the
normaliser a run asks for. (Splitting real stores and batching them: tests/test_train_finetune.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from audiossl.train.finetune_data import _values_mask, holdout, resolve_normalizer


def test_holdout_is_stratified_and_repeatable() -> None:
    labels = np.repeat(np.eye(3, dtype=bool), 10, axis=0)
    keep, held = holdout(labels, 0.2, 0, stratified=True)
    assert len(held) == 6 and np.bincount(labels[held].argmax(1)).tolist() == [2, 2, 2]
    assert np.array_equal(holdout(labels, 0.2, 0, True)[1], held) and not set(keep) & set(held)


def test_holdout_edge_cases() -> None:
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=bool)  # class 1 has a single clip
    keep, held = holdout(labels, 0.1, 3, stratified=True)
    assert len(held) == 1 and labels[held[0]].argmax() == 0 and sorted([*keep, *held]) == [0, 1, 2, 3]
    keep, held = holdout(labels, 0.0, 3, stratified=True)
    assert keep.tolist() == [0, 1, 2, 3] and held.size == 0
    keep, held = holdout(np.ones((10, 3), dtype=bool), 0.3, 1, stratified=False)
    assert len(held) == 3 and len(keep) == 7
    assert not np.array_equal(holdout(labels.repeat(5, 0), 0.4, 1, False)[1], holdout(labels.repeat(5, 0), 0.4, 2, False)[1])


def test_split_values_match_as_text() -> None:
    column = np.array([1, "1", 1.0, 2, "2.5", None], dtype=object)
    assert _values_mask(column, [1]).tolist() == [True, True, True, False, False, False]
    assert _values_mask(column, ["2.5", 2.0]).tolist() == [False, False, False, True, True, False]


def test_normalizer_from_the_checkpoint() -> None:
    assert resolve_normalizer("store", None) == "store" and resolve_normalizer(None, {}) is None
    norm = resolve_normalizer("checkpoint", {"normalizer": {"mean": -4.0, "std": 4.0}})
    assert norm.to_dict()["mean"] == -4.0
    with pytest.raises(ValueError, match="stores no normalizer"):
        resolve_normalizer("checkpoint", {"normalizer": None})
