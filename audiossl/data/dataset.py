"""Training datasets, augmentations and samplers for spectrogram models.

Two datasets produce the same item, so a recipe can switch between a precomputed HDF5 store
(``FbankDataset``, the fast path) and on-the-fly features from audio files (``WavDataset``,
no precompute step) without touching the training loop::

    {"fbank": (T, F) float32, "length": int, "labels": (C,) float32, "lam": float,
     "index": int, "id": str (only with return_ids=True)}

Order of operations follows the AST/SSAST/AudioMAE/EAT loaders: crop or zero-pad the *log-mel*
to ``target_length`` first, then normalise, so padded frames end at ``(0 - mean) / (2 std)``
(about +0.467 for AudioSet statistics) exactly as the released checkpoints saw them.
``FbankDataset(output_dtype=torch.float16)`` defers the normalisation to the training device
(``normalize_batch``), shipping the stored float16 log-mel instead.

Randomness. Per-item draws (random crop offset, dataset-level mixup partner and lambda, the
per-item ``transform``) come from a generator seeded by ``(seed, epoch, index)``: an item is
the same whichever worker builds it and however many workers there are, and it changes when
``set_epoch`` is called. The epoch lives in shared memory, so ``set_epoch`` reaches workers
that outlive an epoch (``persistent_workers=True``), under ``fork`` and ``spawn`` alike.

Batch augmentations (``Mixup``, ``SpecAugment``, ``NoiseAugment``, ``RollAugment``,
``GainAugment``) are tensor code on a whole ``(B, T, F)`` (or ``(B, N)`` waveform) batch, with
per-item widths, offsets and lambdas, and run where the batch is (CPU or GPU) after
``collate``; each takes a ``torch.Generator`` (the ``functional`` / ``transform`` split of
torchaudio: ``spec_augment`` is the function, ``SpecAugment`` the callable holding its
parameters and generator). Draws are made on the generator's device and moved to the batch's:
for a GPU batch pass a CUDA generator, or ``noise_augment`` ships a (B, T, F) noise tensor
over PCIe.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence as _SequenceABC
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, WeightedRandomSampler

from ..features import FbankConfig, Normalizer, fbank

PathLike = Union[str, "os.PathLike[str]"]
CropMode = Literal["start", "random", "center"]
ItemTransform = Callable[[Tensor, torch.Generator], Tensor]
_MAX_SEED = 2**63 - 1

__all__ = [
    "DatasetError",
    "FbankDataset",
    "WavDataset",
    "collate",
    "item_generator",
    "Mixup",
    "MixupResult",
    "mixup",
    "SpecAugment",
    "spec_augment",
    "NoiseAugment",
    "noise_augment",
    "RollAugment",
    "random_roll",
    "GainAugment",
    "random_gain",
    "roll_rows",
    "sample_beta",
    "balanced_sample_weights",
    "write_weights_csv",
    "read_weights_csv",
    "make_weighted_sampler",
]


class DatasetError(ValueError):
    """A dataset input (store, manifest, weight file) that cannot be used, and why."""

    def __init__(self, path: Optional[PathLike], reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


# ---------------------------------------------------------------------------------------------
# Randomness helpers


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, epoch, index)``.

    ``SeedSequence`` hashes the triple, so neighbouring indices and epochs get unrelated
    streams (``seed + index`` would make epoch ``e`` index ``i+1`` replay index ``i``).
    """
    if seed < 0 or epoch < 0 or index < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {seed}, {epoch}, {index}")
    words = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return g


def _as_generator(generator: Union[torch.Generator, int, None], owner: str) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        raise ValueError(
            f"{owner} needs a torch.Generator or an integer seed (no global RNG is used)"
        )
    g = torch.Generator()
    g.manual_seed(int(generator))
    return g


def _rand(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) drawn on the generator's device, then moved to where the data is."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def sample_beta(
    alpha: float, beta: float, shape: Sequence[int], generator: torch.Generator
) -> Tensor:
    """Beta(alpha, beta) float32 samples on the CPU, reproducible from ``generator``.

    torch's Beta/Gamma samplers only read the global RNG, so one 63-bit draw from
    ``generator`` seeds a NumPy generator that does the sampling (exact Beta, any alpha).
    """
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"Beta parameters must be > 0, got {alpha}, {beta}")
    seed = int(torch.randint(0, _MAX_SEED, (1,), generator=generator, device=generator.device))
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.beta(alpha, beta, size=tuple(shape)).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Shared per-item pieces


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


