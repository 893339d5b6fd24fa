"""Fine-tuning and linear-probe configuration: the dataclasses, the papers' defaults by the
encoder's source family, and reading a YAML + ``--section.key value`` overrides.

Defaults. :data:`FAMILY_FINETUNE` holds the papers' settings by the encoder's source family
(EAT's ESC-50 recipe, AudioMAE's layer decay 0.75 and global pool, AST/SSAST's mean token and
Adam), :data:`LINPROBE_DEFAULTS` the probe's; the YAML and ``--section.key value`` override both.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from audiossl.checkpoint import load_checkpoint
from audiossl.models.classifier import HEADS, POOLINGS, source_of
from audiossl.models.registry import preset_names
from audiossl.train.config import (
    ConfigError,
    build_section,
    check_choice,
    check_keys,
    check_optim,
    check_range,
    check_store_path,
    read_config,
    section,
)
from audiossl.train.loop import PRECISIONS
from audiossl.train.optim import OPTIMIZERS, SCHEDULES

MODES = ("finetune", "linprobe")
LOSSES = ("auto", "ce", "bce")

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
    # A checkpoint trained on another fbank front end than the stores' is an error; true: a warning.
    allow_front_end_mismatch: bool = False


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
        """``d`` over the defaults of ``source`` (see :func:`family_defaults`) for ``d["mode"]``;
        every wrong value is a :class:`~audiossl.train.config.ConfigError` naming its key."""
        d = dict(d)
        check_keys(cls, d, "")
        mode = d.get("mode", cls.mode)
        check_choice("mode", mode, MODES)
        base = family_defaults(source or "", mode)
        sections = {}
        for name, kind in (("model", FtModelConfig), ("data", FtDataConfig), ("optim", FtOptimConfig),
                           ("augment", AugmentConfig)):
            sections[name] = build_section(kind, {**base.get(name, {}), **section(d, name)}, name + ".")
            d.pop(name, None)
        cfg = build_section(cls, d, "", **sections)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from audiossl.data.dataset import CropMode
        from audiossl.features import NORM_PRESETS

        check_choice("mode", self.mode, MODES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("bce_reduction", self.bce_reduction, ("mean", "label_sum"))
        check_choice("select_metric", self.select_metric, ("auto", "acc", "mAP"))
        check_choice("precision", self.precision, PRECISIONS)
        check_range("epochs", self.epochs, at_least=1)
        m, d, o, a = self.model, self.data, self.optim, self.augment
        check_choice("model.init", m.init, ("pretrained", "random"))
        if m.init == "pretrained" and not m.checkpoint:
            raise ConfigError("model.checkpoint", "not set: give --checkpoint CKPT, or --init random --model PRESET")
        if m.init == "random" and not m.preset:
            raise ConfigError("model.preset", "not set: random init needs a preset (--model PRESET)")
        if m.init == "random" and m.preset not in preset_names():
            raise ConfigError("model.preset", f"unknown preset {m.preset!r}; choose from {', '.join(preset_names())}")
        check_choice("model.pooling", m.pooling, (*POOLINGS, None))
        check_choice("model.head", m.head, (*HEADS, None))
        check_range("model.drop_path", m.drop_path, at_least=0, below=1)
        check_range("model.head_init_std", m.head_init_std, at_least=0)
        if bool(d.store) == bool(d.train):
            raise ConfigError("data.store", "set either data.store (+ data.manifest, split_column, test_values) "
                                            "or data.train + data.test")
        if d.store and not (d.manifest and d.split_column and d.test_values):
            raise ConfigError("data.store", "needs data.manifest, data.split_column and data.test_values to find "
                                            "the test clips")
        if d.train and not d.test:
            raise ConfigError("data.test", "not set: data.train needs data.test (the store of the test clips)")
        for key in ("store", "train", "test"):
            check_store_path("data." + key, getattr(d, key))
        check_range("data.val_fraction", d.val_fraction, at_least=0, below=1)
        check_choice("data.sampler", d.sampler, ("uniform", "weighted"))
        check_choice("data.crop", d.crop, typing.get_args(CropMode))
        check_choice("data.normalizer", d.normalizer, ["store", "checkpoint", None, *NORM_PRESETS])
        check_range("data.target_length", d.target_length, at_least=1)
        check_range("data.epoch_len", d.epoch_len, at_least=1)
        for key in ("batch_size", "eval_batch_size"):
            check_range("data." + key, getattr(d, key), at_least=1)
        check_range("data.num_workers", d.num_workers, at_least=0)
        check_optim(o, OPTIMIZERS, SCHEDULES)
        check_choice("optim.layer_decay_style", o.layer_decay_style, ("mae", "eat"))
        check_range("optim.layer_decay", o.layer_decay, positive=True)
        check_range("optim.step_start", o.step_start, at_least=0)
        check_range("optim.step_every", o.step_every, at_least=1)
        check_range("optim.step_gamma", o.step_gamma, positive=True)
        check_choice("augment.mixup_mode", a.mixup_mode, ("batch", "elem"))
        check_choice("augment.specaug_value", a.specaug_value, ("zero", "pad"))
        check_range("augment.mixup", a.mixup, at_least=0)
        check_range("augment.mixup_alpha", a.mixup_alpha, positive=True)
        check_range("augment.label_smoothing", a.label_smoothing, at_least=0, below=1)
        for key in ("freqm", "timem", "specaug_ratio"):
            check_range("augment." + key, getattr(a, key), at_least=0)
        if (self.wa_start is None) != (self.wa_end is None):
            raise ConfigError("wa_start", "set both wa_start and wa_end (1-based epochs, inclusive) or neither")
        if self.wa_start is not None and not 1 <= self.wa_start <= self.wa_end <= self.epochs:
            raise ConfigError("wa_start", f"need 1 <= wa_start <= wa_end <= epochs, got {self.wa_start}, "
                                          f"{self.wa_end}, {self.epochs}")


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
    d = read_config(path, overrides, "a fine-tuning config")
    d.update({k: v for k, v in top.items() if v is not None})
    return FinetuneConfig.from_dict(d, resolve_source(d))

