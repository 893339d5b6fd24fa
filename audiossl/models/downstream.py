"""A downstream classifier built from what a user starts with: a native checkpoint (a pretraining
objective's downstream encoder, a bare encoder, an imported fine-tuned model whose head sits in
``meta["head"]``, or a saved classifier) or a preset's random initialisation.

This sits above :mod:`audiossl.models.registry` (it rebuilds any family), which in turn lists
:class:`~audiossl.models.classifier.Classifier` as a checkpoint family; keeping the two apart is
what keeps the models package free of an import circle.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import torch
from torch import nn

from audiossl.checkpoint import CheckpointError, load_state_dict
from audiossl.models.classifier import Classifier, ClassifierConfig, source_of, split_head_kind
from audiossl.models.encoder import Encoder, EncoderConfig
from audiossl.models.registry import build_config, encoder_from_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["classifier_from_checkpoint", "classifier_from_preset"]


def _strip_final_norm(encoder: Encoder) -> Encoder:
    """MAE/AudioMAE global-pool fine-tuning deletes the encoder's final norm (``fc_norm`` takes
    its place after pooling); the weights of the other layers are kept."""
    if not encoder.config.final_norm:
        return encoder
    new = Encoder(EncoderConfig.from_dict({**encoder.config.to_dict(), "final_norm": False}))
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("norm.")}
    new.load_state_dict(state, strict=True)
    return new


def _with_encoder_overrides(encoder: Encoder, overrides: Mapping[str, Any]) -> Encoder:
    """Rebuild ``encoder`` with config fields replaced (drop-path, dropouts) and its weights kept."""
    if not overrides:
        return encoder
    cfg = EncoderConfig.from_dict({**encoder.config.to_dict(), **dict(overrides)})
    new = Encoder(cfg)
    new.load_state_dict(encoder.state_dict(), strict=True)
    return new


def classifier_from_checkpoint(
    ckpt: Mapping[str, Any],
    *,
    num_classes: Optional[int] = None,
    pooling: Optional[str] = None,
    head: Optional[str] = None,
    head_init_std: float = 0.02,
    which: Optional[str] = None,
    encoder_overrides: Optional[Mapping[str, Any]] = None,
    strip_final_norm: bool = False,
    path: Any = None,
) -> Classifier:
    """A classifier from a loaded native checkpoint.

    * family ``"classifier"``: rebuilt as saved (its head kept when ``num_classes``, ``pooling``
      and ``head`` agree or are None; otherwise a new head).
    * an imported fine-tuned encoder with ``meta["head"]``: its head is loaded when the class
      count and kind agree.
    * anything else: a new head on the downstream encoder (``which``: student/teacher).

    ``strip_final_norm`` applies MAE's global-pool rule (final norm removed) to a new head.
    """
    source = source_of(ckpt)
    if ckpt.get("family") == "classifier":
        cfg = ClassifierConfig.from_dict(ckpt["config"])
        model = Classifier(cfg)
        load_state_dict(model, ckpt["model"], path=path)
        same = ((num_classes is None or num_classes == cfg.num_classes) and (pooling in (None, cfg.pooling))
                and (head in (None, cfg.head)))
        if same:
            if encoder_overrides:
                model.encoder = _with_encoder_overrides(model.encoder, encoder_overrides)
                model.config.encoder = model.encoder.config
            return model
        encoder = model.encoder
    else:
        encoder, _ = encoder_from_checkpoint(ckpt, which=which)
    meta = ckpt.get("meta") or {}
    stored = meta.get("head") if ckpt.get("family") != "classifier" else None
    stored_kind = meta.get("head_kind")
    if stored is not None and stored_kind:
        try:
            s_pool, s_head = split_head_kind(str(stored_kind))
        except ValueError as e:
            raise CheckpointError(path, f"meta head: {e}") from e
        if (num_classes in (None, int(meta.get("num_classes", -1)))) and pooling in (None, s_pool) and head in (None, s_head):
            encoder = _with_encoder_overrides(encoder, encoder_overrides or {})
            cfg = ClassifierConfig(encoder.config, int(meta["num_classes"]), s_pool, s_head,
                                   float(meta.get("head_norm_eps", 1e-6)), head_init_std, source)
            model = Classifier(cfg, encoder)
            load_state_dict(_HeadView(model), {k: torch.as_tensor(v) for k, v in stored.items()}, path=path,
                            what="classifier head")
            return model
        logger.info("%s: the stored %s head (%s classes) is replaced by a new one", path or "checkpoint",
                    stored_kind, meta.get("num_classes"))
    if num_classes is None:
        raise CheckpointError(path, "has no classifier head: pass num_classes")
    pooling = pooling or ("cls" if encoder.num_prefix >= 1 else "mean")
    head = head or "ln_linear"
    if strip_final_norm:
        encoder = _strip_final_norm(encoder)
    encoder = _with_encoder_overrides(encoder, encoder_overrides or {})
    cfg = ClassifierConfig(encoder.config, num_classes, pooling, head, 1e-6, head_init_std, source)
    return Classifier(cfg, encoder)


class _HeadView(nn.Module):
    """The head parameters of a classifier under upstream names (``fc_norm.*``, ``head.*``), so
    a stored head loads strictly, every missing or extra key named."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.head = model.head
        if hasattr(model, "fc_norm"):
            self.fc_norm = model.fc_norm


def classifier_from_preset(
    preset: str,
    num_classes: int,
    *,
    pooling: Optional[str] = None,
    head: str = "ln_linear",
    head_init_std: float = 0.02,
    encoder_overrides: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
) -> Classifier:
    """The random-init baseline: the encoder of ``preset`` (e.g. ``eat_tiny``) with the family's
    own initialisation, drawn from ``seed``, and a new head."""
    enc_cfg = build_config(preset).encoder
    enc_cfg = EncoderConfig.from_dict({**enc_cfg.to_dict(), **dict(encoder_overrides or {})})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder(enc_cfg)
        pooling = pooling or ("cls" if encoder.num_prefix >= 1 else "mean")
        cfg = ClassifierConfig(enc_cfg, num_classes, pooling, head, 1e-6, head_init_std, preset)
        return Classifier(cfg, encoder)
