"""SSAST / MAE-AST chunked masking: square chunks of patches until exactly ``M`` are hidden.

Grids are ``(H, W) = (time patches, frequency patches)``, token ``n = h * W + w`` (e.g. 64 x 8 for
1024 frames of 16 x 16 patches; frame tokens are ``(T', 1)``, where a c x c chunk becomes c
consecutive frames).

Upstream, per clip (SSAST ``gen_maskid_patch``) or per batch (MAE-AST ``chunk_mask``): draw the
chunk side ``c`` from {3, 4, 5}; repeatedly draw a top-left index uniformly and add the c x c
chunk to a set until the set holds **more** than ``M`` tokens (``<=`` in the loop test), then
keep ``list(set)[:M]``. SSAST's index is frequency-major on an ``(F', T')`` = (8, 64) grid:
upstream index ``f * H + t`` is our token ``t * W + f``. Its chunk adds ``+H·i`` (next frequency
row) and ``+j`` (next time step, wrapping into the next frequency row at the right edge). MAE-AST's
index is time-major like ours; its ``+a`` walks frequency (wrapping into the next time step) and
``+W·b`` walks time.

``faithful=False`` (default) is the corrected sampler:

* no wrap: a chunk is clipped at the grid edges instead of continuing on the next row;
* token 0 is maskable (SSAST's ``0 < k`` test keeps it always visible);
* anchors are drawn so that every cell is covered by the same number of anchor positions
  (``edge_unbiased``: top-left in ``[-(c-1), H) x [-(c-1), W)``). Upstream chunks only grow
  towards higher indices, so SSAST masks its lowest frequency row with p ~ 0.42 against ~ 0.88
  elsewhere (see ``audiossl.masking.stats``);
* truncation: stop at the first chunk that reaches ``M`` and drop the surplus uniformly at random
  from that last chunk, instead of one chunk too many (``<=``) truncated to the lowest indices —
  which always unmasks the highest-index tokens (top-frequency row / end of the clip);
* one mask per clip (MAE-AST shares one mask across the batch for speed).

``faithful=True`` with ``upstream="ssast"`` or ``"mae_ast"`` reproduces the released code's mask
distribution exactly (not its random stream: upstream draws from Python's ``random``), including
all the quirks above. CPython iterates a small-int set in ascending order, so "lowest indices" is
what ``list(set)[:M]`` yields at these sizes.

Frame models: SSAST's frame models do not use chunks at all (``gen_maskid_frame`` is
``random.sample``: use ``RandomMask.ssast_frame()``). On a ``(T', 1)`` grid our chunks are runs of
``c`` consecutive frames; faithful MAE-AST there walks time with both ``+a`` and ``+W·b = +b``,
i.e. runs of ``2c - 1`` frames, as its code does.

Vectorisation: both modes are exact reformulations of the sequential loop, not approximations.
For every cell we record the index of the first anchor that covers it (``scatter_reduce(amin)``
over a batch of drawn anchors); the loop's stopping anchor is then the ``M``-th (with ``<=``, the
``(M+1)``-th) smallest of those indices (``kthvalue``), and the selection is a comparison or a
cumulative sum. Rows are grouped by chunk side (at most ``len(chunk_sizes)`` groups); a first round
draws ~1.1x the expected number of anchors for every row and short follow-up rounds go to the few
rows that have not covered enough cells yet. There is no Python loop over the batch or over
anchors (256 clips of 64 x 8, M = 400, one CPU thread: ~9 ms faithful / ~12 ms corrected, against
~310 ms for SSAST's per-clip Python loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.random import Device, Grid, num_keep_for_ratio

__all__ = [
    "ChunkMask",
    "chunk_mask",
    "corrected_chunk_cells",
    "mae_ast_chunk_cells",
    "ssast_chunk_cells",
]

Upstream = Literal["ssast", "mae_ast"]
_MAX_ROUNDS = 10_000


def _as_hw(grid: Grid) -> Tuple[int, int]:
    if isinstance(grid, int):
        return (grid, 1)
    h, w = grid
    return (int(h), int(w))


def _expected_anchors(grid: Tuple[int, int], needed: int, c: int, mode: str, edge_unbiased: bool) -> float:
    """Coupon-collector estimate of the anchors a row needs to cover ``needed`` cells.

    Each anchor lands ``c²·N / A`` cells on the grid on average, ``A`` being the area its chunks
    range over (anchors whose chunk sticks out of the grid waste cells). Matches simulated means
    within ~2 % on 64 x 8 for all three samplers.
    """
    H, W = grid
    N = H * W
    if mode == "corrected":
        area = (H + c - 1) * (W + c - 1) if edge_unbiased else N
        per_anchor = min(c, H) * min(c, W) * N / area
    elif mode == "ssast":  # chunks run past the top frequency row
        per_anchor = c * c * N / (H * (W + c - 1))
    else:  # MAE-AST: chunks run past the last time step
        per_anchor = c * c * N / ((H + c - 1) * W)
    frac = min(needed / N, 1.0 - 0.5 / N)
    return -math.log1p(-frac) * N / max(per_anchor, 1.0)


def _first_cover(
    batch: int,
    num_tokens: int,
    needed: int,
    expected: float,
    paint: Callable[[int, Tensor], Tuple[Tensor, Tensor]],
    device: torch.device,
) -> Tensor:
    """``(B, N)`` index of the first anchor covering each cell (int64 max if none), drawing
    anchors until every row covers at least ``needed`` cells.

    The first round draws ~1.1x the expected count for every row (about 90 % of rows finish);
    later, smaller rounds go only to the unfinished rows. Anchor ids grow round by round, so
    "first covering anchor" keeps the order of a sequential loop. ``paint(k, rows)`` draws ``k``
    anchors for each row in ``rows`` and returns ``(cells, valid)`` of shape ``(len(rows), k, c²)``:
    the flat work-space index of each chunk cell and whether it counts.
    """
    sentinel = torch.iinfo(torch.int64).max
    first = torch.full((batch, num_tokens + 1), sentinel, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)
    k = int(math.ceil(1.1 * expected)) + 2
    offset = 0
    for _ in range(_MAX_ROUNDS):
        cells, valid = paint(k, rows)
        r, drawn, c2 = cells.shape
        ids = torch.arange(offset, offset + drawn, device=device).repeat_interleave(c2).expand(r, -1)
        cells = torch.where(valid, cells, num_tokens).reshape(r, -1)  # invalid cells -> dump column
        if r == batch:
            first.scatter_reduce_(1, cells, ids, reduce="amin")
        else:
            first[rows] = first[rows].scatter_reduce_(1, cells, ids, reduce="amin")
        offset += drawn
        covered = (first[rows, :num_tokens] != sentinel).sum(1)
        rows = rows[covered < needed]
        if rows.numel() == 0:
            return first[:, :num_tokens]
        k = max(4, int(math.ceil(0.25 * expected)))
    raise RuntimeError(f"chunk masking did not cover {needed} of {num_tokens} tokens after {offset} anchors")


def _chunk_offsets(sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Row/column offsets ``(1, 1, c_max²)`` and the ``(B, 1, c_max²)`` in-chunk validity."""
    c_max = int(sizes.max())
    r = torch.arange(c_max, device=sizes.device)
    i = r.repeat_interleave(c_max).view(1, 1, -1)
    j = r.repeat(c_max).view(1, 1, -1)
    inside = (i < sizes.view(-1, 1, 1)) & (j < sizes.view(-1, 1, 1))
    return i, j, inside


