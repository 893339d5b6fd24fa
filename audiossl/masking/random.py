"""MAE random masking (and the MAE-AST / SSAST-frame variants of it).

Also home of :func:`grid_size` (an ``(H, W)`` grid or a token count) and
:func:`num_keep_for_ratio`, which the sibling samplers share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from audiossl.masking.base import MaskInfo, resolve_generator

__all__ = [
    "RandomMask",
    "grid_size",
    "num_keep_for_ratio",
    "random_mask",
]

Grid = Union[int, Tuple[int, int], Sequence[int]]
Device = Union[str, torch.device, None]


def grid_size(grid: Grid) -> int:
    """Number of tokens of an ``(H, W)`` grid (or of a plain count)."""
    if isinstance(grid, int):
        return grid
    n = 1
    for g in grid:
        n *= int(g)
    return n


def num_keep_for_ratio(num_tokens: int, mask_ratio: float, min_keep: int = 0) -> int:
    """MAE's ``int(L * (1 - mask_ratio))`` — float truncation on purpose, as upstream (so e.g.
    ``int(512 * 0.2) = 102``); ``min_keep=1`` gives MAE-AST's ``max(1, ...)``."""
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    return max(min_keep, int(num_tokens * (1 - mask_ratio)))


def random_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: Optional[float] = 0.75,
    *,
    num_masked: Optional[int] = None,
    min_keep: int = 0,
    same_for_batch: bool = False,
    generator: Union[torch.Generator, int, None] = None,
    device: Device = None,
) -> MaskInfo:
    """MAE ``random_masking``: argsort uniform noise per row, keep the first ``K``.

    ``K = int(N·(1 - mask_ratio))`` (MAE; AudioMAE pretrains at 0.8 -> 102 of 512), or
    ``max(1, ...)`` with ``min_keep=1`` (MAE-AST ``random_mask``), or ``N - num_masked`` when an
    exact count is given (SSAST frame models: ``random.sample(range(N), M)``, ``M = 400``). Visible
    ids stay in noise order, as upstream. ``same_for_batch`` repeats one row (MAE-AST
    ``random_mask_batched``). Noise is drawn on the generator's device and moved to ``device``.
    """
    if num_masked is not None:
        if not 0 <= num_masked <= num_tokens:
            raise ValueError(f"num_masked must be in [0, {num_tokens}], got {num_masked}")
        num_keep = max(min_keep, num_tokens - num_masked)
    elif mask_ratio is not None:
        num_keep = num_keep_for_ratio(num_tokens, mask_ratio, min_keep)
    else:
        raise ValueError("give mask_ratio or num_masked")
    gen = resolve_generator(generator, device)
    rows = 1 if same_for_batch else batch_size
    noise = torch.rand(rows, num_tokens, generator=gen, device=gen.device)
    ids_shuffle = torch.argsort(noise, dim=1).to(device if device is not None else gen.device)
    if same_for_batch:
        ids_shuffle = ids_shuffle.expand(batch_size, -1).contiguous()
    return MaskInfo.from_shuffle(ids_shuffle, num_keep)


@dataclass
class RandomMask:
    """Callable config over :func:`random_mask`; defaults are MAE's (ratio 0.75).

    Presets: :meth:`mae`, :meth:`audiomae` (0.8), :meth:`mae_ast` (0.75, keep >= 1),
    :meth:`ssast_frame` (exactly 400 masked).
    """

    mask_ratio: Optional[float] = 0.75
    num_masked: Optional[int] = None
    min_keep: int = 0
    same_for_batch: bool = False

    def __call__(
        self,
        batch_size: int,
        grid: Grid,
        *,
        generator: Union[torch.Generator, int, None] = None,
        device: Device = None,
    ) -> MaskInfo:
        return random_mask(
            batch_size,
            grid_size(grid),
            self.mask_ratio,
            num_masked=self.num_masked,
            min_keep=self.min_keep,
            same_for_batch=self.same_for_batch,
            generator=generator,
            device=device,
        )

    @classmethod
    def mae(cls) -> "RandomMask":
        return cls(mask_ratio=0.75)

    @classmethod
    def audiomae(cls) -> "RandomMask":
        return cls(mask_ratio=0.8)

    @classmethod
    def mae_ast(cls) -> "RandomMask":
        return cls(mask_ratio=0.75, min_keep=1)

    @classmethod
    def ssast_frame(cls) -> "RandomMask":
        return cls(mask_ratio=None, num_masked=400)