class _ItemDataset(Dataset):
    """What both datasets share: the shared-memory epoch, labels, pad value and collate.

    The epoch is a shared-memory tensor so that worker processes which outlive an epoch
    (``persistent_workers=True``) see ``set_epoch``, under ``fork`` and ``spawn`` alike.
    """

    _labels: _CsrLabels
    label_smoothing: float
    pad_row: Tensor
    crop: str
    mixup: float
    transform: Optional[ItemTransform]

    def _init_epoch(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating epoch ``epoch``; changes random crops and mixup draws."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def num_classes(self) -> int:
        return self._labels.num_classes

    @property
    def pad_value(self) -> Union[float, Tensor]:
        """What :func:`collate` pads with: a float, or an ``(F,)`` tensor for per-bin stats."""
        return _scalar_or_row(self.pad_row)

    @property
    def collate_fn(self) -> Callable[[Sequence[Mapping[str, Any]]], dict]:
        """:func:`collate` bound to this dataset's pad value (picklable, for ``spawn``)."""
        return functools.partial(collate, pad_value=self.pad_value)

    def label_matrix(self) -> np.ndarray:
        """``(N, C)`` bool labels of this dataset's items, for :func:`balanced_sample_weights`."""
        return self._labels.dense()

    def _needs_generator(self) -> bool:
        return self.crop == "random" or self.mixup > 0 or self.transform is not None

    def _labels_of(self, i: int) -> Tensor:
        return _smooth(self._labels.row(i), self.label_smoothing)

    def _position(self, index: int) -> int:
        i = int(index)
        n = len(self)  # type: ignore[arg-type]
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for {n} items")
        return i % n


# ---------------------------------------------------------------------------------------------
# Datasets


class FbankDataset(_ItemDataset):
    """Items from a precomputed :class:`~audiossl.data.store.FbankStore`.

    Args:
        store: an ``FbankStore`` or the path of one. The store opens its HDF5 file lazily in
            each process, so this dataset pickles cleanly into ``spawn`` workers.
        target_length: frames per item (1024 AudioSet, 512 ESC-50, 128 SPC-2). ``None`` keeps
            each clip's length and leaves padding to :func:`collate`.
        crop: which window of a longer clip to keep. ``"start"`` is what every upstream
            loader does; ``"random"`` reads only the chosen window from the store.
        normalizer: ``"store"`` (the statistics saved in the store), a preset name such as
            ``"audioset"``, a ``Normalizer``, or ``None`` for raw log-mel.
        label_smoothing: ``y (1 - eps) + eps / C``; upstream AST/SSAST use none, EAT's
            ESC-50 recipe uses 0.1 (with CE).
        mixup: per-item probability of AST-style dataset mixup: a partner drawn uniformly
            from the whole dataset, ``lambda ~ Beta(mixup_alpha, mixup_alpha)``. Here it mixes
            normalised fbanks (AST mixes waveforms before the fbank: use ``WavDataset`` for
            that; EAT mixes normalised fbanks within the batch: use :class:`Mixup`).
        transform: optional per-item augmentation ``f(fbank (1, T, F), generator)``, e.g.
            ``SpecAugment(...)`` or ``NoiseAugment()``, run after normalisation with the
            item's own generator.
        indices: optional subset of store rows (e.g. the training folds of ESC-50). Item
            ``i`` is store row ``indices[i]``; its random draws are keyed on that row, so a
            clip crops the same way whichever subset it is in.
        return_ids: also return the clip id.
        seed: base seed of the per-item generators.
        output_dtype: ``torch.float32`` (default): normalised float32 items, as above.
            ``torch.float16``: the stored log-mel *un-normalised*, zero-padded, in float16,
            so the batch crosses the worker -> main process boundary (and PCIe) at half the
            bytes; call :meth:`normalize_batch` after ``.to(device)``. On a float16 store the
            result is bit-identical to the float32 path. Per-item ``mixup`` and ``transform``
            need the normalised item and are refused with it: use the batch augmentations
            after :meth:`normalize_batch` instead.

    Batched reads. Under a ``DataLoader`` with a batch size, ``__getitems__`` returns a
    pending batch instead of a list of items, and :func:`collate` (``dataset.collate_fn``)
    builds it in one pass: every clip is read straight into its slot of one (shared-memory)
    batch tensor, converted and normalised in place, pad rows filled; nothing per item is
    allocated. The result equals collating ``[ds[i] for i in indices]`` exactly. Any other
    ``collate_fn`` sees a read-only sequence of the very item dicts ``ds[i]`` returns (built
    on first access), so user collate functions keep working; code that needs a real ``list``
    can call ``list(batch)``. Per-item ``mixup`` or ``transform`` use the per-item path.

    Labels are kept as CSR indices and ids as a NumPy unicode array: neither is touched by
    refcounting, so forked workers share their pages instead of copying them (pytorch#13246),
    and a spawn worker receives ~25 MB rather than a 1.1 GB multi-hot for AudioSet-2M.
    """

    def __init__(
        self,
        store: Any,
        target_length: Optional[int] = None,
        crop: CropMode = "start",
        normalizer: Any = "store",
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        mixup_alpha: float = 10.0,
        transform: Optional[ItemTransform] = None,
        indices: Optional[Sequence[int]] = None,
        return_ids: bool = False,
        seed: int = 0,
        output_dtype: torch.dtype = torch.float32,
    ) -> None:
        if isinstance(store, (str, os.PathLike)):
            from .store import FbankStore

            store = FbankStore(store)
        _check_common(target_length, crop, label_smoothing, mixup, mixup_alpha, seed)
        if output_dtype not in (torch.float32, torch.float16):
            raise ValueError(f"output_dtype must be torch.float32 or torch.float16, got {output_dtype}")
        if output_dtype == torch.float16 and (mixup > 0 or transform is not None):
            raise ValueError(
                "output_dtype=torch.float16 ships un-normalised log-mel; per-item mixup and transform "
                "act on the normalised item: apply Mixup/SpecAugment to the batch after normalize_batch"
            )
        self.output_dtype = output_dtype
        self.store = store
        self.target_length = target_length
        self.crop = crop
        self.normalizer = _resolve_normalizer(normalizer, store)
        self.label_smoothing = float(label_smoothing)
        self.mixup = float(mixup)
        self.mixup_alpha = float(mixup_alpha)
        self.transform = transform
        self.return_ids = return_ids
        self.seed = int(seed)
        n_store = len(store)
        rows = np.arange(n_store, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= n_store)):
            raise DatasetError(getattr(store, "path", None), f"indices out of range for {n_store} clips")
        self.rows = rows
        self.num_frames = np.asarray(store.num_frames, dtype=np.int64)[rows]
        labels = store.labels
        self._labels = _CsrLabels(None if labels is None else np.asarray(labels)[rows], len(rows))
        # The store keeps ids as a NumPy unicode array, which forked workers share untouched.
        self._ids = np.asarray(store.ids)[rows] if return_ids else None
        self.num_bins = int(store.num_mel_bins)
        # In float16 mode items are raw log-mel, so they pad with the raw 0.
        self.pad_row = _pad_row(self.normalizer if output_dtype == torch.float32 else None, self.num_bins)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.rows)

    def _check_read(self, row: int, got: int, count: int) -> None:
        if got != count:
            raise DatasetError(getattr(self.store, "path", None), f"row {row}: read {got} frames, expected {count}")

    def _load(self, i: int, generator: Optional[torch.Generator]) -> tuple[Tensor, int]:
        start, count = _crop_window(int(self.num_frames[i]), self.target_length, self.crop, generator)
        row = int(self.rows[i])
        if self.output_dtype == torch.float16:
            raw = torch.from_numpy(np.ascontiguousarray(self.store.read_raw(row, start, count)))
            self._check_read(row, raw.shape[0], count)
            length = count if self.target_length is None else self.target_length
            out = torch.zeros(length, self.num_bins, dtype=torch.float16)
            out[:count] = raw
            return out, count
        frames = torch.from_numpy(np.ascontiguousarray(self.store.read(row, start, count), dtype=np.float32))
        self._check_read(row, frames.shape[0], count)
        return _place(frames, self.target_length, self.normalizer, self.pad_row), count

    def __getitems__(self, indices: Sequence[int]) -> Sequence[dict[str, Any]]:
        """What a ``DataLoader`` with a batch size calls: a pending batch that :func:`collate`
        builds in one pass, or a list of items where items must be built one by one."""
        positions = [self._position(k) for k in indices]
        if self.mixup > 0 or self.transform is not None or not positions or not hasattr(self.store, "read_raw"):
            return [self[i] for i in positions]
        return _PendingBatch(self, np.asarray(positions, dtype=np.int64))

    def _collate_batch(self, positions: np.ndarray, pad_value: Union[float, Tensor]) -> dict[str, Any]:
        """The batch ``collate([self[i] for i in positions], pad_value)`` returns, built in place.

        Each clip is read into its slot of the batch tensor (through one staging array when the
        stored dtype differs from the output dtype), normalised there with the same operations
        as ``_place`` (so the same bits), and its tail filled with the pad row.
        """
        B, F = len(positions), self.num_bins
        rows = self.rows[positions]
        epoch = self.epoch
        starts = np.empty(B, dtype=np.int64)
        counts = np.empty(B, dtype=np.int64)
        for b, (i, row) in enumerate(zip(positions.tolist(), rows.tolist())):
            g = item_generator(self.seed, epoch, row) if self.crop == "random" else None
            starts[b], counts[b] = _crop_window(int(self.num_frames[i]), self.target_length, self.crop, g)
        T = int(counts.max()) if self.target_length is None else self.target_length
        dtype = self.output_dtype
        fbank = _batch_buffer(torch.empty(0, dtype=dtype), (B, T, F))
        if self.target_length is not None:
            pad = self.pad_row.reshape(-1).to(dtype)
        else:
            pad = torch.as_tensor(pad_value, dtype=dtype).reshape(-1)
            if bool((counts < T).any()) and pad.numel() not in (1, F):
                raise ValueError(f"pad_value must be a scalar or ({F},), got {tuple(pad.shape)}")
        store_dtype = np.dtype(self.store.dtype)
        direct = store_dtype == torch.empty(0, dtype=dtype).numpy().dtype
        stage = None if direct else np.empty((T, F), dtype=store_dtype)
        normalise = dtype == torch.float32 and self.normalizer is not None
        scalar = _is_scalar_normalizer(self.normalizer)
        for b in range(B):
            slot, n = fbank[b], int(counts[b])
            row = int(rows[b])
            if direct:
                got = self.store.read_raw(row, int(starts[b]), n, out=slot.numpy())
            else:
                got = self.store.read_raw(row, int(starts[b]), n, out=stage)
                slot[: got.shape[0]].copy_(torch.from_numpy(got))
            self._check_read(row, got.shape[0], n)
            if normalise:
                body = slot[:n]
                if scalar:
                    body.sub_(self.normalizer.mean).div_(2 * self.normalizer.std)
                else:
                    body.copy_(self.normalizer(body))
            if n < T:
                slot[n:] = pad
        out: dict[str, Any] = {
            "fbank": fbank,
            "lengths": torch.from_numpy(counts),
            "labels": _smooth(self._labels.rows(positions), self.label_smoothing),
            "lam": torch.ones(B, dtype=torch.float32),
            "indices": torch.from_numpy(positions.astype(np.int64)),
        }
        if self._ids is not None:
            out["ids"] = [str(self._ids[i]) for i in positions]
        return out

    def normalize_batch(self, batch: Union[Mapping[str, Any], Tensor]) -> Any:
        """Finish a ``output_dtype=torch.float16`` batch where it now is (after ``.to(device)``):
        float32, then the normaliser, the same operations as the float32 path (on the CPU the
        same bits). Takes the collated dict (returns a new dict) or the fbank tensor.

        A float32 dataset's batches are already normalised and come back unchanged, so a
        training loop can call this whatever the dataset's ``output_dtype``.
        """
        if isinstance(batch, Tensor):
            return self._normalize_fbank(batch)
        out = dict(batch)
        out["fbank"] = self._normalize_fbank(batch["fbank"])
        return out

    def _normalize_fbank(self, x: Tensor) -> Tensor:
        if self.output_dtype == torch.float32:
            return x
        if x.dtype != torch.float16:
            raise ValueError(f"expected the float16 log-mel of this dataset, got {x.dtype} (normalised twice?)")
        x = x.to(torch.float32)
        if self.normalizer is None:
            return x
        if _is_scalar_normalizer(self.normalizer):
            return x.sub_(self.normalizer.mean).div_(2 * self.normalizer.std)
        return self.normalizer(x)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._position(index)
        g = item_generator(self.seed, self.epoch, int(self.rows[i])) if self._needs_generator() else None
        x, length = self._load(i, g)
        y = self._labels_of(i)
        lam = 1.0
        if self.mixup > 0 and float(torch.rand((), generator=g)) < self.mixup:
            j = int(torch.randint(0, len(self), (1,), generator=g))
            x2, length2 = self._load(j, g)
            lam = float(sample_beta(self.mixup_alpha, self.mixup_alpha, (), g))
            x2 = _fit_length(x2, x.shape[0], self.pad_row)
            x = lam * x + (1.0 - lam) * x2
            y = lam * y + (1.0 - lam) * self._labels_of(j)
            length = max(length, min(length2, x.shape[0]))
        if self.transform is not None:
            x = self.transform(x.unsqueeze(0), g).squeeze(0)
        item: dict[str, Any] = {"fbank": x, "length": length, "labels": y, "lam": lam, "index": i}
        if self._ids is not None:
            item["id"] = str(self._ids[i])
        return item


