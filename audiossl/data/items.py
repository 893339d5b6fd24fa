"""How one dataset item is built from a clip's log-mel, the pieces both datasets share:
normalizer choice, crop window, zero-pad then normalise (upstream order), pad value, label
smoothing and the CSR labels that keep worker memory small."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..features import Normalizer

PathLike = Union[str, "os.PathLike[str]"]


class DatasetError(ValueError):
    """A dataset input (store, manifest, weight file) that cannot be used, and why."""

    def __init__(self, path: Optional[PathLike], reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


def _resolve_normalizer(normalizer: Any, store: Any = None) -> Any:
    """``None`` | ``"store"`` | a preset name | a ``Normalizer`` → a ``Normalizer`` or None."""
    if normalizer is None or callable(normalizer):
        return normalizer
    if normalizer == "store":
        if store is None:
            raise ValueError('normalizer="store" needs an FbankStore')
        if store.normalizer is None:
            raise DatasetError(
                getattr(store, "path", None),
                'normalizer="store" but the store holds no mean/std; pass a Normalizer '
                '(e.g. Normalizer.preset("audioset")) or normalizer=None for raw log-mel',
            )
        return store.normalizer
    if isinstance(normalizer, str):
        return Normalizer.preset(normalizer)
    raise TypeError(f"normalizer must be None, 'store', a preset name or a Normalizer, got {normalizer!r}")


def _pad_row(normalizer: Any, num_bins: int) -> Tensor:
    """The value a padded frame has after normalisation: the normalised log-mel 0."""
    zeros = torch.zeros(1, num_bins)
    return zeros if normalizer is None else normalizer(zeros).to(torch.float32).reshape(1, num_bins)


def _crop_window(
    num_frames: int, target_length: Optional[int], crop: str, generator: Optional[torch.Generator]
) -> tuple[int, int]:
    """``(start, count)`` of the true frames an item keeps."""
    if target_length is None or num_frames <= target_length:
        return 0, num_frames
    spare = num_frames - target_length
    if crop == "start":
        return 0, target_length
    if crop == "center":
        return spare // 2, target_length
    assert generator is not None
    return int(torch.randint(0, spare + 1, (1,), generator=generator)), target_length


def _place(frames: Tensor, target_length: Optional[int], normalizer: Any, pad_row: Tensor) -> Tensor:
    """Zero-pad the log-mel at the end to ``target_length``, then normalise (upstream order).

    Normalising the true frames and filling the tail with ``normalizer(0)`` gives the same
    numbers as normalising the zero-padded tensor, without normalising the padding. For the
    scalar ``Normalizer`` the arithmetic ``(x - mean) / (2 std)`` is written straight into the
    output (same operations, so the same bits) instead of through two temporaries.
    """
    n = frames.shape[0]
    length = n if target_length is None else target_length
    out = torch.empty(length, frames.shape[1], dtype=torch.float32)
    body = out[:n]
    if normalizer is None:
        body.copy_(frames)
    elif _is_scalar_normalizer(normalizer):
        torch.sub(frames, normalizer.mean, out=body)
        body.div_(2 * normalizer.std)
    else:
        body.copy_(normalizer(frames))
    if n < length:
        out[n:] = pad_row
    return out


def _is_scalar_normalizer(normalizer: Any) -> bool:
    return type(normalizer) is Normalizer and isinstance(normalizer.mean, float) and isinstance(normalizer.std, float)


def _fit_length(x: Tensor, length: int, pad_row: Tensor) -> Tensor:
    """Cut or pad (with ``pad_row``) a ``(T, F)`` tensor to ``length`` frames."""
    if x.shape[0] >= length:
        return x[:length]
    out = pad_row.expand(length, x.shape[1]).clone()
    out[: x.shape[0]] = x
    return out


def _smooth(labels: Tensor, eps: float) -> Tensor:
    """``y (1 - eps) + eps / C``: the target ``CrossEntropyLoss(label_smoothing=eps)`` uses."""
    if eps == 0 or labels.numel() == 0:
        return labels
    return labels * (1.0 - eps) + eps / labels.shape[-1]


class _CsrLabels:
    """Multi-hot labels kept as CSR indices.

    A dense ``(N, C)`` bool matrix is 1.1 GB for AudioSet-2M and would be pickled into every
    ``spawn`` worker; the CSR form of the same labels is ~25 MB.
    """

    def __init__(self, dense: Optional[np.ndarray], num_rows: int) -> None:
        if dense is None:
            self.num_classes = 0
            self.offsets = np.zeros(num_rows + 1, dtype=np.int64)
            self.indices = np.zeros(0, dtype=np.int32)
            return
        dense = np.asarray(dense, dtype=bool)
        if dense.ndim != 2 or dense.shape[0] != num_rows:
            raise ValueError(f"labels must be ({num_rows}, C), got {dense.shape}")
        self.num_classes = dense.shape[1]
        rows, cols = np.nonzero(dense)
        self.indices = cols.astype(np.int32)
        self.offsets = np.zeros(num_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=num_rows), out=self.offsets[1:])

    @classmethod
    def from_csr(cls, indices: np.ndarray, offsets: np.ndarray, num_classes: int) -> "_CsrLabels":
        obj = cls.__new__(cls)
        obj.num_classes = int(num_classes)
        obj.indices = np.asarray(indices, dtype=np.int32)
        obj.offsets = np.asarray(offsets, dtype=np.int64)
        return obj

    def row(self, i: int) -> Tensor:
        y = torch.zeros(self.num_classes, dtype=torch.float32)
        cols = self.indices[self.offsets[i] : self.offsets[i + 1]]
        if len(cols):
            y[torch.from_numpy(cols.astype(np.int64))] = 1.0
        return y

    def rows(self, positions: np.ndarray) -> Tensor:
        """``(B, C)`` float32 multi-hot of many rows in one scatter, equal to stacking ``row``."""
        y = torch.zeros(len(positions), self.num_classes, dtype=torch.float32)
        lo = self.offsets[positions]
        counts = self.offsets[positions + 1] - lo
        total = int(counts.sum())
        if total:
            first_out = np.cumsum(counts) - counts
            flat = np.arange(total, dtype=np.int64) + np.repeat(lo - first_out, counts)
            items = np.repeat(np.arange(len(positions), dtype=np.int64), counts)
            y[torch.from_numpy(items), torch.from_numpy(self.indices[flat].astype(np.int64))] = 1.0
        return y

    def dense(self) -> np.ndarray:
        out = np.zeros((len(self.offsets) - 1, self.num_classes), dtype=bool)
        rows = np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))
        out[rows, self.indices] = True
        return out
