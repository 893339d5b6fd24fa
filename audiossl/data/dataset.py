"""Training datasets and their collation for spectrogram models.

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

The pieces around them are modules of their own, lowest first: ``rng`` (the seeded generators),
``items`` (how one item is cropped, padded, normalised and labelled), ``augment`` (batch
augmentations: ``Mixup``, ``SpecAugment``, ...), ``samplers`` (balanced sampling). This module
re-exports their public names, so none of them imports it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence as _SequenceABC
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..features import FbankConfig, fbank
from .augment import (
    GainAugment,
    Mixup,
    MixupResult,
    NoiseAugment,
    RollAugment,
    SpecAugment,
    mixup,
    noise_augment,
    random_gain,
    random_roll,
    roll_rows,
    spec_augment,
)
from .items import (
    DatasetError,
    PathLike,  # noqa: F401  (importable from here, as before the split)
    _crop_window,
    _CsrLabels,
    _fit_length,
    _is_scalar_normalizer,
    _pad_row,
    _place,
    _resolve_normalizer,
    _smooth,
)
from .rng import item_generator, sample_beta
from .samplers import balanced_sample_weights, make_weighted_sampler, read_weights_csv, write_weights_csv

CropMode = Literal["start", "random", "center"]
ItemTransform = Callable[[Tensor, torch.Generator], Tensor]

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


# ---------------------------------------------------------------------------------------------
# What both datasets share


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