class WavDataset(_ItemDataset):
    """The same items as :class:`FbankDataset`, with fbanks computed from audio on the fly.

    Slower (see ``benchmarks/bench_loader.py``) but needs no precompute, and it is the place
    for waveform-level augmentation:

    * ``mixup``: AST's dataset mixup on *waveforms*: partner uniform over the dataset,
      zero-padded or cut to the first clip's length, ``lambda ~ Beta(alpha, alpha)``,
      ``w = lambda w1 + (1 - lambda) w2``, DC removed again, then the fbank of the mix.
    * ``roll_gain``: EAT/AudioMAE's ``roll_aug``: roll the waveform circularly by
      ``U{0, N-1}`` samples and scale it by ``Beta(10, 10) + 0.5``.

    Unreadable files raise ``audiossl.audio.AudioError`` naming the file.
    """

    def __init__(
        self,
        manifest: Any,
        fbank_config: Any = "ast",
        target_length: Optional[int] = 1024,
        normalizer: Any = None,
        crop: CropMode = "start",
        label_smoothing: float = 0.0,
        mixup: float = 0.0,
        mixup_alpha: float = 10.0,
        roll_gain: bool = False,
        transform: Optional[ItemTransform] = None,
        return_ids: bool = False,
        seed: int = 0,
    ) -> None:
        from .manifest import read_manifest

        if isinstance(manifest, (str, os.PathLike)):
            manifest = read_manifest(manifest)
        if isinstance(fbank_config, str):
            fbank_config = FbankConfig.preset(fbank_config)
        _check_common(target_length, crop, label_smoothing, mixup, mixup_alpha, seed)
        table = manifest.table
        self.paths = [str(p) for p in table["path"]]
        # A NumPy unicode array, unlike a list of str, is not touched by refcounting, so forked
        # workers keep sharing its pages (pytorch#13246).
        self._ids = np.asarray([str(s) for s in table["id"]], dtype=str) if return_ids else None
        if _has_labels(manifest):
            self._labels = _CsrLabels.from_csr(*manifest.labels_csr(), manifest.num_classes)
        else:
            self._labels = _CsrLabels(None, len(self.paths))
        self.fbank_config = fbank_config
        self.target_length = target_length
        self.normalizer = _resolve_normalizer(normalizer)
        self.crop = crop
        self.label_smoothing = float(label_smoothing)
        self.mixup = float(mixup)
        self.mixup_alpha = float(mixup_alpha)
        self.roll_gain = roll_gain
        self.transform = transform
        self.return_ids = return_ids
        self.seed = int(seed)
        self.num_bins = int(fbank_config.num_features)
        self.pad_row = _pad_row(self.normalizer, self.num_bins)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.paths)

    def _needs_generator(self) -> bool:
        return super()._needs_generator() or self.roll_gain

    def _waveform(self, i: int) -> Tensor:
        from ..audio import load

        wav = load(self.paths[i], sample_rate=int(self.fbank_config.sample_frequency))
        return wav.reshape(-1).to(torch.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._position(index)
        g = item_generator(self.seed, self.epoch, i) if self._needs_generator() else None
        wav = self._waveform(i)
        y = self._labels_of(i)
        lam = 1.0
        if self.mixup > 0 and float(torch.rand((), generator=g)) < self.mixup:
            j = int(torch.randint(0, len(self), (1,), generator=g))
            wav2 = self._waveform(j)
            if self.fbank_config.remove_waveform_mean:  # AST: each clip, then the mix (in fbank)
                wav, wav2 = wav - wav.mean(), wav2 - wav2.mean()
            if wav2.shape[0] < wav.shape[0]:
                wav2 = torch.nn.functional.pad(wav2, (0, wav.shape[0] - wav2.shape[0]))
            lam = float(sample_beta(self.mixup_alpha, self.mixup_alpha, (), g))
            wav = lam * wav + (1.0 - lam) * wav2[: wav.shape[0]]
            y = lam * y + (1.0 - lam) * self._labels_of(j)
        if self.roll_gain:
            wav = random_gain(random_roll(wav.unsqueeze(0), g), g).squeeze(0)
        feats, _ = fbank(wav.unsqueeze(0), self.fbank_config)
        feats = feats[0]
        start, count = _crop_window(feats.shape[0], self.target_length, self.crop, g)
        x = _place(feats[start : start + count], self.target_length, self.normalizer, self.pad_row)
        if self.transform is not None:
            x = self.transform(x.unsqueeze(0), g).squeeze(0)
        item: dict[str, Any] = {"fbank": x, "length": count, "labels": y, "lam": lam, "index": i}
        if self._ids is not None:
            item["id"] = str(self._ids[i])
        return item


def _has_labels(manifest: Any) -> bool:
    label_map = getattr(manifest, "label_map", None)
    return label_map is not None and len(label_map) > 0


def _check_common(
    target_length: Optional[int], crop: str, label_smoothing: float, mixup: float, alpha: float, seed: int
) -> None:
    if target_length is not None and target_length <= 0:
        raise ValueError(f"target_length must be positive or None, got {target_length}")
    if crop not in ("start", "random", "center"):
        raise ValueError(f"crop must be 'start', 'random' or 'center', got {crop!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not 0.0 <= mixup <= 1.0:
        raise ValueError(f"mixup is a probability, got {mixup}")
    if mixup > 0 and alpha <= 0:
        raise ValueError(f"mixup_alpha must be > 0, got {alpha}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _scalar_or_row(pad_row: Tensor) -> Union[float, Tensor]:
    row = pad_row.reshape(-1)
    if row.numel() and bool((row == row[0]).all()):
        return float(row[0])
    return row.clone()


# ---------------------------------------------------------------------------------------------
# Collation


def collate(batch: Sequence[Mapping[str, Any]], pad_value: Union[float, Tensor] = 0.0) -> dict[str, Any]:
    """Stack items into ``{"fbank": (B, T, F), "lengths": (B,), "labels": (B, C), "lam": (B,),
    "indices": (B,), "ids": [...]}``, padding shorter items at the end.

    A pending batch from ``FbankDataset.__getitems__`` is built in one pass (same result).

    ``pad_value`` should be the normalised log-mel 0 (``dataset.pad_value``; use
    ``dataset.collate_fn``) so collate padding matches ``target_length`` padding. ``lengths``
    are the true frames, from which models build key-padding masks.
    """
    if isinstance(batch, _PendingBatch):
        return batch.dataset._collate_batch(batch.positions, pad_value)
    if not batch:
        raise ValueError("cannot collate an empty batch")
    feats = [item["fbank"] for item in batch]
    num_bins = feats[0].shape[-1]
    longest = max(f.shape[0] for f in feats)
    fbank = _batch_buffer(feats[0], (len(batch), longest, num_bins))
    if all(f.shape[0] == longest for f in feats):
        torch.stack(feats, out=fbank)
    else:
        pad = torch.as_tensor(pad_value, dtype=feats[0].dtype).reshape(-1)
        if pad.numel() not in (1, num_bins):
            raise ValueError(f"pad_value must be a scalar or ({num_bins},), got {tuple(pad.shape)}")
        for b, f in enumerate(feats):
            fbank[b, : f.shape[0]] = f
            fbank[b, f.shape[0] :] = pad
    out: dict[str, Any] = {
        "fbank": fbank,
        "lengths": torch.tensor([int(item["length"]) for item in batch], dtype=torch.long),
        "labels": torch.stack([item["labels"] for item in batch]),
        "lam": torch.tensor([float(item.get("lam", 1.0)) for item in batch], dtype=torch.float32),
        "indices": torch.tensor([int(item["index"]) for item in batch], dtype=torch.long),
    }
    if "id" in batch[0]:
        out["ids"] = [item["id"] for item in batch]
    return out


class _PendingBatch(_SequenceABC):
    """A batch of :class:`FbankDataset` items not built yet: what ``__getitems__`` returns.

    :func:`collate` recognises it and reads the whole batch in place. To anything else it is a
    read-only sequence of the item dicts ``dataset[i]`` returns, built on first access, so a
    user ``collate_fn`` gets the items it always got; pickling (a ``collate_fn`` that returns
    its input unchanged) sends those items as a plain list, never the dataset.
    """

    __slots__ = ("dataset", "positions", "_items")

    def __init__(self, dataset: "FbankDataset", positions: np.ndarray) -> None:
        self.dataset = dataset
        self.positions = positions
        self._items: Optional[list[dict[str, Any]]] = None

    def items(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = [self.dataset[i] for i in self.positions.tolist()]
        return self._items

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: Any) -> Any:
        return self.items()[k]

    def __iter__(self):
        return iter(self.items())

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (self.items(),))

    def __repr__(self) -> str:
        return f"<pending batch of {len(self)} FbankDataset items {self.positions.tolist()}>"


def _batch_buffer(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An empty batch tensor, in shared memory when built in a DataLoader worker.

    A worker's batch goes to the main process through shared memory; stacking straight into
    it saves one copy of the batch (16 MiB at 32 x 1024 x 128), as ``default_collate`` does.
    """
    if torch.utils.data.get_worker_info() is None or like.device.type != "cpu":
        return like.new_empty(shape)
    numel = math.prod(shape)
    storage = like.untyped_storage()._new_shared(numel * like.element_size())
    return like.new_empty(0).set_(storage, 0, shape)


# ---------------------------------------------------------------------------------------------
# Batch augmentations


class _GeneratorHolder:
    """Holds a generator and pickles it as plain bytes.

    A ``torch.Generator`` sent through multiprocessing's ``ForkingPickler`` (what a ``spawn``
    DataLoader uses for the dataset and its transforms) fails to rebuild in the child
    ("unable to resize file ... Invalid argument", torch 2.x), so the state travels as bytes.
    """

    generator: torch.Generator

    def __init__(self, generator: Union[torch.Generator, int, None], owner: str) -> None:
        self.generator = _as_generator(generator, owner)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        g = state.pop("generator")
        state["_generator_state"] = (str(g.device), g.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        device, raw = state.pop("_generator_state")
        self.__dict__.update(state)
        self.generator = torch.Generator(device=device)
        self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


class MixupResult(NamedTuple):
    fbank: Tensor  # (B, ...) mixed inputs
    labels: Tensor  # (B, C) lam * y + (1 - lam) * y.flip(0)
    lam: Tensor  # (B,) per-item lambda, 1.0 where the item was not mixed
    lengths: Optional[Tensor]  # (B,) true frames of the mix, when lengths were given


def mixup(
    x: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    alpha: float = 10.0,
    prob: float = 1.0,
    mode: Literal["batch", "elem"] = "batch",
    lengths: Optional[Tensor] = None,
) -> MixupResult:
    """Mix each item with its mirror in the batch (``x.flip(0)``), as timm/EAT do.

    ``mode="batch"``: with probability ``prob`` the whole batch mixes with one
    ``lambda ~ Beta(alpha, alpha)`` (EAT fine-tuning: ``alpha=0.8, prob=0.9``). ``mode="elem"``:
    every item draws its own lambda and its own coin (the batch analogue of AST's per-sample
    ``mixup=0.5`` with Beta(10, 10)). In an odd batch the middle item mixes with itself, a no-op.
    The returned ``lam`` is what a loss needs for mixed-target bookkeeping.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    B = x.shape[0]
    if labels.shape[0] != B:
        raise ValueError(f"labels batch {labels.shape[0]} != inputs batch {B}")
    if mode == "batch":
        apply = float(_rand((), generator, torch.device("cpu"))) < prob
        lam = sample_beta(alpha, alpha, (1,), generator).expand(B) if apply else torch.ones(B)
    elif mode == "elem":
        lam_mix = sample_beta(alpha, alpha, (B,), generator)
        apply_elem = _rand((B,), generator, torch.device("cpu")) < prob
        lam = torch.where(apply_elem, lam_mix, torch.ones(B))
    else:
        raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
    lam = lam.contiguous()
    lam_x = lam.to(x.device, x.dtype).view(B, *([1] * (x.dim() - 1)))
    lam_y = lam.to(labels.device, labels.dtype).view(B, *([1] * (labels.dim() - 1)))
    mixed = x * lam_x + x.flip(0) * (1.0 - lam_x)
    targets = labels * lam_y + labels.flip(0) * (1.0 - lam_y)
    if lengths is not None:
        mixed_len = torch.maximum(lengths, lengths.flip(0))
        lengths = torch.where(lam.to(lengths.device) < 1.0, mixed_len, lengths)
    return MixupResult(mixed, targets, lam.to(x.device), lengths)


class Mixup(_GeneratorHolder):
    """Batch-level fbank mixup holding its parameters and generator; see :func:`mixup`.

    Level: this mixes *normalised fbanks in the batch* (EAT, inside the model forward). AST,
    SSAST and AudioMAE instead mix *waveforms* in the dataset before the fbank, with a
    partner drawn from the whole dataset: ``WavDataset(mixup=p)`` reproduces that, and
    ``FbankDataset(mixup=p)`` does the same dataset-level draw on stored fbanks.
    """

    def __init__(
        self,
        alpha: float = 10.0,
        prob: float = 1.0,
        mode: Literal["batch", "elem"] = "batch",
        generator: Union[torch.Generator, int, None] = 0,
    ) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        super().__init__(generator, "Mixup")
        self.alpha, self.prob, self.mode = float(alpha), float(prob), mode

    def __call__(
        self,
        x: Tensor,
        labels: Tensor,
        lengths: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> MixupResult:
        return mixup(x, labels, generator or self.generator, self.alpha, self.prob, self.mode, lengths)


def _band_mask(size: int, param: int, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """``(B, size)`` bool bands distributed exactly as torchaudio's ``mask_along_axis_iid``:
    width ``floor(u1 * param)`` (so always ``< param``), start ``floor(u2 * (size - u1 * param))``.
    """
    value = _rand((batch,), generator, device) * param
    start = (_rand((batch,), generator, device) * (size - value)).long()
    end = start + value.long()
    pos = torch.arange(size, device=device)
    return (pos >= start[:, None]) & (pos < end[:, None])


def spec_augment(
    x: Tensor,
    freqm: int,
    timem: int,
    generator: torch.Generator,
    value: Union[float, Tensor] = 0.0,
) -> Tensor:
    """One frequency band then one time band per item, each of width ``U{0..param-1}``.

    ``x`` is ``(B, T, F)`` (or ``(B, 1, T, F)``). The draws and their order are those of
    torchaudio ``FrequencyMasking(freqm, iid_masks=True)`` then ``TimeMasking(timem, ...)`` on
    ``(B, 1, F, T)``, i.e. one mask per sample as AST (after its issue #58 fix) and EAT get.

    ``value``: masked cells are set to it in the units of ``x``. EAT masks the normalised
    fbank with 0 (the default here). AST/SSAST/AudioMAE mask the *log-mel* with 0 before
    normalising, so their masked cells end at the pad value: pass ``value=dataset.pad_value``
    to reproduce that on normalised input.
    """
    if freqm < 0 or timem < 0:
        raise ValueError(f"freqm and timem must be >= 0, got {freqm}, {timem}")
    squeeze = x.dim() == 4
    if squeeze:
        if x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, T, F), got {tuple(x.shape)}")
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"expected (B, T, F) or (B, 1, T, F), got {tuple(x.shape)}")
    B, T, F = x.shape
    masked = torch.zeros(B, T, F, dtype=torch.bool, device=x.device)
    if freqm >= 1:
        masked |= _band_mask(F, freqm, B, generator, x.device)[:, None, :]
    if timem >= 1:
        masked |= _band_mask(T, timem, B, generator, x.device)[:, :, None]
    fill = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    out = torch.where(masked, fill, x)
    return out[:, None] if squeeze else out


class SpecAugment(_GeneratorHolder):
    """:func:`spec_augment` with its parameters and generator. Upstream widths:
    AST AudioSet ``freqm=48, timem=192``; ESC-50 ``24, 96``; SPC-2 ``48, 48``; EAT
    ``128 r, target_length r`` with ``r = 0.2`` (ESC-50: 0.4)."""

    def __init__(
        self,
        freqm: int,
        timem: int,
        value: Union[float, Tensor] = 0.0,
        generator: Union[torch.Generator, int, None] = 0,
    ) -> None:
        super().__init__(generator, "SpecAugment")
        self.freqm, self.timem, self.value = int(freqm), int(timem), value

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return spec_augment(x, self.freqm, self.timem, generator or self.generator, self.value)


def roll_rows(x: Tensor, shifts: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
    """Roll each row of ``x`` along dim 1 by its own shift (``torch.roll`` semantics:
    ``out[t] = x[(t - s) mod T]``). With ``lengths`` only the first ``lengths[b]`` entries
    of row ``b`` rotate, so padding stays at the end."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device)[None, :]
    shifts = shifts.to(x.device).long()[:, None]
    if lengths is None:
        idx = (t - shifts) % T
    else:
        n = lengths.to(x.device).long().clamp(min=1)[:, None]
        idx = torch.where(t < n, (t - shifts) % n, t)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def random_roll(
    x: Tensor,
    generator: torch.Generator,
    lengths: Optional[Tensor] = None,
    max_shift: Optional[int] = None,
) -> Tensor:
    """Circular roll along dim 1 by a per-item ``U{0..n-1}`` (``n`` = row length): EAT's
    waveform ``roll_aug`` on ``(B, N)``, or a time roll of a ``(B, T, F)`` fbank.
    ``max_shift`` instead draws from ``U{-max_shift..max_shift-1}`` (AST noise: 10)."""
    B, T = x.shape[:2]
    u = _rand((B,), generator, torch.device("cpu"))
    if max_shift is not None:
        shifts = (u * (2 * max_shift)).long() - max_shift
    else:
        n = torch.full((B,), T) if lengths is None else lengths.cpu().long().clamp(min=1)
        shifts = (u * n).long()
    return roll_rows(x, shifts, lengths)


def random_gain(x: Tensor, generator: torch.Generator, alpha: float = 10.0) -> Tensor:
    """Scale each item by ``Beta(alpha, alpha) + 0.5`` (EAT/AudioMAE magnitude aug; a waveform
    gain, so apply it before the fbank)."""
    g = sample_beta(alpha, alpha, (x.shape[0],), generator) + 0.5
    return x * g.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))


def noise_augment(x: Tensor, generator: torch.Generator, lengths: Optional[Tensor] = None) -> Tensor:
    """AST's "noise" augmentation on a normalised ``(B, T, F)`` batch, per item:
    ``x += U(0,1)[T, F] * U(0,1) / 10``, then roll along time by ``U{-10..9}`` frames (the
    whole padded length, as upstream, unless ``lengths`` are given)."""
    B = x.shape[0]
    noise = _rand(x.shape, generator, x.device).to(x.dtype)
    scale = _rand((B,), generator, x.device).to(x.dtype).view(B, *([1] * (x.dim() - 1)))
    return random_roll(x + noise * scale / 10.0, generator, lengths, max_shift=10)


class NoiseAugment(_GeneratorHolder):
    """:func:`noise_augment` with its generator (AST/SSAST Speech Commands, EAT SPC-2)."""

    def __init__(self, generator: Union[torch.Generator, int, None] = 0) -> None:
        super().__init__(generator, "NoiseAugment")

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None, lengths: Optional[Tensor] = None) -> Tensor:
        return noise_augment(x, generator or self.generator, lengths)


class RollAugment(_GeneratorHolder):
    """:func:`random_roll` with its generator."""

    def __init__(self, max_shift: Optional[int] = None, generator: Union[torch.Generator, int, None] = 0) -> None:
        super().__init__(generator, "RollAugment")
        self.max_shift = max_shift

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None, lengths: Optional[Tensor] = None) -> Tensor:
        return random_roll(x, generator or self.generator, lengths, self.max_shift)


class GainAugment(_GeneratorHolder):
    """:func:`random_gain` with its generator."""

    def __init__(self, alpha: float = 10.0, generator: Union[torch.Generator, int, None] = 0) -> None:
        super().__init__(generator, "GainAugment")
        self.alpha = float(alpha)

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return random_gain(x, generator or self.generator, self.alpha)


# ---------------------------------------------------------------------------------------------
# Balanced sampling


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
    partial = path.with_name(path.name + ".partial")
    np.savetxt(partial, w, fmt="%.18e", delimiter=",")
    os.replace(partial, path)
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
