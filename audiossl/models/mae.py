"""Masked autoencoder (MAE, He et al. 2022) and its audio form (AudioMAE, Huang et al. 2022).

One objective around the shared :class:`~audiossl.models.encoder.Encoder`, laid out like
facebookresearch/mae ``models_mae.py``: ``forward_encoder`` (visible tokens only, cls after
masking), ``forward_decoder`` (mask tokens at the hidden places, fixed sin-cos positions, a small
pre-LN transformer, a per-patch pixel head) and ``forward_loss`` (MSE on the hidden patches,
optionally against per-patch-normalised targets). Parameter names follow upstream
(``decoder_embed``, ``mask_token``, ``decoder_blocks.N``, ``decoder_norm``, ``decoder_pred``) so
official checkpoints map onto this module with the encoder renames only.

Two decoders: ``decoder_mode="global"`` is MAE's (and AudioMAE's ``decoder_mode=0``) stack of
ViT blocks over prefix + patch tokens; ``decoder_mode="local"`` is AudioMAE's released
``decoder_mode=1``: the prefix is dropped after the positions are added and the patch grid goes
through Swin-V2 blocks (:mod:`audiossl.nn.swin`) that attend within ``decoder_window`` windows,
cyclically shifted by ``decoder_shift`` on every odd block. See :func:`audiomae_base_local`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.random import random_mask
from audiossl.models.encoder import Encoder, EncoderConfig, family_config, feature_variance, preset_config
from audiossl.nn.blocks import Block, init_xavier
from audiossl.nn.pos_embed import sincos_2d
from audiossl.nn.swin import SwinBlock, pad_to_windows, window_shift
from audiossl.tokenizers import patchify
from audiossl.viz import reconstruction_figure  # re-exported: the figure lives with the other drawing code

__all__ = [
    "MAE",
    "MAEConfig",
    "MAEOutput",
    "MAE_PRESETS",
    "audiomae_base",
    "audiomae_base_local",
    "audiomae_tiny",
    "mae_config",
    "mae_tiny",
    "mae_vit_base",
    "mae_vit_huge",
    "mae_vit_large",
    "reconstruction_figure",
]

logger = logging.getLogger(__name__)

# MAE's norm_pix_loss adds this inside the square root of the (unbiased) per-patch variance.
NORM_PIX_EPS = 1e-6
DECODER_MODES = ("global", "local")


@dataclass
class MAEConfig:
    """Encoder switches/sizes plus the decoder and objective; defaults are MAE ViT-B/16's
    decoder (512 wide, 8 deep, 16 heads) and image MAE's ratio 0.75 without ``norm_pix_loss``
    (upstream's argparse default; PRETRAIN.md recommends turning it on, AudioMAE does)."""

    encoder: EncoderConfig = field(default_factory=lambda: family_config("mae"))
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    # None = the encoder's mlp_ratio (MAE uses 4 for both).
    decoder_mlp_ratio: Optional[float] = None
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    # "local": AudioMAE's decoder_mode=1 Swin decoder. Window and shift are (time, frequency) in
    # tokens; the shift applies to odd blocks, (0, 0) is upstream's --no_shift. Defaults are
    # AudioMAE's for 16x16 patches (its stride-10 model uses a (6, 6) window).
    decoder_mode: str = "global"
    decoder_window: Tuple[int, int] = (4, 4)
    decoder_shift: Tuple[int, int] = (2, 0)

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.decoder_window = (int(self.decoder_window[0]), int(self.decoder_window[1]))
        self.decoder_shift = (int(self.decoder_shift[0]), int(self.decoder_shift[1]))
        if self.decoder_mode not in DECODER_MODES:
            raise ValueError(f"decoder_mode must be one of {DECODER_MODES}, got {self.decoder_mode!r}")
        if min(self.decoder_window) < 1 or not all(0 <= s < w for s, w in zip(self.decoder_shift, self.decoder_window)):
            raise ValueError(f"decoder_window {self.decoder_window} must be positive and decoder_shift "
                             f"{self.decoder_shift} in [0, window) per axis")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by decoder_heads {self.decoder_heads}")
        if self.decoder_dim % 4:
            raise ValueError(f"the decoder's 2-D sin-cos table needs decoder_dim divisible by 4, got {self.decoder_dim}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        enc = self.encoder
        if enc.tokenizer != "patch" or enc.stride != enc.patch_size:
            raise ValueError(
                "MAE reconstructs non-overlapping patches: the encoder needs tokenizer='patch' and "
                f"patch_stride == patch_size, got {enc.tokenizer!r} with stride {enc.stride}"
            )

    @property
    def patch_dim(self) -> int:
        """Length of one target vector: ``ph·pw·C``."""
        ph, pw = self.encoder.patch_size
        return ph * pw * self.encoder.in_chans

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder"] = self.encoder.to_dict()
        out["decoder_window"], out["decoder_shift"] = list(self.decoder_window), list(self.decoder_shift)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MAEConfig fields: {unknown}")
        return cls(**dict(d))


@dataclass
class MAEOutput:
    """``loss``: scalar MSE over hidden patches. ``pred``: ``(B, N, ph·pw·C)`` reconstruction of
    every patch (in normalised-patch units when ``norm_pix_loss``). ``mask``: the mask used.
    ``grid`` and ``patch_size`` let :func:`unpatchify` rebuild an image from ``pred``."""

    loss: Tensor
    pred: Tensor
    mask: MaskInfo
    grid: Tuple[int, int]
    patch_size: Tuple[int, int]
    norm_pix_loss: bool = False

    def logs(self) -> Dict[str, Tensor]:
        """Scalars for the training log; ``pred_var`` near 0 means the decoder collapsed to a mean."""
        return {"loss": self.loss.detach(), "pred_var": feature_variance(self.mask.gather_masked(self.pred))}


class MAE(nn.Module):
    """Encoder on the visible patches, light decoder over all, loss on the hidden ones."""

    def __init__(self, config: Optional[MAEConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else MAEConfig()
        enc = cfg.encoder
        self.encoder = Encoder(enc)
        self.num_prefix = enc.num_prefix_tokens
        norm_layer = partial(nn.LayerNorm, eps=enc.norm_eps)
        mlp_ratio = cfg.decoder_mlp_ratio if cfg.decoder_mlp_ratio is not None else enc.mlp_ratio
        self.decoder_embed = nn.Linear(enc.embed_dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        if cfg.decoder_mode == "local":
            self.decoder_blocks = nn.ModuleList(
                SwinBlock(cfg.decoder_dim, cfg.decoder_heads, window=cfg.decoder_window,
                          shift=cfg.decoder_shift if i % 2 else (0, 0), mlp_ratio=mlp_ratio, norm_layer=norm_layer)
                for i in range(cfg.decoder_depth)
            )
        else:
            self.decoder_blocks = nn.ModuleList(
                Block(cfg.decoder_dim, cfg.decoder_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(cfg.decoder_depth)
            )
        self.decoder_norm = norm_layer(cfg.decoder_dim)
        self.decoder_pred = nn.Linear(cfg.decoder_dim, cfg.patch_dim)
        self._pos_cache: Dict[Tuple[Tuple[int, int], torch.device, torch.dtype], Tensor] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """MAE's ``initialize_weights`` for the decoder (Xavier Linear — the Swin position-bias MLP
        included, as upstream's ``self.apply`` reaches it —, unit LayerNorm, mask token
        N(0, 0.02), Swin temperatures 1); the encoder keeps its family's init."""
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_xavier)
        nn.init.normal_(self.mask_token, std=0.02)
        for blk in self.decoder_blocks:
            if isinstance(blk, SwinBlock):
                nn.init.ones_(blk.attn.tau)

    @property
    def patch_size(self) -> Tuple[int, int]:
        return self.config.encoder.patch_size

    def decoder_pos_table(self, grid: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(1, P + N, decoder_dim)`` fixed sin-cos table with zero rows for the prefix tokens.

        Built for the actual grid (any clip length) and cached; registration follows the
        encoder's (AudioMAE's transposed ``(F', T')`` table when ``sincos_swap_axes``)."""
        key = (tuple(grid), torch.device(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            gh, gw = grid
            hw = (gw, gh) if self.config.encoder.sincos_swap_axes else (gh, gw)
            table = sincos_2d(self.config.decoder_dim, hw)
            table = torch.cat([table.new_zeros(self.num_prefix, table.shape[1]), table])
            table = table.unsqueeze(0).to(device=device, dtype=dtype)
            self._pos_cache[key] = table
        return table

    # ------------------------------------------------------------------ forward pieces
    def forward_encoder(self, x: Tensor, mask: MaskInfo) -> Tensor:
        """``(B, P + K, D)``: prefix then visible tokens, in ``mask.ids_keep`` order."""
        return self.encoder(x, mask=mask).x

    def forward_decoder(self, latent: Tensor, mask: MaskInfo, grid: Tuple[int, int]) -> Tensor:
        """``(B, N, ph·pw·C)`` prediction for every patch, in time-major token order."""
        x = self.decoder_embed(latent)
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix :]
        x = torch.cat([prefix, mask.restore(visible, self.mask_token)], dim=1)
        x = x + self.decoder_pos_table(grid, x.device, x.dtype)
        if self.config.decoder_mode == "local":
            return self.forward_local_decoder(x[:, self.num_prefix :], grid)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, self.num_prefix :]

    def forward_local_decoder(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """Swin blocks over the ``(B, N, decoder_dim)`` patch tokens (prefix already dropped, as
        upstream does). A grid that is not a multiple of the window is padded by repeating its
        last row/column and cropped after the head — upstream's hack for 101 → 102 time rows."""
        B, N, C = x.shape
        window, _ = window_shift(grid, self.config.decoder_window, (0, 0))
        x = pad_to_windows(x.view(B, grid[0], grid[1], C), window)
        padded = (x.shape[1], x.shape[2])
        x = x.reshape(B, -1, C)
        for blk in self.decoder_blocks:
            x = blk(x, padded)
        pred = self.decoder_pred(self.decoder_norm(x))
        return pred.view(B, *padded, -1)[:, : grid[0], : grid[1]].reshape(B, N, -1)

    def forward_loss(self, x: Tensor, pred: Tensor, mask: MaskInfo) -> Tensor:
        """Mean over hidden patches of the per-patch MSE against the (normalised) pixels."""
        target = self.target(x)
        per_patch = (pred - target).pow(2).mean(dim=-1)
        hidden = mask.mask.to(per_patch.dtype)
        return (per_patch * hidden).sum() / hidden.sum()

    def target(self, x: Tensor) -> Tensor:
        """``patchify(x)``, each patch standardised with its unbiased variance when ``norm_pix_loss``."""
        target = patchify(x, self.patch_size)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True, unbiased=True)
            target = (target - mean) / (var + NORM_PIX_EPS).sqrt()
        return target

    def forward(
        self,
        x: Tensor,
        mask: Optional[MaskInfo] = None,
        generator: Union[torch.Generator, int, None] = None,
        mask_ratio: Optional[float] = None,
    ) -> MAEOutput:
        """``x`` ``(B, C, H, W)`` (``(B, T, F)`` for one-channel audio) with H, W multiples of
        the patch. Without ``mask``, draws MAE random masking at ``mask_ratio`` (default: the
        config's) from ``generator``."""
        if x.dim() == 3 and self.config.encoder.in_chans == 1:
            x = x.unsqueeze(1)
        ph, pw = self.patch_size
        if x.dim() != 4 or x.shape[2] % ph or x.shape[3] % pw:
            raise ValueError(
                f"MAE needs (B, C, H, W) input with H, W multiples of the patch {self.patch_size}; "
                f"got shape {tuple(x.shape)} (crop or pad with features.pad_or_crop first)"
            )
        grid = (x.shape[2] // ph, x.shape[3] // pw)
        if mask is None:
            ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
            mask = random_mask(x.shape[0], grid[0] * grid[1], ratio, generator=resolve_generator(generator), device=x.device)
        latent = self.forward_encoder(x, mask)
        pred = self.forward_decoder(latent, mask, grid)
        loss = self.forward_loss(x, pred, mask)
        return MAEOutput(loss, pred, mask, grid, self.patch_size, self.config.norm_pix_loss)

    def no_weight_decay(self) -> set:
        """Names upstream keeps out of weight decay besides 1-D parameters."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"mask_token"}

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        self._pos_cache = {}
        return super()._apply(fn, recurse)


# ---------------------------------------------------------------------------------------- presets
def _image_encoder(embed_dim: int, depth: int, num_heads: int, patch: int) -> EncoderConfig:
    return family_config(
        "mae", embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=(patch, patch), in_chans=3,
        n_mels=224, pos_grid=(224 // patch, 224 // patch),
    )


def _audio_encoder(embed_dim: int, depth: int, num_heads: int, **kw: Any) -> EncoderConfig:
    return family_config(
        "audiomae", embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=(16, 16), in_chans=1,
        n_mels=128, pos_grid=(64, 8), **kw,
    )


def _mae_vit_base_config() -> MAEConfig:
    return MAEConfig(_image_encoder(768, 12, 12, 16))


def _mae_vit_large_config() -> MAEConfig:
    return MAEConfig(_image_encoder(1024, 24, 16, 16))


def _mae_vit_huge_config() -> MAEConfig:
    return MAEConfig(_image_encoder(1280, 32, 16, 14))


def _audiomae_base_config() -> MAEConfig:
    # AudioMAE mae_vit_base_patch16 on (1024, 128) fbanks: 64×8 tokens, ratio 0.8 (keep 102),
    # norm_pix_loss on. Decoder: the global 8-block MAE decoder (decoder_mode=0); the released
    # 16-block local Swin decoder (decoder_mode=1) is audiomae_base_local.
    return MAEConfig(_audio_encoder(768, 12, 12), decoder_dim=512, decoder_depth=8, decoder_heads=16,
                     mask_ratio=0.8, norm_pix_loss=True)


def _audiomae_base_local_config() -> MAEConfig:
    # The released AudioMAE pretraining architecture (decoder_mode=1): 16 Swin blocks, 16 heads,
    # 4x4 windows on the 64x8 grid, shifted by 2 time rows on odd blocks.
    return MAEConfig(_audio_encoder(768, 12, 12), decoder_dim=512, decoder_depth=16, decoder_heads=16,
                     mask_ratio=0.8, norm_pix_loss=True, decoder_mode="local", decoder_window=(4, 4),
                     decoder_shift=(2, 0))


def _mae_tiny_config() -> MAEConfig:
    enc = family_config("mae", embed_dim=64, depth=2, num_heads=4, patch_size=(8, 8), in_chans=3,
                        n_mels=32, pos_grid=(4, 4))
    return MAEConfig(enc, decoder_dim=32, decoder_depth=2, decoder_heads=4)


def _audiomae_tiny_config() -> MAEConfig:
    return MAEConfig(_audio_encoder(64, 2, 4), decoder_dim=32, decoder_depth=2, decoder_heads=4,
                     mask_ratio=0.8, norm_pix_loss=True)


MAE_PRESETS: Dict[str, Callable[[], MAEConfig]] = {
    "mae_vit_base": _mae_vit_base_config,
    "mae_vit_large": _mae_vit_large_config,
    "mae_vit_huge": _mae_vit_huge_config,
    "audiomae_base": _audiomae_base_config,
    "audiomae_base_local": _audiomae_base_local_config,
    "mae_tiny": _mae_tiny_config,
    "audiomae_tiny": _audiomae_tiny_config,
}


def mae_config(name: str, **overrides: Any) -> MAEConfig:
    """A preset's config with fields replaced; ``encoder={...}`` overrides encoder fields."""
    return preset_config("MAE", MAE_PRESETS, MAEConfig, name, overrides)


def mae_vit_base(**overrides: Any) -> MAE:
    """ViT-B/16 MAE on 224² RGB (encoder 768/12/12, decoder 512/8/16)."""
    return MAE(mae_config("mae_vit_base", **overrides))


def mae_vit_large(**overrides: Any) -> MAE:
    """ViT-L/16 MAE on 224² RGB (encoder 1024/24/16, decoder 512/8/16)."""
    return MAE(mae_config("mae_vit_large", **overrides))


def mae_vit_huge(**overrides: Any) -> MAE:
    """ViT-H/14 MAE on 224² RGB (encoder 1280/32/16, decoder 512/8/16)."""
    return MAE(mae_config("mae_vit_huge", **overrides))


def audiomae_base(**overrides: Any) -> MAE:
    """AudioMAE ViT-B/16 on ``(B, 1, 1024, 128)`` fbanks, ratio 0.8, ``norm_pix_loss``, with the
    global MAE decoder (AudioMAE ``decoder_mode=0``; :func:`audiomae_base_local` is the released
    ``decoder_mode=1`` model)."""
    return MAE(mae_config("audiomae_base", **overrides))


def audiomae_base_local(**overrides: Any) -> MAE:
    """The released AudioMAE pretraining model: ViT-B/16 encoder, ratio 0.8, ``norm_pix_loss``,
    and the local decoder (AudioMAE ``decoder_mode=1``: 16 Swin-V2 blocks, 512 wide, 16 heads,
    4x4 windows, shift (2, 0) on odd blocks)."""
    return MAE(mae_config("audiomae_base_local", **overrides))


def mae_tiny(**overrides: Any) -> MAE:
    """A 32² RGB, patch-8 MAE small enough for tests and the demo."""
    return MAE(mae_config("mae_tiny", **overrides))


def audiomae_tiny(**overrides: Any) -> MAE:
    """A two-block AudioMAE (patch 16, 128 mel bins, any multiple-of-16 length) for tests and the demo."""
    return MAE(mae_config("audiomae_tiny", **overrides))
