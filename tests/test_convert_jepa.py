"""audiossl.convert.jepa: facebookresearch/ijepa training checkpoints → the ``jepa`` objective.

``fixtures/convert/ijepa.pt`` holds a tiny I-JEPA (16 wide, 2 blocks, 4 heads; predictor 8 wide,
2 blocks) built with the official ``src/models/vision_transformer.py``, saved as ``src/train.py``
does (three DDP-prefixed state dicts + training scalars), with an input, one context and two
target blocks per image, and the upstream target-encoder output, layer-normed targets, context
encoding, predictions and smooth-L1 loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple
from unittest import mock

import pytest
import torch

from audiossl.convert.jepa import convert_ijepa, plan_ijepa
from audiossl.masking.base import MaskInfo
from audiossl.models.encoder import Encoder
from audiossl.models.jepa import JEPA, JEPAConfig, JEPAPredictor
from audiossl.models.registry import model_from_config
from audiossl.nn.pos_embed import sincos_2d
from audiossl.checkpoint import CheckpointError, check_state_dict, load_checkpoint, save_checkpoint
from audiossl.models.registry import encoder_from_checkpoint, model_from_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "convert" / "ijepa.pt"
TOL = 1e-4


def load_fixture() -> Dict:
    return torch.load(FIXTURE, weights_only=True)


def checkpoint() -> Dict:
    ckpt = dict(load_fixture()["checkpoint"])
    for part in ("encoder", "predictor", "target_encoder"):
        ckpt[part] = dict(ckpt[part])
    return ckpt


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def context_mask(ids: torch.Tensor, num_tokens: int) -> MaskInfo:
    hidden = torch.ones(ids.shape[0], num_tokens, dtype=torch.bool).scatter(1, ids, False)
    info = MaskInfo.from_mask(hidden)
    assert torch.equal(info.ids_keep, ids)  # the fixture's context ids are ascending, as upstream's collator's
    return info


def test_ijepa_matches_upstream(tmp_path: Path) -> None:
    fx = load_fixture()
    payload = convert_ijepa(fx["checkpoint"], num_heads=4)
    assert payload["family"] == "jepa"
    cfg = payload["config"]
    enc = cfg["encoder"]
    assert (enc["embed_dim"], enc["depth"], enc["num_heads"], enc["num_prefix_tokens"]) == (16, 2, 4, 0)
    assert (enc["patch_size"], enc["in_chans"], enc["pos_grid"], enc["n_mels"]) == ([8, 8], 3, [4, 4], 32)
    assert (cfg["pred_dim"], cfg["pred_depth"], cfg["pred_heads"]) == (8, 2, None)  # None: the encoder's 4
    assert payload["meta"]["epoch"] == 300 and payload["meta"]["image_size"] == [32, 32]
    assert payload["fbank"] is None and payload["normalizer"] is None

    path = save_checkpoint(tmp_path / "ijepa_native.pt", payload)
    model = model_from_checkpoint(load_checkpoint(path)).eval()
    assert isinstance(model, JEPA)
    x, target_ids = fx["input"], fx["masks_pred"]
    context = context_mask(fx["masks_enc"][0], 16)
    with torch.no_grad():
        h_full = model.target_encoder(x).x
        targets = model.gather_targets(model.forward_target(x), target_ids)
        z = model.forward_context(x, context)
        pred = model.forward_predictor(z, context, target_ids, (4, 4))
        loss = model.forward_loss(pred, targets)
        # what downstream gets by default is the target (EMA) encoder, as upstream evaluates
        downstream, _ = encoder_from_checkpoint(path)
        h_down = downstream.eval()(x).x
    assert max_diff(h_full, fx["target_full"]) <= TOL
    assert max_diff(h_down, fx["target_full"]) <= TOL
    assert max_diff(targets, fx["targets"]) <= TOL
    assert max_diff(z, fx["context"]) <= TOL
    assert max_diff(pred, fx["pred"]) <= TOL
    assert abs(loss.item() - fx["loss"].item()) <= TOL


def test_context_and_target_encoders_stay_distinct() -> None:
    """The three state dicts land in their own modules (a swap would pass shape checks)."""
    fx = load_fixture()
    model = model_from_checkpoint(convert_ijepa(fx["checkpoint"], num_heads=4)).eval()
    with torch.no_grad():
        student = model.encoder(fx["input"]).x
    assert max_diff(student, fx["target_full"]) > 1e-2


def test_without_ddp_prefix_and_with_inferred_heads() -> None:
    ckpt = checkpoint()
    for part in ("encoder", "predictor", "target_encoder"):
        ckpt[part] = {k.removeprefix("module."): v for k, v in ckpt[part].items()}
    payload = convert_ijepa(ckpt)
    assert payload["config"]["encoder"]["num_heads"] == 1  # 16 // 64, floored at one
    assert any("num_heads=1" in s for s in payload["meta"]["inferred"])


def test_missing_parts_and_keys_are_named() -> None:
    ckpt = checkpoint()
    del ckpt["target_encoder"]
    with pytest.raises(CheckpointError, match=r"missing keys \['target_encoder'\]"):
        convert_ijepa(ckpt)
    ckpt = checkpoint()
    del ckpt["predictor"]["module.predictor_blocks.1.norm1.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \[predictor\.predictor_blocks\.1\.norm1\.weight\]"):
        convert_ijepa(ckpt, num_heads=4)
    ckpt = checkpoint()
    del ckpt["encoder"]["module.norm.weight"]
    with pytest.raises(CheckpointError, match=r"I-JEPA encoder: missing keys \['norm\.weight'\]"):
        convert_ijepa(ckpt, num_heads=4)
    ckpt = checkpoint()
    ckpt["target_encoder"]["module.blocks.0.mlp.fc1.weight"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointError, match=r"target_encoder\.blocks\.0\.mlp\.fc1\.weight: checkpoint \(32, 16\)"):
        convert_ijepa(ckpt, num_heads=4)
    ckpt = checkpoint()
    ckpt["encoder"]["module.head.weight"] = torch.zeros(10, 16)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[encoder\.head\.weight\]"):
        convert_ijepa(ckpt, num_heads=4)
    ckpt = checkpoint()
    ckpt["predictor"]["module.predictor_pos_embed"] = ckpt["predictor"]["module.predictor_pos_embed"] * 2
    with pytest.raises(CheckpointError, match="predictor predictor_pos_embed is not the fixed 2-D sin-cos table"):
        convert_ijepa(ckpt, num_heads=4)
    with pytest.raises(CheckpointError, match="is a list"):
        convert_ijepa({"encoder": [], "predictor": {}, "target_encoder": {}})


def vit_keys(dim: int, depth: int, hidden: int, prefix: str) -> Dict[str, Tuple[int, ...]]:
    shapes: Dict[str, Tuple[int, ...]] = {}
    for i in range(depth):
        b = f"{prefix}.{i}"
        for name, shape in (("norm1", (dim,)), ("norm2", (dim,)), ("attn.proj", (dim, dim)),
                            ("attn.qkv", (3 * dim, dim)), ("mlp.fc1", (hidden, dim)), ("mlp.fc2", (dim, hidden))):
            shapes[f"{b}.{name}.weight"] = shape
            shapes[f"{b}.{name}.bias"] = (shape[0],)
    return shapes


def release_parts(dim: int, depth: int, patch: int, side: int, pred_dim: int, pred_depth: int,
                  mlp_hidden: int, pred_hidden: int) -> Dict[str, Dict[str, torch.Tensor]]:
    """A real-size ``src/train.py`` save (prefix already stripped): meta tensors but the tables."""
    enc_shapes = {"patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
                  "norm.weight": (dim,), "norm.bias": (dim,), **vit_keys(dim, depth, mlp_hidden, "blocks")}
    pred_shapes = {"mask_token": (1, 1, pred_dim), "predictor_embed.weight": (pred_dim, dim),
                   "predictor_embed.bias": (pred_dim,), "predictor_norm.weight": (pred_dim,),
                   "predictor_norm.bias": (pred_dim,), "predictor_proj.weight": (dim, pred_dim),
                   "predictor_proj.bias": (dim,), **vit_keys(pred_dim, pred_depth, pred_hidden, "predictor_blocks")}

    def meta(shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, torch.Tensor]:
        return {k: torch.empty(s, device="meta") for k, s in shapes.items()}

    enc_table = sincos_2d(dim, (side, side)).unsqueeze(0)
    return {
        "encoder": {**meta(enc_shapes), "pos_embed": enc_table},
        "target_encoder": {**meta(enc_shapes), "pos_embed": enc_table},
        "predictor": {**meta(pred_shapes), "predictor_pos_embed": sincos_2d(pred_dim, (side, side)).unsqueeze(0)},
    }


def test_release_vit_huge14_layout_maps() -> None:
    """IN1K-vit.h.14-300e: ViT-H/14 (1280 wide, 32 blocks, 16 heads) on 224², predictor 384 x 12."""
    plan = plan_ijepa(release_parts(1280, 32, 14, 16, 384, 12, 5120, 1536))
    cfg = plan.config
    assert (cfg.encoder.num_heads, cfg.heads, cfg.pred_dim, cfg.pred_depth) == (16, 16, 384, 12)
    assert cfg.encoder.pos_grid == (16, 16) and plan.meta["image_size"] == [224, 224]
    # Built on the meta device without initialisation (it changes no name or shape, and
    # normal_ on meta tensors would import torch._dynamo).
    with torch.device("meta"), mock.patch.object(Encoder, "reset_parameters", no_init), \
            mock.patch.object(JEPAPredictor, "reset_parameters", no_init):
        model = model_from_config(plan.family, cfg.to_dict())
    check_state_dict(model, plan.state_dict)
    assert len(plan.state_dict) == 2 * (2 + 32 * 12 + 2) + (1 + 2 + 2 + 2 + 12 * 12)


def no_init(self: torch.nn.Module) -> None:
    pass


def test_vit_g_maps_with_the_predictors_own_mlp_ratio() -> None:
    """ViT-g/16 (mlp_ratio 48/11 = 6144/1408) with upstream's mlp-4 predictor (1536/384)."""
    plan = plan_ijepa(release_parts(1408, 2, 16, 14, 384, 2, 6144, 1536))
    cfg = plan.config if isinstance(plan.config, JEPAConfig) else JEPAConfig.from_dict(plan.config)
    assert cfg.encoder.mlp_ratio == pytest.approx(48 / 11) and cfg.pred_mlp_ratio == 4.0
    with torch.device("meta"), mock.patch.object(Encoder, "reset_parameters", no_init), \
            mock.patch.object(JEPAPredictor, "reset_parameters", no_init):
        model = model_from_config(plan.family, cfg.to_dict())
    check_state_dict(model, plan.state_dict)