def corrected_chunk_cells(h0: Tensor, w0: Tensor, sizes: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """Cells of c x c chunks with top-left ``(h0, w0)`` ``(B, k)``, clipped at every edge."""
    H, W = grid
    i, j, inside = _chunk_offsets(sizes)
    h = h0.unsqueeze(-1) + i
    w = w0.unsqueeze(-1) + j
    return h * W + w, inside & (h >= 0) & (h < H) & (w >= 0) & (w < W)


def ssast_chunk_cells(s: Tensor, sizes: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """SSAST's cells ``s + H·i + j`` in its frequency-major index space (``f·H + t``): ``+j`` runs
    past the last time step into the next frequency row (wrap), and 0 is never valid."""
    H, W = grid
    i, j, inside = _chunk_offsets(sizes)
    cells = s.unsqueeze(-1) + H * i + j
    return cells, inside & (cells > 0) & (cells < H * W)


def mae_ast_chunk_cells(t0: Tensor, sizes: Tensor, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """MAE-AST's cells ``t0 + a + W·b`` (time-major): ``+a`` runs past the last frequency patch
    into the next time step (wrap)."""
    H, W = grid
    a, b, inside = _chunk_offsets(sizes)
    cells = t0.unsqueeze(-1) + a + W * b
    return cells, inside & (cells < H * W)


def _painter(mode: str, grid: Tuple[int, int], c: int, edge_unbiased: bool, gen: torch.Generator):
    """Anchor drawing + chunk geometry for rows that all use chunk side ``c``."""
    H, W = grid
    size = torch.tensor([c], device=gen.device)
    if mode == "corrected":
        lead = c - 1 if edge_unbiased else 0

        def paint(k: int, rows: Tensor) -> Tuple[Tensor, Tensor]:
            u = torch.rand(rows.numel(), k, 2, generator=gen, device=gen.device)
            h0 = (u[..., 0] * (H + lead)).long() - lead
            w0 = (u[..., 1] * (W + lead)).long() - lead
            return corrected_chunk_cells(h0, w0, size, grid)

        return paint
    cells_of = ssast_chunk_cells if mode == "ssast" else mae_ast_chunk_cells

    def paint(k: int, rows: Tensor) -> Tuple[Tensor, Tensor]:
        return cells_of(torch.randint(H * W, (rows.numel(), k), generator=gen, device=gen.device), size, grid)

    return paint


def _sample(
    mode: str, grid: Tuple[int, int], sizes: Tensor, num_masked: int, edge_unbiased: bool, gen: torch.Generator
) -> Tensor:
    """``(rows, N)`` masks in the mode's work space, one group of rows per chunk side (at most
    ``len(chunk_sizes)`` groups, so a chunk of side 3 does not pay for 5 x 5 offsets)."""
    N = grid[0] * grid[1]
    needed = num_masked if mode == "corrected" else num_masked + 1
    mask = torch.empty(sizes.shape[0], N, dtype=torch.bool, device=gen.device)
    for c in sorted(set(sizes.tolist())):
        rows = torch.nonzero(sizes == c).flatten()
        paint = _painter(mode, grid, c, edge_unbiased, gen)
        expected = _expected_anchors(grid, needed, c, mode, edge_unbiased)
        first = _first_cover(rows.numel(), N, needed, expected, paint, gen.device)
        if mode == "corrected":
            mask[rows] = _corrected_select(first, num_masked, gen)
        else:
            mask[rows] = _faithful_select(first, num_masked)
    return mask


def _faithful_select(first: Tensor, num_masked: int) -> Tensor:
    """The loop stops at the anchor that makes the set exceed ``M``; keep its ``M`` lowest ids."""
    stop = first.kthvalue(num_masked + 1, dim=1, keepdim=True).values  # (M+1)-th smallest anchor id
    covered = first <= stop
    return covered & (covered.cumsum(1) <= num_masked)


def _corrected_select(first: Tensor, num_masked: int, gen: torch.Generator) -> Tensor:
    """Cells of earlier chunks first; the stopping chunk's cells in uniformly random order.

    Keys are ``first + U[0, 1)`` in float64, so they tie with probability ~1e-16; a threshold at
    the ``M``-th key (``kthvalue``, cheaper than ``topk``) then selects exactly ``M`` cells.
    """
    key = first.double() + torch.rand(first.shape, generator=gen, device=gen.device, dtype=torch.float64)
    key = torch.where(first == torch.iinfo(torch.int64).max, math.inf, key)
    mask = key <= key.kthvalue(num_masked, dim=1, keepdim=True).values
    tied = mask.sum(1) != num_masked
    if bool(tied.any()):  # practically never; keep the count exact anyway
        rows = torch.nonzero(tied).flatten()
        ids = key[rows].topk(num_masked, dim=1, largest=False).indices
        mask[rows] = torch.zeros_like(mask[rows]).scatter_(1, ids, True)
    return mask


def chunk_mask(
    batch_size: int,
    grid: Grid,
    num_masked: int,
    *,
    chunk_sizes: Sequence[int] = (3, 4, 5),
    faithful: bool = False,
    upstream: Upstream = "ssast",
    edge_unbiased: bool = True,
    generator: Union[torch.Generator, int, None] = None,
    device: Device = None,
) -> MaskInfo:
    """Chunked mask with exactly ``num_masked`` hidden tokens per row (see the module docstring).

    ``chunk_sizes`` is the set the side ``c`` is drawn from, per clip (SSAST, and our default) or
    per batch (faithful MAE-AST); a single value fixes it. ``upstream`` only matters with
    ``faithful=True``; faithful SSAST needs ``num_masked <= N - 2`` (token 0 is never masked and
    the loop needs ``M + 1`` cells), faithful MAE-AST ``num_masked <= N - 1``.
    """
    H, W = _as_hw(grid)
    N = H * W
    sizes_choice = torch.as_tensor(list(chunk_sizes), dtype=torch.long)
    if sizes_choice.numel() == 0 or int(sizes_choice.min()) < 1:
        raise ValueError(f"chunk_sizes must be positive integers, got {tuple(chunk_sizes)}")
    if not 0 <= num_masked <= N:
        raise ValueError(f"num_masked must be in [0, {N}] for grid {(H, W)}, got {num_masked}")
    if faithful:
        if upstream not in ("ssast", "mae_ast"):
            raise ValueError(f"upstream must be 'ssast' or 'mae_ast', got {upstream!r}")
        limit = N - 2 if upstream == "ssast" else N - 1
        if num_masked > limit:
            raise ValueError(
                f"faithful {upstream} chunk masking cannot hide {num_masked} of {N} tokens "
                f"(at most {limit}: the upstream loop would never end)"
            )
    out_device = torch.device(device) if device is not None else None
    gen = resolve_generator(generator, device)
    if num_masked == 0 or (num_masked == N and not faithful):
        mask = torch.full((batch_size, N), num_masked == N, dtype=torch.bool, device=out_device or gen.device)
        return MaskInfo.from_mask(mask, num_masked)

    rows = 1 if (faithful and upstream == "mae_ast") else batch_size
    pick = torch.randint(sizes_choice.numel(), (rows,), generator=gen, device=gen.device)
    sizes = sizes_choice.to(gen.device)[pick]
    mode = upstream if faithful else "corrected"
    mask = _sample(mode, (H, W), sizes, num_masked, edge_unbiased, gen)
    if mode == "ssast":  # frequency-major (W, H) work space -> our (H, W) layout
        mask = mask.view(rows, W, H).transpose(1, 2).reshape(rows, N)
    elif mode == "mae_ast":
        mask = mask.expand(batch_size, N)
    if out_device is not None:
        mask = mask.to(out_device)
    return MaskInfo.from_mask(mask.contiguous(), num_masked)


@dataclass
class ChunkMask:
    """Callable config over :func:`chunk_mask`. Defaults: SSAST patch pretraining, 400 masked,
    c in {3, 4, 5}, corrected sampler. ``mask_ratio`` (with ``min_keep``, MAE-AST's
    ``max(1, int(0.25·N))`` visible) replaces ``num_masked`` when set. An int ``grid`` means
    frame tokens ``(T', 1)``."""

    num_masked: Optional[int] = 400
    mask_ratio: Optional[float] = None
    min_keep: int = 1
    chunk_sizes: Tuple[int, ...] = (3, 4, 5)
    faithful: bool = False
    upstream: Upstream = "ssast"
    edge_unbiased: bool = True

    def num_masked_for(self, num_tokens: int) -> int:
        if self.mask_ratio is not None:
            return num_tokens - num_keep_for_ratio(num_tokens, self.mask_ratio, self.min_keep)
        if self.num_masked is None:
            raise ValueError("ChunkMask needs num_masked or mask_ratio")
        return self.num_masked

    def __call__(
        self,
        batch_size: int,
        grid: Grid,
        *,
        generator: Union[torch.Generator, int, None] = None,
        device: Device = None,
    ) -> MaskInfo:
        H, W = _as_hw(grid)
        return chunk_mask(
            batch_size,
            (H, W),
            self.num_masked_for(H * W),
            chunk_sizes=self.chunk_sizes,
            faithful=self.faithful,
            upstream=self.upstream,
            edge_unbiased=self.edge_unbiased,
            generator=generator,
            device=device,
        )

    @classmethod
    def ssast(cls, faithful: bool = False) -> "ChunkMask":
        """SSAST patch models: 400 of 512 tokens (78 %), c in {3, 4, 5} per clip."""
        return cls(num_masked=400, faithful=faithful, upstream="ssast")

    @classmethod
    def mae_ast(cls, faithful: bool = False) -> "ChunkMask":
        """MAE-AST patch model: 75 % (``N - max(1, int(0.25·N))``), c in {3, 4, 5}."""
        return cls(num_masked=None, mask_ratio=0.75, min_keep=1, faithful=faithful, upstream="mae_ast")
