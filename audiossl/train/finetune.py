"""Fine-tuning and linear probing of a pretrained (or randomly initialised) encoder.

Two modes share one epoch loop, one data split and one output layout:

* ``mode: finetune`` — the whole :class:`~audiossl.models.classifier.Classifier` trains, with
  layer-wise lr decay, drop-path, roll → mixup → SpecAugment on the normalised batch (EAT's
  order), label smoothing, and cross-entropy (single label) or BCE (multi label).
* ``mode: linprobe`` — the encoder is frozen; every clip is embedded once, without augmentation
  (first ``target_length`` frames), the training embeddings' mean/std standardise all of them
  (EVAR), and only ``BatchNorm1d(affine=False) + Linear`` trains (MAE ``main_linprobe``) on
  the cached embeddings. Seconds per epoch.

Data. ``data.store`` with a ``data.manifest`` whose ``data.split_column`` (``fold``, ``split``)
says which clips are test (``test_values``) and train (``train_values``; default: every other
clip), matched to the store by clip id; or ``data.train`` + ``data.test`` stores (AudioSet:
balanced or full train store, eval store). A validation split (``val_fraction`` of the
training clips, drawn with ``split_seed``, stratified by class for single-label data) selects
the epoch. ``select_on_test: true`` is the optimistic upstream protocol (best epoch on the test
split); its results say ``"selected_on": "test (optimistic)"``. With ``val_fraction: 0`` and no
test selection the last epoch is kept (``"last"``).

Defaults. :data:`FAMILY_FINETUNE` holds the papers' settings by the encoder's source family
(EAT's ESC-50 recipe, AudioMAE's layer decay 0.75 and global pool, AST/SSAST's mean token and
Adam), :data:`LINPROBE_DEFAULTS` the probe's; the YAML and ``--section.key value`` override both.

Outputs in ``out``:

* ``results.json`` (fixed schema)::

    {"task": "finetune" | "linprobe",
     "init": "pretrained" | "random",
     "checkpoint": str | null,            # the pretrained checkpoint, null for random init
     "model": str,                        # preset or source family, for report labels
     "source": str,                       # family whose defaults applied
     "split": {...},                      # {"column": "fold", "test_values": [1], "train_values": []}
                                          # or {"train": store, "test": store}; + "val_fraction"
     "selected_on": "val" | "test (optimistic)" | "last",
     "selected_epoch": int,               # 1-based
     "select_metric": "acc" | "mAP",
     "loss": "ce" | "bce",
     "metrics": {"val": {...} | null, "test": {...}},   # classification_metrics of the selected model
     "extra": [{"name": "weight_average", "epochs": [a, b], "metrics": {"val": ..., "test": ...}},
               {"name": "ensemble", "epochs": [1, n], "metrics": {...}}],
     "num_train_clips": int, "num_val_clips": int, "num_test_clips": int,
     "test_clips": "test_clips.txt", "epochs": int, "steps": int}

  Metric dicts are :func:`audiossl.train.metrics.classification_metrics` (``acc, mAP, mAUC,
  d_prime, ap_classes, auc_classes``); NaN is written as null.
* ``test_clips.txt``: the ids of the test clips actually evaluated (one per line), next to the
  metric computed on them (AudioSet copies differ).
* ``metrics.jsonl``: one record per epoch (train loss, lr, val and test metrics).
* ``checkpoint.pt``: training state after the last finished epoch (atomic; ``--resume``).
* ``best.pt`` while training, then ``model.pt``: the selected model, a native checkpoint of
  family ``"classifier"``. ``config.yaml``: the resolved configuration.

Exact resumption. Each epoch's randomness is a pure function of ``(seed, epoch)`` (clip order,
crops, augmentation draws, the global RNG used by drop-path), so a run stopped after epoch ``k``
and resumed gives the uninterrupted run's numbers on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.models.classifier import Classifier, classifier_from_checkpoint, classifier_from_preset, source_of
from audiossl.train.checkpoint import CheckpointError, load_checkpoint, native_payload, save_checkpoint
from audiossl.train.optim import Schedule, build_optimizer, epoch_milestones, layer_id, param_groups, set_lr
from audiossl.train.pretrain import (
    PRECISIONS,
    TrainingError,
    _autocast_dtype,
    _check_keys,
    _device,
    _seed_generator,
    _write_atomic,
    apply_overrides,
    yaml_loader,
)
from audiossl.train import distributed as dist_utils

logger = logging.getLogger(__name__)

MODES = ("finetune", "linprobe")
LOSSES = ("auto", "ce", "bce")
SELECTED_ON_TEST = "test (optimistic)"

# ------------------------------------------------------------------------------------- defaults
# Fine-tuning settings of the papers, by the source family of the encoder (prefix match on the
# pretraining preset, the importer's source or the checkpoint family; first match wins, longer
# prefixes first). Sections as in FinetuneConfig.
FAMILY_FINETUNE: List[Tuple[Union[str, Tuple[str, ...]], Dict[str, Dict[str, Any]]]] = [
    # EAT ESC-50 script: CLS → fc_norm → head, drop-path 0.1, AdamW (0.9, 0.95) wd 0.05, lr 5e-5,
    # 10 % warm-up from min_lr 1e-6, layer decay 0.65 with data2vec's quirk (non-block parameters
    # keep scale 1), label smoothing 0.1, roll, SpecAugment r = 0.4 (the paper's table says 0.2;
    # AudioSet recipes: 0.2 with mixup 0.8).
    ("eat", dict(model=dict(pooling="cls", head="ln_linear", drop_path=0.1, head_init_std=0.02),
                 optim=dict(optimizer="adamw", lr=5e-5, betas=[0.9, 0.95], weight_decay=0.05, layer_decay=0.65,
                            layer_decay_style="eat", schedule="cosine", warmup=0.1, warmup_init_lr=1e-6,
                            min_lr=1e-6),
                 augment=dict(label_smoothing=0.1, roll=True, specaug_ratio=0.4))),
    # AudioMAE main_finetune_as: global pool (final norm removed) → fc_norm → head (std 2e-5),
    # drop-path 0.1, AdamW wd 5e-4, layer decay 0.75 (MAE lr_decay.py), SpecAugment 48/192.
    ("audiomae", dict(model=dict(pooling="mean", head="ln_linear", drop_path=0.1, head_init_std=2e-5,
                                 strip_final_norm=True),
                      optim=dict(optimizer="adamw", lr=1e-4, betas=[0.9, 0.999], weight_decay=5e-4, layer_decay=0.75,
                                 schedule="cosine", warmup=0.1, min_lr=1e-6),
                      augment=dict(freqm=48, timem=192))),
    # MAE-AST fine-tunes with SSAST's code: mean of the tokens (it has no cls) → LayerNorm → Linear.
    ("maeast", dict(model=dict(pooling="mean", head="ln_linear", head_init_std=0.02),
                    optim=dict(optimizer="adam", lr=1e-4, betas=[0.95, 0.999], weight_decay=5e-7, schedule="cosine"),
                    augment=dict(freqm=24, timem=96))),
    # MAE (images) FINETUNE.md: global pool, layer decay 0.65 (ViT-B), drop-path 0.1, wd 0.05.
    ("mae", dict(model=dict(pooling="mean", head="ln_linear", drop_path=0.1, head_init_std=2e-5, strip_final_norm=True),
                 optim=dict(optimizer="adamw", lr=1e-4, betas=[0.9, 0.999], weight_decay=0.05, layer_decay=0.65,
                            schedule="cosine", warmup=0.05, min_lr=1e-6),
                 augment=dict(label_smoothing=0.1))),
    # SSAST ESC-50 recipe: ft_avgtok (mean of patch tokens) → LayerNorm(eps 1e-5) → Linear, Adam
    # (0.95, 0.999) L2 5e-7, lr 1e-4, SpecAugment 24/96. Upstream's per-epoch MultiStepLR depends
    # on the dataset (ESC-50: x0.85 from epoch 6; AudioSet: x0.5 every 5 from 10): the recipe
    # configs set it (schedule: step); without one a cosine is used.
    ("ssast", dict(model=dict(pooling="mean", head="ln_linear", head_init_std=0.02),
                   optim=dict(optimizer="adam", lr=1e-4, betas=[0.95, 0.999], weight_decay=5e-7, schedule="cosine"),
                   augment=dict(freqm=24, timem=96))),
    # AST: the mean of the cls and dist outputs → LayerNorm → Linear; ESC-50 lr 1e-5 from AudioSet weights.
    ("ast", dict(model=dict(pooling="cls_dist_mean", head="ln_linear", head_init_std=0.02),
                 optim=dict(optimizer="adam", lr=1e-5, betas=[0.95, 0.999], weight_decay=5e-7, schedule="cosine"),
                 augment=dict(freqm=24, timem=96))),
    # I-JEPA has no cls token: mean pool, MAE-style layer decay.
    (("ijepa", "jepa"), dict(model=dict(pooling="mean", head="ln_linear", drop_path=0.1),
                             optim=dict(optimizer="adamw", lr=1e-4, betas=[0.9, 0.999], weight_decay=0.05,
                                        layer_decay=0.75, schedule="cosine", warmup=0.1, min_lr=1e-6))),
]

# The probe: MAE's BatchNorm(affine=False) + Linear on standardised features (EVAR), trained
# with AdamW and a cosine schedule; the family's pooling is kept (see family_defaults).
LINPROBE_DEFAULTS: Dict[str, Dict[str, Any]] = dict(
    model=dict(head="bn_linear", head_init_std=0.01, drop_path=0.0),
    optim=dict(optimizer="adamw", lr=1e-3, betas=[0.9, 0.999], weight_decay=0.0, layer_decay=None,
               schedule="cosine", warmup=0.0, warmup_init_lr=0.0, min_lr=0.0),
    augment=dict(mixup=0.0, freqm=0, timem=0, specaug_ratio=None, roll=False, label_smoothing=0.0),
)


def family_defaults(source: str, mode: str = "finetune") -> Dict[str, Dict[str, Any]]:
    """The defaults of ``source`` (a preset, importer source or family name) for ``mode``."""
    found: Dict[str, Dict[str, Any]] = {}
    for prefix, values in FAMILY_FINETUNE:
        if source.startswith(prefix):  # str.startswith takes a tuple of prefixes too
            found = copy.deepcopy(values)
            break
    if mode == "linprobe":
        pooling = found.get("model", {}).get("pooling")
        found = copy.deepcopy(LINPROBE_DEFAULTS)
        if pooling:
            found["model"]["pooling"] = pooling
    return found


# ------------------------------------------------------------------------------------- config
@dataclass
class FtDataConfig:
    store: str = ""  # one store holding train and test clips, split by the manifest
    manifest: Optional[str] = None  # a manifest with split_column (ESC-50: manifest.csv, fold)
    split_column: Optional[str] = None
    test_values: List[Any] = field(default_factory=list)
    train_values: List[Any] = field(default_factory=list)  # empty: every clip not in test_values
    train: str = ""  # or separate stores (AudioSet: balanced/full train, eval)
    test: str = ""
    val_fraction: float = 0.1
    split_seed: int = 0
    target_length: Optional[int] = None  # None: the checkpoint's, else 1024
    normalizer: Optional[str] = "store"  # "store", "checkpoint", a preset name, or None
    sampler: str = "uniform"  # "uniform" or "weighted" (AST's 1000/(count+0.01) label weights)
    weights: Optional[str] = None  # a weight CSV (AST format) instead of computing them
    epoch_len: Optional[int] = None  # weighted: clips drawn per epoch without replacement (AS-2M: 200000)
    crop: str = "random"  # training crop; evaluation always takes the first target_length frames
    batch_size: int = 48
    eval_batch_size: int = 64
    num_workers: int = 2


@dataclass
class FtModelConfig:
    init: str = "pretrained"  # "pretrained" (checkpoint) or "random" (preset, the baseline)
    checkpoint: Optional[str] = None
    preset: Optional[str] = None
    which: Optional[str] = None  # student / teacher encoder of an objective checkpoint
    pooling: Optional[str] = None  # cls | mean | cls_dist_mean; None: cls if the encoder has one
    head: Optional[str] = None  # ln_linear | linear | bn_linear
    head_init_std: float = 0.02
    drop_path: float = 0.0
    strip_final_norm: bool = False


@dataclass
class FtOptimConfig:
    optimizer: str = "adamw"
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.05
    layer_decay: Optional[float] = None
    # "mae": every non-block parameter before the blocks is layer 0 (MAE/BEiT lr_decay.py);
    # "eat": data2vec 2.0's quirk, only blocks decay, everything else keeps scale 1.
    layer_decay_style: str = "mae"
    schedule: str = "cosine"  # cosine | linear | constant | step (SSAST/AST's MultiStepLR)
    warmup: float = 0.0  # < 1: fraction of all steps; >= 1: steps
    warmup_init_lr: float = 0.0
    min_lr: float = 0.0
    # schedule "step": lr × step_gamma at epochs step_start, step_start + step_every, ...
    step_start: int = 0
    step_every: int = 1
    step_gamma: float = 1.0
    clip_grad: Optional[float] = None


@dataclass
class AugmentConfig:
    mixup: float = 0.0  # probability (batch mode: of mixing the batch; elem: per clip)
    mixup_alpha: float = 0.8
    mixup_mode: str = "batch"
    freqm: int = 0
    timem: int = 0
    specaug_ratio: Optional[float] = None  # EAT: freqm = n_mels·r, timem = target_length·r (if freqm/timem are 0)
    specaug_value: str = "zero"  # "zero" (EAT, normalised 0) or "pad" (AST: masked log-mel = 0)
    roll: bool = False
    label_smoothing: float = 0.0


@dataclass
class FinetuneConfig:
    mode: str = "finetune"
    model: FtModelConfig = field(default_factory=FtModelConfig)
    data: FtDataConfig = field(default_factory=FtDataConfig)
    optim: FtOptimConfig = field(default_factory=FtOptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 30
    loss: str = "auto"  # ce for single-label data, bce for multi-label
    bce_reduction: str = "mean"  # "mean" (AST) or "label_sum" (EAT: sum / number of positive labels)
    select_on_test: bool = False
    select_metric: str = "auto"  # acc (single label) or mAP (multi label)
    wa_start: Optional[int] = None  # weight averaging over epochs wa_start..wa_end (1-based, inclusive)
    wa_end: Optional[int] = None
    ensemble: bool = True  # mean of every epoch's predictions (AST's checkpoint ensemble)
    out: str = "exp/finetune"
    seed: int = 1
    precision: str = "auto"
    device: str = "auto"
    progress: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: Optional[str] = None) -> "FinetuneConfig":
        """``d`` over the defaults of ``source`` (see :func:`family_defaults`) for ``d["mode"]``."""
        d = dict(d)
        _check_keys(cls, d, "")
        mode = d.get("mode", cls.mode)
        base = family_defaults(source or "", mode)
        sections = {}
        for name, kind in (("model", FtModelConfig), ("data", FtDataConfig), ("optim", FtOptimConfig),
                           ("augment", AugmentConfig)):
            values = {**base.get(name, {}), **dict(d.pop(name, None) or {})}
            _check_keys(kind, values, name + ".")
            sections[name] = kind(**values)
        cfg = cls(**d, **sections)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.bce_reduction not in ("mean", "label_sum"):
            raise ValueError(f"bce_reduction must be mean or label_sum, got {self.bce_reduction!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.epochs <= 0:
            raise ValueError("epochs must be positive")
        m, d, o = self.model, self.data, self.optim
        if m.init not in ("pretrained", "random"):
            raise ValueError(f"model.init must be pretrained or random, got {m.init!r}")
        if m.init == "pretrained" and not m.checkpoint:
            raise ValueError("set model.checkpoint (--checkpoint CKPT), or --init random --model PRESET")
        if m.init == "random" and not m.preset:
            raise ValueError("random init needs model.preset (--model PRESET)")
        if bool(d.store) == bool(d.train):
            raise ValueError("set either data.store (+ data.manifest, split_column, test_values) or data.train + data.test")
        if d.store and not (d.manifest and d.split_column and d.test_values):
            raise ValueError("data.store needs data.manifest, data.split_column and data.test_values to find the test clips")
        if d.train and not d.test:
            raise ValueError("data.train needs data.test (the store of the test clips)")
        if not 0.0 <= d.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
        if d.sampler not in ("uniform", "weighted"):
            raise ValueError(f"data.sampler must be uniform or weighted, got {d.sampler!r}")
        if o.layer_decay_style not in ("mae", "eat"):
            raise ValueError(f"optim.layer_decay_style must be mae or eat, got {o.layer_decay_style!r}")
        if self.augment.specaug_value not in ("zero", "pad"):
            raise ValueError(f"augment.specaug_value must be zero or pad, got {self.augment.specaug_value!r}")
        if (self.wa_start is None) != (self.wa_end is None):
            raise ValueError("set both wa_start and wa_end (1-based epochs, inclusive) or neither")
        if self.wa_start is not None and not 1 <= self.wa_start <= self.wa_end <= self.epochs:
            raise ValueError(f"need 1 <= wa_start <= wa_end <= epochs, got {self.wa_start}, {self.wa_end}, {self.epochs}")


def resolve_source(d: Mapping[str, Any]) -> str:
    """The family whose defaults apply: from the checkpoint (pretrained) or the preset (random)."""
    model = d.get("model") or {}
    if model.get("init", "pretrained") == "random":
        return str(model.get("preset") or "")
    path = model.get("checkpoint")
    if not path:
        return ""
    return source_of(load_checkpoint(path))


def load_config(path: Optional[Union[str, Path]], overrides: Sequence[str] = (), **top: Any) -> FinetuneConfig:
    """YAML + ``--section.key value`` overrides + ``top`` (e.g. ``mode="linprobe"``)."""
    import yaml

    d: Dict[str, Any] = {}
    if path is not None:
        with open(path) as f:
            d = yaml.load(f, Loader=yaml_loader()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a fine-tuning config is a YAML mapping")
    d = apply_overrides(d, overrides)
    d.update({k: v for k, v in top.items() if v is not None})
    return FinetuneConfig.from_dict(d, resolve_source(d))


# ------------------------------------------------------------------------------------- data split
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
    from audiossl.data.manifest import read_manifest
    from audiossl.data.store import FbankStore

    if cfg.store:
        store = FbankStore(cfg.store)
        manifest = read_manifest(cfg.manifest, label_map=False)
        table = manifest.table
        if cfg.split_column not in table.columns:
            raise ValueError(f"{cfg.manifest}: no column {cfg.split_column!r} (columns: {list(table.columns)})")
        by_id = dict(zip(table["id"].astype(str), table[cfg.split_column].to_numpy()))
        missing = [i for i in store.ids[:5] if i not in by_id]
        if missing:
            raise ValueError(f"{cfg.store}: clips {missing} are not in {cfg.manifest}")
        values = np.array([by_id[i] for i in store.ids], dtype=object)
        test = _values_mask(values, cfg.test_values)
        train = _values_mask(values, cfg.train_values) if cfg.train_values else ~test
        train &= ~test
        if not test.any():
            raise ValueError(f"no clip of {cfg.store} has {cfg.split_column} in {cfg.test_values}")
        train_store = test_store = store
        train_rows, test_rows = np.flatnonzero(train), np.flatnonzero(test)
        desc: Dict[str, Any] = {"column": cfg.split_column, "test_values": list(cfg.test_values),
                                "train_values": list(cfg.train_values)}
    else:
        train_store, test_store = FbankStore(cfg.train), FbankStore(cfg.test)
        _check_same_classes(train_store, test_store)
        train_rows, test_rows = np.arange(len(train_store)), np.arange(len(test_store))
        desc = {"train": str(cfg.train), "test": str(cfg.test)}
    if train_store.labels is None:
        raise ValueError(f"{train_store.path}: the store has no labels (precompute it from a labelled manifest)")
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


# ------------------------------------------------------------------------------------- helpers
def finetune_param_groups(model: Classifier, o: FtOptimConfig, params: Optional[Sequence[nn.Parameter]] = None
                          ) -> List[Dict[str, Any]]:
    """:func:`audiossl.train.optim.param_groups` with layer decay; the ``"eat"`` style gives every
    parameter that is not in a block (patch conv, cls token, input norm, fc_norm, head) scale 1."""
    depth = model.encoder.config.depth
    groups = param_groups(model, o.weight_decay, params=params, layer_decay=o.layer_decay,
                          depth=depth if o.layer_decay is not None else None)
    if o.layer_decay is None or o.layer_decay_style == "mae":
        return groups
    merged: Dict[Tuple[float, float], Dict[str, Any]] = {}
    for g in groups:
        for name, p in zip(g["names"], g["params"]):
            lid = layer_id(name, depth)
            scale = g["lr_scale"] if 1 <= lid <= depth else 1.0
            key = (g["weight_decay"], scale)
            ng = merged.setdefault(key, {"params": [], "names": [], "weight_decay": key[0], "lr_scale": scale})
            ng["params"].append(p)
            ng["names"].append(name)
    return list(merged.values())


def _json_clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    return x


def _metrics(scores: Tensor, targets: Tensor) -> Dict[str, float]:
    from audiossl.train.metrics import classification_metrics

    return classification_metrics(scores, targets)


# ------------------------------------------------------------------------------------- engine
class Finetuner:
    """Builds the classifier, the split and the optimiser from a :class:`FinetuneConfig`."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        from audiossl.data.dataset import FbankDataset

        self.cfg = cfg
        self.device = _device(cfg.device, dist_utils.DistInfo())
        self.amp_dtype = _autocast_dtype(cfg.precision, self.device)
        self.out = Path(cfg.out)
        self.split = split_data(cfg.data)
        sp = self.split
        if len(sp.train_rows) == 0:
            raise ValueError("no training clips left after the split")
        labels = np.asarray(sp.train_store.labels)
        self.num_classes = int(labels.shape[1])
        single = bool((labels[sp.train_rows].sum(axis=1) == 1).all())
        self.loss_kind = cfg.loss if cfg.loss != "auto" else ("ce" if single else "bce")
        self.select_metric = cfg.select_metric if cfg.select_metric != "auto" else ("acc" if self.loss_kind == "ce" else "mAP")

        self.ckpt: Optional[Dict[str, Any]] = None
        m = cfg.model
        overrides = {"drop_path": m.drop_path} if cfg.mode == "finetune" else {"drop_path": 0.0}
        if m.init == "pretrained":
            self.ckpt = load_checkpoint(m.checkpoint)
            self.source = source_of(self.ckpt)
            # The new head's init comes from the seed, not from whatever ran before in the process.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.model = classifier_from_checkpoint(
                    self.ckpt, num_classes=self.num_classes, pooling=m.pooling, head=m.head,
                    head_init_std=m.head_init_std, which=m.which, encoder_overrides=overrides,
                    strip_final_norm=m.strip_final_norm, path=m.checkpoint)
            if self.model.config.num_classes != self.num_classes:
                raise CheckpointError(m.checkpoint, f"has {self.model.config.num_classes} classes, the data {self.num_classes}")
        else:
            self.source = str(m.preset)
            self.model = classifier_from_preset(m.preset, self.num_classes, pooling=m.pooling, head=m.head or "ln_linear",
                                                head_init_std=m.head_init_std, encoder_overrides=overrides, seed=cfg.seed)
        self.target_length = int(cfg.data.target_length or (self.ckpt or {}).get("target_length") or 1024)
        self.model.fit_grid(self.target_length)
        self._check_front_end()
        self.model.to(self.device)

        norm: Any = cfg.data.normalizer
        if norm == "checkpoint":
            from audiossl.features import Normalizer

            if not (self.ckpt and self.ckpt.get("normalizer")):
                raise ValueError("data.normalizer: checkpoint, but the checkpoint stores no normalizer")
            norm = Normalizer.from_dict(self.ckpt["normalizer"])
        a = cfg.augment
        train_ls = a.label_smoothing if cfg.mode == "finetune" else 0.0
        self.train_set = FbankDataset(sp.train_store, self.target_length, crop=cfg.data.crop if cfg.mode == "finetune" else "start",
                                      normalizer=norm, label_smoothing=train_ls, indices=sp.train_rows, seed=cfg.seed)
        self.eval_sets = {
            "train": FbankDataset(sp.train_store, self.target_length, crop="start", normalizer=norm,
                                  indices=sp.train_rows, return_ids=True),
            "val": FbankDataset(sp.train_store, self.target_length, crop="start", normalizer=norm,
                                indices=sp.val_rows, return_ids=True) if len(sp.val_rows) else None,
            "test": FbankDataset(sp.test_store, self.target_length, crop="start", normalizer=norm,
                                 indices=sp.test_rows, return_ids=True),
        }
        self.normalizer = self.train_set.normalizer

        if cfg.mode == "linprobe":
            for p in self.model.encoder.parameters():
                p.requires_grad_(False)
            params = list(self.model.head.parameters())
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        self.groups = finetune_param_groups(self.model, cfg.optim, params=params)
        self.params = [p for g in self.groups for p in g["params"]]
        n_train = len(sp.train_rows)
        bs = cfg.data.batch_size
        if cfg.mode == "finetune" and cfg.data.sampler == "weighted" and cfg.data.epoch_len:
            n_train = int(cfg.data.epoch_len)
        self.drop_last = n_train >= bs
        self.steps_per_epoch = n_train // bs if self.drop_last else 1
        self.total_steps = self.steps_per_epoch * cfg.epochs
        o = cfg.optim
        warmup = int(round(o.warmup * self.total_steps)) if o.warmup < 1 else int(o.warmup)
        milestones = epoch_milestones(o.step_start, o.step_every, cfg.epochs, self.steps_per_epoch) \
            if o.schedule == "step" else ()
        self.schedule = Schedule(o.lr, self.total_steps, min(warmup, self.total_steps), o.schedule, o.min_lr,
                                 o.warmup_init_lr, milestones, o.step_gamma)
        self.optimizer = build_optimizer(self.groups, o.optimizer, lr=o.lr, betas=o.betas, eps=o.eps)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.weights = self._sample_weights() if cfg.data.sampler == "weighted" else None

        # state saved each epoch
        self.epoch = 0  # finished epochs
        self.step = 0
        self.best: Dict[str, Any] = {"value": None, "epoch": None, "metrics": None}
        self.wa_sum: Optional[Dict[str, Tensor]] = None
        self.wa_count = 0
        self.ens_sum: Dict[str, Optional[Tensor]] = {"val": None, "test": None}
        self.ens_count = 0
        self.features: Optional[Dict[str, Tuple[Tensor, Tensor]]] = None

    # -------------------------------------------------------------------------------- setup
    def _check_front_end(self) -> None:
        from audiossl.features import FbankConfig

        ck = (self.ckpt or {}).get("fbank")
        have = self.split.train_store.fbank_config
        if ck and have is not None:
            diff = FbankConfig.from_dict(ck).diff(have)
            if diff:
                logger.warning("the store's fbank differs from the checkpoint's front end: %s", diff)

    def _sample_weights(self) -> np.ndarray:
        from audiossl.data.dataset import balanced_sample_weights, read_weights_csv

        if self.cfg.data.weights:
            w = read_weights_csv(self.cfg.data.weights, expected=len(self.split.train_store))
            return w[self.split.train_rows]
        return balanced_sample_weights(self.train_set.label_matrix())

    def _sampler(self, epoch: int) -> Any:
        from audiossl.data.dataset import make_weighted_sampler

        if self.weights is None:
            sampler = dist_utils.ResumableSampler(len(self.train_set), seed=self.cfg.seed)
            sampler.set_position(epoch, 0)
            return sampler
        epoch_len = self.cfg.data.epoch_len
        g = _seed_generator(self.cfg.seed, 0, 2000 + epoch)
        # AST draws len(train) clips with replacement; AudioMAE/EAT's AS-2M draws epoch_len without.
        return make_weighted_sampler(self.weights, num_samples=epoch_len or len(self.weights), generator=g,
                                     replacement=epoch_len is None)

    # -------------------------------------------------------------------------------- batches
    def _autocast(self):
        import contextlib

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _augment(self, x: Tensor, y: Tensor, lengths: Tensor, g: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Roll (time), mixup, SpecAugment on a normalised ``(B, T, F)`` batch, EAT's order."""
        from audiossl.data.dataset import mixup, random_roll, spec_augment

        a = self.cfg.augment
        if a.roll:
            x = random_roll(x, g, lengths)
        if a.mixup > 0:
            x, y, _, _ = mixup(x, y, g, a.mixup_alpha, a.mixup, a.mixup_mode)
        freqm, timem = a.freqm, a.timem
        if a.specaug_ratio is not None and not (freqm or timem):
            freqm, timem = int(x.shape[2] * a.specaug_ratio), int(x.shape[1] * a.specaug_ratio)
        if freqm or timem:
            value: Any = 0.0 if a.specaug_value == "zero" else self.train_set.pad_value
            x = spec_augment(x, freqm, timem, g, value if not isinstance(value, Tensor) else value.to(x.device))
        return x, y

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        logits = logits.float()
        if self.loss_kind == "ce":
            return -(y * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        if self.cfg.bce_reduction == "label_sum":
            return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / y.sum().clamp(min=1.0)
        return F.binary_cross_entropy_with_logits(logits, y)

    def _scores(self, logits: Tensor) -> Tensor:
        """Softmax for single-label models, sigmoid for multi-label: what ensembles average."""
        logits = logits.float()
        return logits.softmax(dim=-1) if self.loss_kind == "ce" else logits.sigmoid()

    def _loader(self, dataset: Any, batch_size: int, sampler: Any = None, generator_stream: int = 0) -> Any:
        from torch.utils.data import DataLoader

        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                          drop_last=sampler is not None and self.drop_last, num_workers=self.cfg.data.num_workers,
                          collate_fn=dataset.collate_fn, pin_memory=self.device.type == "cuda",
                          generator=_seed_generator(self.cfg.seed, 0, 3000 + generator_stream))

    # -------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _embed(self, name: str) -> Tuple[Tensor, Tensor, List[str]]:
        """Pooled encoder outputs, targets and ids of one evaluation split, no augmentation."""
        ds = self.eval_sets[name]
        self.model.eval()
        feats, targets, ids = [], [], []
        for batch in self._loader(ds, self.cfg.data.eval_batch_size):
            x = batch["fbank"].to(self.device).unsqueeze(1)
            with self._autocast():
                feats.append(self.model.forward_features(x).float().cpu())
            targets.append(batch["labels"])
            ids.extend(batch["ids"])
        return torch.cat(feats), torch.cat(targets), ids

    @torch.no_grad()
    def predict(self, name: str, model: Optional[Classifier] = None) -> Tuple[Tensor, Tensor]:
        """``(scores, targets)`` of split ``name`` ("val" or "test")."""
        model = model or self.model
        model.eval()
        if self.features is not None:
            z, t = self.features[name]
            return self._scores(model.forward_head(z.to(self.device)).cpu()), t
        out, targets = [], []
        for batch in self._loader(self.eval_sets[name], self.cfg.data.eval_batch_size):
            x = batch["fbank"].to(self.device).unsqueeze(1)
            with self._autocast():
                out.append(self._scores(model(x)).cpu())
            targets.append(batch["labels"])
        return torch.cat(out), torch.cat(targets)

    def _prepare_linprobe(self) -> None:
        """Embed every clip once; standardise with the training embeddings' statistics."""
        logger.info("embedding %d train, %d val, %d test clips", len(self.split.train_rows), len(self.split.val_rows),
                    len(self.split.test_rows))
        self.features = {}
        z_train, t_train, _ = self._embed("train")
        self.features["train"] = (z_train, t_train)
        for name in ("val", "test"):
            if self.eval_sets[name] is not None:
                z, t, _ = self._embed(name)
                self.features[name] = (z, t)
        mean = z_train.mean(dim=0)
        std = z_train.std(dim=0, unbiased=False).clamp(min=1e-6)
        self.model.feature_mean.copy_(mean.to(self.device))
        self.model.feature_std.copy_(std.to(self.device))

    # -------------------------------------------------------------------------------- training
    def _seed_epoch(self, epoch: int) -> torch.Generator:
        # Drop-path and dropout use the global RNG: reseeding it per epoch makes a resumed
        # epoch draw what the uninterrupted run drew.
        torch.manual_seed(int(_seed_generator(self.cfg.seed, 0, 4000 + epoch).initial_seed()) % (2**63))
        return _seed_generator(self.cfg.seed, 0, 1000 + epoch)

    def _batches(self, epoch: int):
        """Training batches ``(x (B, T, F), y, lengths)`` of one epoch."""
        if self.features is not None:
            z, y = self.features["train"]
            n = z.shape[0]
            bs = self.cfg.data.batch_size
            order = torch.randperm(n, generator=_seed_generator(self.cfg.seed, 0, 5000 + epoch))
            stop = (n // bs) * bs if self.drop_last else n
            for i in range(0, stop, bs):
                idx = order[i : i + bs]
                yield z[idx], y[idx], None
            return
        self.train_set.set_epoch(epoch)
        for batch in self._loader(self.train_set, self.cfg.data.batch_size, self._sampler(epoch), epoch + 1):
            yield batch["fbank"], batch["labels"], batch["lengths"]

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, o = self.cfg, self.cfg.optim
        g = self._seed_epoch(epoch)
        self.model.train()
        if self.features is None and cfg.mode == "linprobe":
            raise TrainingError("linear probe features were not prepared")
        if cfg.mode == "linprobe":
            self.model.encoder.eval()
        total, n, lr = 0.0, 0, 0.0
        for x, y, lengths in self._batches(epoch):
            lr = self.schedule(min(self.step, self.total_steps - 1))
            set_lr(self.optimizer, lr)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self._autocast():
                if self.features is not None:
                    logits = self.model.forward_head(x)
                else:
                    x, y = self._augment(x, y, lengths, g)
                    logits = self.model(x.unsqueeze(1))
            loss = self._loss(logits, y)
            if not bool(torch.isfinite(loss.detach())):
                raise TrainingError(f"non-finite loss at epoch {epoch + 1} step {self.step + 1} (lr {lr:.3g}); "
                                    f"the last good state is {self.out / 'checkpoint.pt'}: lower optim.lr or use fp32, then --resume")
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if o.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(self.params, o.clip_grad)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.step += 1
            total += float(loss.detach())
            n += 1
        return {"loss": total / max(n, 1), "lr": lr}

    def _select_value(self, metrics: Mapping[str, float]) -> float:
        v = metrics.get(self.select_metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return -math.inf
        return float(v)

    def _selection_split(self) -> Optional[str]:
        if self.cfg.select_on_test:
            return "test"
        return "val" if self.eval_sets["val"] is not None else None

    def _end_epoch(self, epoch: int, logs: Dict[str, float], seconds: float) -> Dict[str, Any]:
        record: Dict[str, Any] = {"epoch": epoch + 1, "step": self.step, **logs, "seconds": seconds}
        preds = {}
        for name in ("val", "test"):
            if self.eval_sets[name] is None:
                continue
            scores, targets = self.predict(name)
            preds[name] = (scores, targets)
            record[name] = _metrics(scores, targets)
            if self.cfg.ensemble:
                prev = self.ens_sum[name]
                self.ens_sum[name] = scores.double() if prev is None else prev + scores.double()
        if self.cfg.ensemble:
            self.ens_count += 1
        sel = self._selection_split()
        value = self._select_value(record[sel]) if sel is not None else float(epoch)
        if self.best["value"] is None or value > self.best["value"]:
            self.best = {"value": value, "epoch": epoch + 1,
                         "metrics": {"val": record.get("val"), "test": record.get("test")}}
            save_checkpoint(self.out / "best.pt", self._payload(None))
        if self.cfg.wa_start is not None and self.cfg.wa_start <= epoch + 1 <= self.cfg.wa_end:
            sd = {k: v.detach().double().cpu() for k, v in self.model.state_dict().items() if v.is_floating_point()}
            self.wa_sum = sd if self.wa_sum is None else {k: self.wa_sum[k] + sd[k] for k in sd}
            self.wa_count += 1
        return record

    # -------------------------------------------------------------------------------- saving
    def _payload(self, train: Optional[Dict[str, Any]], state_dict: Optional[Mapping[str, Tensor]] = None) -> Dict[str, Any]:
        fb = self.split.train_store.fbank_config
        norm = self.normalizer
        return native_payload(
            self.model, family="classifier", fbank=None if fb is None else fb.to_dict(),
            normalizer=norm.to_dict() if hasattr(norm, "to_dict") else None, target_length=self.target_length,
            meta={"task": self.cfg.mode, "init": self.cfg.model.init, "source_checkpoint": self.cfg.model.checkpoint,
                  "epoch": self.epoch, "labels": self._label_names()},
            train=train, state_dict=state_dict)

    def _label_names(self) -> Optional[List[str]]:
        lm = self.split.train_store.label_map
        return None if lm is None else [str(x) for x in lm["mid"]]

    def save(self) -> Path:
        train = {
            "config": self.cfg.to_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch, "step": self.step, "best": self.best,
            "wa_sum": self.wa_sum, "wa_count": self.wa_count,
            "ens_sum": self.ens_sum, "ens_count": self.ens_count,
        }
        return save_checkpoint(self.out / "checkpoint.pt", self._payload(train))

    def resume(self) -> bool:
        """Continue after the last finished epoch in ``out``; False (fresh start) if none."""
        path = self.out / "checkpoint.pt"
        if not path.is_file():
            logger.info("no checkpoint in %s: starting from scratch", self.out)
            return False
        ckpt = load_checkpoint(path)
        train = ckpt.get("train")
        if not train:
            raise CheckpointError(path, "has no training state to resume from")
        old = train["config"]
        now = self.cfg.to_dict()
        for key in ("mode", "model", "data", "seed"):
            if old.get(key) != now.get(key):
                raise TrainingError(f"{path}: cannot resume with a different {key} ({old.get(key)!r} then, {now.get(key)!r} now)")
        from audiossl.train.checkpoint import load_state_dict

        load_state_dict(self.model, ckpt["model"], path=path)
        self.optimizer.load_state_dict(train["optimizer"])
        if self.scaler is not None and train.get("scaler"):
            self.scaler.load_state_dict(train["scaler"])
        self.epoch, self.step, self.best = int(train["epoch"]), int(train["step"]), dict(train["best"])
        self.wa_sum, self.wa_count = train.get("wa_sum"), int(train.get("wa_count", 0))
        self.ens_sum, self.ens_count = dict(train.get("ens_sum") or {}), int(train.get("ens_count", 0))
        metrics = self.out / "metrics.jsonl"
        if metrics.exists():
            keep = [ln for ln in metrics.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= self.epoch]
            _write_atomic(metrics, "".join(ln + "\n" for ln in keep))
        logger.info("resumed from %s after epoch %d", path, self.epoch)
        return True

    # -------------------------------------------------------------------------------- loop
    def run(self) -> Dict[str, Any]:
        import yaml
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if cfg.mode == "linprobe":
            self._prepare_linprobe()
        metrics_path = self.out / "metrics.jsonl"
        bar = tqdm(total=cfg.epochs, initial=self.epoch, disable=not cfg.progress, desc=f"{cfg.mode} {self.source}",
                   dynamic_ncols=True)
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                logs = self.train_epoch(self.epoch)
                self.epoch += 1
                record = self._end_epoch(self.epoch - 1, logs, time.perf_counter() - t0)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(_json_clean(record)) + "\n")
                self.save()
                bar.update(1)
                shown = {k: f"{record[k][self.select_metric]:.4g}" for k in ("val", "test") if k in record}
                bar.set_postfix({"loss": f"{logs['loss']:.4g}", **shown})
        finally:
            bar.close()
        return self.finish()

    def finish(self) -> Dict[str, Any]:
        """Write ``model.pt`` (the selected model), the extra rows and ``results.json``."""
        import shutil

        from audiossl.train.checkpoint import load_state_dict

        # best.pt goes only after results.json is written: a run killed in between resumes here
        # and finds the selected model in best.pt, or in model.pt once that copy is complete.
        src = self.out / "best.pt"
        if not src.exists():
            src = self.out / "model.pt"
        best = load_checkpoint(src)
        if src.name == "best.pt":
            shutil.copyfile(src, self.out / "model.pt.partial")
            Path(self.out / "model.pt.partial").replace(self.out / "model.pt")
        extra = []
        if self.wa_sum is not None and self.wa_count:
            avg = copy.deepcopy(self.model)
            state = dict(best["model"])
            state.update({k: (v / self.wa_count).to(state[k].dtype) for k, v in self.wa_sum.items()})
            load_state_dict(avg, state)
            avg.to(self.device)
            metrics = {n: _metrics(*self.predict(n, avg)) if self.eval_sets[n] is not None else None for n in ("val", "test")}
            extra.append({"name": "weight_average", "epochs": [self.cfg.wa_start, self.cfg.wa_end], "metrics": metrics})
            save_checkpoint(self.out / "model_wa.pt", self._payload(None, state_dict=avg.state_dict()))
        if self.cfg.ensemble and self.ens_count:
            metrics = {}
            for n in ("val", "test"):
                if self.ens_sum.get(n) is None:
                    metrics[n] = None
                    continue
                metrics[n] = _metrics(self.ens_sum[n] / self.ens_count, self._targets(n))
            extra.append({"name": "ensemble", "epochs": [1, self.ens_count], "metrics": metrics})
        test_ids = [str(i) for i in np.asarray(self.split.test_store.ids)[self.split.test_rows]]
        _write_atomic(self.out / "test_clips.txt", "".join(i + "\n" for i in test_ids))
        sel = self._selection_split()
        results = {
            "task": self.cfg.mode,
            "init": self.cfg.model.init,
            "checkpoint": self.cfg.model.checkpoint if self.cfg.model.init == "pretrained" else None,
            "model": self.cfg.model.preset if self.cfg.model.init == "random" else (self.source or "unknown"),
            "source": self.source,
            "split": self.split.description,
            "selected_on": {"test": SELECTED_ON_TEST, "val": "val", None: "last"}[sel],
            "selected_epoch": self.best["epoch"],
            "select_metric": self.select_metric,
            "loss": self.loss_kind,
            "metrics": self.best["metrics"],
            "extra": extra,
            "num_train_clips": int(len(self.split.train_rows)),
            "num_val_clips": int(len(self.split.val_rows)),
            "num_test_clips": len(test_ids),
            "test_clips": "test_clips.txt",
            "epochs": self.cfg.epochs,
            "steps": self.step,
        }
        results = _json_clean(results)
        _write_atomic(self.out / "results.json", json.dumps(results, indent=2) + "\n")
        (self.out / "best.pt").unlink(missing_ok=True)
        return results

    def _targets(self, name: str) -> Tensor:
        ds = self.eval_sets[name]
        return torch.as_tensor(ds.label_matrix().astype(np.float32))


def finetune(cfg: FinetuneConfig, *, resume: bool = False) -> Dict[str, Any]:
    """Run ``cfg`` (either mode) and return the ``results.json`` dict."""
    trainer = Finetuner(cfg)
    if resume:
        trainer.resume()
    return trainer.run()
