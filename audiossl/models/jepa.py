"""I-JEPA (Assran et al. 2023) and its hierarchical form (H-JEPA) around the shared encoder.

Laid out like facebookresearch/ijepa ``src/train.py`` + ``src/models/vision_transformer.py``:

* context encoder: :class:`~audiossl.models.encoder.Encoder` (``family_config("ijepa")``: no
  cls, fixed 2-D sin-cos, pre-LN, final norm) run on the context tokens only;
* target encoder: an EMA copy of it (no grad, always eval) on the full input; targets are its
  output, layer-normed without affine, gathered at each target block;
* predictor: a narrow ViT (``predictor_embed`` D→pred_dim, a learned ``mask_token``, fixed 2-D
  sin-cos positions of context and target indices, pre-LN blocks, ``predictor_norm``,
  ``predictor_proj`` pred_dim→D). Each target block is predicted in its own copy of the
  context; the ``npred`` copies are stacked along the batch (block-major), as upstream does;
* loss: ``F.smooth_l1_loss`` (beta 1, mean over all elements);
* EMA momentum linear from 0.996 to 1.0 over training (:meth:`JEPA.update_teacher`).

H-JEPA (``hierarchical`` set): every level of :class:`HierarchicalMasks` has its own context and
targets; the target encoder runs once, the context encoder and the predictor once per level,
and the loss is the mean of the level losses. Design: **one shared predictor plus a learned
level embedding** added to the mask tokens. One predictor per level would multiply the
predictor's parameters and optimizer state by the number of levels and split its training
signal; sharing it costs ``L × pred_dim`` parameters and lets the predictor know which target
scale it is asked for (the target positions alone do not say it).

Deviations: upstream's ``nenc > 1`` folds the contexts into the batch; here contexts are
looped over and their losses averaged, which is the same mean when (as the masks guarantee)
all contexts have the same size. Random draws use a ``torch.Generator`` (upstream uses the
global RNG for positions).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.hierarchical import HierarchicalMasker, HierarchicalMasks
from audiossl.masking.multiblock import MULTIBLOCK_PRESETS, MultiBlockMasker, MultiBlockMasks
from audiossl.models.encoder import Encoder, EncoderConfig, family_config, feature_variance, preset_config
from audiossl.nn.blocks import Block, init_bert
from audiossl.nn.pos_embed import sincos_2d

__all__ = [
    "JEPA",
    "JEPAConfig",
    "JEPAOutput",
    "JEPAPredictor",
    "JEPA_PRESETS",
    "ijepa_audio_tiny",
    "ijepa_tiny",
    "ijepa_vit_base",
    "ijepa_vit_huge",
    "jepa_config",
]

logger = logging.getLogger(__name__)

Masks = Union[MultiBlockMasks, HierarchicalMasks]


@dataclass
class JEPAConfig:
    """Encoder, predictor, masks and EMA; defaults are I-JEPA ViT-H/14's released config
    (predictor 384 wide, 12 deep, the encoder's 16 heads; EMA 0.996 → 1.0)."""

    encoder: EncoderConfig = field(
        default_factory=lambda: family_config(
            "ijepa", embed_dim=1280, depth=32, num_heads=16, patch_size=(14, 14), in_chans=3, n_mels=224,
            pos_grid=(16, 16),
        )
    )
    pred_dim: int = 384
    pred_depth: int = 12
    # None = the encoder's number of heads (upstream passes encoder.num_heads to the predictor).
    pred_heads: Optional[int] = None
    # Upstream's vit_predictor keeps mlp_ratio 4 whatever the encoder's (ViT-g uses 48/11).
    pred_mlp_ratio: float = 4.0
    ema_start: float = 0.996
    ema_end: float = 1.0
    # Masks drawn when forward() gets none: a MULTIBLOCK_PRESETS name ("image", "audio") ...
    masker: str = "image"
    mask_mode: str = "corrected"
    # ... or, when set, H-JEPA levels: keyword arguments of HierarchicalMasker.
    hierarchical: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        enc = self.encoder
        if enc.num_prefix_tokens != 0:
            raise ValueError(f"I-JEPA's encoder has no prefix tokens, got num_prefix_tokens={enc.num_prefix_tokens}")
        if enc.tokenizer != "patch" or enc.pos_embed != "sincos_2d":
            raise ValueError("JEPA needs a patch tokenizer with 2-D sin-cos positions (family_config('ijepa'))")
        if self.pred_dim % self.heads or self.pred_dim % 4:
            raise ValueError(f"pred_dim {self.pred_dim} must be divisible by 4 and by pred_heads {self.heads}")
        if not 0.0 <= self.ema_start <= self.ema_end <= 1.0:
            raise ValueError(f"need 0 <= ema_start <= ema_end <= 1, got {self.ema_start}, {self.ema_end}")
        if self.masker not in MULTIBLOCK_PRESETS:
            raise ValueError(f"masker must be one of {sorted(MULTIBLOCK_PRESETS)}, got {self.masker!r}")
        if self.hierarchical is not None:
            self.hierarchical = dict(self.hierarchical)
            HierarchicalMasker(**self.hierarchical)  # unknown keys fail here, not mid-training

    @property
    def heads(self) -> int:
        return self.pred_heads if self.pred_heads is not None else self.encoder.num_heads

    @property
    def num_levels(self) -> int:
        return 1 if self.hierarchical is None else HierarchicalMasker(**self.hierarchical).num_levels

    def build_masker(self) -> Union[MultiBlockMasker, HierarchicalMasker]:
        if self.hierarchical is not None:
            return HierarchicalMasker(**{"mode": self.mask_mode, **self.hierarchical})
        return MULTIBLOCK_PRESETS[self.masker](mode=self.mask_mode)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder"] = self.encoder.to_dict()
        if self.hierarchical is not None:
            out["hierarchical"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hierarchical.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "JEPAConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown JEPAConfig fields: {unknown}")
        d = dict(d)
        if d.get("hierarchical") is not None:
            d["hierarchical"] = {k: tuple(v) if isinstance(v, list) else v for k, v in d["hierarchical"].items()}
        return cls(**d)


@dataclass
class JEPAOutput:
    """``loss``: mean of ``level_losses``. Per level (one entry for plain I-JEPA, per context
    when ``nenc > 1``): ``predictions[l]`` and ``targets[l]`` are ``(npred·B, K_t, D)``, block-major
    (rows ``i·B .. (i+1)·B`` are target block ``i``). ``masks``: the masks used."""

    loss: Tensor
    level_losses: List[Tensor]
    predictions: List[Tensor]
    targets: List[Tensor]
    masks: Masks
    grid: Tuple[int, int]

    def logs(self) -> Dict[str, Tensor]:
        out = {"loss": self.loss.detach(), "pred_var": feature_variance(torch.cat([p.flatten(0, -2) for p in self.predictions])),
               "target_var": feature_variance(torch.cat([t.flatten(0, -2) for t in self.targets]))}
        if len(self.level_losses) > 1:
            out.update({f"loss_{i}": v.detach() for i, v in enumerate(self.level_losses)})
        return out


class JEPAPredictor(nn.Module):
    """I-JEPA's narrow ViT predictor (upstream names: ``predictor_embed``, ``mask_token``,
    ``predictor_blocks.N``, ``predictor_norm``, ``predictor_proj``)."""

    def __init__(
        self, embed_dim: int, pred_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6, num_levels: int = 1,
    ) -> None:
        super().__init__()
        self.pred_dim = pred_dim
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        self.predictor_embed = nn.Linear(embed_dim, pred_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
        # H-JEPA only: which level's targets the mask tokens stand for.
        self.level_embed = nn.Parameter(torch.zeros(num_levels, pred_dim)) if num_levels > 1 else None
        self.predictor_blocks = nn.ModuleList(
            Block(pred_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)
        )
        self.predictor_norm = norm_layer(pred_dim)
        self.predictor_proj = nn.Linear(pred_dim, embed_dim)
        self._pos_cache: Dict[Tuple[Tuple[int, int], torch.device, torch.dtype], Tensor] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """I-JEPA's init: N(0, 0.02) Linear/tokens, zero biases, and ``fix_init_weight`` (each
        residual branch's output projection divided by sqrt(2·layer))."""
        self.apply(init_bert)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-2.0, b=2.0)
        if self.level_embed is not None:
            nn.init.trunc_normal_(self.level_embed, std=0.02, a=-2.0, b=2.0)
        for layer, blk in enumerate(self.predictor_blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))

    def position_table(self, grid: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(N, pred_dim)`` fixed sin-cos table of the grid, cached per (grid, device, dtype)."""
        key = (tuple(grid), torch.device(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = sincos_2d(self.pred_dim, tuple(grid)).to(device=device, dtype=dtype)
            self._pos_cache[key] = table
        return table

    def forward(
        self, context: Tensor, context_ids: Tensor, target_ids: Tensor, grid: Tuple[int, int], level: int = 0
    ) -> Tensor:
        """``context`` ``(B, K_c, D)`` at ``context_ids`` ``(B, K_c)``; ``target_ids``
        ``(npred, B, K_t)`` → ``(npred·B, K_t, D)`` predictions, block-major."""
        npred, B, Kt = target_ids.shape
        x = self.predictor_embed(context)
        pos = self.position_table(grid, x.device, x.dtype)
        x = x + pos[context_ids]
        targets = self.mask_token + pos[target_ids.reshape(npred * B, Kt)]
        if self.level_embed is not None:
            targets = targets + self.level_embed[level]
        x = torch.cat([x.repeat(npred, 1, 1), targets], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x[:, -Kt:]))

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        self._pos_cache = {}
        return super()._apply(fn, recurse)


class JEPA(nn.Module):
    """Context encoder + predictor (trained) and an EMA target encoder (``target_encoder``)."""

    def __init__(self, config: Optional[JEPAConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else JEPAConfig()
        enc = cfg.encoder
        self.encoder = Encoder(enc)
        self.predictor = JEPAPredictor(
            enc.embed_dim, cfg.pred_dim, cfg.pred_depth, cfg.heads, mlp_ratio=cfg.pred_mlp_ratio,
            norm_eps=enc.norm_eps, num_levels=cfg.num_levels,
        )
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_encoder.requires_grad_(False)
        self.target_encoder.eval()
        self.masker = cfg.build_masker()

    def train(self, mode: bool = True) -> "JEPA":  # type: ignore[override]
        # The target encoder is a teacher: its dropout/drop-path stay off whatever the mode.
        super().train(mode)
        self.target_encoder.eval()
        return self

    # ------------------------------------------------------------------ forward pieces
    def grid(self, x: Tensor) -> Tuple[int, int]:
        return self.encoder.grid_shape(x.shape[-2], x.shape[-1])

    def sample_masks(self, batch_size: int, grid: Tuple[int, int], generator: Union[torch.Generator, int, None] = None,
                     device: Optional[torch.device] = None) -> Masks:
        """The config's masks for one batch (multi-block, or every H-JEPA level)."""
        gen = resolve_generator(generator)
        return self.masker(batch_size, grid, generator=gen).to(device)

    @torch.no_grad()
    def forward_target(self, x: Tensor) -> Tensor:
        """``(B, N, D)``: the target encoder's output on the full input, layer-normed without
        affine (upstream normalises after the encoder's own final norm)."""
        h = self.target_encoder(x).tokens
        return F.layer_norm(h, (h.shape[-1],))

    @staticmethod
    def gather_targets(h: Tensor, target_ids: Tensor) -> Tensor:
        """``(B, N, D)``, ``(npred, B, K_t)`` → ``(npred·B, K_t, D)`` block-major."""
        npred, B, Kt = target_ids.shape
        idx = target_ids.reshape(npred * B, Kt, 1).expand(-1, -1, h.shape[-1])
        return torch.gather(h.repeat(npred, 1, 1), 1, idx)

    def forward_context(self, x: Tensor, context: MaskInfo) -> Tensor:
        """``(B, K_c, D)``: the context encoder on ``context.ids_keep`` only."""
        return self.encoder(x, mask=context).tokens

    def forward_predictor(self, z: Tensor, context: MaskInfo, target_ids: Tensor, grid: Tuple[int, int],
                          level: int = 0) -> Tensor:
        return self.predictor(z, context.ids_keep, target_ids, grid, level)

    @staticmethod
    def forward_loss(pred: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(pred, target)

    def forward(self, x: Tensor, masks: Optional[Masks] = None,
                generator: Union[torch.Generator, int, None] = None) -> JEPAOutput:
        """``x`` ``(B, C, H, W)`` (``(B, T, F)`` for one-channel audio). Without ``masks``, draws
        the config's masks from ``generator``. ``masks`` may be :class:`MultiBlockMasks` or
        :class:`HierarchicalMasks` whatever the config (the level embedding needs the config's
        number of levels, or one)."""
        if x.dim() == 3 and self.config.encoder.in_chans == 1:
            x = x.unsqueeze(1)
        grid = self.grid(x)
        if masks is None:
            masks = self.sample_masks(x.shape[0], grid, generator, x.device)
        if tuple(masks.grid if isinstance(masks, MultiBlockMasks) else masks.levels[0].grid) != tuple(grid):
            raise ValueError(f"masks were drawn for another grid than the input's {grid}")
        levels = [masks] if isinstance(masks, MultiBlockMasks) else list(masks.levels)
        if len(levels) > 1 and len(levels) != self.config.num_levels:
            raise ValueError(f"masks have {len(levels)} levels, the predictor was built for {self.config.num_levels}")
        h = self.forward_target(x)
        preds: List[Tensor] = []
        targets: List[Tensor] = []
        losses: List[Tensor] = []
        for level, mb in enumerate(levels):
            target = self.gather_targets(h, mb.target_ids)
            for context in mb.contexts:
                z = self.forward_context(x, context)
                pred = self.forward_predictor(z, context, mb.target_ids, grid, level)
                preds.append(pred)
                targets.append(target)
                losses.append(self.forward_loss(pred, target))
        loss = torch.stack(losses).mean()
        return JEPAOutput(loss, losses, preds, targets, masks, grid)

    # ------------------------------------------------------------------ teacher
    def momentum(self, step: int, total_steps: int) -> float:
        """I-JEPA's linear schedule: ``ema_start`` at step 0, ``ema_end`` at ``total_steps``."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        cfg = self.config
        t = min(max(step / total_steps, 0.0), 1.0)
        return cfg.ema_start + t * (cfg.ema_end - cfg.ema_start)

    @torch.no_grad()
    def update_teacher(self, step: int, total_steps: int) -> float:
        """``θ_t ← m·θ_t + (1 − m)·θ_c`` on parameters only (upstream); call after
        ``optimizer.step()``. Returns the momentum used."""
        m = self.momentum(step, total_steps)
        teacher = list(self.target_encoder.parameters())
        student = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_mul_(teacher, m)
        torch._foreach_add_(teacher, student, alpha=1.0 - m)
        return m

    def trainable_parameters(self) -> List[nn.Parameter]:
        """Context encoder and predictor: what the optimizer gets."""
        return [p for p in self.parameters() if p.requires_grad]

    def no_weight_decay(self) -> set:
        """Upstream excludes only biases and 1-D parameters, which optimizers find by shape."""
        return set()


# ---------------------------------------------------------------------------------------- presets
def _image_encoder(embed_dim: int, depth: int, num_heads: int, patch: int, size: int = 224) -> EncoderConfig:
    return family_config(
        "ijepa", embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=(patch, patch), in_chans=3,
        n_mels=size, pos_grid=(size // patch, size // patch),
    )


def _ijepa_vit_base_config() -> JEPAConfig:
    # No released ViT-B config; the ViT-H recipe's predictor (384 wide, 12 deep) with the
    # encoder's 12 heads, as helper.init_model builds it.
    return JEPAConfig(_image_encoder(768, 12, 12, 16), pred_dim=384, pred_depth=12)


def _ijepa_vit_huge_config() -> JEPAConfig:
    # configs/in1k_vith14_ep300.yaml: pred_depth 12, pred_emb_dim 384; heads = encoder's 16.
    return JEPAConfig(_image_encoder(1280, 32, 16, 14), pred_dim=384, pred_depth=12)


def _ijepa_tiny_config() -> JEPAConfig:
    enc = _image_encoder(64, 2, 4, 8, size=64)
    return JEPAConfig(enc, pred_dim=32, pred_depth=2, pred_heads=4)


def _ijepa_audio_tiny_config() -> JEPAConfig:
    # (B, 1, 1024, 128) fbanks → 64×8 patch-16 tokens; any multiple-of-16 length works.
    enc = family_config("ijepa", embed_dim=64, depth=2, num_heads=4, patch_size=(16, 16), in_chans=1,
                        n_mels=128, pos_grid=(64, 8))
    return JEPAConfig(enc, pred_dim=32, pred_depth=2, pred_heads=4, masker="audio")


JEPA_PRESETS: Dict[str, Callable[[], JEPAConfig]] = {
    "ijepa_vit_base": _ijepa_vit_base_config,
    "ijepa_vit_huge": _ijepa_vit_huge_config,
    "ijepa_tiny": _ijepa_tiny_config,
    "ijepa_audio_tiny": _ijepa_audio_tiny_config,
}


def jepa_config(name: str, **overrides: Any) -> JEPAConfig:
    """A preset's config with fields replaced; ``encoder={...}`` overrides encoder fields."""
    return preset_config("JEPA", JEPA_PRESETS, JEPAConfig, name, overrides)


def ijepa_vit_base(**overrides: Any) -> JEPA:
    """ViT-B/16 I-JEPA on 224² RGB (encoder 768/12/12, predictor 384 wide, 12 deep, 12 heads)."""
    return JEPA(jepa_config("ijepa_vit_base", **overrides))


def ijepa_vit_huge(**overrides: Any) -> JEPA:
    """ViT-H/14 I-JEPA on 224² RGB (encoder 1280/32/16, predictor 384 wide, 12 deep, 16 heads)."""
    return JEPA(jepa_config("ijepa_vit_huge", **overrides))


def ijepa_tiny(**overrides: Any) -> JEPA:
    """A 64² RGB, patch-8 (8×8 grid) I-JEPA small enough for tests and the demo."""
    return JEPA(jepa_config("ijepa_tiny", **overrides))


def ijepa_audio_tiny(**overrides: Any) -> JEPA:
    """A two-block audio I-JEPA (patch 16, 128 mel bins) with ``multiblock_audio()`` masks."""
    return JEPA(jepa_config("ijepa_audio_tiny", **overrides))
