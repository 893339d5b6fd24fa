"""Mask statistics: what a sampler actually does, as numbers.

Every function takes masks as a ``(B, N)`` bool tensor (True = hidden), a :class:`MaskInfo`, or a
sequence of either (stacked along the batch). :func:`sample_masks` draws them from any sampler
that follows the masking convention ``sampler(batch_size, grid, *, generator=..., device=...)``.

These are the checks the papers' descriptions cannot give: coverage, the per-position masking
frequency (edge bias — e.g. SSAST's under-masked lowest frequency row), the overlap of two masks
(JEPA context vs targets), and the sizes of 4-connected masked blocks.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, Sequence, Tuple, Union

import torch
from torch import Tensor

from audiossl.masking.base import MaskInfo

__all__ = [
    "block_size_histogram",
    "component_sizes",
    "connected_components",
    "coverage",
    "format_table",
    "mask_summary",
    "masks_tensor",
    "overlap",
    "position_frequency",
    "sample_masks",
]

Masks = Union[Tensor, MaskInfo, Sequence[Union[Tensor, MaskInfo]]]


def masks_tensor(masks: Masks) -> Tensor:
    """Any accepted mask input as one ``(B, N)`` bool tensor."""
    if isinstance(masks, MaskInfo):
        return masks.mask.bool()
    if isinstance(masks, Tensor):
        if masks.dim() == 1:
            masks = masks.unsqueeze(0)
        if masks.dim() != 2:
            raise ValueError(f"masks must be (B, N), got shape {tuple(masks.shape)}")
        return masks.bool()
    parts = [masks_tensor(m) for m in masks]
    if not parts:
        raise ValueError("no masks given")
    return torch.cat([p.to(parts[0].device) for p in parts], dim=0)


def sample_masks(
    sampler: Callable[..., object],
    grid: Tuple[int, int],
    *,
    batch_size: int = 64,
    num_batches: int = 4,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    select: Callable[[object], Union[MaskInfo, Tensor]] = lambda out: out,  # type: ignore[assignment,return-value]
) -> Tensor:
    """Draw ``num_batches`` batches from ``sampler`` with one seeded generator; ``(B·n, N)``.

    ``select`` picks the mask out of a sampler that returns more than one (e.g. the target union
    of a JEPA collator).
    """
    gen = torch.Generator(device=torch.device(device) if device is not None else "cpu").manual_seed(seed)
    return masks_tensor([select(sampler(batch_size, grid, generator=gen, device=device)) for _ in range(num_batches)])


def coverage(masks: Masks) -> Tensor:
    """Masked fraction per row ``(B,)`` (float); ``.mean()`` is the realised mask ratio."""
    return masks_tensor(masks).float().mean(dim=1)


def position_frequency(masks: Masks, grid: Tuple[int, int]) -> Tensor:
    """``(H, W)`` fraction of rows that hide each position — flat at the ratio for an unbiased
    sampler; anything else is edge or order bias."""
    m = masks_tensor(masks)
    H, W = grid
    if m.shape[1] != H * W:
        raise ValueError(f"masks have {m.shape[1]} tokens, grid {grid} has {H * W}")
    return m.float().mean(dim=0).reshape(H, W)


def overlap(a: Masks, b: Masks) -> Dict[str, float]:
    """How two masks of the same rows intersect (e.g. a JEPA context against its targets).

    ``intersection``: mean tokens set in both; ``iou``: mean |a∧b| / |a∨b| (1 when both are
    empty); ``frac_of_a`` / ``frac_of_b``: mean share of a's (b's) tokens also in the other
    (0 when that mask is empty).
    """
    ma, mb = masks_tensor(a), masks_tensor(b).to(masks_tensor(a).device)
    if ma.shape != mb.shape:
        raise ValueError(f"mask shapes differ: {tuple(ma.shape)} vs {tuple(mb.shape)}")
    inter = (ma & mb).sum(1).float()
    union = (ma | mb).sum(1).float()
    na, nb = ma.sum(1).float(), mb.sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return {
        "intersection": inter.mean().item(),
        "iou": iou.mean().item(),
        "frac_of_a": (inter / na.clamp(min=1)).mean().item(),
        "frac_of_b": (inter / nb.clamp(min=1)).mean().item(),
    }


def connected_components(masks: Masks, grid: Tuple[int, int]) -> Tensor:
    """``(B, H, W)`` long labels of 4-connected masked blocks, 0 for visible cells.

    Each component is labelled with 1 + its smallest flat index. Every cell holds a pointer to a
    cell of its block (initially itself); each round takes the minimum over the 4 neighbours,
    hooks the pointed-to cell to that minimum as well (``scatter_reduce(amin)``), then follows
    pointers to their end (pointer jumping). Minimum labels thus cross a whole block in
    O(log size) rounds instead of one cell per round; all rows at once, no Python loop over cells.
    """
    m = masks_tensor(masks)
    H, W = grid
    N = H * W
    B = m.shape[0]
    if m.shape[1] != N:
        raise ValueError(f"masks have {m.shape[1]} tokens, grid {grid} has {N}")
    cells = torch.cat([m, torch.zeros(B, 1, dtype=torch.bool, device=m.device)], dim=1)  # + dump cell N
    idx = torch.arange(N + 1, device=m.device).expand(B, N + 1)
    label = torch.where(cells, idx, N)  # visible cells point at the dump cell, whose label is N
    for _ in range(4 * N + 4):
        start = label
        grid_label = label[:, :N].reshape(B, H, W)
        padded = torch.nn.functional.pad(grid_label, (1, 1, 1, 1), value=N)
        neigh = torch.minimum(
            torch.minimum(grid_label, padded[:, :-2, 1:-1]),
            torch.minimum(torch.minimum(padded[:, 2:, 1:-1], padded[:, 1:-1, :-2]), padded[:, 1:-1, 2:]),
        )
        low = torch.cat([torch.where(m.view(B, H, W), neigh, N).reshape(B, N), label[:, N:]], dim=1)
        label = label.scatter_reduce(1, label, low, reduce="amin")  # hook the pointed-to cell
        label = torch.minimum(label, low)
        while True:
            jumped = label.gather(1, label)
            if torch.equal(jumped, label):
                break
            label = jumped
        if torch.equal(label, start):
            break
    return torch.where(m, label[:, :N] + 1, 0).reshape(B, H, W)


def component_sizes(masks: Masks, grid: Tuple[int, int]) -> Tensor:
    """1-D tensor of the size of every masked 4-connected block, over all rows."""
    labels = connected_components(masks, grid)
    B = labels.shape[0]
    N = grid[0] * grid[1]
    flat = labels.reshape(B, -1)
    counts = torch.zeros(B, N + 1, dtype=torch.long, device=flat.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts = counts[:, 1:]
    return counts[counts > 0]


def block_size_histogram(masks: Masks, grid: Tuple[int, int]) -> Tensor:
    """``hist[s]`` = number of 4-connected masked blocks of exactly ``s`` tokens (index 0 unused)."""
    sizes = component_sizes(masks, grid)
    return torch.bincount(sizes, minlength=grid[0] * grid[1] + 1)


def mask_summary(masks: Masks, grid: Tuple[int, int]) -> Dict[str, float]:
    """Headline numbers of a stack of masks, for tables and regression checks.

    ``edge_ratio``: mean masking frequency on the grid border over that of the interior (1 for an
    unbiased sampler; NaN when the grid has no interior); ``freq_min``/``freq_max``: extremes of the
    per-position frequency; block statistics are over 4-connected components.
    """
    m = masks_tensor(masks)
    H, W = grid
    cov = coverage(m)
    freq = position_frequency(m, grid)
    border = torch.zeros(H, W, dtype=torch.bool, device=freq.device)
    border[0, :] = border[-1, :] = True
    border[:, 0] = border[:, -1] = True
    interior = ~border
    edge_ratio = (
        (freq[border].mean() / freq[interior].mean()).item()
        if interior.any() and freq[interior].mean() > 0
        else math.nan
    )
    sizes = component_sizes(m, grid).float()
    rows = m.shape[0]
    return {
        "rows": float(rows),
        "tokens": float(H * W),
        "coverage_mean": cov.mean().item(),
        "coverage_std": cov.std(unbiased=False).item(),
        "masked_per_row": m.sum(1).float().mean().item(),
        "freq_min": freq.min().item(),
        "freq_max": freq.max().item(),
        "edge_ratio": edge_ratio,
        "blocks_per_row": sizes.numel() / rows,
        "block_size_mean": sizes.mean().item() if sizes.numel() else 0.0,
        "block_size_max": sizes.max().item() if sizes.numel() else 0.0,
    }


def format_table(rows: Iterable[Tuple[str, Dict[str, float]]], keys: Sequence[str] = ()) -> str:
    """Plain-text table of several :func:`mask_summary` results, one line per family."""
    rows = list(rows)
    if not rows:
        return ""
    keys = list(keys) or [k for k in rows[0][1] if k not in ("rows", "tokens")]
    name_w = max(6, max(len(name) for name, _ in rows))
    head = "family".ljust(name_w) + "".join(f"{k:>16}" for k in keys)
    lines = [head, "-" * len(head)]
    for name, summ in rows:
        lines.append(name.ljust(name_w) + "".join(f"{summ.get(k, math.nan):>16.4g}" for k in keys))
    return "\n".join(lines)
