"""Tests for audiossl/data/rng.py: the per-item generators."""

from __future__ import annotations

import pytest
import torch

from audiossl.data.rng import item_generator


# ---------------------------------------------------------------------------------------------
# Per-item generators


def test_item_generator_reproducible_and_distinct():
    def draw(*key):
        return torch.rand(4, generator=item_generator(*key)).tolist()

    assert draw(0, 0, 5) == draw(0, 0, 5)
    keys = [(0, 0, 5), (0, 1, 5), (0, 0, 6), (1, 0, 5), (0, 5, 0), (0, 1, 4)]
    assert len({tuple(draw(*k)) for k in keys}) == len(keys)
    with pytest.raises(ValueError):
        item_generator(-1, 0, 0)
