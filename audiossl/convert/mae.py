"""Import facebookresearch/mae and facebookresearch/AudioMAE checkpoints.

Both repositories save ``{'model': state_dict, ...}`` with timm ViT names (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``), which are the names of :class:`~audiossl.models.encoder.Encoder`, so the import is
mostly deciding *what* the file holds:

* a pretraining file with the global MAE decoder (``decoder_embed``, ``mask_token``,
  ``decoder_blocks.N`` as timm blocks, ``decoder_norm``, ``decoder_pred``; image MAE's
  ``mae_visualize_*`` files, AudioMAE ``decoder_mode=0``) → the full ``mae`` objective;
* AudioMAE's released pretraining file (``decoder_mode=1``: 16 Swin-V2 decoder blocks with
  ``attn.tau``/``attn.meta_mlp``) → the full ``mae`` objective with ``decoder_mode="local"``;
  the window and shift are not in the file and are upstream's hard-coded ones (4×4, shift (2, 0)
  on odd blocks unless ``args.no_shift``);
* a stride-10 (``--use_custom_patch``) pretraining file, whose decoder reconstructs overlapping
  patches → its encoder alone, the decoder listed in ``meta["dropped"]``;
* an encoder-only file (image MAE's ``mae_pretrain_vit_*``) → a bare ``encoder``;
* a fine-tuned classifier → a bare ``encoder`` plus its head in ``meta["head"]``: with
  ``global_pool`` (the default of both repos) the final ``norm`` is deleted and the head is
  ``fc_norm`` (LayerNorm, eps 1e-6) + ``head`` (Linear) on the mean of the patch tokens
  (``head_kind="mean_ln_linear"``); with ``--cls_token`` it is ``head`` on the normed cls token
  (``"cls_linear"``).

Positions: pretraining files (and AudioMAE fine-tuned ones, whose table is frozen) store a fixed
2-D sin-cos table. It is checked against the table :class:`Encoder` would build — AudioMAE's is
generated for the ``(F', T')`` grid and read in time-major order, which
``EncoderConfig.sincos_swap_axes`` keeps — and then not stored. Image MAE fine-tuning trains
the table (timm's ``pos_embed`` parameter), so a table that matches no sin-cos layout is imported
as a learned one (``pos_embed="learned"``, cls row included).

Heads cannot be read off ViT weights: the converters use the upstream head count for the width
(ViT-Ti/S/B/L/H/g: 3/6/12/16/16/16, else ``embed_dim // 64``) and 16 for MAE decoders, unless
``num_heads``/``decoder_heads`` are given, and record what they assumed in ``meta["inferred"]``.
A Swin decoder stores one temperature per head (``attn.tau``), so its head count is read.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from audiossl.convert.common import (
    IMAGENET_PIXEL_NORM,
    ImportPlan,
    block_count,
    config_value,
    default_heads,
    require_keys,
    sincos_layout,
    tensor_dict,
)
from audiossl.features import FbankConfig, Normalizer
from audiossl.models.encoder import EncoderConfig, family_config
from audiossl.models.mae import MAEConfig
from audiossl.tokenizers import grid_shape
from audiossl.checkpoint import CheckpointError

__all__ = [
    "CONVERTERS",
    "convert_audiomae",
    "convert_mae",
    "plan_mae",
]

logger = logging.getLogger(__name__)

# Every released MAE/AudioMAE decoder (512 wide) uses 16 heads.
MAE_DECODER_HEADS = 16
# AudioMAE's dataset switch (main_*.py): which normalisation stats and input length it implies.
AUDIOMAE_DATASETS = {
    "audioset": ("audioset", 1024),
    "k400": ("audioset", 1024),
    "esc50": ("esc50", 512),
    "speechcommands": ("speechcommands", 128),
}
AUDIOMAE_N_MELS = 128
# ``--use_custom_patch``: AST-style 16x16 patches at stride 10.
AUDIOMAE_CUSTOM_STRIDE = (10, 10)
# decoder_mode=1 (models_mae.py, hard-coded): window 4x4 on the 64x8 grid (6x6 for the stride-10
# model, which audiossl's MAE cannot build); odd blocks shifted by 2 time rows unless --no_shift.
AUDIOMAE_WINDOW = (4, 4)
AUDIOMAE_SHIFT = (2, 0)


# ------------------------------------------------------------------------------ MAE / AudioMAE
def unwrap_model(obj: Any, source: str) -> Tuple[Dict[str, Tensor], Any, Dict[str, Any]]:
    """``{'model': sd, 'args', 'epoch', ...}`` (or a bare state dict) → (sd, args, meta)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(None, f"a {source} checkpoint is a dict, got {type(obj).__name__}")
    meta: Dict[str, Any] = {"source": source}
    if "model" in obj:
        if isinstance(obj.get("epoch"), int):
            meta["epoch"] = obj["epoch"]
        return tensor_dict(obj["model"], "checkpoint['model']"), obj.get("args"), meta
    if "patch_embed.proj.weight" in obj or "module.patch_embed.proj.weight" in obj:
        return tensor_dict(obj, "the checkpoint"), None, meta
    raise CheckpointError(None, f"no 'model' entry and no ViT weights; top-level keys {sorted(obj)[:8]}")


