"""Self-supervised Audio Spectrogram Transformer (SSAST, Gong et al. 2022).

One objective around the shared :class:`~audiossl.models.encoder.Encoder`, laid out like
``models/mae.py``. Unlike MAE the encoder sees **all** tokens: the hidden ones are replaced by a
learned ``mask_embed`` after the patch embedding and before the positions (BERT style), and two
small heads read the outputs at the hidden places:

* ``cpredlayer`` (discriminative, ``pretrain_mpc``): InfoNCE between each clip's hidden patches,
  the other hidden patches of the same clip being the negatives;
* ``gpredlayer`` (generative, ``pretrain_mpg``): MSE reconstruction of the hidden patches;
* ``pretrain_joint`` (all released models): two forward passes with **separate** masks,
  ``L = L_d + 10 · L_g``.

Both heads are ``Linear(D, D) → ReLU → Linear(D, ph·pw)`` (upstream hard-codes 256 outputs, which
is ``ph·pw`` for both of its patch shapes, 16×16 and 128×2). Parameter names follow upstream
(``mask_embed``, ``cpredlayer.{0,2}``, ``gpredlayer.{0,2}``; the encoder is upstream's ``v``).

Token order. Upstream transposes the input to ``(B, 1, F, T)`` and its tokens are
frequency-major (``f · T' + t``); ours are time-major (``t · F' + f``), the same grid cell under
the bijection ``f · T' + t ↔ t · F' + f`` (``convert/`` permutes the learned positions that way).
The targets keep upstream's *within*-patch order — ``nn.Unfold`` on ``(F, T)`` flattens each
patch frequency-major — via ``patchify(x, within="freq_major")``, so converted ``gpredlayer``
weights predict the same values. Both losses are invariant to the order of the hidden tokens
(InfoNCE permutes the rows and columns of ``S`` together; MSE is a mean), so the two orders give
the same loss for the same hidden cells.

Masks (``mask_patch = 400`` of 512): patch models use chunk masking
(:func:`~audiossl.masking.chunk.chunk_mask`, ``c ∈ {3, 4, 5}`` per clip; ``faithful_mask=True``
reproduces SSAST's quirks — token 0 never hidden, chunks wrapping at the time edge, low-frequency
row under-masked — the default is the corrected sampler); frame models draw 400 tokens uniformly
(upstream's ``cluster = num_mel_bins != fshape``).

The InfoNCE keeps upstream's axis: ``S = E @ Pᵀ`` (``E`` targets, ``P`` predictions), log-softmax
over dim −1, i.e. for each target a softmax over the *predictions* — the transpose of the paper's
Eq. 1; the author kept it for reproducibility (ssast issue #13). ``acc`` is upstream's statistic:
the fraction of columns ``b`` whose arg-max over ``a`` of the row-softmax is ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Literal, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.chunk import chunk_mask
from audiossl.masking.random import random_mask
from audiossl.models.encoder import Encoder, EncoderConfig, family_config, preset_config
from audiossl.tokenizers import patchify

__all__ = [
    "SSAST",
    "SSASTConfig",
    "SSASTOutput",
    "SSAST_PRESETS",
    "Task",
    "info_nce",
    "ssast_base_frame",
    "ssast_base_patch",
    "ssast_config",
    "ssast_mini_frame",
    "ssast_mini_patch",
    "ssast_small_frame",
    "ssast_small_patch",
    "ssast_tiny_frame",
    "ssast_tiny_patch",
]

Task = Literal["pretrain_mpc", "pretrain_mpg", "pretrain_joint"]
MaskKind = Literal["auto", "chunk", "random"]
_TASKS = ("pretrain_mpc", "pretrain_mpg", "pretrain_joint")
_MASK_KINDS = ("auto", "chunk", "random")


@dataclass
class SSASTConfig:
    """Encoder switches/sizes plus the objective; defaults are SSAST Base-Patch-400 on
    ``(B, 1, 1024, 128)`` fbanks (8 × 64 grid of 16×16 patches, 400 hidden, λ = 10)."""

    encoder: EncoderConfig = field(default_factory=lambda: _encoder(768, 12, "patch"))
    num_masked: int = 400
    # "auto": chunks for patch models, uniform for frame models (upstream's num_mel_bins != fshape).
    mask_kind: MaskKind = "auto"
    # SSAST's chunk sampler with its quirks (token 0 never hidden, wrap at the time edge, ...).
    faithful_mask: bool = False
    chunk_sizes: Tuple[int, ...] = (3, 4, 5)
    # Weight of the generative loss in pretrain_joint.
    gen_weight: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.chunk_sizes = tuple(int(c) for c in self.chunk_sizes)
        enc = self.encoder
        if enc.tokenizer not in ("patch", "frame") or enc.stride != enc.patch_size:
            raise ValueError(
                "SSAST pretraining predicts non-overlapping patches: the encoder needs a 'patch' or "
                f"'frame' tokenizer with patch_stride == patch_size, got {enc.tokenizer!r} with stride {enc.stride}"
            )
        if enc.in_chans != 1:
            raise ValueError(f"SSAST takes one-channel spectrograms, got in_chans={enc.in_chans}")
        if enc.pos_embed != "learned" or enc.num_prefix_tokens != 2:
            raise ValueError("SSAST needs the 'ssast' encoder family (learned positions, cls + dist tokens)")
        if self.mask_kind not in _MASK_KINDS:
            raise ValueError(f"mask_kind must be one of {_MASK_KINDS}, got {self.mask_kind!r}")
        num_tokens = enc.pos_grid[0] * enc.pos_grid[1]
        if not 1 <= self.num_masked <= num_tokens:
            raise ValueError(f"num_masked must be in [1, {num_tokens}] for the grid {enc.pos_grid}, got {self.num_masked}")

    @property
    def patch_dim(self) -> int:
        """Width of a target vector and of both heads' outputs (256 for SSAST's 16×16 and 128×2)."""
        ph, pw = self.encoder.patch_size
        return ph * pw

    @property
    def resolved_mask_kind(self) -> str:
        if self.mask_kind != "auto":
            return self.mask_kind
        return "random" if self.encoder.tokenizer == "frame" else "chunk"

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder"] = self.encoder.to_dict()
        out["chunk_sizes"] = list(self.chunk_sizes)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SSASTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SSASTConfig fields: {unknown}")
        return cls(**dict(d))


@dataclass
class SSASTOutput:
    """``loss``: the task's scalar (``nce``, ``mse`` or ``nce + gen_weight·mse``). ``nce``/``acc``
    come from the discriminative pass, ``mse`` from the generative one (None when the task has no
    such pass). ``mask_mpc``/``mask_mpg`` are the masks each pass used (two different draws in
    ``pretrain_joint``). ``acc`` is detached: it is a statistic, not a loss."""

    loss: Tensor
    task: str
    nce: Optional[Tensor] = None
    acc: Optional[Tensor] = None
    mse: Optional[Tensor] = None
    mask_mpc: Optional[MaskInfo] = None
    mask_mpg: Optional[MaskInfo] = None

    def logs(self) -> Dict[str, Tensor]:
        out = {"loss": self.loss.detach()}
        out.update({k: v.detach() for k, v in (("nce", self.nce), ("acc", self.acc), ("mse", self.mse)) if v is not None})
        return out


def info_nce(target: Tensor, pred: Tensor) -> Tuple[Tensor, Tensor]:
    """SSAST's discriminative loss and accuracy for ``(B, M, P)`` targets and predictions.

    Per clip ``S = E @ Pᵀ`` (no temperature, no L2 normalisation), ``nce = -mean_a
    log_softmax(S, -1)[a, a]`` over clips and targets; ``acc`` = share of columns ``b`` with
    ``argmax_a softmax(S, -1)[a, b] == b``. Batched ``bmm`` instead of upstream's per-clip loop.
    """
    scores = torch.bmm(target, pred.transpose(1, 2))
    log_p = torch.log_softmax(scores, dim=-1)
    nce = -torch.diagonal(log_p, dim1=-2, dim2=-1).mean()
    with torch.no_grad():
        M = scores.shape[-1]
        best = torch.softmax(scores, dim=-1).argmax(dim=-2)
        acc = (best == torch.arange(M, device=scores.device)).to(scores.dtype).mean()
    return nce, acc


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim))


class SSAST(nn.Module):
    """Encoder over all tokens (hidden ones swapped for ``mask_embed``), two prediction heads."""

    def __init__(self, config: Optional[SSASTConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else SSASTConfig()
        D = cfg.encoder.embed_dim
        self.encoder = Encoder(cfg.encoder)
        self.num_prefix = cfg.encoder.num_prefix_tokens
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, D))
        # Upstream leaves both heads at PyTorch's default Linear init.
        self.cpredlayer = _head(D, cfg.patch_dim)
        self.gpredlayer = _head(D, cfg.patch_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-normal ``mask_embed`` (std ``sqrt(1/D)`` for its ``(1, 1, D)`` shape), as upstream."""
        nn.init.xavier_normal_(self.mask_embed)

    @property
    def patch_size(self) -> Tuple[int, int]:
        return self.config.encoder.patch_size

    # ------------------------------------------------------------------ masks and targets
    def draw_mask(
        self,
        batch_size: int,
        grid: Tuple[int, int],
        generator: Union[torch.Generator, int, None] = None,
        device: Union[str, torch.device, None] = None,
    ) -> MaskInfo:
        """``num_masked`` hidden tokens per clip: chunks (patch models) or uniform (frame models)."""
        cfg = self.config
        gen = resolve_generator(generator, None if isinstance(generator, torch.Generator) else device)
        if cfg.resolved_mask_kind == "random":
            return random_mask(batch_size, grid[0] * grid[1], None, num_masked=cfg.num_masked, generator=gen, device=device)
        return chunk_mask(
            batch_size, grid, cfg.num_masked, chunk_sizes=cfg.chunk_sizes, faithful=cfg.faithful_mask,
            upstream="ssast", generator=gen, device=device,
        )

    def target(self, x: Tensor) -> Tensor:
        """``(B, N, ph·pw)`` raw (normalised-fbank) patches, time-major tokens, each patch
        flattened frequency-major as SSAST's ``Unfold`` on ``(F, T)`` does. No per-patch norm."""
        return patchify(x, self.patch_size, within="freq_major")

    # ------------------------------------------------------------------ forward pieces
    def forward_encoder(self, x: Tensor, mask: MaskInfo) -> Tensor:
        """``(B, 2 + N, D)``: every token, the hidden ones having entered as ``mask_embed``
        (before positions, so they keep the position of their cell)."""
        tokens, padding_mask, grid = self.encoder.embed(x)
        hidden = mask.mask.unsqueeze(-1)
        tokens = torch.where(hidden, self.mask_embed.to(tokens.dtype), tokens)
        tokens = self.encoder.add_positions(tokens, grid)
        tokens, padding_mask = self.encoder.prepend_prefix(tokens, padding_mask)
        return self.encoder.forward_blocks(tokens, padding_mask, grid=grid).x

    def predict(self, latent: Tensor, mask: MaskInfo, head: nn.Module) -> Tensor:
        """``(B, M, ph·pw)``: ``head`` on the outputs at the hidden places, ``ids_masked`` order."""
        return head(mask.gather_masked(latent[:, self.num_prefix :]))

    def forward_mpc(self, x: Tensor, mask: MaskInfo) -> Tuple[Tensor, Tensor]:
        """Discriminative pass: ``(nce, acc)``; targets are inputs, so they carry no gradient."""
        pred = self.predict(self.forward_encoder(x, mask), mask, self.cpredlayer)
        target = mask.gather_masked(self.target(x)).detach()
        return info_nce(target, pred)

    def forward_mpg(self, x: Tensor, mask: MaskInfo) -> Tensor:
        """Generative pass: MSE over all hidden patches and all their values."""
        pred = self.predict(self.forward_encoder(x, mask), mask, self.gpredlayer)
        target = mask.gather_masked(self.target(x)).detach()
        return (pred - target).pow(2).mean()

    def forward(
        self,
        x: Tensor,
        task: Task = "pretrain_joint",
        mask: Union[MaskInfo, Tuple[MaskInfo, MaskInfo], None] = None,
        generator: Union[torch.Generator, int, None] = None,
    ) -> SSASTOutput:
        """``x`` ``(B, 1, T, F)`` or ``(B, T, F)`` on the pretraining grid. Without ``mask``,
        masks are drawn from ``generator`` — one per pass, so ``pretrain_joint`` draws two
        (the first for mpc). A given mask is used as is; for the joint task pass ``(mpc, mpg)``,
        or one mask to use for both passes (cheaper to reason about, not upstream)."""
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        if x.dim() == 3:
            x = x.unsqueeze(1)
        ph, pw = self.patch_size
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] % ph or x.shape[3] % pw:
            raise ValueError(
                f"SSAST needs (B, 1, T, F) input with T, F multiples of the patch {self.patch_size}; "
                f"got shape {tuple(x.shape)} (crop or pad with features.pad_or_crop first)"
            )
        grid = (x.shape[2] // ph, x.shape[3] // pw)
        B = x.shape[0]
        gen = None if mask is not None else resolve_generator(generator, x.device)
        if isinstance(mask, tuple):
            mask_c, mask_g = mask
        else:
            mask_c = mask_g = mask

        def draw(given: Optional[MaskInfo]) -> MaskInfo:
            return given if given is not None else self.draw_mask(B, grid, gen, x.device)

        if task == "pretrain_mpc":
            m = draw(mask_c)
            nce, acc = self.forward_mpc(x, m)
            return SSASTOutput(nce, task, nce=nce, acc=acc, mask_mpc=m)
        if task == "pretrain_mpg":
            m = draw(mask_g)
            mse = self.forward_mpg(x, m)
            return SSASTOutput(mse, task, mse=mse, mask_mpg=m)
        m_c = draw(mask_c)
        nce, acc = self.forward_mpc(x, m_c)
        m_g = draw(mask_g)
        mse = self.forward_mpg(x, m_g)
        return SSASTOutput(nce + self.config.gen_weight * mse, task, nce, acc, mse, m_c, m_g)

    def no_weight_decay(self) -> set:
        """Names timm keeps out of weight decay besides 1-D parameters (upstream's Adam uses a
        single tiny weight decay for all, so this only matters for other optimizers)."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"mask_embed"}


# ---------------------------------------------------------------------------------------- presets
def _encoder(embed_dim: int, num_heads: int, kind: str, depth: int = 12, frames: int = 1024) -> EncoderConfig:
    """DeiT-style SSAST encoder for ``frames`` × 128 fbanks: 16×16 patches (``(frames/16, 8)``
    grid) or 2-frame × 128-bin frames (``(frames/2, 1)`` grid)."""
    if kind == "patch":
        return family_config("ssast", embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                             patch_size=(16, 16), n_mels=128, pos_grid=(frames // 16, 8))
    return family_config("ssast", embed_dim=embed_dim, depth=depth, num_heads=num_heads, tokenizer="frame",
                         patch_size=(2, 128), n_mels=128, pos_grid=(frames // 2, 1))


def _preset(embed_dim: int, num_heads: int, kind: str) -> Callable[[], SSASTConfig]:
    def build() -> SSASTConfig:
        return SSASTConfig(_encoder(embed_dim, num_heads, kind))

    return build


def _mini(kind: str) -> Callable[[], SSASTConfig]:
    # 64 frames: 4 × 8 patches or 32 frames; 24 of 32 hidden (75 %, near SSAST's 400/512).
    def build() -> SSASTConfig:
        return SSASTConfig(_encoder(64, 4, kind, depth=2, frames=64), num_masked=24)

    return build


SSAST_PRESETS: Dict[str, Callable[[], SSASTConfig]] = {
    "ssast_tiny_patch": _preset(192, 3, "patch"),
    "ssast_tiny_frame": _preset(192, 3, "frame"),
    "ssast_small_patch": _preset(384, 6, "patch"),
    "ssast_small_frame": _preset(384, 6, "frame"),
    "ssast_base_patch": _preset(768, 12, "patch"),
    "ssast_base_frame": _preset(768, 12, "frame"),
    "ssast_mini_patch": _mini("patch"),
    "ssast_mini_frame": _mini("frame"),
}


def ssast_config(name: str, **overrides: Any) -> SSASTConfig:
    """A preset's config with fields replaced; ``encoder={...}`` overrides encoder fields."""
    return preset_config("SSAST", SSAST_PRESETS, SSASTConfig, name, overrides)


def ssast_tiny_patch(**overrides: Any) -> SSAST:
    """SSAST-Tiny-Patch-400: DeiT-Ti (192/12/3), 16×16 patches, 1024 frames, chunk masks."""
    return SSAST(ssast_config("ssast_tiny_patch", **overrides))


def ssast_tiny_frame(**overrides: Any) -> SSAST:
    """SSAST-Tiny-Frame-400: DeiT-Ti (192/12/3), 2-frame tokens, 1024 frames, uniform masks."""
    return SSAST(ssast_config("ssast_tiny_frame", **overrides))


def ssast_small_patch(**overrides: Any) -> SSAST:
    """SSAST-Small-Patch-400: DeiT-S (384/12/6), 16×16 patches."""
    return SSAST(ssast_config("ssast_small_patch", **overrides))


def ssast_small_frame(**overrides: Any) -> SSAST:
    """SSAST-Small-Frame-400: DeiT-S (384/12/6), 2-frame tokens."""
    return SSAST(ssast_config("ssast_small_frame", **overrides))


def ssast_base_patch(**overrides: Any) -> SSAST:
    """SSAST-Base-Patch-400: DeiT-B (768/12/12), 8 × 64 grid of 16×16 patches (512 + 2 tokens)."""
    return SSAST(ssast_config("ssast_base_patch", **overrides))


def ssast_base_frame(**overrides: Any) -> SSAST:
    """SSAST-Base-Frame-400: DeiT-B (768/12/12), 512 two-frame tokens (+ 2)."""
    return SSAST(ssast_config("ssast_base_frame", **overrides))


def ssast_mini_patch(**overrides: Any) -> SSAST:
    """A two-block 64-wide patch model on 64-frame clips (24 of 32 hidden) for tests and the demo."""
    return SSAST(ssast_config("ssast_mini_patch", **overrides))


def ssast_mini_frame(**overrides: Any) -> SSAST:
    """A two-block 64-wide frame model on 64-frame clips (24 of 32 hidden) for tests and the demo."""
    return SSAST(ssast_config("ssast_mini_frame", **overrides))
