"""The data of a fine-tuning run: which clips train, select and test, and how they are batched.

A ``data.store`` with a ``data.manifest`` whose ``data.split_column`` (``fold``, ``split``)
says which clips are test (``test_values``) and train (``train_values``; default: every other
clip), matched to the store by clip id; or ``data.train`` + ``data.test`` stores (AudioSet:
balanced or full train store, eval store). A validation split (``val_fraction`` of the
training clips, drawn with ``split_seed``, stratified by class for single-label data) selects
the epoch (:mod:`audiossl.train.selection`).

Training clips are drawn in a fixed order per ``(seed, epoch)``: uniformly without replacement,
or by label weights (AST's 1000/(count+0.01), or a weight CSV) with replacement, or ``epoch_len``
of them without (AudioMAE/EAT's AS-2M). Evaluation always takes the first ``target_length``
frames, without augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from audiossl.train import distributed as dist_utils
from audiossl.train.config import ConfigError, open_store
from audiossl.train.finetune_config import FinetuneConfig, FtDataConfig
from audiossl.train.loop import seed_generator


@dataclass
class Split:
    """Store rows of each part; train and val rows index ``train_store``."""

    train_store: Any
    test_store: Any
    train_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray
    description: Dict[str, Any]


def holdout(labels: np.ndarray, fraction: float, seed: int, stratified: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``(keep, held)`` positions: ``fraction`` of the rows held out with ``seed``; stratified by
    the single label of each row (every class with >= 2 clips gives at least one, as EVAR)."""
    n = len(labels)
    if fraction <= 0 or n == 0:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x76616C]))
    if stratified:
        cls = labels.argmax(axis=1)
        held = []
        for c in np.unique(cls):
            rows = np.flatnonzero(cls == c)
            k = int(round(fraction * len(rows)))
            k = max(k, 1) if len(rows) >= 2 else 0
            held.append(rng.permutation(rows)[:k])
        held_rows = np.sort(np.concatenate(held)) if held else np.arange(0)
    else:
        held_rows = np.sort(rng.permutation(n)[: int(round(fraction * n))])
    keep = np.setdiff1d(np.arange(n), held_rows)
    return keep, held_rows


