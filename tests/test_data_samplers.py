"""Tests for audiossl/data/samplers.py: AST's balanced weights, their weight file, the weighted sampler."""

from __future__ import annotations

import numpy as np
import pytest

from audiossl.data.items import DatasetError
from audiossl.data.samplers import balanced_sample_weights, make_weighted_sampler, read_weights_csv, write_weights_csv


# ---------------------------------------------------------------------------------------------
# Balanced sampling


HAND_LABELS = np.array(
    [[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=bool
)


def test_balanced_weights_hand_computed():
    # counts: class0 = 3, class1 = 1, class2 = 2
    w0, w1, w2 = 1000 / 3.01, 1000 / 1.01, 1000 / 2.01
    expected = [w0, w0 + w1, w2, w0 + w2, 0.0]
    assert balanced_sample_weights(HAND_LABELS).tolist() == pytest.approx(expected, rel=1e-12)


def test_weights_csv_roundtrip_and_ast_format(tmp_path):
    w = balanced_sample_weights(HAND_LABELS)
    p = write_weights_csv(tmp_path / "train_weight.csv", w)
    assert not (tmp_path / "train_weight.csv.partial").exists()
    lines = p.read_text().splitlines()
    assert len(lines) == 5 and float(lines[1]) == pytest.approx(1000 / 3.01 + 1000 / 1.01)
    assert np.array_equal(read_weights_csv(p, expected=5), w)  # %.18e is exact for float64
    # a file written by AST's gen_weight_file.py (np.savetxt defaults)
    np.savetxt(tmp_path / "ast_weight.csv", w, delimiter=",")
    assert np.array_equal(read_weights_csv(tmp_path / "ast_weight.csv"), w)
    with pytest.raises(DatasetError, match="ast_weight.csv.*4 clips"):
        read_weights_csv(tmp_path / "ast_weight.csv", expected=4)
    bad = tmp_path / "bad_weight.csv"
    bad.write_text("1.0\nnot-a-number\n")
    with pytest.raises(DatasetError, match="bad_weight.csv"):
        read_weights_csv(bad)
    with pytest.raises(DatasetError, match="missing_weight.csv"):
        read_weights_csv(tmp_path / "missing_weight.csv")


def test_weighted_sampler_follows_weights_and_is_seeded():
    w = np.array([1.0, 3.0, 0.0, 6.0])
    s = make_weighted_sampler(w, num_samples=20000, generator=0)
    draws = np.array(list(s))
    assert list(make_weighted_sampler(w, num_samples=50, generator=0)) == list(draws[:50])
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert freq[2] == 0
    assert freq == pytest.approx([0.1, 0.3, 0.0, 0.6], abs=0.015)
    assert len(list(make_weighted_sampler(w))) == 4
    without = list(make_weighted_sampler(w, num_samples=3, replacement=False, generator=1))
    assert sorted(without) == [0, 1, 3]
