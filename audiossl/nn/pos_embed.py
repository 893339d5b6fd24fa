"""Positional embeddings: MAE/EAT 2-D sin-cos, MAE-AST 1-D sinusoid, SSAST learned tables.

Every table is laid out on our time-major token grid ``(H, W) = (time, frequency)``, token
``n = h * W + w``. Tables of frequency-major models (SSAST/AST store ``(F', T')``) are transposed
by ``audiossl.convert`` before they reach :class:`LearnedPosEmbed`.
"""

from __future__ import annotations

import math
from typing import Literal, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LearnedPosEmbed", "resize_pos_embed", "sincos_1d", "sincos_2d"]

ResizeMode = Literal["auto", "crop", "interpolate"]


def _sincos_axis(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE's ``get_1d_sincos_pos_embed_from_grid``: ``[sin(p·ω), cos(p·ω)]`` concatenated."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(embed_dim: int, grid_hw: Tuple[int, int], cls_token: bool = False) -> Tensor:
    """Fixed 2-D sin-cos table ``(H·W [+1], D)``, float32, exactly MAE's ``get_2d_sincos_pos_embed``.

    Row ``h * W + w`` is ``concat(e(w), e(h))`` with ``e(p) = [sin(p·ω_k), cos(p·ω_k)]``,
    ``ω_k = 10000^(-k / (D/4))``: the **first D/2 channels encode the column index w** (frequency on
    our audio grid) and the last D/2 the row index h (time), because MAE builds the grid with
    ``meshgrid(w, h)`` and names the first half ``emb_h``. EAT inherits this on its
    ``(max_length, 8)`` grid, so the first 512 rows of its 6144-row table equal ``sincos_2d(D,
    (64, 8))``. AudioMAE generates its table with ``grid_hw=(8, 64)`` (frequency rows) yet lays its
    tokens out time-major ``(64, 8)``: reproduce that by calling ``sincos_2d(D, (8, 64))`` and
    using the rows in token order — a fixed but transposed registration, kept for checkpoints.
    ``cls_token`` prepends MAE's all-zero row. Computed in float64 (numpy, as upstream) and cast.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2-D sin-cos table, got {embed_dim}")
    gh, gw = grid_hw
    ww, hh = np.meshgrid(np.arange(gw, dtype=np.float64), np.arange(gh, dtype=np.float64))
    emb = np.concatenate([_sincos_axis(embed_dim // 2, ww), _sincos_axis(embed_dim // 2, hh)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)
    return torch.from_numpy(emb).float()


def sincos_1d(
    embed_dim: int, length: int, *, style: Literal["mae_ast", "fairseq"] = "mae_ast", start: int = 0
) -> Tensor:
    """Fixed 1-D sinusoid table ``(length, D)`` for positions ``start .. start+length-1``.

    ``style="mae_ast"`` (default) is MAE-AST's ``SinusoidalPositionalEncoding`` — the
    PyTorch-tutorial table, **interleaved**: channel ``2k`` is ``sin(p·ω_k)`` and ``2k+1`` is
    ``cos(p·ω_k)`` with ``ω_k = exp(-2k·ln(10000)/D)``, positions from 0. MAE-AST does not use
    fairseq's ``SinusoidalPositionalEmbedding`` (its import is commented out).
    ``style="fairseq"`` is that fairseq module: **concatenated** ``[sin | cos]`` halves with
    ``ω_k = exp(-k·ln(10000)/(D/2 - 1))`` and a zero last channel for odd D; fairseq's positions
    start at ``padding_idx + 1`` (pass it as ``start``).

    Both are computed with upstream's float32 torch ops, so the table equals the ``pe`` buffers
    stored in MAE-AST checkpoints (at position 48 000 float32 rounding of ``p·ω`` is ~3e-3 rad;
    a float64 table would not match them).
    """
    pos = torch.arange(start, start + length).unsqueeze(1)
    if style == "mae_ast":
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even for the MAE-AST sinusoid, got {embed_dim}")
        div = torch.exp(torch.arange(0, embed_dim, 2) * (-math.log(10000.0) / embed_dim))
        pe = torch.zeros(length, embed_dim)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe
    if style == "fairseq":
        half = embed_dim // 2
        if half < 2:
            raise ValueError(f"embed_dim must be at least 4 for the fairseq sinusoid, got {embed_dim}")
        div = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
        arg = pos.float() * div.unsqueeze(0)
        pe = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
        if embed_dim % 2:
            pe = torch.cat([pe, torch.zeros(length, 1)], dim=1)
        return pe
    raise ValueError(f"style must be 'mae_ast' or 'fairseq', got {style!r}")


def _resize_axis(grid: Tensor, axis: int, new: int, mode: ResizeMode) -> Tensor:
    """Crop (centred) or bilinearly resize one spatial axis of a ``(1, D, H, W)`` grid."""
    old = grid.shape[axis]
    if new == old:
        return grid
    if new < old and mode in ("auto", "crop"):
        start = old // 2 - new // 2
        return grid.narrow(axis, start, new)
    if new > old and mode == "crop":
        raise ValueError(f"cannot crop a positional grid axis of {old} to a larger {new}; use mode='interpolate'")
    size = list(grid.shape[2:])
    size[axis - 2] = new
    return F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)


def resize_pos_embed(
    table: Tensor,
    old_grid: Tuple[int, int],
    new_grid: Tuple[int, int],
    *,
    num_prefix: int = 0,
    mode: ResizeMode = "auto",
) -> Tensor:
    """Adapt a ``(1, P + H·W, D)`` table (P leading cls/dist rows, copied as is) to a new grid.

    ``mode="auto"`` is SSAST/AST's rule per axis, time first then frequency: a smaller axis is
    centre-cropped (start ``old//2 - new//2``), a larger one bilinearly resized
    (``align_corners=False``). ``"interpolate"`` always resizes, ``"crop"`` refuses to grow.
    Two SSAST quirks are deliberately not copied: its time resize targets a hard-coded 8 frequency
    rows (equal to the real count for patch models), and its frequency crop ends at
    ``start + t_dim`` instead of ``start + f_dim`` (only reached with fewer than 128 mel bins).
    """
    if table.dim() == 2:
        table = table.unsqueeze(0)
    gh, gw = old_grid
    if table.shape[1] != num_prefix + gh * gw:
        raise ValueError(
            f"table has {table.shape[1]} rows, expected {num_prefix} prefix + {gh}x{gw} grid = {num_prefix + gh * gw}"
        )
    prefix, body = table[:, :num_prefix], table[:, num_prefix:]
    D = table.shape[-1]
    grid = body.reshape(1, gh, gw, D).permute(0, 3, 1, 2)
    dtype = grid.dtype
    grid = grid.float()
    grid = _resize_axis(grid, 2, new_grid[0], mode)
    grid = _resize_axis(grid, 3, new_grid[1], mode)
    body = grid.to(dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], D)
    return torch.cat([prefix, body], dim=1)


class LearnedPosEmbed(nn.Module):
    """Learned table ``(1, num_prefix + H·W, D)`` (SSAST/AST), trunc-normal std 0.02.

    ``num_prefix`` rows belong to the leading tokens (SSAST/AST: cls + dist = 2; MAE-style: 1).
    ``forward`` adds the whole table to ``(B, P + N, D)`` inputs (SSAST: cat then add) or the grid
    part to ``(B, N, D)`` patch tokens (MAE: add, mask, then prepend the cls token with
    :attr:`prefix_pos`).
    """

    def __init__(self, grid: Tuple[int, int], embed_dim: int, num_prefix: int = 0) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_prefix = num_prefix
        self.embed_dim = embed_dim
        self.weight = nn.Parameter(torch.empty(1, num_prefix + self.grid[0] * self.grid[1], embed_dim))
        # timm's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. effectively a plain normal.
        nn.init.trunc_normal_(self.weight, std=0.02, a=-2.0, b=2.0)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def prefix_pos(self) -> Tensor:
        return self.weight[:, : self.num_prefix]

    @property
    def grid_pos(self) -> Tensor:
        return self.weight[:, self.num_prefix :]

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        if n == self.num_prefix + self.num_tokens:
            return x + self.weight
        if n == self.num_tokens:
            return x + self.grid_pos
        raise ValueError(
            f"{n} tokens do not match the positional grid {self.grid} (+{self.num_prefix} prefix); "
            "call resize() for a new input size"
        )

    @torch.no_grad()
    def resize(self, new_grid: Tuple[int, int], mode: ResizeMode = "auto") -> "LearnedPosEmbed":
        """Re-grid in place (see :func:`resize_pos_embed`); returns self.

        The parameter object is replaced, so build optimizers after resizing.
        """
        new_grid = (int(new_grid[0]), int(new_grid[1]))
        table = resize_pos_embed(self.weight.data, self.grid, new_grid, num_prefix=self.num_prefix, mode=mode)
        self.weight = nn.Parameter(table.contiguous())
        self.grid = new_grid
        return self

    def extra_repr(self) -> str:
        return f"grid={self.grid}, embed_dim={self.embed_dim}, num_prefix={self.num_prefix}"
