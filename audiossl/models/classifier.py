"""A clip classifier: the shared :class:`~audiossl.models.encoder.Encoder` plus a pooled head.

The head is named by ``head_kind = f"{pooling}_{head}"``, the names the importers in
``audiossl/convert/`` write into ``meta["head_kind"]`` of official fine-tuned checkpoints:

================================  =====================================================  ==========
head_kind                         computation on the encoder output ``x`` (prefix first)  upstream
================================  =====================================================  ==========
``cls_ln_linear``                 ``head(fc_norm(x[:, 0]))``                              EAT
``cls_linear``                    ``head(x[:, 0])`` (cls after the encoder's final norm)  MAE --cls_token
``mean_ln_linear``                ``head(fc_norm(x[:, P:].mean(1)))``                     AudioMAE, SSAST ft_avgtok, MAE-AST
``mean_linear``                   ``head(x[:, P:].mean(1))``                              EAT MEAN_POOLING w/o norm
``cls_dist_mean_ln_linear``       ``head(fc_norm((x[:, 0] + x[:, 1]) / 2))``              AST, SSAST ft_cls
``*_bn_linear``                   ``head(bn((pool(x) - mean) / std))``                    linear probe
================================  =====================================================  ==========

``fc_norm`` is a LayerNorm with ``head_norm_eps`` (1e-6 fairseq/timm, 1e-5 for AST's
``nn.LayerNorm``). The linear-probe head standardises the frozen features with the training set's
mean and std (EVAR's StandardScaler, stored as buffers so the probe travels in one checkpoint)
and then applies MAE's ``BatchNorm1d(affine=False, eps=1e-6)`` before the Linear: the non-affine
BN is the "feature magnitude calibration" without which MAE-style probes come out low.

A classifier saves as a native checkpoint of family ``"classifier"``;
:func:`audiossl.models.downstream.classifier_from_checkpoint` also builds one from any other native
checkpoint (it needs the registry of every family, which itself lists this module).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from audiossl.models.encoder import Encoder, EncoderConfig

logger = logging.getLogger(__name__)

__all__ = [
    "HEADS",
    "POOLINGS",
    "Classifier",
    "ClassifierConfig",
    "source_of",
    "split_head_kind",
]

POOLINGS = ("cls", "mean", "cls_dist_mean")
HEADS = ("ln_linear", "linear", "bn_linear")


def split_head_kind(kind: str) -> Tuple[str, str]:
    """``"cls_dist_mean_ln_linear"`` → ``("cls_dist_mean", "ln_linear")``."""
    for head in sorted(HEADS, key=len, reverse=True):
        if kind.endswith("_" + head):
            pooling = kind[: -len(head) - 1]
            if pooling in POOLINGS:
                return pooling, head
    raise ValueError(f"unknown head kind {kind!r}; expected <pooling>_<head> with pooling in {POOLINGS}, head in {HEADS}")


@dataclass
class ClassifierConfig:
    """What builds a :class:`Classifier`. ``source`` names the family the encoder came from
    (``eat``, ``audiomae``, ``ssast``, ...), which picks the fine-tuning defaults."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_classes: int = 2
    pooling: str = "cls"
    head: str = "ln_linear"
    head_norm_eps: float = 1e-6
    # Trunc-normal std of the Linear: 0.02 (EAT/timm), 2e-5 (MAE/AudioMAE fine-tuning), 0.01 (MAE probe).
    head_init_std: float = 0.02
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        prefix = self.encoder.num_prefix_tokens
        if self.pooling == "cls" and prefix < 1:
            raise ValueError("cls pooling needs an encoder with a cls token (MAE-AST and I-JEPA have none: use mean)")
        if self.pooling == "cls_dist_mean" and prefix != 2:
            raise ValueError("cls_dist_mean pooling needs an encoder with cls and dist tokens (SSAST/AST)")

    @property
    def head_kind(self) -> str:
        return f"{self.pooling}_{self.head}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "encoder": self.encoder.to_dict(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "head": self.head,
            "head_norm_eps": self.head_norm_eps,
            "head_init_std": self.head_init_std,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClassifierConfig":
        known = {"encoder", "num_classes", "pooling", "head", "head_norm_eps", "head_init_std", "source"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ClassifierConfig fields: {unknown}")
        return cls(**dict(d))


class Classifier(nn.Module):
    """``logits = head(pool(encoder(x)))`` on ``(B, 1, T, F)`` spectrograms."""

    def __init__(self, config: ClassifierConfig, encoder: Optional[Encoder] = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else Encoder(config.encoder)
        D = self.encoder.config.embed_dim
        if config.head == "ln_linear":
            self.fc_norm = nn.LayerNorm(D, eps=config.head_norm_eps)
        elif config.head == "bn_linear":
            self.register_buffer("feature_mean", torch.zeros(D))
            self.register_buffer("feature_std", torch.ones(D))
            self.bn = nn.BatchNorm1d(D, affine=False, eps=1e-6)
        self.head = nn.Linear(D, config.num_classes)
        self.reset_head()

    @torch.no_grad()
    def reset_head(self) -> None:
        nn.init.trunc_normal_(self.head.weight, std=self.config.head_init_std)
        nn.init.zeros_(self.head.bias)
        if hasattr(self, "fc_norm"):
            self.fc_norm.reset_parameters()

    @property
    def embed_dim(self) -> int:
        return self.encoder.config.embed_dim

    def pool(self, x: Tensor) -> Tensor:
        """``(B, P + N, D)`` encoder output → ``(B, D)`` clip embedding."""
        pooling, prefix = self.config.pooling, self.encoder.num_prefix
        if pooling == "cls":
            return x[:, 0]
        if pooling == "cls_dist_mean":
            return (x[:, 0] + x[:, 1]) / 2
        return x[:, prefix:].mean(dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled embedding the head reads (what a linear probe caches)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.pool(self.encoder(x).x)

    def forward_head(self, z: Tensor) -> Tensor:
        if self.config.head == "ln_linear":
            z = self.fc_norm(z)
        elif self.config.head == "bn_linear":
            z = self.bn((z - self.feature_mean) / self.feature_std)
        return self.head(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set:
        """timm's rule (cls/dist tokens and positions undecayed), except for EAT, whose
        fine-tuning (EAT_audio_classification.py) exempts only 1-D parameters and biases: its 3-D
        cls token is decayed, as in its pretraining."""
        if self.config.source.startswith("eat"):
            return set()
        return {"encoder." + n for n in self.encoder.no_weight_decay()}

    def fit_grid(self, target_length: int) -> None:
        """A learned positional table (SSAST/AST) is re-gridded for this input length with the
        SSAST rule (centre-crop shorter, bilinear longer); fixed tables follow any input."""
        enc = self.encoder
        if enc.config.pos_embed != "learned":
            return
        grid = tuple(enc.grid_shape(target_length))
        if grid != tuple(enc.config.pos_grid):
            logger.info("re-gridding the learned positions %s → %s for %d frames", enc.config.pos_grid, grid, target_length)
            enc.resize_pos_embed(grid)
            self.config.encoder = EncoderConfig.from_dict(enc.config.to_dict())


def source_of(ckpt: Mapping[str, Any]) -> str:
    """The upstream family a native checkpoint's encoder comes from, for fine-tuning defaults:
    the classifier's recorded source, the pretraining preset, the importer's source, or the family."""
    meta = ckpt.get("meta") or {}
    if ckpt.get("family") == "classifier":
        return str((ckpt.get("config") or {}).get("source") or "")
    for key in ("preset", "source"):
        if meta.get(key):
            return str(meta[key])
    enc = (ckpt.get("config") or {}).get("encoder") or ckpt.get("config") or {}
    if ckpt.get("family") == "mae" and isinstance(enc, Mapping) and enc.get("sincos_swap_axes"):
        return "audiomae"
    return str(ckpt.get("family") or "")
