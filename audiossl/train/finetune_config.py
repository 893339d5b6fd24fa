"""Fine-tuning and linear-probe configuration: the dataclasses, the papers' defaults by the
encoder's source family, and reading a YAML + ``--section.key value`` overrides.

Defaults. :data:`FAMILY_FINETUNE` holds the papers' settings by the encoder's source family
(EAT's ESC-50 recipe, AudioMAE's layer decay 0.75 and global pool, AST/SSAST's mean token and
Adam), :data:`LINPROBE_DEFAULTS` the probe's; the YAML and ``--section.key value`` override both.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from audiossl.checkpoint import load_checkpoint
from audiossl.models.classifier import source_of
from audiossl.train.config import check_keys, read_config
from audiossl.train.loop import PRECISIONS

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
        """``d`` over the defaults of ``source`` (see :func:`family_defaults`) for ``d["mode"]``."""
        d = dict(d)
        check_keys(cls, d, "")
        mode = d.get("mode", cls.mode)
        base = family_defaults(source or "", mode)
        sections = {}
        for name, kind in (("model", FtModelConfig), ("data", FtDataConfig), ("optim", FtOptimConfig),
                           ("augment", AugmentConfig)):
            values = {**base.get(name, {}), **dict(d.pop(name, None) or {})}
            check_keys(kind, values, name + ".")
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
    d = read_config(path, overrides, "a fine-tuning config")
    d.update({k: v for k, v in top.items() if v is not None})
    return FinetuneConfig.from_dict(d, resolve_source(d))

