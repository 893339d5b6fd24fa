"""Spectrogram and image tokenizers, and the patch flatten order every loss depends on.

Layout (ARCHITECTURE.md): an audio batch is ``(B, 1, T, F)`` with time as the image height, so a
patch grid is ``(H, W) = (T', F')`` and token ``n = h * W + w`` (time-major, the EAT/AudioMAE/MAE-AST
order). SSAST and AST run their convolution on ``(B, 1, F, T)`` and get frequency-major tokens
``n = f * T' + t``; ``audiossl.convert`` transposes their weights once instead of this module
carrying a layout flag. The weight of a Conv2d on ``(F, T)`` input is our weight with its last two
axes swapped.

Within-patch flatten order (what a reconstruction target looks like):

* ``patchify`` (MAE ``einsum('nchpwq->nhwpqc')``): ``(ph, pw, C)`` row-major, channel fastest. For
  audio ``C = 1`` this is time-major inside the patch, identical to MAE-AST's ``nn.Unfold`` on
  ``(B, 1, T, F)`` and to AudioMAE's ``patchify``.
* SSAST's targets come from ``nn.Unfold`` on ``(B, 1, F, T)``: frequency-major inside the patch
  *and* frequency-major across patches. ``patchify(..., within="freq_major")`` gives SSAST's
  within-patch order on our (time-major) token order; reordering tokens is a permutation of rows
  (``n = t * W + f`` <-> ``f * H + t``) left to the model adapters.
* A conv patch embedding equals ``Linear`` on ``patchify(x, within="time_major")`` with weight
  ``conv.weight.flatten(1)`` only for ``C = 1``; for images the conv flattens ``(C, ph, pw)``.
  The tokenizers use the conv, so this detail matters only to converters.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


IntPair = Union[int, Tuple[int, int]]
WithinPatch = Literal["time_major", "freq_major"]

__all__ = [
    "FrameTokenizer",
    "PatchTokenizer",
    "Tokens",
    "grid_shape",
    "patchify",
    "token_padding_mask",
    "unpatchify",
]


def _pair(x: IntPair) -> Tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


class Tokens(NamedTuple):
    """Output of a tokenizer.

    ``padding_mask`` is ``(B, N)`` bool, True where a token lies entirely in padding; it is None
    only when the input needed no padding and no ``lengths`` were given (the common pretraining
    case, so attention can take its fast path).
    """

    tokens: Tensor  # (B, N, D)
    padding_mask: Optional[Tensor]  # (B, N) bool or None
    grid: Tuple[int, int]  # (H', W') token grid, time-major


def grid_shape(
    height: int, width: int, patch_size: IntPair, stride: Optional[IntPair] = None, *, pad: bool = True
) -> Tuple[int, int]:
    """Token grid ``(H', W')`` of a ``(height, width)`` input.

    Non-overlapping patches (stride == patch) along the height are counted after padding the
    height up to a multiple of the patch (``pad=True``); overlapping strides drop the remainder,
    as AST's fine-tuning convolution does. The width (mel bins) is a model constant and is never
    padded: it must fit the patch.
    """
    ph, pw = _pair(patch_size)
    sh, sw = _pair(stride if stride is not None else patch_size)
    if height < ph and not (pad and sh == ph):
        raise ValueError(f"input height {height} is smaller than the patch height {ph}")
    if width < pw:
        raise ValueError(f"input width {width} is smaller than the patch width {pw}")
    if sw == pw and width % pw:
        raise ValueError(f"input width {width} is not a multiple of the patch width {pw}")
    if sh == ph:
        if height % ph and not pad:
            raise ValueError(
                f"input height {height} is not a multiple of the patch height {ph} "
                "(pass pad=True to pad it at the end)"
            )
        gh = -(-height // ph)
    else:
        gh = (height - ph) // sh + 1
    gw = (width - pw) // sw + 1
    return gh, gw


def token_padding_mask(
    lengths: Tensor, grid: Tuple[int, int], patch_height: int, stride_height: Optional[int] = None
) -> Tensor:
    """``(B, N)`` bool: True for tokens whose first frame is at or past the row's true length.

    A token that holds even one real frame stays visible to attention (MAE-AST's
    ``forward_padding_mask`` rule), so short clips lose no audio.
    """
    sh = stride_height if stride_height is not None else patch_height
    gh, gw = grid
    starts = torch.arange(gh, device=lengths.device) * sh  # first frame of each token row
    rows = starts.unsqueeze(0) >= lengths.reshape(-1, 1).to(starts.dtype)  # (B, H')
    return rows.unsqueeze(-1).expand(-1, gh, gw).reshape(lengths.shape[0], gh * gw)


class PatchTokenizer(nn.Module):
    """Conv2d patch embedding with padding, lengths and settable stride.

    ``(B, C, H, W) -> (B, N, D)``; audio ``(B, 1, T, F)`` (a ``(B, T, F)`` batch is accepted when
    ``in_chans == 1``) and images ``(B, 3, 224, 224)`` with ``in_chans=3`` both go through here.
    The weight is Xavier-uniform on its ``(D, C·ph·pw)`` view, as MAE/EAT initialise it (treat the
    conv as a Linear); the bias keeps PyTorch's default.
    """

    def __init__(
        self,
        embed_dim: int,
        patch_size: IntPair = (16, 16),
        stride: Optional[IntPair] = None,
        in_chans: int = 1,
        *,
        pad: bool = True,
        pad_value: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.pad = pad
        self.pad_value = pad_value
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.set_stride(stride if stride is not None else self.patch_size)
        nn.init.xavier_uniform_(self.proj.weight.view(embed_dim, -1))

    @property
    def stride(self) -> Tuple[int, int]:
        return tuple(self.proj.stride)  # type: ignore[return-value]

    def set_stride(self, stride: IntPair) -> None:
        """Change the stride in place (AST-style overlapping patches at fine-tune time).

        The weights do not depend on the stride, so a pretrained tokenizer is reused as is —
        what SSAST does by copying its conv into one with the new stride.
        """
        s = _pair(stride)
        if min(s) < 1:
            raise ValueError(f"stride must be positive, got {s}")
        self.proj.stride = s

    @property
    def overlapping(self) -> bool:
        return self.stride != self.patch_size

    def grid_shape(self, height: int, width: int) -> Tuple[int, int]:
        return grid_shape(height, width, self.patch_size, self.stride, pad=self.pad)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tokens:
        """Tokenize; ``lengths`` are the true frame counts (rows) of a padded collate."""
        if x.dim() == 3 and self.in_chans == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected (B, {self.in_chans}, H, W) input, got shape {tuple(x.shape)}")
        B, _, H, W = x.shape
        grid = self.grid_shape(H, W)
        ph = self.patch_size[0]
        padded = False
        if not self.overlapping and H % ph:
            x = F.pad(x, (0, 0, 0, grid[0] * ph - H), value=self.pad_value)
            padded = True
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        if lengths is None and not padded:
            return Tokens(tokens, None, grid)
        if lengths is None:
            lengths = torch.full((B,), H, device=x.device)
        elif lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        mask = token_padding_mask(lengths.to(x.device), grid, ph, self.stride[0])
        return Tokens(tokens, mask, grid)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, stride={self.stride}, in_chans={self.in_chans}, pad={self.pad}"


class FrameTokenizer(PatchTokenizer):
    """One token per ``frames`` frames across all mel bins (SSAST/MAE-AST frame models).

    The grid is ``(T / frames, 1)``. Fine-tuning SSAST frame models use time stride 1
    (``set_stride((1, n_mels))``), which overlaps and therefore drops a remainder instead of
    padding.
    """

    def __init__(self, embed_dim: int, frames: int = 2, n_mels: int = 128, **kwargs) -> None:
        super().__init__(embed_dim, patch_size=(frames, n_mels), in_chans=1, **kwargs)
        self.frames = frames
        self.n_mels = n_mels


def _check_patch_grid(x: Tensor, patch_size: Tuple[int, int]) -> Tuple[int, int]:
    ph, pw = patch_size
    H, W = x.shape[-2:]
    if H % ph or W % pw:
        raise ValueError(f"input ({H}, {W}) is not a multiple of the patch {patch_size}; crop or pad it first")
    return H // ph, W // pw


def patchify(x: Tensor, patch_size: IntPair, *, within: WithinPatch = "time_major") -> Tensor:
    """``(B, C, H, W) -> (B, N, ph·pw·C)`` with time-major tokens.

    ``within="time_major"``: each vector is ``(ph, pw, C)`` row-major (MAE, AudioMAE, MAE-AST).
    ``within="freq_major"``: ``(pw, ph, C)`` — SSAST's within-patch order on our token order.
    """
    if within not in ("time_major", "freq_major"):
        raise ValueError(f"within must be 'time_major' or 'freq_major', got {within!r}")
    p = _pair(patch_size)
    B, C = x.shape[:2]
    h, w = _check_patch_grid(x, p)
    x = x.reshape(B, C, h, p[0], w, p[1])
    order = (0, 2, 4, 3, 5, 1) if within == "time_major" else (0, 2, 4, 5, 3, 1)
    return x.permute(*order).reshape(B, h * w, p[0] * p[1] * C)


def unpatchify(
    tokens: Tensor,
    patch_size: IntPair,
    grid: Tuple[int, int],
    channels: int = 1,
    *,
    within: WithinPatch = "time_major",
) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, N, ph·pw·C) -> (B, C, H'·ph, W'·pw)``."""
    ph, pw = _pair(patch_size)
    h, w = grid
    B, N, P = tokens.shape
    if N != h * w or P != ph * pw * channels:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not fit grid {grid} x patch {(ph, pw)} x {channels} channels"
        )
    if within == "time_major":
        x = tokens.reshape(B, h, w, ph, pw, channels).permute(0, 5, 1, 3, 2, 4)
    elif within == "freq_major":
        x = tokens.reshape(B, h, w, pw, ph, channels).permute(0, 5, 1, 4, 2, 3)
    else:
        raise ValueError(f"within must be 'time_major' or 'freq_major', got {within!r}")
    return x.reshape(B, channels, h * ph, w * pw)
