"""MAE-AST (Baade, Peng & Harwath 2022): a masked autoencoder with SSAST's joint objective.

Laid out like :mod:`audiossl.models.mae`: ``normalize`` (MAE-AST's in-model
``BatchNorm2d(1, affine=False)·0.5``), ``forward_encoder`` (linear patch/frame projection,
fixed 1-D sin positions, visible tokens only, post-LN fairseq encoder with input LayerNorm and
layerdrop), ``forward_decoder`` (learned U(0,1) mask embedding at the hidden slots, the same
sin table added again, two post-LN layers of the encoder's width) and ``forward_loss``
(InfoNCE over the masked tokens of each clip + 10 × MSE, one pass, one mask).

The fairseq order of operations is kept where it changes training: input dropout acts on the
projected tokens *before* positions are added (``dropout_input``), and each transformer stack
is ``LayerNorm → dropout → layers`` (wav2vec2 ``TransformerEncoder`` with
``layer_norm_first=False``), which differs from :meth:`Encoder.forward_blocks` (dropout before
the norm); the encoder's own steps are reused, its block loop is not.

Parameter names follow upstream where the module layout allows (``decoder_mask_emb``,
``final_proj_reconstruction``, ``final_proj_classification``, ``batch_norm``); encoder and
decoder layers are :class:`~audiossl.nn.blocks.Block` s and need key renames in ``convert/``.

Deviations from upstream: the unused ``encoder_mask_emb`` and the
unused ``layer_norm`` (LayerNorm(128)) of upstream are not built; the ``pe`` buffers (2 × 147
MB) are not stored, the table is rebuilt for each sequence length; the chunk sampler defaults to
the corrected one of :mod:`audiossl.masking.chunk` (``chunk_faithful=True`` gives upstream's
one-mask-per-batch distribution).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.chunk import ChunkMask
from audiossl.masking.random import random_mask
from audiossl.models.encoder import Encoder, EncoderConfig, EncoderOutput, family_config, feature_variance, preset_config
from audiossl.nn.blocks import Block, init_bert
from audiossl.nn.pos_embed import sincos_1d
from audiossl.tokenizers import patchify

__all__ = [
    "MAEAST",
    "MAEASTConfig",
    "MAEASTOutput",
    "MAEAST_PRESETS",
    "maeast_config",
    "maeast_frame_base",
    "maeast_frame_tiny",
    "maeast_patch_base",
    "maeast_patch_tiny",
]

logger = logging.getLogger(__name__)

MaskType = Literal["chunk", "random", "random_batched"]
_MASK_TYPES = ("chunk", "random", "random_batched")


@dataclass
class MAEASTConfig:
    """Encoder plus decoder depth, masking and loss weights; defaults are the released MAE-AST
    patch model (``config/pretrain/mae_ast.yaml``: 12-layer encoder, 2-layer decoder, 75 %
    chunk masking, ``L = 1·NCE + 10·MSE``, encoder layerdrop 0.05, decoder layerdrop 0).

    The decoder has the encoder's width, heads, FFN and dropouts (upstream builds both stacks
    from the same arguments and asserts ``decoder_embed_dim == encoder_embed_dim``).
    """

    encoder: EncoderConfig = field(default_factory=lambda: family_config("mae_ast"))
    decoder_depth: int = 2
    mask_type: MaskType = "chunk"
    mask_ratio: float = 0.75
    # True: upstream's chunk sampler (one mask per batch, lowest-index truncation, wrap-around);
    # False: the corrected per-clip sampler of audiossl.masking.chunk.
    chunk_faithful: bool = False
    chunk_sizes: Tuple[int, ...] = (3, 4, 5)
    encoder_layerdrop: float = 0.05
    decoder_layerdrop: float = 0.0
    # BatchNorm2d(1, affine=False) on the input fbank, then × input_scale ("mimics AST
    # normalisation"). Off when the batches are already normalised (e.g. with AudioSet stats).
    input_batch_norm: bool = True
    input_scale: float = 0.5
    classification_weight: float = 1.0
    reconstruction_weight: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        self.chunk_sizes = tuple(int(c) for c in self.chunk_sizes)
        enc = self.encoder
        if enc.tokenizer != "linear_patch" or enc.in_chans != 1:
            raise ValueError(
                f"MAE-AST projects single-channel patches with a Linear: the encoder needs "
                f"tokenizer='linear_patch' and in_chans=1, got {enc.tokenizer!r}, in_chans={enc.in_chans}"
            )
        if enc.num_prefix_tokens != 0:
            raise ValueError(f"MAE-AST has no cls token; num_prefix_tokens must be 0, got {enc.num_prefix_tokens}")
        if enc.n_mels % enc.patch_size[1]:
            raise ValueError(f"patch width {enc.patch_size[1]} does not divide n_mels {enc.n_mels}")
        if self.mask_type not in _MASK_TYPES:
            raise ValueError(f"mask_type must be one of {_MASK_TYPES}, got {self.mask_type!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {self.decoder_depth}")
        for name in ("encoder_layerdrop", "decoder_layerdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def patch_dim(self) -> int:
        """Length of one target vector: ``k_time·k_chan`` (256 for 16×16 and 2×128)."""
        ph, pw = self.encoder.patch_size
        return ph * pw

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder"] = self.encoder.to_dict()
        out["chunk_sizes"] = list(self.chunk_sizes)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MAEASTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MAEASTConfig fields: {unknown}")
        return cls(**dict(d))


@dataclass
class MAEASTOutput:
    """``loss = classification_weight·nce + reconstruction_weight·mse``. ``pred_reconstruction``,
    ``pred_classification`` and ``target`` are ``(B, M, k_time·k_chan)`` at the hidden tokens in
    ``mask.ids_masked`` order (targets: normalised input patches, time-major inside a patch).
    ``accuracy``: share of hidden tokens whose prediction scores its own patch highest among the
    clip's hidden patches (the InfoNCE's axis)."""

    loss: Tensor
    nce: Tensor
    mse: Tensor
    accuracy: Tensor
    pred_reconstruction: Tensor
    pred_classification: Tensor
    target: Tensor
    mask: MaskInfo
    grid: Tuple[int, int]
    patch_size: Tuple[int, int]

    def logs(self) -> Dict[str, Tensor]:
        return {"loss": self.loss.detach(), "nce": self.nce.detach(), "mse": self.mse.detach(),
                "acc": self.accuracy.detach(), "pred_var": feature_variance(self.pred_reconstruction),
                "target_var": feature_variance(self.target)}


class MAEAST(nn.Module):
    """Encoder on the visible tokens, a 2-layer decoder over all, InfoNCE + MSE on the hidden."""

    def __init__(self, config: Optional[MAEASTConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else MAEASTConfig()
        enc = cfg.encoder
        D = enc.embed_dim
        self.batch_norm = nn.BatchNorm2d(1, affine=False) if cfg.input_batch_norm else None
        self.encoder = Encoder(enc)
        self.decoder_mask_emb = nn.Parameter(torch.empty(D))
        self.decoder_norm_pre = nn.LayerNorm(D, eps=enc.norm_eps)
        self.decoder_blocks = nn.ModuleList(
            Block(
                D,
                enc.num_heads,
                mlp_ratio=enc.mlp_ratio,
                qkv_bias=enc.qkv_bias,
                drop=enc.drop,
                attn_drop=enc.attn_drop,
                act_drop=enc.act_drop,
                post_norm=True,
                norm_layer=lambda dim: nn.LayerNorm(dim, eps=enc.norm_eps),
            )
            for _ in range(cfg.decoder_depth)
        )
        self.final_proj_reconstruction = nn.Linear(D, cfg.patch_dim)
        self.final_proj_classification = nn.Linear(D, cfg.patch_dim)
        self._pos_cache: Dict[Tuple[int, torch.device, torch.dtype], Tensor] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Upstream's init: BERT init inside both transformer stacks (the encoder does its own),
        ``decoder_mask_emb`` U(0, 1), and PyTorch's default Linear init for the two heads (they
        sit outside the stacks that ``init_bert_params`` is applied to)."""
        self.decoder_norm_pre.apply(init_bert)
        self.decoder_blocks.apply(init_bert)
        nn.init.uniform_(self.decoder_mask_emb, 0.0, 1.0)
        self.final_proj_reconstruction.reset_parameters()
        self.final_proj_classification.reset_parameters()

    @property
    def patch_size(self) -> Tuple[int, int]:
        return self.config.encoder.patch_size

    def position_table(self, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(1, length, D)`` MAE-AST sinusoid (interleaved sin/cos), the same for encoder and decoder."""
        key = (int(length), torch.device(device), dtype)
        table = self._pos_cache.get(key)
        if table is None:
            table = sincos_1d(self.config.encoder.embed_dim, length).unsqueeze(0).to(device=device, dtype=dtype)
            self._pos_cache[key] = table
        return table

    # ------------------------------------------------------------------ forward pieces
    def normalize(self, x: Tensor) -> Tensor:
        """``(B, 1, T, F)`` → MAE-AST's input scale: batch statistics in train mode, running
        statistics in eval mode (they are checkpoint buffers), then × ``input_scale``."""
        if self.batch_norm is None:
            return x
        return self.batch_norm(x) * self.config.input_scale

    def patches(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Normalised ``(B, 1, T, F)`` → ``(B, N, k_time·k_chan)`` patches (the targets and the
        projection's input) and the token grid; remainder frames are dropped, as ``nn.Unfold``
        does upstream."""
        ph, pw = self.patch_size
        T, Fq = x.shape[2], x.shape[3]
        if T < ph or Fq % pw:
            raise ValueError(f"MAE-AST needs at least {ph} frames and a multiple of {pw} bins, got shape {tuple(x.shape)}")
        usable = (T // ph) * ph
        if usable != T:
            logger.debug("dropping %d remainder frames that do not fill a %d-frame token", T - usable, ph)
            x = x[:, :, :usable]
        return patchify(x, self.patch_size), (usable // ph, Fq // pw)

    def run_stack(
        self,
        x: Tensor,
        norm: nn.Module,
        blocks: nn.ModuleList,
        layerdrop: float,
        generator: Optional[torch.Generator],
        padding_mask: Optional[Tensor] = None,
        return_hidden: bool = False,
    ) -> Tuple[Tensor, Optional[List[Tensor]]]:
        """fairseq ``TransformerEncoder.extract_features`` with ``layer_norm_first=False``:
        LayerNorm, dropout, then the layers, each skipped in training with probability
        ``layerdrop`` (drawn from ``generator``, one draw per layer per step as upstream)."""
        x = F.dropout(norm(x), p=self.config.encoder.drop, training=self.training)
        run = [True] * len(blocks)
        if self.training and layerdrop > 0:
            gen = generator if generator is not None else resolve_generator(None)
            run = (torch.rand(len(blocks), generator=gen, device=gen.device) > layerdrop).tolist()
        hidden: Optional[List[Tensor]] = [] if return_hidden else None
        for blk, keep in zip(blocks, run):
            if keep:
                x = blk(x, padding_mask)
                if hidden is not None:
                    hidden.append(x)
        return x, hidden

    def forward_encoder(self, patches: Tensor, mask: MaskInfo, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(B, K, D)``: the visible tokens after the encoder, in ``mask.ids_keep`` order."""
        enc = self.encoder
        tokens = enc.pos_drop(enc.patch_embed.proj(patches))  # fairseq dropout_input, before positions
        tokens = tokens + self.position_table(tokens.shape[1], tokens.device, tokens.dtype)
        visible, _ = enc.apply_mask(tokens, None, mask)
        x, _ = self.run_stack(visible, enc.norm_pre, enc.blocks, self.config.encoder_layerdrop, generator)
        return enc.norm(x)

    def forward_decoder(self, latent: Tensor, mask: MaskInfo, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(B, N, D)`` decoder output for every token, in time-major order."""
        x = mask.restore(latent, self.decoder_mask_emb)
        x = x + self.position_table(x.shape[1], x.device, x.dtype)
        x, _ = self.run_stack(x, self.decoder_norm_pre, self.decoder_blocks, self.config.decoder_layerdrop, generator)
        return x

    def forward_loss(
        self, decoded: Tensor, patches: Tensor, mask: MaskInfo
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(loss, nce, mse, accuracy, P_r, P_c, X)`` on the hidden tokens.

        ``S[b, i, j] = <P_c[b, i], X[b, j]>`` without temperature or L2 norm; the softmax runs
        over the candidate targets ``j`` of one clip (the paper's Eq. 1 and MAE-AST's criterion,
        ``dim=-1`` on ``P_c @ X^T``; SSAST's code uses the other axis). Computed in float32 as
        upstream's ``get_logits``/``get_targets`` do.
        """
        hidden = mask.gather_masked(decoded)
        pred_rec = self.final_proj_reconstruction(hidden)
        pred_cls = self.final_proj_classification(hidden)
        target = mask.gather_masked(patches).detach()
        mse = F.mse_loss(pred_rec.float(), target.float())
        scores = torch.bmm(pred_cls.float(), target.float().transpose(1, 2))  # (B, M, M)
        B, M = scores.shape[:2]
        labels = torch.arange(M, device=scores.device).repeat(B)
        nce = F.cross_entropy(scores.reshape(B * M, M), labels)
        with torch.no_grad():
            accuracy = (scores.argmax(dim=-1).reshape(-1) == labels).float().mean()
        cfg = self.config
        loss = cfg.classification_weight * nce + cfg.reconstruction_weight * mse
        return loss, nce, mse, accuracy, pred_rec, pred_cls, target

    def sample_mask(self, batch_size: int, grid: Tuple[int, int], generator: torch.Generator, device: torch.device) -> MaskInfo:
        """The configured mask: chunk (patch model) or random (frame model), ``max(1, int(0.25·N))`` visible."""
        cfg = self.config
        N = grid[0] * grid[1]
        if cfg.mask_type == "chunk":
            sampler = ChunkMask(
                num_masked=None, mask_ratio=cfg.mask_ratio, min_keep=1, chunk_sizes=cfg.chunk_sizes,
                faithful=cfg.chunk_faithful, upstream="mae_ast",
            )
            return sampler(batch_size, grid, generator=generator, device=device)
        return random_mask(
            batch_size, N, cfg.mask_ratio, min_keep=1, same_for_batch=cfg.mask_type == "random_batched",
            generator=generator, device=device,
        )

    def forward(
        self,
        x: Tensor,
        mask: Optional[MaskInfo] = None,
        generator: Union[torch.Generator, int, None] = None,
    ) -> MAEASTOutput:
        """One pretraining step's loss on ``x`` ``(B, 1, T, F)`` or ``(B, T, F)`` raw fbanks (all
        clips cropped to the same length, as MAE-AST's collater does). Without ``mask`` the
        configured sampler draws from ``generator``, which also drives layerdrop."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, T, F) or (B, T, F) fbanks, got shape {tuple(x.shape)}")
        gen = resolve_generator(generator)
        patches, grid = self.patches(self.normalize(x))
        if mask is None:
            mask = self.sample_mask(x.shape[0], grid, gen, x.device)
        elif mask.num_tokens != patches.shape[1]:
            raise ValueError(f"mask covers {mask.num_tokens} tokens but the input has {patches.shape[1]} (grid {grid})")
        latent = self.forward_encoder(patches, mask, gen)
        decoded = self.forward_decoder(latent, mask, gen)
        loss, nce, mse, acc, pred_rec, pred_cls, target = self.forward_loss(decoded, patches, mask)
        return MAEASTOutput(loss, nce, mse, acc, pred_rec, pred_cls, target, mask, grid, self.patch_size)

    def extract_features(self, x: Tensor, lengths: Optional[Tensor] = None) -> EncoderOutput:
        """Downstream features (s3prl ``features_only``): no mask, no decoder, every layer's
        output in ``hidden``. ``lengths`` are true frame counts of a zero-padded batch; a partial
        last token is zero-padded and kept (upstream pads to whole tokens the same way)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        enc = self.encoder
        tokens, padding_mask, grid = enc.embed(self.normalize(x), lengths)
        tokens = enc.pos_drop(tokens)
        tokens = tokens + self.position_table(tokens.shape[1], tokens.device, tokens.dtype)
        out, hidden = self.run_stack(
            tokens, enc.norm_pre, enc.blocks, self.config.encoder_layerdrop, None, padding_mask, return_hidden=True
        )
        return EncoderOutput(enc.norm(out), hidden, None, padding_mask, grid, 0)

    def no_weight_decay(self) -> set:
        """fairseq's Adam decays every parameter (weight_decay 0.01); kept for trainer symmetry."""
        return set()

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        self._pos_cache = {}
        return super()._apply(fn, recurse)


# ---------------------------------------------------------------------------------------- presets
def _encoder(tokens: str, embed_dim: int, depth: int, num_heads: int, **kw: Any) -> EncoderConfig:
    patch = (16, 16) if tokens == "patch" else (2, 128)
    # pos_grid only matters for learned tables; recorded as the 10 s clip's grid for reference.
    grid = (62, 8) if tokens == "patch" else (500, 1)
    return family_config(
        "mae_ast", embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch, n_mels=128,
        pos_grid=grid, **kw,
    )


def _patch_base() -> MAEASTConfig:
    return MAEASTConfig(_encoder("patch", 768, 12, 12), decoder_depth=2, mask_type="chunk")


def _frame_base() -> MAEASTConfig:
    return MAEASTConfig(_encoder("frame", 768, 12, 12), decoder_depth=2, mask_type="random")


def _patch_tiny() -> MAEASTConfig:
    return MAEASTConfig(_encoder("patch", 64, 2, 4), decoder_depth=2, mask_type="chunk")


def _frame_tiny() -> MAEASTConfig:
    return MAEASTConfig(_encoder("frame", 64, 2, 4), decoder_depth=2, mask_type="random")


MAEAST_PRESETS: Dict[str, Callable[[], MAEASTConfig]] = {
    "maeast_patch_base": _patch_base,
    "maeast_frame_base": _frame_base,
    "maeast_patch_tiny": _patch_tiny,
    "maeast_frame_tiny": _frame_tiny,
}


def maeast_config(name: str, **overrides: Any) -> MAEASTConfig:
    """A preset's config with fields replaced; ``encoder={...}`` overrides encoder fields."""
    return preset_config("MAE-AST", MAEAST_PRESETS, MAEASTConfig, name, overrides)


def maeast_patch_base(**overrides: Any) -> MAEAST:
    """Released ``chunk_patch_75_12LayerEncoder``: 16×16 tokens, 768/12/12 encoder, 2-layer decoder, chunk 75 %."""
    return MAEAST(maeast_config("maeast_patch_base", **overrides))


def maeast_frame_base(**overrides: Any) -> MAEAST:
    """Released ``random_frame_75_12LayerEncoder``: 2×128 tokens, 768/12/12 encoder, 2-layer decoder, random 75 %."""
    return MAEAST(maeast_config("maeast_frame_base", **overrides))


def maeast_patch_tiny(**overrides: Any) -> MAEAST:
    """A 64-wide, two-layer patch model for tests and the demo."""
    return MAEAST(maeast_config("maeast_patch_tiny", **overrides))


def maeast_frame_tiny(**overrides: Any) -> MAEAST:
    """A 64-wide, two-layer frame model for tests and the demo."""
    return MAEAST(maeast_config("maeast_frame_tiny", **overrides))
