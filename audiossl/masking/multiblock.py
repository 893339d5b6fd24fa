"""JEPA multi-block masks: a large context block and several target blocks per sample.

Two samplers share one output type, :class:`MultiBlockMasks`:

``mode="faithful"`` reproduces I-JEPA's ``MaskCollator`` (facebookresearch/ijepa
``src/masks/multiblock.py``), quirks included, so runs can be compared with the paper:

1. One uniform draw sets *both* the scale and the aspect ratio of a block, so the largest
   blocks are always the tallest ones.
2. One block size per batch: the first two draws of ``generator`` give the target size, then
   the context size. Passing ``generator=itr`` (an int seed) reproduces upstream's
   per-iteration sizes exactly (upstream seeds a fresh generator with its iteration counter).
3. ``k = int(H*W*scale)``, ``h = round(sqrt(k*r))``, ``w = round(sqrt(k/r))`` with Python's
   round-half-to-even, then ``h <= H-1`` and ``w <= W-1``: a block never spans the grid.
4. Top-left corners are drawn with an exclusive upper bound (``randint(0, H-h)``), so the last
   row and the last column of the grid are never covered by any block.
5. Targets are placed unconstrained; the context block is placed afterwards and intersected
   with the complements of the target rectangles (unless ``allow_overlap``).
6. A placement is valid only if it has *more than* ``min_keep`` tokens (strict ``>``). After 20
   invalid tries the last remaining target constraint is dropped with a warning, so a relaxed
   context may overlap targets even with ``allow_overlap=False`` (``num_relaxed`` counts them).
7. Every context (and target) index list is truncated to the batch minimum by keeping its
   first entries in raster order, which biases contexts away from the bottom-right.

Deviations, all for determinism, speed or termination: positions come from ``generator`` too
(upstream uses the global RNG); the 20 tries of a relaxation level are drawn at once for the
whole batch and scored with summed-area tables, keeping the first valid one (the distribution
of upstream's sequential retries); configurations on which upstream's retry loop would spin
forever (a block with ``<= min_keep`` tokens, a grid with a side of 1) raise ``ValueError``.

``mode="corrected"`` is the 2-D form of V-JEPA's ``multiblock3d`` (facebookresearch/jepa):
independent draws for scale and aspect, inclusive bounds (``h <= H``, corners in
``[0, H-h]``), context = context block minus the union of the targets. Still one block size per
batch (targets are then exact, equal-sized rectangles and need no truncation); when clipping to
the grid would shrink a block, the other side grows to keep the drawn area. Rows whose context
has fewer than ``min_keep`` tokens are redrawn (targets and context together, as V-JEPA does
for empty contexts), at most 64 times per row, then ``ValueError``. Contexts are truncated to
the batch minimum by a *random* subset, not a raster prefix.

Aspect ratios. ``aspect_units="patches"`` is I-JEPA's ``h / w`` in patches. For spectrogram
grids ``aspect_units="grid"`` measures a block relative to the grid, ``r = (h/H) / (w/W)``: at
``r = 1`` a block covers the same fraction of the clip's duration as of its mel band, whatever
the patch layout. The audio preset uses it so that a time-major ``(64, 8)`` grid and SSAST's
frequency-major ``(8, 64)`` grid get transposed blocks of the same time/frequency extent; on
square grids both units agree.

Layout: a grid is ``(H, W)`` and token ``n = h * W + w``; for audio ``(B, 1, T, F)`` inputs that
is (time patches, frequency patches). Upstream frequency-major token orders (SSAST ``8 x 64``,
index ``f * 64 + t``) are simply the grid ``(8, 64)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from audiossl.masking.base import GeneratorLike, MaskInfo, resolve_generator

logger = logging.getLogger(__name__)

Mode = Literal["corrected", "faithful"]
AspectUnits = Literal["patches", "grid"]
Range = tuple[float, float]
Device = Union[torch.device, str, None]

# I-JEPA's retry budget before it drops one target constraint from the context.
_FAITHFUL_TRIES_PER_LEVEL = 20
# Corrected mode: tries per row in each round of redraws (64 in all). One try usually serves
# every row, so the first round is cheap; the few rows left get several tries per round.
_CORRECTED_TRIES = (1,) + (7,) * 9


@dataclass
class MultiBlockMasks:
    """Context and target masks of one batch, every row of each of equal length.

    ``contexts[j].ids_keep`` (B, K_c) are the tokens context encoder ``j`` sees (I-JEPA's
    ``masks_enc[j]``); ``targets[i].ids_masked`` (B, K_t) are the tokens of target block ``i``,
    hidden from the context and predicted (I-JEPA's ``masks_pred[i]``). Index lists are ascending.
    """

    contexts: list[MaskInfo]
    targets: list[MaskInfo]
    grid: tuple[int, int]
    num_relaxed: int = 0  # faithful mode: context placements accepted after dropping constraints

    @property
    def context(self) -> MaskInfo:
        """The context of the usual single-context (``nenc=1``) setting."""
        if len(self.contexts) != 1:
            raise ValueError(f"there are {len(self.contexts)} contexts; use .contexts or .context_ids")
        return self.contexts[0]

    @property
    def context_ids(self) -> Tensor:
        """``(nenc, B, K_c)`` context token indices."""
        return torch.stack([c.ids_keep for c in self.contexts])

    @property
    def target_ids(self) -> Tensor:
        """``(npred, B, K_t)`` target token indices."""
        return torch.stack([t.ids_masked for t in self.targets])

    @property
    def target_union(self) -> Tensor:
        """``(B, N)`` bool, True where any target block lies (V-JEPA's single prediction mask)."""
        return torch.stack([t.mask for t in self.targets]).any(0)

    @property
    def batch_size(self) -> int:
        return self.targets[0].batch_size

    def to(self, device: Device) -> "MultiBlockMasks":
        return MultiBlockMasks(
            [c.to(device) for c in self.contexts],
            [t.to(device) for t in self.targets],
            self.grid,
            self.num_relaxed,
        )


def multiblock_masks(
    batch_size: int,
    grid: Sequence[int],
    *,
    npred: int = 4,
    pred_scale: Range = (0.15, 0.2),
    pred_aspect: Range = (0.75, 1.5),
    enc_scale: Range = (0.85, 1.0),
    enc_aspect: Range = (1.0, 1.0),
    nenc: int = 1,
    allow_overlap: bool = False,
    min_keep: int = 10,
    mode: Mode = "corrected",
    aspect_units: AspectUnits = "patches",
    generator: GeneratorLike = None,
    device: Device = None,
) -> MultiBlockMasks:
    """Sample I-JEPA-style context/target masks for ``batch_size`` samples on an ``(H, W)`` grid.

    Defaults are the values of every released I-JEPA config (4 targets of scale 0.15-0.2 and
    aspect 0.75-1.5, one square context of scale 0.85-1.0, ``min_keep=10``); the
    ``MaskCollator`` constructor's own ``min_keep=4`` is never used by a released model.
    See the module docstring for the two modes. Raises ``ValueError`` when the configuration
    cannot yield ``min_keep`` context tokens.
    """
    H, W = _check_grid(grid)
    if batch_size < 1 or npred < 1 or nenc < 1:
        raise ValueError(f"batch_size, npred and nenc must be >= 1, got {batch_size}, {npred}, {nenc}")
    for name, rng in (("pred_scale", pred_scale), ("enc_scale", enc_scale)):
        if not 0.0 < rng[0] <= rng[1] <= 1.0:
            raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {tuple(rng)}")
    for name, rng in (("pred_aspect", pred_aspect), ("enc_aspect", enc_aspect)):
        if not 0.0 < rng[0] <= rng[1]:
            raise ValueError(f"{name} must satisfy 0 < min <= max, got {tuple(rng)}")
    if min_keep < 0:
        raise ValueError(f"min_keep must be >= 0, got {min_keep}")
    if aspect_units not in ("patches", "grid"):
        raise ValueError(f"aspect_units must be 'patches' or 'grid', got {aspect_units!r}")
    generator = resolve_generator(generator, device)
    device = torch.device(device) if device is not None else generator.device
    # A grid-relative aspect r = (h/H)/(w/W) is the patch aspect h/w = r * H / W.
    to_patches = H / W if aspect_units == "grid" else 1.0
    pred_aspect = (pred_aspect[0] * to_patches, pred_aspect[1] * to_patches)
    enc_aspect = (enc_aspect[0] * to_patches, enc_aspect[1] * to_patches)

    if mode == "faithful":
        targets, contexts, relaxed = _sample_faithful(
            batch_size, (H, W), npred, nenc, pred_scale, pred_aspect, enc_scale, enc_aspect,
            allow_overlap, min_keep, generator, device,
        )
        contexts = _truncate_raster(contexts)
    elif mode == "corrected":
        targets, contexts = _sample_corrected(
            batch_size, (H, W), npred, nenc, pred_scale, pred_aspect, enc_scale, enc_aspect,
            allow_overlap, min_keep, generator, device,
        )
        relaxed = 0
        contexts = _truncate_random(contexts, generator, device)
    else:
        raise ValueError(f"mode must be 'corrected' or 'faithful', got {mode!r}")
    targets = targets.flatten(2)  # one block size per batch: equal lengths, nothing to truncate
    return MultiBlockMasks(
        contexts=[MaskInfo.from_mask(~contexts[:, j]) for j in range(nenc)],
        targets=[MaskInfo.from_mask(targets[:, i]) for i in range(npred)],
        grid=(H, W),
        num_relaxed=relaxed,
    )


@dataclass
class MultiBlockMasker:
    """Multi-block mask config; ``masker(batch_size, grid, generator=g)`` samples a batch."""

    npred: int = 4
    pred_scale: Range = (0.15, 0.2)
    pred_aspect: Range = (0.75, 1.5)
    enc_scale: Range = (0.85, 1.0)
    enc_aspect: Range = (1.0, 1.0)
    nenc: int = 1
    allow_overlap: bool = False
    min_keep: int = 10
    mode: Mode = "corrected"
    aspect_units: AspectUnits = "patches"

    def __call__(
        self,
        batch_size: int,
        grid: Sequence[int],
        *,
        generator: GeneratorLike = None,
        device: Device = None,
    ) -> MultiBlockMasks:
        return multiblock_masks(
            batch_size, grid, npred=self.npred, pred_scale=self.pred_scale,
            pred_aspect=self.pred_aspect, enc_scale=self.enc_scale, enc_aspect=self.enc_aspect,
            nenc=self.nenc, allow_overlap=self.allow_overlap, min_keep=self.min_keep,
            mode=self.mode, aspect_units=self.aspect_units, generator=generator, device=device,
        )


def multiblock_image(mode: Mode = "corrected") -> MultiBlockMasker:
    """I-JEPA's released configs (ViT-H/14 on a 16x16 grid, ViT/16 at 224 px on 14x14)."""
    return MultiBlockMasker(mode=mode)


def multiblock_audio(mode: Mode = "corrected") -> MultiBlockMasker:
    """Spectrogram grids (64x8 time-major, 8x64 SSAST frequency-major, frame grids 1xT).

    Same target/context scales as I-JEPA; aspects are grid-relative (see the module docstring)
    and span a factor of two either way around "same fraction of time as of frequency". There is
    no upstream audio multi-block config to match (A-JEPA released no code; Riou et al. 2024
    report that random masks beat multi-block on spectrograms), so this is a neutral default.
    """
    return MultiBlockMasker(pred_aspect=(0.5, 2.0), aspect_units="grid", mode=mode)


MULTIBLOCK_PRESETS = {"image": multiblock_image, "audio": multiblock_audio}


# ----------------------------------------------------------------------------- helpers


def _check_grid(grid: Sequence[int]) -> tuple[int, int]:
    if len(grid) != 2 or min(int(grid[0]), int(grid[1])) < 1:
        raise ValueError(f"grid must be (H, W) with positive sides, got {tuple(grid)}")
    return int(grid[0]), int(grid[1])


def _uniform(rng: Range, u: float) -> float:
    return rng[0] + u * (rng[1] - rng[0])


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(0, high, size, generator=generator, device=generator.device).to(device)


def _boxes(tops: Tensor, lefts: Tensor, h: int, w: int, grid: tuple[int, int]) -> Tensor:
    """``(...,)`` top-left corners -> ``(..., H, W)`` bool rectangles of size ``h x w``."""
    H, W = grid
    rows = torch.arange(H, device=tops.device).view(*([1] * tops.dim()), H, 1)
    cols = torch.arange(W, device=tops.device).view(*([1] * tops.dim()), 1, W)
    t, l = tops[..., None, None], lefts[..., None, None]
    # Row and column tests stay (..., H, 1) and (..., 1, W); only the final & is full size.
    return ((rows >= t) & (rows < t + h)) & ((cols >= l) & (cols < l + w))


def ijepa_block_size(u: float, grid: tuple[int, int], scale: Range, aspect: Range) -> tuple[int, int]:
    """I-JEPA's ``_sample_block_size``: one draw ``u`` sets scale and aspect; sides < grid."""
    H, W = grid
    k = int(H * W * _uniform(scale, u))
    r = _uniform(aspect, u)
    h = int(round(math.sqrt(k * r)))
    w = int(round(math.sqrt(k / r)))
    return min(h, H - 1), min(w, W - 1)


def corrected_block_size(
    u_scale: float, u_aspect: float, grid: tuple[int, int], scale: Range, aspect: Range
) -> tuple[int, int]:
    """Independent scale and aspect; sides clipped to ``[1, grid]`` keeping the drawn area.

    When the aspect asks for a side longer than the grid, the other side is recomputed from the
    area, so scale is honoured first and aspect as far as the grid allows (a 1xT grid gets
    ``1 x round(k)`` blocks).
    """
    H, W = grid
    k = max(1, int(H * W * _uniform(scale, u_scale)))
    r = _uniform(aspect, u_aspect)
    h = min(max(int(round(math.sqrt(k * r))), 1), H)
    w = int(round(k / h))
    if w > W:
        w = W
        h = min(max(int(round(k / W)), 1), H)
    return h, max(w, 1)


def _sample_faithful(
    B: int, grid: tuple[int, int], npred: int, nenc: int, pred_scale: Range, pred_aspect: Range,
    enc_scale: Range, enc_aspect: Range, allow_overlap: bool, min_keep: int,
    g: torch.Generator, device: torch.device,
) -> tuple[Tensor, Tensor, int]:
    H, W = grid
    if H < 2 or W < 2:
        raise ValueError(
            f"mode='faithful' needs a grid of at least 2x2 (I-JEPA's blocks are strictly smaller "
            f"than the grid), got {grid}; use mode='corrected'"
        )
    u_pred, u_enc = torch.rand(2, generator=g, device=g.device).tolist()
    hp, wp = ijepa_block_size(u_pred, grid, pred_scale, pred_aspect)
    he, we = ijepa_block_size(u_enc, grid, enc_scale, enc_aspect)
    for name, (h, w) in (("target", (hp, wp)), ("context", (he, we))):
        if h * w <= min_keep:
            raise ValueError(
                f"{name} blocks on grid {grid} have {h}x{w}={h * w} tokens, not more than "
                f"min_keep={min_keep}; I-JEPA's retry loop would never finish"
            )
    targets = _boxes(_randint(H - hp, (B, npred), g, device), _randint(W - wp, (B, npred), g, device), hp, wp, grid)

    def draw_corners(n: int) -> tuple[Tensor, Tensor]:
        shape = (B, nenc, n)
        return _randint(H - he, shape, g, device), _randint(W - we, shape, g, device)

    if allow_overlap:
        tops, lefts = draw_corners(1)
        return targets, _boxes(tops[..., 0], lefts[..., 0], he, we, grid), 0

    top = torch.zeros(B, nenc, dtype=torch.long, device=device)
    left = torch.zeros_like(top)
    level_of = torch.zeros_like(top)
    resolved = torch.zeros(B, nenc, dtype=torch.bool, device=device)
    allowed_by_level = []
    relaxed = 0
    # Level l keeps the first npred - l target complements as constraints; at level npred none
    # is left and every candidate is valid (checked above), so the loop ends by then.
    for level in range(npred + 1):
        allowed = ~targets[:, : npred - level].any(1)  # (B, H, W)
        allowed_by_level.append(allowed)
        # A summed-area table counts a candidate's allowed cells from its four corners, so the
        # tries are scored without being drawn: O(B * tries), not O(B * tries * H * W).
        sat = F.pad(allowed.to(torch.int32).cumsum(1).cumsum(2), (1, 0, 1, 0)).flatten(1)
        tops, lefts = draw_corners(_FAITHFUL_TRIES_PER_LEVEL)

        def corner(r: Tensor, c: Tensor) -> Tensor:
            return sat.gather(1, (r * (W + 1) + c).flatten(1)).view_as(r)

        bottom, right = tops + he, lefts + we
        count = corner(bottom, right) - corner(tops, right) - corner(bottom, lefts) + corner(tops, lefts)
        valid = count > min_keep  # (B, nenc, tries)
        first = valid.to(torch.uint8).argmax(-1, keepdim=True)  # the first valid try, as upstream takes
        take = valid.any(-1) & ~resolved
        top = torch.where(take, tops.gather(-1, first)[..., 0], top)
        left = torch.where(take, lefts.gather(-1, first)[..., 0], left)
        level_of = torch.where(take, level, level_of)
        if level:
            relaxed += int(take.sum())
        resolved |= take
        if bool(resolved.all()):
            break
        logger.warning(
            "Valid mask not found for %d context block(s) after %d tries; keeping only the first "
            "%d of %d target constraints (as I-JEPA does)",
            int((~resolved).sum()), _FAITHFUL_TRIES_PER_LEVEL, npred - level - 1, npred,
        )
    allowed = torch.stack(allowed_by_level, 1)  # (B, levels visited, H, W)
    allowed_at = allowed.gather(1, level_of.view(B, nenc, 1, 1).expand(B, nenc, H, W))
    contexts = _boxes(top, left, he, we, grid) & allowed_at
    return targets, contexts, relaxed


def _sample_corrected(
    B: int, grid: tuple[int, int], npred: int, nenc: int, pred_scale: Range, pred_aspect: Range,
    enc_scale: Range, enc_aspect: Range, allow_overlap: bool, min_keep: int,
    g: torch.Generator, device: torch.device,
) -> tuple[Tensor, Tensor]:
    H, W = grid
    u = torch.rand(4, generator=g, device=g.device).tolist()
    hp, wp = corrected_block_size(u[0], u[1], grid, pred_scale, pred_aspect)
    he, we = corrected_block_size(u[2], u[3], grid, enc_scale, enc_aspect)
    if he * we < min_keep:
        raise ValueError(
            f"context blocks on grid {grid} have {he}x{we}={he * we} tokens, fewer than "
            f"min_keep={min_keep}"
        )
    targets = torch.zeros(B, npred, H, W, dtype=torch.bool, device=device)
    contexts = torch.zeros(B, nenc, H, W, dtype=torch.bool, device=device)
    pending = torch.arange(B, device=device)
    for A in _CORRECTED_TRIES:
        n = pending.numel()
        tgt = _boxes(_randint(H - hp + 1, (n, A, npred), g, device), _randint(W - wp + 1, (n, A, npred), g, device),
                     hp, wp, grid)
        ctx = _boxes(_randint(H - he + 1, (n, A, nenc), g, device), _randint(W - we + 1, (n, A, nenc), g, device),
                     he, we, grid)
        if not allow_overlap:
            ctx = ctx & ~tgt.any(2, keepdim=True)
        valid = (ctx.flatten(-2).sum(-1) >= min_keep).all(-1)  # (n, A)
        done = valid.any(1)
        first = valid.to(torch.uint8).argmax(1)[done]
        rows = pending[done]
        targets[rows] = tgt[done, first]
        contexts[rows] = ctx[done, first]
        pending = pending[~done]
        if pending.numel() == 0:
            return targets, contexts
    raise ValueError(
        f"could not place a context of >= min_keep={min_keep} tokens on grid {grid} next to "
        f"{npred} targets of {hp}x{wp} (context block {he}x{we}) in "
        f"{sum(_CORRECTED_TRIES)} tries for {pending.numel()} of {B} rows; lower min_keep, npred "
        f"or pred_scale, or allow overlap"
    )


def _truncate_raster(blocks: Tensor) -> Tensor:
    """``(B, M, H, W)`` -> ``(B, M, N)`` keeping each row's first ``k`` tokens, k = batch min."""
    flat = blocks.flatten(2)
    k = int(flat.sum(-1).min())
    return flat & (flat.cumsum(-1) <= k)


def _truncate_random(blocks: Tensor, g: torch.Generator, device: torch.device) -> Tensor:
    """``(B, M, H, W)`` -> ``(B, M, N)`` keeping a uniform random ``k``-subset, k = batch min."""
    flat = blocks.flatten(2)
    k = int(flat.sum(-1).min())
    noise = torch.rand(flat.shape, generator=g, device=g.device).to(device)
    order = torch.where(flat, noise, torch.full_like(noise, 2.0)).argsort(-1)
    return torch.zeros_like(flat).scatter_(-1, order[..., :k], True)
