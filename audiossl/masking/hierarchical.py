"""Hierarchical (H-JEPA) masks: one multi-block problem per level, target scale growing by level.

There is no single upstream for H-JEPA; this project's design keeps it to the smallest thing
that is still useful. Level ``l`` of ``L`` is an ordinary :func:`multiblock_masks` draw whose
target blocks all have scale ``s_l``, with

* geometric progression: ``s_l = s_min * (s_max / s_min) ** (l / (L - 1))`` (equal *ratios*
  between levels, the natural choice when levels are meant to be octaves of context), or
* linear progression: ``s_l = s_min + (s_max - s_min) * l / (L - 1)``,

so level 0 predicts small, local targets and level ``L - 1`` large ones (V-JEPA's short- and
long-range generators are the ``L = 2`` case). Each level has its own context, the context
block minus that level's targets, exactly as in the single-level sampler; the levels are drawn
one after the other from the same generator and are otherwise independent. A level can use its
own number of targets (``npred`` per level), since many large blocks leave no context.

``mode="faithful"`` applies I-JEPA's ``min_keep`` to targets as well, so the smallest level on a
small grid (5 % of 14x14 is a 3x3 block) needs ``min_keep`` below its block size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import torch

from audiossl.masking.base import resolve_generator
from audiossl.masking.multiblock import (
    AspectUnits,
    Device,
    GeneratorLike,
    Mode,
    MultiBlockMasks,
    Range,
    multiblock_masks,
)

Progression = Literal["geometric", "linear"]


@dataclass
class HierarchicalMasks:
    """Per-level multi-block masks; ``scales[l]`` is the target scale of ``levels[l]``."""

    levels: list[MultiBlockMasks]
    scales: list[float]

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def to(self, device: Device) -> "HierarchicalMasks":
        return HierarchicalMasks([level.to(device) for level in self.levels], list(self.scales))


def level_scales(
    num_levels: int, scale_min: float, scale_max: float, progression: Progression = "geometric"
) -> list[float]:
    """Target scale of each level, from ``scale_min`` (level 0) to ``scale_max`` (last level)."""
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if not 0.0 < scale_min <= scale_max <= 1.0:
        raise ValueError(f"need 0 < scale_min <= scale_max <= 1, got {scale_min}, {scale_max}")
    if num_levels == 1:
        if scale_min != scale_max:
            raise ValueError(f"one level has one scale; got scale_min={scale_min} != scale_max={scale_max}")
        return [scale_min]
    steps = [level / (num_levels - 1) for level in range(num_levels)]
    if progression == "geometric":
        scales = [scale_min * (scale_max / scale_min) ** t for t in steps]
    elif progression == "linear":
        scales = [scale_min + (scale_max - scale_min) * t for t in steps]
    else:
        raise ValueError(f"progression must be 'geometric' or 'linear', got {progression!r}")
    # Exact end points: rounding must not push the last level past scale_max (or 1.0).
    scales[0], scales[-1] = scale_min, scale_max
    return scales


def hierarchical_masks(
    batch_size: int,
    grid: Sequence[int],
    *,
    num_levels: int = 3,
    scale_min: float = 0.05,
    scale_max: float = 0.3,
    progression: Progression = "geometric",
    npred: Union[int, Sequence[int]] = 4,
    pred_aspect: Range = (0.75, 1.5),
    enc_scale: Range = (0.85, 1.0),
    enc_aspect: Range = (1.0, 1.0),
    allow_overlap: bool = False,
    min_keep: int = 10,
    mode: Mode = "corrected",
    aspect_units: AspectUnits = "patches",
    generator: GeneratorLike = None,
    device: Device = None,
) -> HierarchicalMasks:
    """Sample ``num_levels`` context/target mask sets with target scales ``level_scales(...)``.

    Defaults: three levels from 5 % to 30 % of the grid per target (0.05, 0.12, 0.30), which
    brackets I-JEPA's 15-20 % in the middle; four targets per level as in I-JEPA.
    """
    scales = level_scales(num_levels, scale_min, scale_max, progression)
    counts = [int(npred)] * num_levels if isinstance(npred, int) else [int(n) for n in npred]
    if len(counts) != num_levels:
        raise ValueError(f"npred has {len(counts)} entries for {num_levels} levels")
    generator = resolve_generator(generator, device)
    levels = [
        multiblock_masks(
            batch_size, grid, npred=n, pred_scale=(s, s), pred_aspect=pred_aspect,
            enc_scale=enc_scale, enc_aspect=enc_aspect, nenc=1, allow_overlap=allow_overlap,
            min_keep=min_keep, mode=mode, aspect_units=aspect_units, generator=generator,
            device=device,
        )
        for s, n in zip(scales, counts)
    ]
    return HierarchicalMasks(levels, scales)


@dataclass
class HierarchicalMasker:
    """H-JEPA mask config; ``masker(batch_size, grid, generator=g)`` samples every level."""

    num_levels: int = 3
    scale_min: float = 0.05
    scale_max: float = 0.3
    progression: Progression = "geometric"
    npred: Union[int, tuple[int, ...]] = 4
    pred_aspect: Range = (0.75, 1.5)
    enc_scale: Range = (0.85, 1.0)
    enc_aspect: Range = (1.0, 1.0)
    allow_overlap: bool = False
    min_keep: int = 10
    mode: Mode = "corrected"
    aspect_units: AspectUnits = "patches"

    @property
    def scales(self) -> list[float]:
        return level_scales(self.num_levels, self.scale_min, self.scale_max, self.progression)

    def __call__(
        self,
        batch_size: int,
        grid: Sequence[int],
        *,
        generator: GeneratorLike = None,
        device: Device = None,
    ) -> HierarchicalMasks:
        return hierarchical_masks(
            batch_size, grid, num_levels=self.num_levels, scale_min=self.scale_min,
            scale_max=self.scale_max, progression=self.progression, npred=self.npred,
            pred_aspect=self.pred_aspect, enc_scale=self.enc_scale, enc_aspect=self.enc_aspect,
            allow_overlap=self.allow_overlap, min_keep=self.min_keep, mode=self.mode,
            aspect_units=self.aspect_units, generator=generator, device=device,
        )
