"""Import facebookresearch/ijepa checkpoints as the full ``jepa`` objective.

Upstream's ``src/train.py`` saves ``{'encoder', 'predictor', 'target_encoder', 'opt', 'scaler',
'epoch', 'loss', 'batch_size', 'world_size', 'lr'}``, each model under DistributedDataParallel's
``module.`` prefix (ijepa#50 is users tripping on exactly that). Inside, the names are ours:
``patch_embed.proj``, ``blocks.N``, ``norm`` for both encoders and ``mask_token``,
``predictor_embed``, ``predictor_blocks.N``, ``predictor_norm``, ``predictor_proj`` for the
predictor. The fixed sin-cos tables (``pos_embed``, ``predictor_pos_embed``; square grid, no
cls row) are checked against ours and not stored: :class:`~audiossl.models.jepa.JEPA` builds them
for each input grid.

The target (EMA) encoder is what downstream evaluation uses (``DEFAULT_ENCODER["jepa"]``).
Heads are not in the weights: the encoder gets the upstream count for its width (ViT-H and g
use 16, not ``embed_dim // 64``) unless ``num_heads`` is given, and the predictor uses the
encoder's, as ``helper.init_model`` does.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional

from torch import Tensor

from audiossl.convert.common import (
    IMAGENET_PIXEL_NORM,
    ImportPlan,
    block_count,
    default_heads,
    require_keys,
    sincos_layout,
    tensor_dict,
)
from audiossl.models.encoder import family_config
from audiossl.models.jepa import JEPAConfig
from audiossl.checkpoint import CheckpointError

__all__ = ["CONVERTERS", "convert_ijepa", "plan_ijepa"]

logger = logging.getLogger(__name__)

_PARTS = ("encoder", "predictor", "target_encoder")
_ENCODER_REQUIRED = ("pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.attn.qkv.weight",
                     "blocks.0.mlp.fc1.weight", "norm.weight")
_PREDICTOR_REQUIRED = ("mask_token", "predictor_embed.weight", "predictor_pos_embed", "predictor_blocks.0.attn.qkv.weight",
                       "predictor_blocks.0.mlp.fc1.weight", "predictor_norm.weight", "predictor_proj.weight")


def _square_grid(table: Tensor, what: str) -> int:
    n = table.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(None, f"shape mismatch: {what} has {n} rows, not a square grid")
    return side


def _check_sincos(table: Tensor, side: int, what: str) -> None:
    if sincos_layout(table, (side, side), 0, prefer_swap=False) is None:
        raise CheckpointError(None, f"{what} is not the fixed 2-D sin-cos table of a {side}x{side} grid; "
                                    "audiossl's JEPA only has fixed positions")


def plan_ijepa(parts: Mapping[str, Mapping[str, Tensor]], *, num_heads: Optional[int] = None) -> ImportPlan:
    """Map the three state dicts (``module.`` prefixes removed) onto :class:`JEPA`.

    Pure, like :func:`audiossl.convert.mae.plan_mae`: only the position tables' values are read."""
    enc, pred, target = (parts[p] for p in _PARTS)
    require_keys(enc, _ENCODER_REQUIRED, "I-JEPA encoder")
    require_keys(target, _ENCODER_REQUIRED, "I-JEPA target_encoder")
    require_keys(pred, _PREDICTOR_REQUIRED, "I-JEPA predictor")
    dim, in_chans, ph, pw = enc["patch_embed.proj.weight"].shape
    side = _square_grid(enc["pos_embed"], "encoder pos_embed")
    for name, sd, key in (("encoder", enc, "pos_embed"), ("target_encoder", target, "pos_embed"),
                          ("predictor", pred, "predictor_pos_embed")):
        _check_sincos(sd[key], side, f"{name} {key}")
    inferred: List[str] = []
    if num_heads is None:
        num_heads = default_heads(dim)
        inferred.append(f"num_heads={num_heads} (upstream ViT for width {dim}; the predictor uses the same)")
    mlp_ratio = enc["blocks.0.mlp.fc1.weight"].shape[0] / dim
    pred_dim = pred["predictor_embed.weight"].shape[0]
    pred_ratio = pred["predictor_blocks.0.mlp.fc1.weight"].shape[0] / pred_dim
    try:
        enc_cfg = family_config(
            "ijepa", embed_dim=dim, depth=block_count(enc, "blocks.", "I-JEPA encoder"), num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in enc, patch_size=(ph, pw), in_chans=in_chans,
            n_mels=side * pw, pos_grid=(side, side),
        )
        pred_depth = block_count(pred, "predictor_blocks.", "I-JEPA predictor")
        cfg = JEPAConfig(encoder=enc_cfg, pred_dim=pred_dim, pred_depth=pred_depth,
                         pred_mlp_ratio=pred_ratio, masker="image")
    except ValueError as e:
        raise CheckpointError(None, f"the inferred I-JEPA model is not valid: {e}") from e
    state: Dict[str, Tensor] = {}
    for part, sd, drop in (("encoder", enc, "pos_embed"), ("target_encoder", target, "pos_embed"),
                           ("predictor", pred, "predictor_pos_embed")):
        state.update({f"{part}.{k}": v for k, v in sd.items() if k != drop})
    meta: Dict[str, Any] = {"source": "ijepa", "image_size": [side * ph, side * pw], "pixel_norm": IMAGENET_PIXEL_NORM}
    if inferred:
        meta["inferred"] = inferred
        logger.info("ijepa: assumed %s", "; ".join(inferred))
    return ImportPlan("jepa", cfg, state, meta)


def convert_ijepa(obj: Any, *, hf_config: Optional[Mapping[str, Any]] = None,
                  num_heads: Optional[int] = None) -> Dict[str, Any]:
    """facebookresearch/ijepa training checkpoint → native ``jepa`` payload (image front end:
    no fbank; ``meta`` has the image size and ImageNet pixel statistics). ``hf_config`` is
    unused; ``num_heads`` overrides the upstream default for the width."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(None, f"an I-JEPA checkpoint is a dict, got {type(obj).__name__}")
    missing = [p for p in _PARTS if p not in obj]
    if missing:
        raise CheckpointError(None, f"missing keys {missing}: an I-JEPA checkpoint holds "
                                    f"{list(_PARTS)}; top-level keys are {sorted(obj)[:8]}")
    parts = {p: tensor_dict(obj[p], f"checkpoint[{p!r}]") for p in _PARTS}
    plan = plan_ijepa(parts, num_heads=num_heads)
    for key in ("epoch", "batch_size", "world_size"):
        if isinstance(obj.get(key), int):
            plan.meta[key] = obj[key]
    return plan.payload()


CONVERTERS: Dict[str, Callable[..., Dict[str, Any]]] = {"ijepa": convert_ijepa}
