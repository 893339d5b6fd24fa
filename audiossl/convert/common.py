"""Helpers every importer in :mod:`audiossl.convert` needs, in one version.

The importers read files written by unrelated code bases (fairseq, timm/DeiT trainers, Hugging
Face), yet ask them the same questions: what does the stored config say, are these keys there,
how many blocks are there, how many heads does this width have, which sin-cos table is this. One
answer each keeps a file that fails in one importer failing the same way, with the same wording,
in the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from audiossl.models.registry import model_from_config
from audiossl.nn.pos_embed import sincos_2d
from audiossl.checkpoint import CheckpointError, load_state_dict, native_payload

__all__ = [
    "IMAGENET_PIXEL_NORM",
    "VIT_HEADS",
    "ImportPlan",
    "block_count",
    "config_value",
    "default_heads",
    "is_state_dict",
    "require_keys",
    "sincos_layout",
    "strip_prefix",
    "tensor_dict",
]

# Upstream head counts by width (timm/DeiT/MAE/I-JEPA ViT-Ti, S, B, L, H, g). H and g break the
# D // 64 rule, so a table, with D // 64 only for widths no upstream release uses.
VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
# ImageNet pixel statistics the image repositories (MAE, I-JEPA) normalise with.
IMAGENET_PIXEL_NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# A stored sin-cos table equals ours up to float32 rounding of upstream's numpy float64 table.
SINCOS_ATOL = 1e-5
# Missing keys named in one error; a truncated file can lack thousands.
_MAX_NAMED = 12


# ------------------------------------------------------------------------------ config bags
def config_value(bag: Any, path: str, default: Any = None) -> Any:
    """``bag.a.b`` for ``path="a.b"``, or ``default`` where any step is absent or None.

    Upstream stores its settings as whatever it had at hand: argparse ``Namespace`` (MAE,
    AudioMAE, old fairseq), plain dicts (``OmegaConf.to_container``, ``config.json``), OmegaConf
    objects or stand-ins of classes that could not be unpickled; or nothing. A stored None means
    "unset" in all of them, so it gives the caller's default, which is upstream's. An unresolved
    interpolation (``"${optimization.max_update}"``, as ``to_container`` leaves them) is looked up
    from ``bag``, the root it was written relative to."""
    node = bag
    for name in path.split("."):
        if node is None:
            return default
        node = node.get(name) if isinstance(node, Mapping) else getattr(node, name, None)
    if isinstance(node, str):
        ref = re.fullmatch(r"\$\{([\w.]+)\}", node)
        if ref:
            return config_value(bag, ref.group(1), default)
    return default if node is None else node


def default_heads(embed_dim: int) -> int:
    """The head count upstream uses for a width: heads are not in ViT weights (only their sum,
    the width), so every importer that is not told falls back on this."""
    return VIT_HEADS.get(embed_dim, max(1, embed_dim // 64))


# ------------------------------------------------------------------------------ state dicts
def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of tensors: what is left once a file's wrappers are peeled off."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def strip_prefix(sd: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    """``sd`` without ``prefix`` when *every* key has it: DistributedDataParallel's ``module.``,
    a wrapper model's ``model.``. Where only some keys have it, it is part of the names."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def tensor_dict(obj: Any, what: str) -> Dict[str, Tensor]:
    """``obj`` as a flat name → tensor dict, DDP's ``module.`` prefix removed; anything else
    (optimizer state saved in its place, a nested dict) is named and refused."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(None, f"{what} is a {type(obj).__name__}, not a state dict")
    bad = sorted(k for k, v in obj.items() if not isinstance(v, Tensor))
    if bad:
        raise CheckpointError(None, f"{what} holds non-tensor entries {bad[:8]}")
    return strip_prefix(obj, "module.")


def require_keys(sd: Mapping[str, Any], keys: Sequence[str], what: str, hint: str = "") -> None:
    """Fail naming the missing ``keys`` in the file's own names, before any renaming: a strict
    load afterwards could only name our keys. ``hint`` says what the keys are for; without one,
    a few keys the file does have show what it is instead."""
    missing = [k for k in keys if k not in sd]
    if missing:
        more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
        hint = hint or f" (the file has e.g. {sorted(sd)[:6]})"
        raise CheckpointError(None, f"{what}: missing keys {missing[:_MAX_NAMED]}{more}{hint}")


def block_count(sd: Mapping[str, Any], prefix: str, what: str) -> int:
    """Number of ``{prefix}N.`` blocks. Depth is only in the key names, so a gap (a truncated
    or hand-edited file) would silently give a shallower model; it is named instead."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    if not ids:
        raise CheckpointError(None, f"{what}: no {prefix}N.* keys")
    gaps = sorted(set(range(max(ids) + 1)) - ids)
    if gaps:
        raise CheckpointError(None, f"{what}: missing keys {[f'{prefix}{i}.*' for i in gaps]} "
                                    "(blocks are not contiguous)")
    return max(ids) + 1


# ------------------------------------------------------------------------------ positions
def sincos_layout(table: Tensor, grid: Tuple[int, int], prefix_rows: int, prefer_swap: bool) -> Optional[bool]:
    """Which fixed layout a stored ``(1, P + N, D)`` table is: ``sincos_swap_axes`` True/False,
    or None when it is no sin-cos table (trained). Fixed tables are rebuilt, not stored, so the
    layout is all that must be read off them. ``prefer_swap`` decides square grids, where both
    layouts give the same table. A half-precision file is compared at its own rounding."""
    atol = max(SINCOS_ATOL, torch.finfo(table.dtype).eps) if table.is_floating_point() else SINCOS_ATOL
    table = table.detach().float().reshape(-1, table.shape[-1])
    dim = table.shape[-1]
    if dim % 4 or table.shape[0] != prefix_rows + grid[0] * grid[1]:
        return None
    if prefix_rows and table[:prefix_rows].abs().max() > atol:
        return None
    body = table[prefix_rows:]
    for swap in (prefer_swap, not prefer_swap):
        hw = (grid[1], grid[0]) if swap else grid
        if torch.allclose(body, sincos_2d(dim, hw), atol=atol, rtol=0):
            return swap
    return None


# ------------------------------------------------------------------------------ plans
@dataclass
class ImportPlan:
    """What an importer decided before building anything: the native model (``family`` +
    ``config``), its state dict in our names, and what else goes into the payload.

    Planning is pure key/shape work, so it also runs on ``device="meta"`` tensors and full-size
    release layouts are checked without allocating them; :meth:`build` is the only step that
    needs memory."""

    family: str
    config: Any
    state_dict: Dict[str, Tensor]
    meta: Dict[str, Any] = field(default_factory=dict)
    fbank: Optional[Dict[str, Any]] = None
    normalizer: Optional[Dict[str, float]] = None
    target_length: Optional[int] = None

    def build(self) -> nn.Module:
        """The model with the planned weights loaded strictly (mismatches raise
        :class:`CheckpointError` naming the keys)."""
        model = model_from_config(self.family, self.config.to_dict())
        return load_state_dict(model, self.state_dict, what=f"native {self.family} model")

    def payload(self) -> Dict[str, Any]:
        return native_payload(self.build(), family=self.family, fbank=self.fbank, normalizer=self.normalizer,
                              target_length=self.target_length, meta=self.meta)
