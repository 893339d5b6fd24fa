"""Optimisers and per-step schedules shared by pretraining and fine-tuning.

* :func:`param_groups`: weight decay off for biases, 1-D parameters (norms) and the names the
  model lists in ``no_weight_decay()`` (timm/MAE rule), optionally with layer-wise lr decay
  (BEiT/MAE ``lr_decay.py``: blocks get ``decay ** (depth - layer_id)``).
* :class:`Schedule`: linear warm-up from ``warmup_init_lr`` then cosine, linear (fairseq
  polynomial power 1), constant, or step decay (SSAST/AST's ``MultiStepLR``), evaluated per
  optimiser update from a pure function of the step, so a resumed run needs nothing but the step
  count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

SCHEDULES = ("cosine", "linear", "constant", "step")
OPTIMIZERS = ("adamw", "adam")


def _no_decay_names(model: nn.Module) -> set:
    """Names the model's own ``no_weight_decay()`` lists. Only the top level is asked: the
    objective decides for its parts (EAT decays the encoder's cls token, MAE does not)."""
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def layer_id(name: str, depth: int, encoder_prefix: str = "encoder.") -> int:
    """MAE/BEiT ``get_layer_id_for_vit`` on our names: tokenizer, prefix tokens and positions
    are layer 0, ``blocks.i`` is ``i + 1``, everything after the encoder (heads) ``depth + 1``."""
    if name.startswith(encoder_prefix):
        name = name[len(encoder_prefix):]
    if name.startswith(("cls_token", "dist_token", "pos_embed", "patch_embed", "norm_pre")):
        return 0
    m = re.match(r"blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    return depth + 1


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    params: Optional[Iterable[nn.Parameter]] = None,
    layer_decay: Optional[float] = None,
    depth: Optional[int] = None,
    encoder_prefix: str = "encoder.",
) -> List[Dict[str, Any]]:
    """Parameter groups with ``weight_decay`` (0 where excluded) and ``lr_scale`` (1, or the
    layer-wise decay). ``params`` limits the groups to those parameters (e.g. a frozen teacher or
    backbone is left out); by default every parameter that requires grad."""
    allowed = None if params is None else {id(p) for p in params}
    skip = _no_decay_names(model)
    groups: Dict[Tuple[float, float], Dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad or (allowed is not None and id(p) not in allowed):
            continue
        wd = 0.0 if (p.ndim <= 1 or name.endswith(".bias") or name in skip) else weight_decay
        scale = 1.0
        if layer_decay is not None:
            if depth is None:
                raise ValueError("layer_decay needs the encoder depth")
            scale = layer_decay ** (depth + 1 - layer_id(name, depth, encoder_prefix))
        key = (wd, scale)
        group = groups.setdefault(key, {"params": [], "names": [], "weight_decay": wd, "lr_scale": scale})
        group["params"].append(p)
        group["names"].append(name)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return list(groups.values())


def build_optimizer(
    groups: List[Dict[str, Any]], name: str = "adamw", *, lr: float, betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8, fused: Optional[bool] = None,
) -> torch.optim.Optimizer:
    """AdamW (decoupled decay: EAT/fairseq ``adam``, MAE, AudioMAE, I-JEPA, MAE-AST) or Adam
    (L2 decay in the gradient: SSAST/AST's ``torch.optim.Adam(weight_decay=...)``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    kwargs: Dict[str, Any] = {"lr": lr, "betas": tuple(betas), "eps": eps}
    if fused is not None:
        kwargs["fused"] = fused
    return cls(groups, **kwargs)


@dataclass(frozen=True)
class Schedule:
    """``lr(step)`` for optimiser update ``step`` (0-based): ``warmup_init_lr → peak`` linearly
    over ``warmup_steps`` (MAE: from 0; EAT fine-tuning: from ``min_lr``), then ``kind`` from
    ``peak`` to ``min_lr`` at ``total_steps``; ``"step"`` multiplies the peak by ``gamma`` at
    each of ``milestones`` (steps) instead."""

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"
    min_lr: float = 0.0
    warmup_init_lr: float = 0.0
    milestones: Tuple[int, ...] = ()
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_init_lr + (self.peak_lr - self.warmup_init_lr) * step / self.warmup_steps
        if self.kind == "constant":
            return self.peak_lr
        if self.kind == "step":
            return self.peak_lr * self.gamma ** sum(1 for m in self.milestones if m <= step)
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min((step - self.warmup_steps) / span, 1.0)
        if self.kind == "linear":
            return self.peak_lr + (self.min_lr - self.peak_lr) * t
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` to ``end`` over ``total_steps`` (I-JEPA's weight-decay ramp)."""
    t = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, weight_decay: Optional[float] = None) -> None:
    """Write ``lr × lr_scale`` into every group; ``weight_decay`` (a schedule's value) replaces
    the decay of the groups that have one."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        if weight_decay is not None and g["weight_decay"] > 0:
            g["weight_decay"] = weight_decay


def epoch_milestones(start: int, every: int, epochs: int, steps_per_epoch: int) -> Tuple[int, ...]:
    """SSAST/AST's ``MultiStepLR(milestones=range(start, 1000, every))``, stepped once per
    epoch, as optimiser-update milestones: epoch ``e`` (0-based) runs at ``gamma ** #{m <= e}``."""
    if start < 0 or every < 1:
        raise ValueError(f"need step_start >= 0 and step_every >= 1, got {start}, {every}")
    return tuple(e * steps_per_epoch for e in range(start, epochs, every))
