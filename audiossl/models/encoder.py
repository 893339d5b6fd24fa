"""The one ViT encoder every objective wraps (EAT, MAE/AudioMAE, SSAST, MAE-AST, I-JEPA).

The five families differ only in switches, all on :class:`EncoderConfig`:

==========  ============  ==========  ============  ===============  ==========  =======  =====  ======
family      tokenizer     prefix      prefix pos    positions        input LN    blocks   final  init
==========  ============  ==========  ============  ===============  ==========  =======  =====  ======
EAT         patch conv    cls N(0,1)  none          fixed sincos 2d  yes         post-LN  no     bert
MAE         patch conv    cls         zero row      fixed sincos 2d  no          pre-LN   yes    xavier
SSAST       patch/frame   cls + dist  learned rows  learned          no          pre-LN   yes    bert
MAE-AST     Linear        none        -             fixed sincos 1d  yes         post-LN  no     bert
I-JEPA      patch conv    none        -             fixed sincos 2d  no          pre-LN   yes    jepa
==========  ============  ==========  ============  ===============  ==========  =======  =====  ======

(:func:`family_config` returns these switch sets.) The forward pass follows MAE's
``forward_encoder``: tokenize (conv + positions, once per clip) → keep the visible tokens → prepend
the prefix tokens → input norm → blocks → final norm. Positions are added before masking, so a
visible token keeps the position of the place it came from; the prefix tokens come after masking,
so they are never masked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from audiossl.masking.base import MaskInfo
from audiossl.nn.blocks import Block, init_bert, init_xavier
from audiossl.nn.pos_embed import ResizeMode, resize_pos_embed, sincos_1d, sincos_2d
from audiossl.tokenizers import (
    FrameTokenizer,
    PatchTokenizer,
    Tokens,
    grid_shape,
    patchify,
    token_padding_mask,
)

__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "LinearPatchTokenizer",
    "family_config",
]

TokenizerKind = Literal["patch", "frame", "linear_patch"]
PosEmbedKind = Literal["sincos_2d", "sincos_1d", "learned", "none"]
InitKind = Literal["xavier", "bert", "jepa"]

_TOKENIZERS = ("patch", "frame", "linear_patch")
_POS_EMBEDS = ("sincos_2d", "sincos_1d", "learned", "none")
_INITS = ("xavier", "bert", "jepa")


@dataclass
class EncoderConfig:
    """Everything that builds an :class:`Encoder`; the defaults are an EAT-base ViT-B/16 on
    ``(B, 1, 1024, 128)`` fbanks (the other families override the switches, see
    :func:`family_config`)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # "patch": Conv2d; "frame": Conv2d over (frames, n_mels); "linear_patch": MAE-AST's Linear on
    # the time-major flattened patch (``post_extract_proj``).
    tokenizer: TokenizerKind = "patch"
    # (time, frequency) extent of a token; "frame" tokenizers need patch_size[1] == n_mels.
    patch_size: Tuple[int, int] = (16, 16)
    # None = patch_size (pretraining); AST-style fine-tuning overlaps with e.g. (10, 10).
    patch_stride: Optional[Tuple[int, int]] = None
    in_chans: int = 1
    n_mels: int = 128
    # 0 (MAE-AST, I-JEPA), 1 (cls: EAT, MAE), 2 (cls + dist: SSAST / DeiT).
    num_prefix_tokens: int = 1
    # Std of the normal init of the prefix tokens: 1.0 for EAT, 0.02 for MAE/SSAST; 0 gives zeros.
    prefix_init: float = 1.0
    # Whether prefix tokens get a position: a learned row each (SSAST, fine-tuned MAE), or MAE's
    # all-zero sin-cos row (a no-op, so it is not materialised). EAT's cls has none.
    prefix_pos: bool = False
    pos_embed: PosEmbedKind = "sincos_2d"
    # Grid (time, frequency) of the learned table; fixed tables are built for each input's grid.
    pos_grid: Tuple[int, int] = (64, 8)
    # AudioMAE's quirk: its sin-cos table is generated for the (F', T') grid and used in time-major
    # token order. Kept only to run AudioMAE checkpoints as trained.
    sincos_swap_axes: bool = False
    # Rows of a *stored* fixed sin-cos table, kept as the buffer ``pos_table`` instead of rebuilt
    # per grid. EAT's fairseq files carry their table rounded to fp16 by fp16 training; using it
    # is what upstream does. The table lies on a (rows / W, W) grid, W = frequency patches, and
    # an input uses its first H'·W rows (EAT's prefix rule). 0 = rebuild from the formula.
    pos_table_rows: int = 0
    input_norm: bool = True
    post_norm: bool = True
    final_norm: bool = False
    norm_eps: float = 1e-6
    drop: float = 0.0
    attn_drop: float = 0.0
    # Dropout after the MLP activation; None = ``drop`` (timm). MAE-AST uses 0 with drop 0.1.
    act_drop: Optional[float] = None
    # Dropout on the token sequence before the input norm (timm ``pos_drop``, fairseq ``dropout_input``).
    input_drop: float = 0.0
    # Stochastic depth of the last block; block i gets drop_path * i / (depth - 1) (timm).
    drop_path: float = 0.0
    init: InitKind = "bert"

    def __post_init__(self) -> None:
        self.patch_size = _pair(self.patch_size)
        self.patch_stride = None if self.patch_stride is None else _pair(self.patch_stride)
        self.pos_grid = _pair(self.pos_grid)
        if self.tokenizer not in _TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {_TOKENIZERS}, got {self.tokenizer!r}")
        if self.pos_embed not in _POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {_POS_EMBEDS}, got {self.pos_embed!r}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {self.init!r}")
        if self.num_prefix_tokens not in (0, 1, 2):
            raise ValueError(f"num_prefix_tokens must be 0, 1 or 2, got {self.num_prefix_tokens}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.pos_embed == "sincos_2d" and self.embed_dim % 4:
            raise ValueError(f"a 2-D sin-cos table needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.tokenizer == "frame":
            if self.in_chans != 1:
                raise ValueError(f"frame tokenizers take one channel, got in_chans={self.in_chans}")
            if self.patch_size[1] != self.n_mels:
                raise ValueError(
                    f"a frame tokenizer spans all {self.n_mels} mel bins: patch_size must be "
                    f"(frames, {self.n_mels}), got {self.patch_size}"
                )
        if self.pos_table_rows:
            if self.pos_embed != "sincos_2d" or self.sincos_swap_axes:
                raise ValueError("pos_table_rows stores a time-major sincos_2d table; "
                                 f"got pos_embed={self.pos_embed!r}, sincos_swap_axes={self.sincos_swap_axes}")
            if self.pos_table_rows % self.pos_table_width:
                raise ValueError(f"pos_table_rows {self.pos_table_rows} is not a multiple of the "
                                 f"{self.pos_table_width} frequency patches")
        if self.tokenizer == "linear_patch" and self.patch_stride not in (None, self.patch_size):
            raise ValueError(f"linear_patch tokens never overlap; patch_stride must equal patch_size, got {self.patch_stride}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain containers only (tuples become lists), so it goes into YAML and checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EncoderConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {unknown}")
        return cls(**dict(d))

    @property
    def stride(self) -> Tuple[int, int]:
        return self.patch_stride if self.patch_stride is not None else self.patch_size

    @property
    def pos_table_width(self) -> int:
        """Frequency patches per time step of a stored table's grid."""
        return (self.n_mels - self.patch_size[1]) // self.stride[1] + 1

    @property
    def pos_prefix_rows(self) -> int:
        """Rows of the learned table that belong to prefix tokens."""
        return self.num_prefix_tokens if self.prefix_pos else 0


_FAMILIES: Dict[str, Dict[str, Any]] = {
    "eat": dict(
        tokenizer="patch", num_prefix_tokens=1, prefix_init=1.0, prefix_pos=False, pos_embed="sincos_2d",
        input_norm=True, post_norm=True, final_norm=False, norm_eps=1e-6, init="bert",
    ),
    "mae": dict(
        tokenizer="patch", num_prefix_tokens=1, prefix_init=0.02, prefix_pos=True, pos_embed="sincos_2d",
        input_norm=False, post_norm=False, final_norm=True, norm_eps=1e-6, init="xavier",
    ),
    "audiomae": dict(
        tokenizer="patch", num_prefix_tokens=1, prefix_init=0.02, prefix_pos=True, pos_embed="sincos_2d",
        sincos_swap_axes=True, input_norm=False, post_norm=False, final_norm=True, norm_eps=1e-6, init="xavier",
    ),
    "ssast": dict(
        tokenizer="patch", num_prefix_tokens=2, prefix_init=0.02, prefix_pos=True, pos_embed="learned",
        input_norm=False, post_norm=False, final_norm=True, norm_eps=1e-6, init="bert",
    ),
    "mae_ast": dict(
        tokenizer="linear_patch", num_prefix_tokens=0, prefix_pos=False, pos_embed="sincos_1d",
        input_norm=True, post_norm=True, final_norm=False, norm_eps=1e-5, drop=0.1, attn_drop=0.1,
        act_drop=0.0, input_drop=0.1, init="bert",
    ),
    "ijepa": dict(
        tokenizer="patch", num_prefix_tokens=0, prefix_pos=False, pos_embed="sincos_2d",
        input_norm=False, post_norm=False, final_norm=True, norm_eps=1e-6, init="jepa",
    ),
}


def family_config(family: str, **overrides: Any) -> EncoderConfig:
    """The architecture switches of one upstream family, sizes and the rest from ``overrides``.

    Families: ``eat``, ``mae``, ``audiomae``, ``ssast``, ``mae_ast``, ``ijepa``. A frame model is
    ``family_config("ssast", tokenizer="frame", patch_size=(2, 128), pos_grid=(512, 1))``.
    """
    if family not in _FAMILIES:
        raise ValueError(f"unknown encoder family {family!r}; choose from {sorted(_FAMILIES)}")
    return EncoderConfig(**{**_FAMILIES[family], **overrides})


class LinearPatchTokenizer(nn.Module):
    """MAE-AST's patch embedding: ``Linear(ph·pw → D)`` on time-major flattened patches.

    Equal to a Conv2d with the weight ``proj.weight.view(D, 1, ph, pw)``, but kept a Linear so
    MAE-AST's ``post_extract_proj`` loads as is. Like :class:`PatchTokenizer` a partial last patch
    is zero-padded and kept (MAE-AST's ``Unfold`` drops it).
    """

    def __init__(self, embed_dim: int, patch_size: Tuple[int, int] = (16, 16), pad_value: float = 0.0) -> None:
        super().__init__()
        self.patch_size = _pair(patch_size)
        self.embed_dim = embed_dim
        self.pad_value = pad_value
        self.proj = nn.Linear(self.patch_size[0] * self.patch_size[1], embed_dim)

    def grid_shape(self, height: int, width: int) -> Tuple[int, int]:
        return grid_shape(height, width, self.patch_size, pad=True)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tokens:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, T, F) input, got shape {tuple(x.shape)}")
        B, _, H, W = x.shape
        grid = self.grid_shape(H, W)
        ph = self.patch_size[0]
        padded = grid[0] * ph != H
        if padded:
            x = nn.functional.pad(x, (0, 0, 0, grid[0] * ph - H), value=self.pad_value)
        tokens = self.proj(patchify(x, self.patch_size))
        if lengths is None and not padded:
            return Tokens(tokens, None, grid)
        if lengths is None:
            lengths = torch.full((B,), H, device=x.device)
        elif lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        return Tokens(tokens, token_padding_mask(lengths.to(x.device), grid, ph), grid)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"


@dataclass
class EncoderOutput:
    """``x``: ``(B', P + K, D)`` final tokens, prefix first (``B' = k·B`` for clone batches, ``K``
    visible tokens, ``P = num_prefix``). ``hidden``: each block's output (before the final norm),
    ``ffn``: each block's MLP output before its residual (EAT's teacher targets); both include the
    prefix tokens. ``padding_mask`` is aligned with ``x`` (prefix rows False)."""

    x: Tensor
    hidden: Optional[List[Tensor]] = None
    ffn: Optional[List[Tensor]] = None
    padding_mask: Optional[Tensor] = None
    grid: Optional[Tuple[int, int]] = None
    num_prefix: int = 0

    @property
    def prefix(self) -> Tensor:
        """``(B', P, D)``: the cls (and dist) outputs."""
        return self.x[:, : self.num_prefix]

    @property
    def tokens(self) -> Tensor:
        """``(B', K, D)``: the patch-token outputs."""
        return self.x[:, self.num_prefix :]


class Encoder(nn.Module):
    """ViT encoder with timm parameter names (``patch_embed.proj``, ``cls_token``, ``dist_token``,
    ``pos_embed``, ``norm_pre``, ``blocks.N``, ``norm``), so official checkpoints map onto it with
    few renames.

    Fixed position tables are not parameters: they are rebuilt for each token grid (any clip
    length, no interpolation) and cached per (grid, device, dtype).
    """

    def __init__(self, config: Optional[EncoderConfig] = None, **overrides: Any) -> None:
        super().__init__()
        # A private copy: resize_pos_embed() edits it, and the caller's object must not change.
        base = config.to_dict() if config is not None else {}
        self.config = cfg = EncoderConfig.from_dict({**base, **overrides})
        D = cfg.embed_dim
        self.patch_embed = self._build_tokenizer(cfg)
        self.num_prefix = cfg.num_prefix_tokens
        if self.num_prefix >= 1:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        if self.num_prefix == 2:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, D))
        if cfg.pos_embed == "learned":
            gh, gw = cfg.pos_grid
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_prefix_rows + gh * gw, D))
        if cfg.pos_table_rows:
            W = cfg.pos_table_width
            self.register_buffer("pos_table", sincos_2d(D, (cfg.pos_table_rows // W, W)).unsqueeze(0))
        self.pos_drop = nn.Dropout(cfg.input_drop)
        norm_layer = partial(nn.LayerNorm, eps=cfg.norm_eps)
        self.norm_pre = norm_layer(D) if cfg.input_norm else nn.Identity()
        rates = torch.linspace(0, cfg.drop_path, cfg.depth, device="cpu").tolist()  # timm, also under a meta device
        self.blocks = nn.ModuleList(
            Block(
                D,
                cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                drop=cfg.drop,
                attn_drop=cfg.attn_drop,
                act_drop=cfg.act_drop,
                drop_path=rate,
                post_norm=cfg.post_norm,
                norm_layer=norm_layer,
            )
            for rate in rates
        )
        self.norm = norm_layer(D) if cfg.final_norm else nn.Identity()
        self._pos_cache: Dict[Tuple[Tuple[int, int], torch.device, torch.dtype], Tensor] = {}
        self.reset_parameters()

    @staticmethod
    def _build_tokenizer(cfg: EncoderConfig) -> nn.Module:
        if cfg.tokenizer == "patch":
            return PatchTokenizer(cfg.embed_dim, cfg.patch_size, cfg.patch_stride, in_chans=cfg.in_chans)
        if cfg.tokenizer == "frame":
            return FrameTokenizer(cfg.embed_dim, frames=cfg.patch_size[0], n_mels=cfg.n_mels, stride=cfg.patch_stride)
        return LinearPatchTokenizer(cfg.embed_dim, cfg.patch_size)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The family's init: Linear/LayerNorm by ``config.init``, prefix tokens N(0, prefix_init²),
        a learned table trunc-normal(0.02) (timm: truncation at ±2, i.e. effectively normal)."""
        cfg = self.config
        self.apply(init_xavier if cfg.init == "xavier" else init_bert)
        if cfg.init == "jepa":
            # I-JEPA's fix_init_weight: shrink each residual branch's output by sqrt(2 * layer).
            for layer, blk in enumerate(self.blocks, start=1):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))
        for name in ("cls_token", "dist_token"):
            token = getattr(self, name, None)
            if token is not None:
                if cfg.prefix_init > 0:
                    nn.init.normal_(token, std=cfg.prefix_init)
                else:
                    nn.init.zeros_(token)
        if cfg.pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)

    # ------------------------------------------------------------------ tokens and positions
    def embed(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tokens:
        """Patch tokens without positions (SSAST swaps in its mask embedding before positions)."""
        return self.patch_embed(x, lengths)

    def position_table(self, grid: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> Optional[Tensor]:
        """``(1, H'·W', D)`` positions of the grid tokens, or None for ``pos_embed="none"``."""
        cfg = self.config
        if cfg.pos_embed == "none":
            return None
        if cfg.pos_embed == "learned":
            if tuple(grid) != cfg.pos_grid:
                raise ValueError(
                    f"token grid {tuple(grid)} does not match the learned positional grid {cfg.pos_grid}; "
                    "call resize_pos_embed() first"
                )
            return self.pos_embed[:, cfg.pos_prefix_rows :]
        if cfg.pos_table_rows:
            gh, gw = grid
            if gw != cfg.pos_table_width or gh * gw > cfg.pos_table_rows:
                raise ValueError(f"token grid {tuple(grid)} does not fit the stored position table "
                                 f"({cfg.pos_table_rows // cfg.pos_table_width} x {cfg.pos_table_width})")
            return self.pos_table[:, : gh * gw].to(device=device, dtype=dtype)
        key = (tuple(grid), torch.device(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            gh, gw = grid
            if cfg.pos_embed == "sincos_2d":
                table = sincos_2d(cfg.embed_dim, (gw, gh) if cfg.sincos_swap_axes else (gh, gw))
            else:
                table = sincos_1d(cfg.embed_dim, gh * gw)
            table = table.unsqueeze(0).to(device=device, dtype=dtype)
            self._pos_cache[key] = table
        return table

    def add_positions(self, tokens: Tensor, grid: Tuple[int, int]) -> Tensor:
        table = self.position_table(grid, tokens.device, tokens.dtype)
        return tokens if table is None else tokens + table

    def tokenize(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tokens:
        """``(B, 1, T, F)`` or ``(B, T, F)`` → time-major tokens with their positions added."""
        tokens, padding_mask, grid = self.embed(x, lengths)
        return Tokens(self.add_positions(tokens, grid), padding_mask, grid)

    def prefix_tokens(self, batch: int, dtype: Optional[torch.dtype] = None) -> Optional[Tensor]:
        """``(batch, P, D)`` cls [+ dist] tokens with their positions, or None when P = 0."""
        if self.num_prefix == 0:
            return None
        prefix = self.cls_token if self.num_prefix == 1 else torch.cat([self.cls_token, self.dist_token], dim=1)
        if self.config.pos_embed == "learned" and self.config.prefix_pos:
            prefix = prefix + self.pos_embed[:, : self.num_prefix]
        if dtype is not None:
            prefix = prefix.to(dtype)
        return prefix.expand(batch, -1, -1)

    def prepend_prefix(self, tokens: Tensor, padding_mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        prefix = self.prefix_tokens(tokens.shape[0], tokens.dtype)
        if prefix is None:
            return tokens, padding_mask
        tokens = torch.cat([prefix, tokens], dim=1)
        if padding_mask is not None:
            padding_mask = torch.cat([padding_mask.new_zeros(padding_mask.shape[0], self.num_prefix), padding_mask], 1)
        return tokens, padding_mask

    @staticmethod
    def apply_mask(tokens: Tensor, padding_mask: Optional[Tensor], mask: MaskInfo) -> Tuple[Tensor, Optional[Tensor]]:
        """Keep the visible tokens; a mask of ``k·B`` rows first repeats each clip ``k`` times
        (EAT clone batches: the conv and positions ran once per clip)."""
        B, N = tokens.shape[:2]
        if mask.num_tokens != N:
            raise ValueError(f"mask covers {mask.num_tokens} tokens but the input has {N}")
        if mask.batch_size != B:
            if mask.batch_size % B:
                raise ValueError(f"mask has {mask.batch_size} rows, not a multiple of the batch size {B}")
            clones = mask.batch_size // B
            tokens = tokens.repeat_interleave(clones, dim=0)
            if padding_mask is not None:
                padding_mask = padding_mask.repeat_interleave(clones, dim=0)
        tokens = mask.gather_visible(tokens)
        if padding_mask is not None:
            padding_mask = mask.gather_visible(padding_mask)
        return tokens, padding_mask

    # ------------------------------------------------------------------ transformer
    def forward_blocks(
        self,
        tokens: Tensor,
        padding_mask: Optional[Tensor] = None,
        *,
        grid: Optional[Tuple[int, int]] = None,
        return_hidden: bool = False,
        return_ffn: bool = False,
    ) -> EncoderOutput:
        """Input dropout, input norm, blocks, final norm on a ready sequence (prefix already
        prepended, e.g. by :meth:`prepend_prefix`)."""
        attn_mask = padding_mask
        if attn_mask is not None:
            # A row whose visible tokens are all padding (short clip, heavy masking, no prefix
            # token) would softmax over nothing and turn NaN; let it attend to its padding
            # instead. Its outputs are padding and are never used.
            attn_mask = attn_mask & ~attn_mask.all(dim=1, keepdim=True)
        x = self.norm_pre(self.pos_drop(tokens))
        hidden: Optional[List[Tensor]] = [] if return_hidden else None
        ffns: Optional[List[Tensor]] = [] if return_ffn else None
        for blk in self.blocks:
            if return_ffn:
                x, ffn = blk(x, attn_mask, return_ffn=True)
                ffns.append(ffn)
            else:
                x = blk(x, attn_mask)
            if hidden is not None:
                hidden.append(x)
        return EncoderOutput(self.norm(x), hidden, ffns, padding_mask, grid, self.num_prefix)

    def forward(
        self,
        x: Tensor,
        lengths: Optional[Tensor] = None,
        mask: Optional[MaskInfo] = None,
        return_hidden: bool = False,
        return_ffn: bool = False,
    ) -> EncoderOutput:
        """``x`` ``(B, 1, T, F)``; ``lengths`` true frame counts of a padded batch (their padding
        tokens are never attended to); ``mask`` hides tokens (``k·B`` rows for clone batches)."""
        tokens, padding_mask, grid = self.tokenize(x, lengths)
        if mask is not None:
            tokens, padding_mask = self.apply_mask(tokens, padding_mask, mask)
        tokens, padding_mask = self.prepend_prefix(tokens, padding_mask)
        return self.forward_blocks(
            tokens, padding_mask, grid=grid, return_hidden=return_hidden, return_ffn=return_ffn
        )

    # ------------------------------------------------------------------ utilities
    def grid_shape(self, num_frames: int, num_bins: Optional[int] = None) -> Tuple[int, int]:
        """Token grid of a ``(num_frames, num_bins)`` input (``num_bins`` defaults to ``n_mels``)."""
        return self.patch_embed.grid_shape(num_frames, num_bins if num_bins is not None else self.config.n_mels)

    @torch.no_grad()
    def resize_pos_embed(self, new_grid: Tuple[int, int], mode: ResizeMode = "auto") -> None:
        """Re-grid a learned table (SSAST/AST rule: centre-crop a shorter axis, bilinear-resize a
        longer one). The parameter is replaced: build optimizers afterwards."""
        cfg = self.config
        if cfg.pos_embed != "learned":
            raise ValueError(f"only learned tables are resized; {cfg.pos_embed!r} tables follow the input grid")
        new_grid = _pair(new_grid)
        table = resize_pos_embed(self.pos_embed.data, cfg.pos_grid, new_grid, num_prefix=cfg.pos_prefix_rows, mode=mode)
        self.pos_embed = nn.Parameter(table.contiguous())
        cfg.pos_grid = new_grid

    def no_weight_decay(self) -> set:
        """Parameter names timm/MAE exclude from weight decay besides 1-D ones."""
        return {n for n in ("cls_token", "dist_token", "pos_embed") if hasattr(self, n)}

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        # Drop cached tables on .to()/.half(): they are rebuilt on the new device/dtype on demand
        # instead of lingering on the old one.
        self._pos_cache = {}
        return super()._apply(fn, recurse)


def _pair(x: Any) -> Tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


def preset_config(family: str, presets: Mapping[str, Callable[[], Any]], config_cls: Any, name: str,
                  overrides: Dict[str, Any]) -> Any:
    """A family preset's config with fields replaced; ``encoder={...}`` (a dict or an
    ``EncoderConfig``) replaces encoder fields. Shared by every objective's ``<family>_config``."""
    if name not in presets:
        raise ValueError(f"unknown {family} preset {name!r}; choose from {sorted(presets)}")
    d = presets[name]().to_dict()
    enc_overrides = overrides.pop("encoder", None) or {}
    if isinstance(enc_overrides, EncoderConfig):
        enc_overrides = enc_overrides.to_dict()
    d["encoder"] = {**d["encoder"], **enc_overrides}
    return config_cls.from_dict({**d, **overrides})


@torch.no_grad()
def feature_variance(x: Tensor) -> Tensor:
    """Mean over channels of the per-channel variance across all rows of ``(..., D)`` features,
    in fp32: the collapse statistic logged during pretraining (0 = every row the same)."""
    flat = x.detach().reshape(-1, x.shape[-1]).float()
    if flat.shape[0] < 2:
        return flat.new_zeros(())
    return flat.var(dim=0).mean()
