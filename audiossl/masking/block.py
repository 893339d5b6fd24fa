"""EAT / data2vec 2.0 inverse block masking, vectorised over a whole clone batch.

Upstream (``compute_block_mask_2d`` in EAT's ``utils/data_utils.py``, copied from data2vec 2.0)
builds, for each clip, ``clone_batch`` masks in a dataloader worker: it paints square blocks
around random centres, then fixes every row to the same count with a per-row Python loop of
``torch.multinomial`` calls, and (in inverse mode) flips the map so the blocks are what the
student *sees*. This module draws the same law for all ``batch_size * clone_batch`` rows at once:

1. ``n_c = int(L * ((p + mask_prob_adjust) / block_area) * (1 + mask_dropout))`` centres per
   row, uniform with replacement (one ``randint`` call), where ``p = 1 - mask_prob`` in inverse
   mode. ``mask_prob_adjust`` over-samples centres because overlapping blocks cover fewer cells.
2. Each centre paints the cells ``(r + i - m // 2, c + j - m // 2)``, ``i < h``, ``j < w``, with
   indices clamped into the grid (``m = mask_length``); one ``scatter_`` paints every block of
   every row. Clamping equals truncation at the borders whenever the block contains its centre
   (every shape EAT uses), so a 5-wide block covers 3 to 5 of the 8 mel bands.
3. ``require_same_masks``: exactly ``int(L * p)`` cells end up set in every row (EAT-base on
   64x8: 102 visible, 410 masked). Upstream clears a uniformly random subset of the excess set
   cells, or sets a uniformly random subset of unset ones (``torch.multinomial`` over 0/1
   weights, i.e. ranking the candidates by iid noise), one row at a time. Here the few cells
   to flip are drawn for all rows at once by rejection sampling without replacement (see
   :func:`_choose_uniform`), which draws exactly the same law at a fraction of the cost of
   ranking all 512 cells of every row.
4. Inverse mode flips the map: the set cells are the visible ones.

The masks follow upstream's distribution exactly, not its random stream (upstream draws from
the global torch RNG one clip at a time); ``tests/test_masking_block.py`` checks the law against
a per-row transcription of upstream and against closed-form coverage numbers.

Options that EAT leaves off behave as upstream, with these fixes (documented where they occur):
``non_overlapping`` tiles a ``ceil(H / h) x ceil(W / w)`` lattice, where upstream built a square
``ceil(H / m)``-sided lattice and cropped it with a tuple (a crash on any non-square grid such as
64x8); ``expand_adjacent`` stops growing a row that has no neighbours to grow into (upstream
asserts, i.e. crashes on grids too short for a single centre); a list of block shapes
(EAT's ``flexible_mask``) is drawn once per clip, so the clones of a clip share it, as they do
upstream where the function is called once per clip.

Grids are ``(H, W)`` = (time patches, frequency patches) with token index ``h * W + w``;
``mask[b, n] == True`` means hidden, as everywhere in :mod:`audiossl.masking`.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from audiossl.masking.base import GeneratorLike, MaskInfo, resolve_generator

logger = logging.getLogger(__name__)

BlockShape = Tuple[int, int]
BlockShapeArg = Union[None, BlockShape, Sequence[BlockShape]]
Device = Union[str, torch.device, None]

#: EAT's ``flexible_mask`` choices (paper Table 3: 40.2 mAP, the same as 5x5 blocks).
EAT_FLEXIBLE_BLOCK_SHAPES: Tuple[BlockShape, ...] = ((6, 4), (5, 5), (8, 3))


def block_mask(
    batch_size: int,
    grid: Tuple[int, int],
    *,
    mask_prob: float = 0.8,
    mask_prob_adjust: float = 0.07,
    mask_length: int = 5,
    inverse: bool = True,
    require_same_masks: bool = True,
    expand_adjacent: bool = False,
    mask_dropout: float = 0.0,
    non_overlapping: bool = False,
    block_shape: BlockShapeArg = None,
    clone_batch: int = 1,
    generator: GeneratorLike = None,
    device: Device = None,
) -> Tensor:
    """The boolean ``(batch_size * clone_batch, H * W)`` hidden-token map of :func:`inverse_block_mask`.

    Exposed separately because ``require_same_masks=False`` gives rows with different counts,
    which a :class:`MaskInfo` cannot hold. Row ``clone_batch * i + j`` is clone ``j`` of clip ``i``.
    """
    H, W = _check_grid(grid)
    shapes = _block_shapes(mask_length, block_shape)
    _check_params(batch_size, clone_batch, mask_prob, mask_length, mask_dropout)
    num_tokens = H * W
    rows = batch_size * clone_batch
    p = _set_fraction(mask_prob, inverse)
    num_block_centres(num_tokens, p, mask_prob_adjust, shapes[0], mask_dropout)  # validates p + adjust
    draw = _Draws(resolve_generator(generator, device), device)

    shape_of_row = None
    if len(shapes) > 1:
        shape_of_row = draw.randint(len(shapes), (batch_size,)).repeat_interleave(clone_batch)

    covered: Optional[Tensor] = None
    for s, shape in enumerate(shapes):
        if non_overlapping:
            painted = _lattice_blocks(rows, H, W, shape, p, mask_prob_adjust, mask_dropout, draw)
        else:
            n_centres = num_block_centres(num_tokens, p, mask_prob_adjust, shape, mask_dropout)
            if n_centres == 0:
                _log_degenerate_grid(H, W, shape)
            painted = _centred_blocks(rows, H, W, shape, mask_length // 2, n_centres, draw)
        # Each row keeps the painting of its own clip's shape (one shape: the first and only one).
        covered = painted if covered is None else torch.where((shape_of_row == s)[:, None], painted, covered)
    assert covered is not None

    if require_same_masks:
        final_count = int(num_tokens * p)
        if expand_adjacent:
            covered = _grow_into_neighbours(covered, H, W, int(final_count * (1 + mask_dropout)), draw)
        covered = _random_subset_of_size(covered, final_count, draw)
    return ~covered if inverse else covered


def inverse_block_mask(
    batch_size: int,
    grid: Tuple[int, int],
    *,
    mask_prob: float = 0.8,
    mask_prob_adjust: float = 0.07,
    mask_length: int = 5,
    inverse: bool = True,
    require_same_masks: bool = True,
    expand_adjacent: bool = False,
    mask_dropout: float = 0.0,
    non_overlapping: bool = False,
    block_shape: BlockShapeArg = None,
    clone_batch: int = 1,
    generator: GeneratorLike = None,
    device: Device = None,
) -> MaskInfo:
    """EAT's multi-mask for ``batch_size`` clips, ``clone_batch`` independent masks each.

    Defaults are EAT-base (``mask_prob=0.8``, ``mask_prob_adjust=0.07``, 5x5 blocks, inverse):
    on a 64x8 grid every row keeps exactly 102 tokens and hides 410. Row ``clone_batch * i + j``
    is clone ``j`` of clip ``i``, the order of ``x.repeat_interleave(clone_batch, 0)``, so patch
    embeddings are computed once per clip and only the tokens are cloned.

    ``block_shape`` is ``None`` (``mask_length`` squares), one ``(h, w)`` or a list of shapes
    drawn per clip (EAT's ``flexible_mask``: :data:`EAT_FLEXIBLE_BLOCK_SHAPES`); blocks stay
    anchored at offset ``mask_length // 2`` as upstream, so non-square blocks sit off-centre.
    ``require_same_masks`` must stay True here; use :func:`block_mask` for ragged masks.

    ``generator`` is a ``torch.Generator`` or an int seed (``None``: fresh OS entropy, never the
    global RNG). Random numbers are drawn on its device and the masks built on ``device``
    (default: the generator's), so a CPU generator gives the same masks on CPU and GPU.
    """
    if not require_same_masks:
        raise ValueError(
            "require_same_masks=False gives rows with different numbers of hidden tokens, which "
            "a MaskInfo cannot hold; call audiossl.masking.block.block_mask for the raw boolean mask"
        )
    H, W = _check_grid(grid)
    num_keep = block_mask_num_keep((H, W), mask_prob=mask_prob, inverse=inverse)
    hidden = block_mask(
        batch_size,
        (H, W),
        mask_prob=mask_prob,
        mask_prob_adjust=mask_prob_adjust,
        mask_length=mask_length,
        inverse=inverse,
        require_same_masks=True,
        expand_adjacent=expand_adjacent,
        mask_dropout=mask_dropout,
        non_overlapping=non_overlapping,
        block_shape=block_shape,
        clone_batch=clone_batch,
        generator=generator,
        device=device,
    )
    return MaskInfo.from_mask(hidden, hidden.shape[1] - num_keep)


def block_mask_num_keep(grid: Tuple[int, int], *, mask_prob: float = 0.8, inverse: bool = True) -> int:
    """Visible tokens per row with ``require_same_masks`` (upstream's ``int(L * p)`` rounding).

    The float arithmetic is upstream's on purpose: ``1 - 0.8`` is ``0.19999999999999996``, so a
    1x100 grid keeps 19 tokens, not 20, exactly as EAT would. Raises when nothing would be
    visible, since an encoder cannot run on zero tokens.
    """
    H, W = _check_grid(grid)
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    num_tokens = H * W
    num_set = int(num_tokens * _set_fraction(mask_prob, inverse))
    num_keep = num_set if inverse else num_tokens - num_set
    if num_keep < 1:
        raise ValueError(
            f"a {H}x{W} grid with mask_prob={mask_prob} (inverse={inverse}) leaves no visible "
            "token; use a larger grid or a smaller mask_prob"
        )
    return num_keep


def num_block_centres(
    num_tokens: int, p: float, mask_prob_adjust: float, block_shape: BlockShape, mask_dropout: float = 0.0
) -> int:
    """Upstream's centre count, same expression and float order so the truncation agrees."""
    if p + mask_prob_adjust < 0:
        raise ValueError(
            f"p + mask_prob_adjust = {p + mask_prob_adjust} < 0 asks for a negative number of block centres"
        )
    return int(num_tokens * ((p + mask_prob_adjust) / (block_shape[0] * block_shape[1])) * (1 + mask_dropout))


@dataclass
class InverseBlockMasker:
    """Callable EAT masker; defaults are EAT-base, ``clone_batch`` included.

    ``masker(batch_size, grid)`` takes the number of *clips* and returns
    ``batch_size * clone_batch`` rows. Fields mirror :func:`inverse_block_mask`'s keywords, so
    YAML overrides map one to one.
    """

    mask_prob: float = 0.8
    mask_prob_adjust: float = 0.07
    mask_length: int = 5
    clone_batch: int = 16
    inverse: bool = True
    expand_adjacent: bool = False
    mask_dropout: float = 0.0
    non_overlapping: bool = False
    block_shape: BlockShapeArg = None

    def __post_init__(self) -> None:
        shapes = _block_shapes(self.mask_length, self.block_shape)
        # Normalise YAML lists to tuples so configs compare and hash the same way.
        if self.block_shape is not None:
            self.block_shape = shapes[0] if _is_single_shape(self.block_shape) else tuple(shapes)
        _check_params(0, self.clone_batch, self.mask_prob, self.mask_length, self.mask_dropout)
        num_block_centres(1, _set_fraction(self.mask_prob, self.inverse), self.mask_prob_adjust, (1, 1))

    @classmethod
    def eat_base(cls, **overrides) -> "InverseBlockMasker":
        """EAT-base pretraining: 80% masked, adjust 0.07, 5x5 blocks, 16 clones."""
        return cls(**overrides)

    @classmethod
    def eat_large(cls, **overrides) -> "InverseBlockMasker":
        """EAT-large pretraining: 75% masked, adjust 0.10 (384 of 512 hidden on 64x8)."""
        return cls(**{"mask_prob": 0.75, "mask_prob_adjust": 0.10, **overrides})

    def num_keep(self, grid: Tuple[int, int]) -> int:
        return block_mask_num_keep(grid, mask_prob=self.mask_prob, inverse=self.inverse)

    def __call__(
        self,
        batch_size: int,
        grid: Tuple[int, int],
        *,
        generator: GeneratorLike = None,
        device: Device = None,
    ) -> MaskInfo:
        return inverse_block_mask(
            batch_size,
            grid,
            mask_prob=self.mask_prob,
            mask_prob_adjust=self.mask_prob_adjust,
            mask_length=self.mask_length,
            inverse=self.inverse,
            expand_adjacent=self.expand_adjacent,
            mask_dropout=self.mask_dropout,
            non_overlapping=self.non_overlapping,
            block_shape=self.block_shape,
            clone_batch=self.clone_batch,
            generator=generator,
            device=device,
        )


# --------------------------------------------------------------------------------------------
# Stages


class _Draws:
    """Random numbers drawn on the generator's device, then moved to the output device, so a
    seed gives the same mask on any device. ``generator`` may be an int seed; ``None`` seeds a
    fresh generator from OS entropy (never the global RNG). Output goes to ``device``, else to
    the generator's device."""

    def __init__(self, generator: torch.Generator, device: Device) -> None:
        self.generator = generator
        self.device = torch.device(device) if device is not None else generator.device

    def randint(self, high: int, size: Tuple[int, ...]) -> Tensor:
        return torch.randint(high, size, generator=self.generator, device=self.generator.device).to(self.device)


def _centred_blocks(
    rows: int, H: int, W: int, shape: BlockShape, offset: int, n_centres: int, draw: _Draws
) -> Tensor:
    """``n_centres`` uniform centres per row, with replacement, each painting one ``shape`` block."""
    return _paint_blocks(draw.randint(H * W, (rows, n_centres)), H, W, shape, offset)


def _paint_blocks(centres: Tensor, H: int, W: int, shape: BlockShape, offset: int) -> Tensor:
    """Cells ``(r + i - offset, c + j - offset)``, ``i < h``, ``j < w``, clamped into the grid, in one scatter.

    Clamping the indices (upstream's choice) truncates a block at the border whenever the block
    contains its centre; for shapes that do not (``h`` or ``w`` at most ``offset``) it repeats
    upstream's behaviour of piling the outside cells onto the border.
    """
    rows, n_centres = centres.shape
    device = centres.device
    block_rows = (centres // W)[:, :, None, None] + torch.arange(shape[0], device=device)[:, None] - offset
    block_cols = (centres % W)[:, :, None, None] + torch.arange(shape[1], device=device) - offset
    cells = block_rows.clamp_(0, H - 1) * W + block_cols.clamp_(0, W - 1)
    covered = torch.zeros(rows, H * W, dtype=torch.bool, device=device)
    return covered.scatter_(1, cells.reshape(rows, n_centres * shape[0] * shape[1]), True)


def _lattice_blocks(
    rows: int, H: int, W: int, shape: BlockShape, p: float, mask_prob_adjust: float, mask_dropout: float, draw: _Draws
) -> Tensor:
    """Non-overlapping placement: whole tiles of a ``shape``-strided lattice, cropped to the grid.

    Upstream tiled a square ``ceil(H / m)``-sided lattice and cropped with ``[..., :d, :d]``
    where ``d`` is a tuple, which fails on any non-square grid; here the lattice has
    ``ceil(H / h) x ceil(W / w)`` tiles (identical on the square grids upstream supports). If
    ``p + mask_prob_adjust`` asks for more tiles than exist, all of them are used (upstream's
    ``multinomial`` raised).
    """
    nh, nw = math.ceil(H / shape[0]), math.ceil(W / shape[1])
    n_tiles = nh * nw
    n_chosen = int(n_tiles * (p + mask_prob_adjust) * (1 + mask_dropout))
    every_tile = torch.ones(rows, n_tiles, dtype=torch.bool, device=draw.device)
    chosen = _choose_uniform(every_tile, every_tile.new_full((rows,), min(n_chosen, n_tiles), dtype=torch.long), draw)
    tiles = chosen.view(rows, nh, 1, nw, 1).expand(rows, nh, shape[0], nw, shape[1])
    return tiles.reshape(rows, nh * shape[0], nw * shape[1])[:, :H, :W].reshape(rows, H * W)


def _grow_into_neighbours(covered: Tensor, H: int, W: int, target: int, draw: _Draws) -> Tensor:
    """``expand_adjacent``: add random 4-neighbours of the set cells, round by round, up to ``target``.

    Each round, a row below ``target`` sets a uniformly random subset of its frontier of size
    ``min(frontier, target - n)``, as upstream's per-row loop does. A row with an empty set has
    no frontier and is left to the random top-up (upstream asserted here).
    """
    rows = covered.shape[0]
    while True:
        frontier = _four_neighbours(covered.view(rows, H, W)).view(rows, H * W) & ~covered
        quota = torch.minimum((target - covered.sum(1)).clamp_(min=0), frontier.sum(1))
        if not bool(quota.any()):
            return covered
        covered = covered | _choose_uniform(frontier, quota, draw)


def _four_neighbours(grid: Tensor) -> Tensor:
    """Cells with a set 4-neighbour (upstream's cross-kernel ``conv2d``, without the float conv)."""
    out = torch.zeros_like(grid)
    out[:, 1:, :] |= grid[:, :-1, :]
    out[:, :-1, :] |= grid[:, 1:, :]
    out[:, :, 1:] |= grid[:, :, :-1]
    out[:, :, :-1] |= grid[:, :, 1:]
    return out


def _random_subset_of_size(covered: Tensor, count: int, draw: _Draws) -> Tensor:
    """Trim or top up every row to exactly ``count`` set cells, uniformly at random.

    A row with ``n > count`` clears a uniformly random ``n - count`` of its set cells, a row
    with ``n < count`` sets a uniformly random ``count - n`` of its unset cells: the law of
    upstream's ``multinomial`` removal / top-up over 0/1 weights.
    """
    n = covered.sum(1)
    trim = n > count
    candidates = torch.where(trim, n, covered.shape[1] - n)
    return covered ^ _choose_uniform(covered == trim[:, None], (n - count).abs(), draw, candidates)


def _choose_uniform(candidate: Tensor, size: Tensor, draw: _Draws, num_candidates: Optional[Tensor] = None) -> Tensor:
    """A uniformly random ``size[r]``-subset of the candidate cells of each row ``r``.

    Ranking every cell by noise (``topk`` over the full grid, what ``multinomial`` does inside)
    costs more than the rest of the sampler together, while only a few cells per row change.
    So cells are drawn iid uniformly and a draw is accepted when it is a candidate not drawn
    before; the first ``size`` accepted draws are the subset. Accepted draws are, in order,
    uniform over the candidates not yet taken (rejection sampling without replacement), which
    is exactly the law of ranking the candidates by iid uniform noise. Drawing the smaller of
    the subset and its complement keeps the expected number of draws below the grid size.
    """
    rows, num_cells = candidate.shape
    m = candidate.sum(1) if num_candidates is None else num_candidates
    complement = 2 * size > m
    count = torch.where(complement, m - size, size)
    # Column num_cells is a sink for the draws that are not taken.
    chosen = torch.zeros(rows, num_cells + 1, dtype=torch.bool, device=candidate.device)
    # Expected draws for `count` distinct candidates out of `m` are below count * N / (m - count).
    expected = float((count * num_cells / (m - count).clamp(min=1)).max()) if rows else 0.0
    if expected > 0:
        cells, take = _distinct_candidate_draws(candidate, count, int(1.25 * expected) + 16, draw)
        chosen.scatter_(1, torch.where(take, cells, num_cells), True)
    chosen = chosen[:, :num_cells]
    if bool(complement.any()):
        # There the subset is the candidates that were not drawn (chosen is inside candidate).
        chosen ^= candidate & complement[:, None]
    return chosen


def _distinct_candidate_draws(candidate: Tensor, count: Tensor, batch: int, draw: _Draws) -> Tuple[Tensor, Tensor]:
    """Uniform cell draws, ``batch`` per row at a time, until row ``r`` has ``count[r]`` distinct candidates.

    Returns ``(cells, take)``, ``take`` marking the first ``count[r]`` accepted draws. ``batch``
    comes from the expected need, so one round almost always suffices.
    """
    rows, num_cells = candidate.shape
    cells = draw.randint(num_cells, (rows, batch))
    while True:
        fresh = candidate.gather(1, cells) & _first_appearance(cells, num_cells)
        accepted = torch.cumsum(fresh, dim=1)
        if bool((accepted[:, -1] >= count).all()):
            return cells, fresh & (accepted <= count[:, None])
        cells = torch.cat([cells, draw.randint(num_cells, (rows, batch))], dim=1)


def _first_appearance(values: Tensor, num_values: int) -> Tensor:
    """``values[r, j]`` is the first occurrence of its value in row ``r`` (values in ``[0, num_values)``)."""
    rows, length = values.shape
    small = torch.int16 if length < 2**15 else torch.int32  # keeps the (rows, num_values) scratch small
    positions = torch.arange(length, dtype=small, device=values.device).expand(rows, length)
    first = torch.full((rows, num_values), length, dtype=small, device=values.device)
    first.scatter_reduce_(1, values, positions, reduce="amin")
    return first.gather(1, values) == positions


# --------------------------------------------------------------------------------------------
# Arguments


def _set_fraction(mask_prob: float, inverse: bool) -> float:
    # Upstream's own expression; keeps its rounding (see block_mask_num_keep).
    return 1 - mask_prob if inverse else mask_prob


def _check_grid(grid) -> Tuple[int, int]:
    if len(grid) != 2 or not all(isinstance(g, numbers.Integral) and g >= 1 for g in grid):
        raise ValueError(f"grid must be (H, W) with positive integer sides, got {grid!r}")
    return int(grid[0]), int(grid[1])


def _is_single_shape(block_shape) -> bool:
    return len(block_shape) == 2 and all(isinstance(v, numbers.Integral) for v in block_shape)


def _block_shapes(mask_length: int, block_shape: BlockShapeArg) -> Tuple[BlockShape, ...]:
    if block_shape is None:
        return ((mask_length, mask_length),)
    shapes = [block_shape] if _is_single_shape(block_shape) else list(block_shape)
    if not shapes:
        raise ValueError("block_shape must be None, (h, w) or a non-empty list of (h, w)")
    for s in shapes:
        if len(s) != 2 or not all(isinstance(v, numbers.Integral) and v >= 1 for v in s):
            raise ValueError(f"block shapes must be (h, w) with positive integer sides, got {s!r}")
    return tuple((int(s[0]), int(s[1])) for s in shapes)


def _check_params(batch_size: int, clone_batch: int, mask_prob: float, mask_length: int, mask_dropout: float) -> None:
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if clone_batch < 1:
        raise ValueError(f"clone_batch must be >= 1, got {clone_batch}")
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    # Upstream asserts mask_length > 1; 1 is allowed for the 1x1 row of the paper's Table 3.
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    if mask_dropout < 0:
        raise ValueError(f"mask_dropout must be >= 0, got {mask_dropout}")


@functools.lru_cache(maxsize=None)
def _log_degenerate_grid(H: int, W: int, shape: BlockShape) -> None:
    logger.warning(
        "a %dx%d grid gets no %dx%d block centre (int(L * (p + mask_prob_adjust) / area) = 0): "
        "its masks are uniformly random cells, as upstream's (e.g. 1 s clips on an 8x8 grid)",
        H,
        W,
        shape[0],
        shape[1],
    )
