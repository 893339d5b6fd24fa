"""MAE random masking (and the MAE-AST / SSAST-frame variants of it).

Also home of the small helpers the sibling samplers share: :func:`resolve_generator` (no sampler
touches torch's global RNG), :func:`grid_size` (an ``(H, W)`` grid or a token count), and
:func:`info_from_bool` / :func:`info_from_shuffle`, which build the same :class:`MaskInfo` as its
``from_mask`` / ``from_shuffle`` classmethods with scatters and cumulative sums instead of sorts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from audiossl.masking.base import MaskInfo

__all__ = [
    "RandomMask",
    "grid_size",
    "info_from_bool",
    "info_from_shuffle",
    "num_keep_for_ratio",
    "random_mask",
    "resolve_generator",
]

Grid = Union[int, Tuple[int, int], Sequence[int]]
Device = Union[str, torch.device, None]


def resolve_generator(generator: Union[torch.Generator, int, None], device: Device = None) -> torch.Generator:
    """A generator to draw from: the one given, a fresh one seeded with an int, or (None) a fresh
    one seeded from OS entropy — never the global RNG, so library code cannot perturb a user's
    ``torch.manual_seed`` stream."""
    if isinstance(generator, torch.Generator):
        return generator
    gen = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    if generator is None:
        gen.seed()
    else:
        gen.manual_seed(int(generator))
    return gen


def grid_size(grid: Grid) -> int:
    """Number of tokens of an ``(H, W)`` grid (or of a plain count)."""
    if isinstance(grid, int):
        return grid
    n = 1
    for g in grid:
        n *= int(g)
    return n


def _inverse_permutation(ids: Tensor) -> Tensor:
    """Row-wise inverse of a permutation by one scatter (an argsort would sort again)."""
    arange = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.empty_like(ids).scatter_(1, ids, arange)


def info_from_shuffle(ids_shuffle: Tensor, num_keep: int) -> MaskInfo:
    """:meth:`MaskInfo.from_shuffle` without its argsort: same fields, built by scatters."""
    B, N = ids_shuffle.shape
    mask = torch.ones(B, N, dtype=torch.bool, device=ids_shuffle.device)
    mask.scatter_(1, ids_shuffle[:, :num_keep], False)
    return MaskInfo(mask, ids_shuffle[:, :num_keep], _inverse_permutation(ids_shuffle), ids_shuffle[:, num_keep:])


def info_from_bool(mask: Tensor, num_masked: int) -> MaskInfo:
    """:meth:`MaskInfo.from_mask` for a mask known to hide ``num_masked`` tokens in every row.

    Same result (both id groups ascending) from two cumulative sums and a scatter instead of two
    sorts, and no host sync, which matters at clone-batch sizes. The count is the caller's promise.
    """
    B, N = mask.shape
    num_keep = N - num_masked
    visible_rank = (~mask).cumsum(1) - 1
    masked_rank = mask.cumsum(1) - 1 + num_keep
    ids_restore = torch.where(mask, masked_rank, visible_rank)
    ids_shuffle = _inverse_permutation(ids_restore)
    return MaskInfo(mask, ids_shuffle[:, :num_keep], ids_restore, ids_shuffle[:, num_keep:])


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
    return info_from_shuffle(ids_shuffle, num_keep)


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
