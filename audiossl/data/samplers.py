"""Balanced sampling: AST's per-clip weights from label counts, their weight file, and the
seeded ``WeightedRandomSampler`` that draws with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from audiossl.files import atomic_path

from .items import DatasetError, PathLike
from .rng import _as_generator


def balanced_sample_weights(labels: Any) -> np.ndarray:
    """AST ``gen_weight_file.py`` weights: ``w_clip = sum over its labels of 1000 / (count + 0.01)``.

    Rare classes get drawn more often; a clip with no label gets weight 0 (never drawn), as
    upstream.
    """
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be (N, C), got shape {y.shape}")
    y = y.astype(np.float64)
    label_weight = 1000.0 / (y.sum(axis=0) + 0.01)
    return y @ label_weight


def write_weights_csv(path: PathLike, weights: Any) -> Path:
    """One float per line (AST's ``<train json>_weight.csv``, ``np.savetxt`` format),
    written to ``path.partial`` and renamed when complete."""
    path = Path(path)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    with atomic_path(path) as partial:
        np.savetxt(partial, w, fmt="%.18e", delimiter=",")
    return path


def read_weights_csv(path: PathLike, expected: Optional[int] = None) -> np.ndarray:
    """Read a weight file written by us or by AST/AudioMAE's scripts."""
    path = Path(path)
    try:
        w = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as e:
        raise DatasetError(path, f"cannot read sample weights ({e})") from e
    if w.ndim != 1:
        raise DatasetError(path, f"expected one weight per line, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DatasetError(path, "weights must be finite and >= 0")
    if expected is not None and len(w) != expected:
        raise DatasetError(path, f"{len(w)} weights for a dataset of {expected} clips")
    return w


def make_weighted_sampler(
    weights: Any,
    num_samples: Optional[int] = None,
    generator: Union[torch.Generator, int, None] = 0,
    replacement: bool = True,
) -> WeightedRandomSampler:
    """``WeightedRandomSampler`` as AST/SSAST use it (``num_samples = len(weights)``,
    with replacement). EAT's AS-2M recipe draws 200k clips per epoch without replacement:
    ``num_samples=200_000, replacement=False``."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.dim() != 1 or len(w) == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {tuple(w.shape)}")
    if not bool((w > 0).any()):
        raise ValueError("all sample weights are zero")
    return WeightedRandomSampler(
        w,
        num_samples=len(w) if num_samples is None else int(num_samples),
        replacement=replacement,
        generator=_as_generator(generator, "make_weighted_sampler"),
    )
