"""Evaluating a classifier on a split: its scores, the pooled embeddings a linear probe trains on,
and the JSON form of the metric dicts (:func:`audiossl.train.metrics.classification_metrics`)
written to ``metrics.jsonl`` and ``results.json``.

Scores are the softmax of a single-label model's logits and the sigmoid of a multi-label one's:
what the metrics rank and what an ensemble averages. Evaluation takes no augmentation (the
loaders of :class:`~audiossl.train.finetune_data.FinetuneData` crop the first frames).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from audiossl.models.classifier import Classifier
from audiossl.train.loop import autocast


def class_scores(logits: Tensor, loss_kind: str) -> Tensor:
    """Softmax for single-label (``"ce"``) models, sigmoid for multi-label (``"bce"``) ones."""
    logits = logits.float()
    return logits.softmax(dim=-1) if loss_kind == "ce" else logits.sigmoid()


@torch.no_grad()
def predict(model: Classifier, batches: Iterable[Mapping[str, Any]], device: torch.device,
            amp_dtype: Optional[torch.dtype], loss_kind: str) -> Tuple[Tensor, Tensor]:
    """``(scores, targets)`` over a loader's batches, on the CPU."""
    model.eval()
    out, targets = [], []
    for batch in batches:
        x = batch["fbank"].to(device).unsqueeze(1)
        with autocast(device, amp_dtype):
            out.append(class_scores(model(x), loss_kind).cpu())
        targets.append(batch["labels"])
    return torch.cat(out), torch.cat(targets)


@torch.no_grad()
def predict_features(model: Classifier, z: Tensor, targets: Tensor, device: torch.device,
                     loss_kind: str) -> Tuple[Tensor, Tensor]:
    """``(scores, targets)`` of the head alone on cached embeddings ``z`` (the linear probe)."""
    model.eval()
    return class_scores(model.forward_head(z.to(device)).cpu(), loss_kind), targets


@torch.no_grad()
def embed(model: Classifier, batches: Iterable[Mapping[str, Any]], device: torch.device,
          amp_dtype: Optional[torch.dtype]) -> Tuple[Tensor, Tensor, List[str]]:
    """Pooled encoder outputs (float32, CPU), targets and ids over a loader's batches."""
    model.eval()
    feats, targets, ids = [], [], []
    for batch in batches:
        x = batch["fbank"].to(device).unsqueeze(1)
        with autocast(device, amp_dtype):
            feats.append(model.forward_features(x).float().cpu())
        targets.append(batch["labels"])
        ids.extend(batch["ids"])
    return torch.cat(feats), torch.cat(targets), ids


def json_clean(x: Any) -> Any:
    """``x`` with every non-finite float as None: JSON has no NaN, and a class without positives
    has no AP."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    return x