_ENCODER_REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                     "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight")
_DECODER_REQUIRED = ("mask_token", "decoder_embed.weight", "decoder_pos_embed", "decoder_norm.weight",
                     "decoder_pred.weight", "decoder_blocks.0.attn.qkv.weight", "decoder_blocks.0.mlp.fc1.weight")


def _audio_grid(n_tokens: int, patch: Tuple[int, int], args: Any) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(stride, grid) of an AudioMAE table with ``n_tokens`` patch rows on 128 mel bins."""
    per_row = {s: (AUDIOMAE_N_MELS - patch[1]) // s[1] + 1 for s in (patch, AUDIOMAE_CUSTOM_STRIDE)}
    custom = config_value(args, "use_custom_patch")
    if custom is None:  # no args: the table length tells stride 16 (x8 rows) from stride 10 (x12)
        custom = n_tokens % per_row[patch] != 0 and n_tokens % per_row[AUDIOMAE_CUSTOM_STRIDE] == 0
    stride = AUDIOMAE_CUSTOM_STRIDE if custom else patch
    if n_tokens % per_row[stride]:
        raise CheckpointError(
            None, f"shape mismatch: pos_embed has {n_tokens} patch rows, not a multiple of the "
            f"{per_row[stride]} frequency patches of {AUDIOMAE_N_MELS} mel bins at stride {stride}")
    return stride, (n_tokens // per_row[stride], per_row[stride])


def _audio_front_end(args: Any, patch: Tuple[int, int], stride: Tuple[int, int],
                     grid: Tuple[int, int]) -> Tuple[Dict[str, float], int, Dict[str, Any]]:
    dataset = config_value(args, "dataset")
    norm_name, length = AUDIOMAE_DATASETS.get(dataset, ("audioset", None))
    if length is None or grid_shape(length, AUDIOMAE_N_MELS, patch, stride)[0] != grid[0]:
        length = (grid[0] - 1) * stride[0] + patch[0]  # the shortest input with the stored grid
    meta = {"dataset": dataset if dataset in AUDIOMAE_DATASETS else "audioset (assumed)"}
    return Normalizer.preset(norm_name).to_dict(), length, meta


def plan_mae(sd: Mapping[str, Tensor], args: Any = None, *, audio: bool, num_heads: Optional[int] = None,
             decoder_heads: Optional[int] = None) -> ImportPlan:
    """Map an (Audio)MAE state dict (upstream names, no prefix) onto our model.

    Pure: touches no file and builds no model, so real-size key sets can be checked on meta
    tensors (only ``pos_embed``/``decoder_pos_embed`` values are read)."""
    source = "audiomae" if audio else "mae"
    require_keys(sd, _ENCODER_REQUIRED, f"{source} encoder")
    proj = sd["patch_embed.proj.weight"]
    dim, in_chans, ph, pw = proj.shape
    inferred: List[str] = []
    if num_heads is None:
        num_heads = default_heads(dim)
        inferred.append(f"num_heads={num_heads} (upstream ViT for width {dim})")
    n_tokens = sd["pos_embed"].shape[1] - 1
    meta: Dict[str, Any] = {"source": source}
    if audio:
        stride, grid = _audio_grid(n_tokens, (ph, pw), args)
        n_mels = AUDIOMAE_N_MELS
    else:
        side = math.isqrt(n_tokens)
        if side * side != n_tokens:
            raise CheckpointError(None, f"shape mismatch: image MAE pos_embed has {n_tokens} patch rows, not a "
                                        "square grid (an AudioMAE file? convert it --from audiomae)")
        stride, grid, n_mels = (ph, pw), (side, side), side * pw
        meta["image_size"] = [side * ph, side * pw]
        meta["pixel_norm"] = IMAGENET_PIXEL_NORM
    # AudioMAE's PatchEmbed_org hands the generator (F', T'); its stride-10 PatchEmbed_new (T', F').
    swap = sincos_layout(sd["pos_embed"], grid, 1, prefer_swap=audio and stride == (ph, pw))
    final_norm = "norm.weight" in sd
    enc_kwargs: Dict[str, Any] = dict(
        embed_dim=dim, depth=block_count(sd, "blocks.", f"{source} encoder"), num_heads=num_heads,
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim, qkv_bias="blocks.0.attn.qkv.bias" in sd,
        patch_size=(ph, pw), patch_stride=None if stride == (ph, pw) else stride, in_chans=in_chans,
        n_mels=n_mels, pos_grid=grid, final_norm=final_norm,
    )
    if swap is None:
        enc_kwargs["pos_embed"] = "learned"
        meta["pos_embed"] = "learned (the stored table is not a fixed sin-cos table)"
    else:
        enc_kwargs["sincos_swap_axes"] = swap
    try:
        enc_cfg = family_config("audiomae" if audio else "mae", **enc_kwargs)
    except ValueError as e:
        raise CheckpointError(None, f"the inferred encoder is not valid: {e}") from e

    enc_prefixes = ("cls_token", "patch_embed.", "blocks.", "norm.")
    encoder_sd = {k: v for k, v in sd.items() if k.startswith(enc_prefixes)}
    if swap is None:
        encoder_sd["pos_embed"] = sd["pos_embed"]
    used = set(encoder_sd) | {"pos_embed"}

    head_sd = {k: v for k, v in sd.items() if k.startswith(("head.", "fc_norm."))}
    used |= set(head_sd)
    if head_sd:
        meta.update(_head_meta(head_sd, final_norm))

    decoder_keys = sorted(k for k in sd if k.startswith("decoder_") or k == "mask_token")
    used |= set(decoder_keys)
    family, config, state = "encoder", enc_cfg, encoder_sd
    if decoder_keys and stride != (ph, pw):
        # Upstream's stride-10 pretraining reconstructs overlapping (unfolded) patches, which
        # audiossl's MAE does not; the encoder is what can be used.
        meta["dropped"] = (f"decoder ({len(decoder_keys)} tensors): audiossl's MAE reconstructs non-overlapping "
                           f"patches and this encoder has stride {stride}; the encoder is imported alone")
        logger.warning("dropping the %s decoder of a stride-%s model: %d tensors", source, stride, len(decoder_keys))
    elif decoder_keys:
        local = any(".attn.tau" in k or ".attn.meta_mlp." in k for k in decoder_keys)
        config, state = _plan_decoder(sd, enc_cfg, args, audio, swap, decoder_heads, inferred, local)
        family = "mae"
        state.update({f"encoder.{k}": v for k, v in encoder_sd.items()})

    unexpected = sorted(set(sd) - used)
    if unexpected:
        raise CheckpointError(None, f"unexpected keys {unexpected[:12]} for a {source} checkpoint")
    if inferred:
        meta["inferred"] = inferred
        logger.info("%s: assumed %s", source, "; ".join(inferred))
    plan = ImportPlan(family, config, state, meta)
    if audio:
        plan.fbank = FbankConfig.preset("ast").to_dict()
        plan.normalizer, plan.target_length, extra = _audio_front_end(args, (ph, pw), stride, grid)
        plan.meta.update(extra)
    if config_value(args, "model") is not None:
        plan.meta["upstream_model"] = str(config_value(args, "model"))
    return plan


def _head_meta(head_sd: Dict[str, Tensor], final_norm: bool) -> Dict[str, Any]:
    """``meta`` entries of a fine-tuned classifier head (tensors under their upstream names)."""
    require_keys(head_sd, ("head.weight", "head.bias"), "classifier head")
    if "fc_norm.weight" in head_sd:
        if final_norm:
            raise CheckpointError(None, "unexpected keys ['norm.weight', 'norm.bias'] next to fc_norm: global-pool "
                                        "fine-tuning deletes the final norm")
        extra = {"head_kind": "mean_ln_linear", "head_norm_eps": 1e-6}
    else:
        if not final_norm:
            raise CheckpointError(None, "missing keys ['norm.weight', 'norm.bias']: a cls-token head reads the normed cls")
        extra = {"head_kind": "cls_linear"}
    return {"head": {k: v.detach().clone() for k, v in head_sd.items()}, **extra,
            "num_classes": int(head_sd["head.weight"].shape[0])}


def _plan_decoder(sd: Mapping[str, Tensor], enc_cfg: EncoderConfig, args: Any, audio: bool, swap: Optional[bool],
                  decoder_heads: Optional[int], inferred: List[str],
                  local: bool) -> Tuple[MAEConfig, Dict[str, Tensor]]:
    """The decoder (global MAE blocks, or AudioMAE's local Swin blocks when ``local``): config
    and its state dict (upstream names are ours)."""
    require_keys(sd, _DECODER_REQUIRED + (("decoder_blocks.0.attn.tau",) if local else ()), "MAE decoder")
    dec_dim = sd["decoder_embed.weight"].shape[0]
    if local:
        stored = int(sd["decoder_blocks.0.attn.tau"].shape[0])
        if decoder_heads is not None and decoder_heads != stored:
            raise CheckpointError(None, f"decoder_heads={decoder_heads} given, but the Swin decoder stores {stored} "
                                        "temperatures (decoder_blocks.0.attn.tau): one per head")
        decoder_heads = stored
    elif decoder_heads is None:
        decoder_heads = MAE_DECODER_HEADS if dec_dim % MAE_DECODER_HEADS == 0 else default_heads(dec_dim)
        inferred.append(f"decoder_heads={decoder_heads} (upstream MAE decoder)")
    grid = enc_cfg.pos_grid
    prefer = swap if swap is not None else audio
    dec_swap = sincos_layout(sd["decoder_pos_embed"], grid, 1, prefer_swap=prefer)
    if dec_swap is None or (swap is not None and dec_swap != swap):
        raise CheckpointError(None, "decoder_pos_embed is not the fixed sin-cos table of the encoder's grid "
                                    f"{tuple(grid)}; audiossl's MAE decoder only has fixed positions")
    if swap is None:  # trained encoder table: follow the decoder's layout for its fixed table
        enc_cfg.sincos_swap_axes = dec_swap
    default_ratio, default_norm_pix = (0.8, True) if audio else (0.75, False)
    local_kwargs: Dict[str, Any] = {}
    if local:
        no_shift = config_value(args, "no_shift")
        if no_shift is None:
            inferred.append(f"decoder_shift={AUDIOMAE_SHIFT} (upstream default: no --no_shift)")
        local_kwargs = dict(decoder_mode="local", decoder_window=AUDIOMAE_WINDOW,
                            decoder_shift=(0, 0) if no_shift else AUDIOMAE_SHIFT)
    try:
        cfg = MAEConfig(
            encoder=enc_cfg, decoder_dim=dec_dim, decoder_depth=block_count(sd, "decoder_blocks.", "MAE decoder"),
            decoder_heads=decoder_heads, decoder_mlp_ratio=sd["decoder_blocks.0.mlp.fc1.weight"].shape[0] / dec_dim,
            mask_ratio=float(config_value(args, "mask_ratio", default_ratio)),
            norm_pix_loss=bool(config_value(args, "norm_pix_loss", default_norm_pix)), **local_kwargs,
        )
    except ValueError as e:
        raise CheckpointError(None, f"the inferred MAE objective is not valid: {e}") from e
    state = {k: v for k, v in sd.items() if (k.startswith("decoder_") or k == "mask_token") and k != "decoder_pos_embed"}
    return cfg, state


def convert_mae(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                decoder_heads: Optional[int] = None) -> Dict[str, Any]:
    """facebookresearch/mae file (``{'model': sd}``; pretrain, visualize or fine-tuned) → native
    payload. ``hf_config`` is unused (no Hugging Face form); ``num_heads``/``decoder_heads``
    override the upstream defaults for non-standard widths."""
    sd, args, meta = unwrap_model(obj, "mae")
    plan = plan_mae(sd, args, audio=False, num_heads=num_heads, decoder_heads=decoder_heads)
    plan.meta = {**meta, **plan.meta}
    return plan.payload()


def convert_audiomae(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None, num_heads: Optional[int] = None,
                     decoder_heads: Optional[int] = None) -> Dict[str, Any]:
    """facebookresearch/AudioMAE file (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``) →
    native payload with the AST front end and the ``args.dataset`` statistics."""
    sd, args, meta = unwrap_model(obj, "audiomae")
    plan = plan_mae(sd, args, audio=True, num_heads=num_heads, decoder_heads=decoder_heads)
    plan.meta = {**meta, **plan.meta}
    return plan.payload()


CONVERTERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "audiomae": convert_audiomae,
    "mae": convert_mae,
}
