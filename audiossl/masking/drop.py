"""AudioMAE time/frequency token dropping (``random_masking_2d``) for fine-tuning.

On the ``(H, W) = (time, frequency)`` grid, each row keeps ``int(H·(1 - mask_t_prob))`` time
columns and ``int(W·(1 - mask_f_prob))`` frequency rows, chosen by argsorting uniform noise (time
first, then frequency, as upstream draws them); a token is visible when both its time and its
frequency index are kept. AudioMAE's fine-tuning recipe uses 0.2 / 0.2 on the 64 x 8 grid:
51 x 6 = 306 visible tokens. Dropping is a training-time regulariser; evaluate on all tokens.

``ids_keep`` follows upstream's gather order: kept time indices in noise order, and within each
the kept frequency indices in noise order (``ids_keep[t'·Kf + f'] = keep_t[t']·W + keep_f[f']``),
so ``MaskInfo.gather_visible`` returns exactly AudioMAE's ``x_masked``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import torch

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.random import Device, Grid, num_keep_for_ratio

__all__ = ["TimeFreqDrop", "time_freq_drop"]


def time_freq_drop(
    batch_size: int,
    grid: Tuple[int, int],
    mask_t_prob: float = 0.2,
    mask_f_prob: float = 0.2,
    *,
    generator: Union[torch.Generator, int, None] = None,
    device: Device = None,
) -> MaskInfo:
    """Drop whole time columns and frequency rows; every row keeps ``Kt·Kf`` tokens.

    ``K = int(n·(1 - p))`` per axis as AudioMAE, but at least 1: on a one-row axis (frame
    tokens, ``(T', 1)``) upstream's formula keeps nothing and the encoder would get no token.
    """
    H, W = int(grid[0]), int(grid[1])
    keep_t = num_keep_for_ratio(H, mask_t_prob, min_keep=1)
    keep_f = num_keep_for_ratio(W, mask_f_prob, min_keep=1)
    gen = resolve_generator(generator, device)
    ids_t = torch.rand(batch_size, H, generator=gen, device=gen.device).argsort(dim=1)[:, :keep_t]
    ids_f = torch.rand(batch_size, W, generator=gen, device=gen.device).argsort(dim=1)[:, :keep_f]
    if device is not None:
        ids_t, ids_f = ids_t.to(device), ids_f.to(device)
    ids_keep = (ids_t.unsqueeze(2) * W + ids_f.unsqueeze(1)).reshape(batch_size, keep_t * keep_f)
    mask = torch.ones(batch_size, H * W, dtype=torch.bool, device=ids_keep.device)
    mask.scatter_(1, ids_keep, False)
    ids_masked = MaskInfo.from_mask(mask, H * W - keep_t * keep_f).ids_masked  # hidden ids, ascending
    return MaskInfo.from_shuffle(torch.cat([ids_keep, ids_masked], dim=1), keep_t * keep_f)


@dataclass
class TimeFreqDrop:
    """Callable config over :func:`time_freq_drop`; defaults are AudioMAE's AudioSet fine-tuning
    (``mask_t_prob = mask_f_prob = 0.2``)."""

    mask_t_prob: float = 0.2
    mask_f_prob: float = 0.2

    def __call__(
        self,
        batch_size: int,
        grid: Grid,
        *,
        generator: Union[torch.Generator, int, None] = None,
        device: Device = None,
    ) -> MaskInfo:
        if isinstance(grid, int):
            raise ValueError("time/frequency drop needs an (H, W) grid, got a token count")
        return time_freq_drop(
            batch_size, tuple(grid), self.mask_t_prob, self.mask_f_prob, generator=generator, device=device
        )
