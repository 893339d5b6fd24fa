"""Swin-V2-style local attention: the building blocks of AudioMAE's local decoder.

AudioMAE's released pretraining model (``decoder_mode=1``) decodes with ``SwinTransformerBlock``
from its ``timm_patch/swin_transformer.py``, a Swin-V2 variant that differs from a ViT block in
three ways, all kept here:

* attention inside non-overlapping windows of the token grid, on every other block after a
  cyclic shift whose wrapped-around regions must not see each other (:func:`shift_mask`);
* scaled cosine attention: ``cos(q, k) / max(tau, 0.01)`` with a learned temperature per head,
  plus a continuous relative position bias that a small MLP (``meta_mlp``: 2 → 384 → heads,
  ReLU, dropout 0.1 on both layers, as upstream) computes from log-spaced offsets;
* res-post-norm: ``x + norm1(attn(x))``, ``x + norm2(mlp(x))``.

The attention itself goes through ``scaled_dot_product_attention``: the per-head temperature is
folded into the normalised queries (``scale=1``) and the bias plus the shift mask is the float
``attn_mask``. Upstream divides ``q·k`` by ``max(|q||k|, 1e-6)``; ``F.normalize`` clamps each
norm at 1e-12 instead, which only differs for an all-zero query or key.

Grids are ``(H, W)`` = (time, frequency) with tokens time-major, so a ``(B, H·W, C)`` token
sequence is viewed as ``(B, H, W, C)`` without copying. Parameter names follow upstream
(``attn.qkv``, ``attn.proj``, ``attn.tau``, ``attn.meta_mlp.fc1/fc2``, ``norm1``, ``mlp.fc1/fc2``,
``norm2``), so AudioMAE decoder blocks load without renaming.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.nn.blocks import DropPath, LayerNorm6, Mlp

__all__ = [
    "META_HIDDEN_DIM",
    "SHIFT_MASK_VALUE",
    "SwinBlock",
    "WindowAttention",
    "pad_to_windows",
    "relative_coords_log",
    "shift_mask",
    "window_partition",
    "window_reverse",
    "window_shift",
]

# Upstream's meta-network width (``meta_hidden_dim=384``, marked "FIXME what's the optimal value?").
META_HIDDEN_DIM = 384
# Upstream's dropout inside the meta network ("appears to 'overfit' without").
META_DROPOUT = 0.1
# The additive value upstream puts between tokens of different shift regions (not -inf: with it
# a row can never be fully masked, and outputs match upstream's to the last bit of the softmax).
SHIFT_MASK_VALUE = -100.0
# Upstream clamps the temperature from below so a collapsing ``tau`` cannot blow up the logits.
TAU_MIN = 0.01

Grid = Tuple[int, int]


def window_shift(grid: Grid, window: Grid, shift: Grid) -> Tuple[Grid, Grid]:
    """The window and shift actually used on ``grid`` (upstream ``_calc_window_shift``): a window
    larger than the grid shrinks to it, and an axis that fits in one window is not shifted."""
    win = tuple(min(g, w) for g, w in zip(grid, window))
    sh = tuple(0 if g <= w else s for g, w, s in zip(grid, win, shift))
    return win, sh  # type: ignore[return-value]


def window_partition(x: Tensor, window: Grid) -> Tensor:
    """``(B, H, W, C)`` → ``(B·nW, wh·ww, C)``, windows in row-major order per example."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, C)


def window_reverse(windows: Tensor, window: Grid, grid: Grid) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B·nW, wh·ww, C)`` → ``(B, H, W, C)``."""
    (wh, ww), (H, W) = window, grid
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def _regions(length: int, window: int, shift: int) -> Tensor:
    """Region id along one axis after a cyclic shift by ``shift``: the wrapped-around tail (last
    ``shift``), the window before it, and the rest. Upstream slices ``[0, -w)``, ``[-w, -s)``,
    ``[-s, None)``; with ``s = 0`` the last slice is the whole axis, i.e. one region."""
    ids = torch.zeros(length, dtype=torch.long)
    if shift:
        ids[length - window :] = 1
        ids[length - shift :] = 2
    return ids


def shift_mask(grid: Grid, window: Grid, shift: Grid) -> Optional[Tensor]:
    """``(nW, L, L)`` additive mask for shifted-window attention (``L = wh·ww``): 0 between tokens
    of the same region of the shifted grid, :data:`SHIFT_MASK_VALUE` between tokens that only
    share a window because of the wrap-around. None when nothing is shifted."""
    if not any(shift):
        return None
    rows = _regions(grid[0], window[0], shift[0])
    cols = _regions(grid[1], window[1], shift[1])
    label = (rows[:, None] * 3 + cols[None, :]).to(torch.float32)
    windows = window_partition(label.view(1, *grid, 1), window).squeeze(-1)  # (nW, L)
    differ = windows.unsqueeze(1) != windows.unsqueeze(2)
    return torch.zeros(differ.shape).masked_fill_(differ, SHIFT_MASK_VALUE)


def relative_coords_log(window: Grid) -> Tensor:
    """``(L·L, 2)`` log-spaced offsets ``sign(d)·log(1 + |d|)`` between every query and key of a
    window, query-major: the meta network's input (Swin-V2's continuous position bias)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2).float()
    return torch.sign(rel) * torch.log1p(rel.abs())


