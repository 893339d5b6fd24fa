"""The one mask type every masking family returns.

Conventions (see ARCHITECTURE.md): ``mask[b, n] == True`` means token ``n`` of row ``b`` is
hidden from the encoder. Every row has the same number of visible tokens, so visible tokens
of a batch stack into a dense ``(B, K, D)`` tensor without padding.

``ids_keep`` and ``ids_masked`` are the first ``K`` and last ``N - K`` entries of one
permutation ``ids_shuffle`` of ``0..N-1``; ``ids_restore`` is its inverse, so
``torch.gather(cat([visible, masked]), 1, ids_restore)`` puts tokens back in place (the MAE
convention). Masks built from a boolean tensor list both groups in ascending order; the MAE
random sampler keeps its noise order, as upstream does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor


@dataclass
class MaskInfo:
    mask: Tensor  # (B, N) bool, True = hidden
    ids_keep: Tensor  # (B, K) long, visible token indices
    ids_restore: Tensor  # (B, N) long, inverse of cat([ids_keep, ids_masked], 1)
    ids_masked: Tensor  # (B, N - K) long, hidden token indices

    @classmethod
    def from_mask(cls, mask: Tensor, num_masked: Optional[int] = None) -> "MaskInfo":
        """Build from a boolean ``(B, N)`` mask with the same number of hidden tokens per row.

        Both id groups come out ascending (EAT's ``make_maskinfo`` with a stable sort). Built
        without sorting: a token's slot is a running count, so one ``cumsum`` gives
        ``ids_restore`` and one scatter inverts it. Intermediates are int16 where the grid allows,
        because at clone-batch sizes the int64 scratch tensors, not the arithmetic, cost most.
        ``num_masked`` is the caller's promise of the per-row count and saves a host sync;
        without it the counts are checked.
        """
        if mask.dim() != 2:
            raise ValueError(f"mask must be (B, N), got shape {tuple(mask.shape)}")
        mask = mask.bool()
        rows, num_tokens = mask.shape
        if num_masked is None:
            counts = mask.sum(1)
            if rows and not bool((counts == counts[0]).all()):
                raise ValueError(
                    "every row must hide the same number of tokens; got counts "
                    f"{sorted(set(counts.tolist()))}"
                )
            num_masked = int(counts[0]) if rows else 0
        num_keep = num_tokens - num_masked
        small = torch.int16 if num_tokens < 2**15 else torch.int64
        tokens = torch.arange(num_tokens, dtype=small, device=mask.device).expand(rows, num_tokens)
        hidden_up_to = torch.cumsum(mask, dim=1, dtype=small)
        ids_restore = torch.where(mask, hidden_up_to + (num_keep - 1), tokens - hidden_up_to).long()
        ids_shuffle = _inverse_permutation(ids_restore)
        return cls(mask, ids_shuffle[:, :num_keep], ids_restore, ids_shuffle[:, num_keep:])

    @classmethod
    def from_shuffle(cls, ids_shuffle: Tensor, num_keep: int) -> "MaskInfo":
        """Build from a permutation per row whose first ``num_keep`` entries stay visible."""
        B, N = ids_shuffle.shape
        mask = torch.ones(B, N, dtype=torch.bool, device=ids_shuffle.device)
        mask.scatter_(1, ids_shuffle[:, :num_keep], False)
        return cls(mask, ids_shuffle[:, :num_keep], _inverse_permutation(ids_shuffle), ids_shuffle[:, num_keep:])

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.mask.shape[1]

    @property
    def num_keep(self) -> int:
        return self.ids_keep.shape[1]

    @property
    def num_masked(self) -> int:
        return self.ids_masked.shape[1]

    def to(self, device) -> "MaskInfo":
        return MaskInfo(*(t.to(device) for t in (self.mask, self.ids_keep, self.ids_restore, self.ids_masked)))

    def gather_visible(self, x: Tensor) -> Tensor:
        """``(B, N, ...)`` -> the visible tokens ``(B, K, ...)`` in ``ids_keep`` order."""
        return _gather(x, self.ids_keep)

    def gather_masked(self, x: Tensor) -> Tensor:
        """``(B, N, ...)`` -> the hidden tokens ``(B, N - K, ...)`` in ``ids_masked`` order."""
        return _gather(x, self.ids_masked)

    def restore(self, visible: Tensor, fill: Optional[Tensor] = None) -> Tensor:
        """Put ``(B, K, D)`` visible tokens back on the full ``(B, N, D)`` grid.

        Hidden slots get ``fill`` (broadcast to ``(B, N - K, D)``, e.g. a learned mask token)
        or zeros.
        """
        B, K, D = visible.shape
        if fill is None:
            hidden = visible.new_zeros(B, self.num_masked, D)
        else:
            hidden = fill.to(visible.dtype).expand(B, self.num_masked, D)
        return _gather(torch.cat([visible, hidden], dim=1), self.ids_restore)

    def repeat_interleave(self, repeats: int) -> "MaskInfo":
        """Each row ``repeats`` times in a row (clone batches: row ``r * i + j`` is clone j of i)."""
        return MaskInfo(*(t.repeat_interleave(repeats, dim=0) for t in (self.mask, self.ids_keep, self.ids_restore, self.ids_masked)))


GeneratorLike = Union[torch.Generator, int, None]


def resolve_generator(
    generator: GeneratorLike, device: Union[str, torch.device, None] = None
) -> torch.Generator:
    """The generator to draw from: the one given, a fresh one seeded with an int, or (None) a
    fresh one seeded from OS entropy — never the global RNG, so library code cannot shift a
    user's ``torch.manual_seed`` stream."""
    if isinstance(generator, torch.Generator):
        return generator
    gen = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    if generator is None:
        gen.seed()
    else:
        gen.manual_seed(int(generator))
    return gen


def _inverse_permutation(ids: Tensor) -> Tensor:
    """Row-wise inverse of a permutation by one scatter (an argsort would sort again)."""
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.empty_like(ids).scatter_(1, ids, positions)


def _gather(x: Tensor, ids: Tensor) -> Tensor:
    index = ids.reshape(*ids.shape, *([1] * (x.dim() - 2))).expand(*ids.shape, *x.shape[2:])
    return torch.gather(x, 1, index)