def _values_mask(values: np.ndarray, wanted: Sequence[Any]) -> np.ndarray:
    """Compared as text, so ``test_values: [1]`` matches a fold column read as 1, "1" or 1.0."""
    def norm(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return str(v)

    want = {norm(v) for v in wanted}
    return np.array([norm(v) in want for v in values], dtype=bool)


def split_data(cfg: FtDataConfig) -> Split:
    from audiossl.data.manifest import ManifestError, read_manifest

    if cfg.store:
        store = open_store("data.store", cfg.store)
        try:
            manifest = read_manifest(cfg.manifest, label_map=False)
        except ManifestError as e:
            raise ConfigError("data.manifest", str(e)) from e
        table = manifest.table
        if cfg.split_column not in table.columns:
            raise ConfigError("data.split_column", f"{cfg.manifest} has no column {cfg.split_column!r} "
                                                   f"(columns: {', '.join(map(str, table.columns))})")
        by_id = dict(zip(table["id"].astype(str), table[cfg.split_column].to_numpy()))
        missing = [i for i in store.ids[:5] if i not in by_id]
        if missing:
            raise ValueError(f"{cfg.store}: clips {missing} are not in {cfg.manifest}")
        values = np.array([by_id[i] for i in store.ids], dtype=object)
        test = _values_mask(values, cfg.test_values)
        train = _values_mask(values, cfg.train_values) if cfg.train_values else ~test
        train &= ~test
        if not test.any():
            raise ConfigError("data.test_values", f"no clip of {cfg.store} has {cfg.split_column} in {cfg.test_values}")
        train_store = test_store = store
        train_rows, test_rows = np.flatnonzero(train), np.flatnonzero(test)
        desc: Dict[str, Any] = {"column": cfg.split_column, "test_values": list(cfg.test_values),
                                "train_values": list(cfg.train_values)}
    else:
        train_store, test_store = open_store("data.train", cfg.train), open_store("data.test", cfg.test)
        _check_same_classes(train_store, test_store)
        train_rows, test_rows = np.arange(len(train_store)), np.arange(len(test_store))
        desc = {"train": str(cfg.train), "test": str(cfg.test)}
    if train_store.labels is None:
        raise ConfigError("data.store" if cfg.store else "data.train",
                          f"{train_store.path}: the store has no labels (precompute it from a labelled manifest)")
    labels = np.asarray(train_store.labels)[train_rows]
    single = bool((labels.sum(axis=1) == 1).all())
    keep, held = holdout(labels, cfg.val_fraction, cfg.split_seed, stratified=single)
    desc.update(val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)
    return Split(train_store, test_store, train_rows[keep], train_rows[held], test_rows, desc)


def _check_same_classes(a: Any, b: Any) -> None:
    la, lb = a.label_map, b.label_map
    if la is None or lb is None:
        if (a.labels is None) != (b.labels is None) or (a.labels is not None and a.labels.shape[1] != b.labels.shape[1]):
            raise ValueError(f"{a.path} and {b.path} have different label sets")
        return
    if list(la["mid"]) != list(lb["mid"]):
        raise ValueError(f"{a.path} and {b.path} have different label maps")


def resolve_normalizer(name: Any, ckpt: Optional[Mapping[str, Any]]) -> Any:
    """``data.normalizer`` as :class:`~audiossl.data.dataset.FbankDataset` takes it; "checkpoint"
    becomes the normaliser the pretrained checkpoint stores."""
    if name != "checkpoint":
        return name
    from audiossl.features import Normalizer

    if not (ckpt and ckpt.get("normalizer")):
        raise ConfigError("data.normalizer", "checkpoint, but the checkpoint stores no normalizer")
    return Normalizer.from_dict(ckpt["normalizer"])


class FinetuneData:
    """The training set and the evaluation sets ("train", "val", "test") of a split, the epoch
    length, and their loaders."""

    def __init__(self, cfg: FinetuneConfig, split: Split, target_length: int, normalizer: Any,
                 device: torch.device) -> None:
        from audiossl.data.dataset import FbankDataset

        self.cfg, self.split, self.device = cfg, split, device
        sp, finetune = split, cfg.mode == "finetune"
        train_ls = cfg.augment.label_smoothing if finetune else 0.0
        self.train_set = FbankDataset(sp.train_store, target_length, crop=cfg.data.crop if finetune else "start",
                                      normalizer=normalizer, label_smoothing=train_ls, indices=sp.train_rows,
                                      seed=cfg.seed)
        self.eval_sets = {
            "train": FbankDataset(sp.train_store, target_length, crop="start", normalizer=normalizer,
                                  indices=sp.train_rows, return_ids=True),
            "val": FbankDataset(sp.train_store, target_length, crop="start", normalizer=normalizer,
                                indices=sp.val_rows, return_ids=True) if len(sp.val_rows) else None,
            "test": FbankDataset(sp.test_store, target_length, crop="start", normalizer=normalizer,
                                 indices=sp.test_rows, return_ids=True),
        }
        n_train = len(sp.train_rows)
        bs = cfg.data.batch_size
        if finetune and cfg.data.sampler == "weighted" and cfg.data.epoch_len:
            n_train = int(cfg.data.epoch_len)
        # Fewer clips than a batch: one short batch per epoch rather than none.
        self.drop_last = n_train >= bs
        self.steps_per_epoch = n_train // bs if self.drop_last else 1
        self.weights = self._sample_weights() if cfg.data.sampler == "weighted" else None

    def _sample_weights(self) -> np.ndarray:
        from audiossl.data.dataset import balanced_sample_weights, read_weights_csv

        if self.cfg.data.weights:
            w = read_weights_csv(self.cfg.data.weights, expected=len(self.split.train_store))
            return w[self.split.train_rows]
        return balanced_sample_weights(self.train_set.label_matrix())

    def sampler(self, epoch: int) -> Any:
        from audiossl.data.dataset import make_weighted_sampler

        if self.weights is None:
            sampler = dist_utils.ResumableSampler(len(self.train_set), seed=self.cfg.seed)
            sampler.set_position(epoch, 0)
            return sampler
        epoch_len = self.cfg.data.epoch_len
        g = seed_generator(self.cfg.seed, 0, 2000 + epoch)
        # AST draws len(train) clips with replacement; AudioMAE/EAT's AS-2M draws epoch_len without.
        return make_weighted_sampler(self.weights, num_samples=epoch_len or len(self.weights), generator=g,
                                     replacement=epoch_len is None)

    def loader(self, dataset: Any, batch_size: int, sampler: Any = None, generator_stream: int = 0) -> Any:
        from torch.utils.data import DataLoader

        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                          drop_last=sampler is not None and self.drop_last, num_workers=self.cfg.data.num_workers,
                          collate_fn=dataset.collate_fn, pin_memory=self.device.type == "cuda",
                          generator=seed_generator(self.cfg.seed, 0, 3000 + generator_stream))

    def eval_loader(self, name: str) -> Any:
        return self.loader(self.eval_sets[name], self.cfg.data.eval_batch_size)

    def train_batches(self, epoch: int) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
        """``(fbank (B, T, F), labels, lengths)`` of one training epoch."""
        self.train_set.set_epoch(epoch)
        for batch in self.loader(self.train_set, self.cfg.data.batch_size, self.sampler(epoch), epoch + 1):
            yield batch["fbank"], batch["labels"], batch["lengths"]

    def feature_batches(self, z: Tensor, y: Tensor, epoch: int) -> Iterator[Tuple[Tensor, Tensor, None]]:
        """Batches of cached embeddings (the linear probe), shuffled per ``(seed, epoch)``."""
        n = z.shape[0]
        bs = self.cfg.data.batch_size
        order = torch.randperm(n, generator=seed_generator(self.cfg.seed, 0, 5000 + epoch))
        stop = (n // bs) * bs if self.drop_last else n
        for i in range(0, stop, bs):
            idx = order[i : i + bs]
            yield z[idx], y[idx], None

    def targets(self, name: str) -> Tensor:
        return torch.as_tensor(self.eval_sets[name].label_matrix().astype(np.float32))