def pad_to_windows(x: Tensor, window: Grid) -> Tensor:
    """``(B, H, W, C)`` padded at the end of each axis to a multiple of ``window`` by repeating
    the last row/column: AudioMAE's stride-10 model turns its 101 time rows into 102 this way."""
    H, W = x.shape[1:3]
    pad_h, pad_w = -H % window[0], -W % window[1]
    if pad_h:
        x = torch.cat([x, x[:, -1:].expand(-1, pad_h, -1, -1)], dim=1)
    if pad_w:
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, pad_w, -1)], dim=2)
    return x


class MetaMlp(nn.Module):
    """The position-bias network: Linear(2→hidden) → ReLU → dropout → Linear(hidden→heads) →
    dropout, named ``fc1``/``fc2`` as upstream's timm ``Mlp``."""

    def __init__(self, num_heads: int, hidden_dim: int = META_HIDDEN_DIM, drop: float = META_DROPOUT) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, hidden_dim)
        self.act = nn.ReLU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, num_heads)
        self.drop2 = nn.Dropout(drop)

    def forward(self, coords: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(coords)))))


class WindowAttention(nn.Module):
    """Scaled cosine attention within windows, with the continuous relative position bias."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 meta_hidden_dim: int = META_HIDDEN_DIM) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.meta_mlp = MetaMlp(num_heads, meta_hidden_dim)
        self.tau = nn.Parameter(torch.ones(num_heads))
        self._coords_cache: Dict[Tuple[Grid, torch.device, torch.dtype], Tensor] = {}

    def position_bias(self, window: Grid) -> Tensor:
        """``(heads, L, L)`` bias; recomputed every call because ``meta_mlp`` trains (and drops out)."""
        weight = self.meta_mlp.fc1.weight
        key = (tuple(window), weight.device, weight.dtype)
        if key not in self._coords_cache:
            self._coords_cache[key] = relative_coords_log(window).to(device=weight.device, dtype=weight.dtype)
        coords = self._coords_cache[key]
        area = window[0] * window[1]
        return self.meta_mlp(coords).transpose(0, 1).reshape(self.num_heads, area, area)

    def forward(self, x: Tensor, window: Grid, mask: Optional[Tensor] = None) -> Tensor:
        """``x`` ``(B·nW, L, C)`` windows; ``mask`` ``(nW, L, L)`` additive (the shift mask)."""
        Bw, L, C = x.shape
        q, k, v = self.qkv(x).view(Bw, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        # cos(q, k) / tau == (q/|q| / tau) · (k/|k|): the temperature rides on the queries so SDPA
        # runs with scale 1.
        inv_tau = 1.0 / self.tau.clamp(min=TAU_MIN)
        q = F.normalize(q, dim=-1) * inv_tau.to(q.dtype).view(1, -1, 1, 1)
        k = F.normalize(k, dim=-1)
        bias = self.position_bias(window).to(q.dtype).unsqueeze(0)  # (1, heads, L, L)
        if mask is not None:
            num_windows = mask.shape[0]
            bias = bias + mask.to(q.dtype).unsqueeze(1)  # (nW, heads, L, L)
            # windows are example-major (b·nW + w): repeat the per-window bias over the batch.
            bias = bias.unsqueeze(0).expand(Bw // num_windows, -1, -1, -1, -1).reshape(Bw, self.num_heads, L, L)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0,
                                           scale=1.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(Bw, L, C)))

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        self._coords_cache = {}
        return super()._apply(fn, recurse)


class SwinBlock(nn.Module):
    """One res-post-norm Swin-V2 block over a token grid (upstream ``SwinTransformerBlock`` with
    ``extra_norm=False``). ``window``/``shift`` are the targets; on a small grid they shrink as
    :func:`window_shift` says. The grid is given per call, so any clip length works as long as it
    is a multiple of the (shrunk) window (see :func:`pad_to_windows`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: Grid = (4, 4),
        shift: Grid = (0, 0),
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
    ) -> None:
        super().__init__()
        self.window = tuple(window)
        self.shift = tuple(shift)
        self.attn = WindowAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm1 = norm_layer(dim)
        self.drop_path = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.norm2 = norm_layer(dim)
        self._mask_cache: Dict[Tuple[Grid, Grid, Grid, torch.device], Optional[Tensor]] = {}

    def layout(self, grid: Grid) -> Tuple[Grid, Grid]:
        """(window, shift) used on ``grid``."""
        return window_shift(grid, self.window, self.shift)

    def _shift_mask(self, grid: Grid, window: Grid, shift: Grid, device: torch.device) -> Optional[Tensor]:
        key = (grid, window, shift, device)
        if key not in self._mask_cache:
            mask = shift_mask(grid, window, shift)
            self._mask_cache[key] = None if mask is None else mask.to(device)
        return self._mask_cache[key]

    def window_attention(self, x: Tensor, grid: Grid) -> Tensor:
        """Shift, partition, attend, merge, unshift: ``(B, H·W, C)`` → same shape."""
        B, N, C = x.shape
        grid = (int(grid[0]), int(grid[1]))
        window, shift = self.layout(grid)
        if grid[0] % window[0] or grid[1] % window[1]:
            raise ValueError(f"grid {tuple(grid)} is not a multiple of the window {window}; pad it with pad_to_windows")
        x = x.view(B, *grid, C)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        out = self.attn(window_partition(x, window), window, self._shift_mask(grid, window, shift, x.device))
        x = window_reverse(out, window, grid)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x.reshape(B, N, C)

    def forward(self, x: Tensor, grid: Grid) -> Tensor:
        x = x + self.drop_path(self.norm1(self.window_attention(x, grid)))
        return x + self.drop_path(self.norm2(self.mlp(x)))

    def extra_repr(self) -> str:
        return f"window={self.window}, shift={self.shift}"

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        self._mask_cache = {}
        return super()._apply(fn, recurse)
