"""audiossl.convert.mae: facebookresearch/mae and facebookresearch/AudioMAE imports.

The fixtures hold tiny upstream models (16 wide, 2 blocks, 4 heads) built with the official code
(the commit is in each file's ``upstream`` entry), saved in the release layout, with a fixed
input and the upstream outputs. Our converted model must reproduce them to 1e-4 in fp32.
Real-size release layouts are checked on meta tensors.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Dict, Tuple
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from audiossl.convert.common import default_heads
from audiossl.convert.mae import convert_audiomae, convert_mae, plan_mae
from audiossl.features import FbankConfig
from audiossl.masking.base import MaskInfo
from audiossl.models.encoder import Encoder
from audiossl.models.mae import MAE, mae_config
from audiossl.models.registry import model_from_config
from audiossl.nn.pos_embed import sincos_2d
from audiossl.checkpoint import CheckpointError, check_state_dict, load_checkpoint, save_checkpoint
from audiossl.models.registry import model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
TOL = 1e-4
# The fixtures' head counts; real widths get theirs from the upstream table (tested below).
TINY = dict(num_heads=4, decoder_heads=4)


def load_fixture(name: str) -> Dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def roundtrip(payload: Dict, tmp_path: Path) -> torch.nn.Module:
    """Through the native file format, as every other command loads it."""
    path = save_checkpoint(tmp_path / "native.pt", payload)
    return model_from_checkpoint(load_checkpoint(path)).eval()


def classifier(encoder: Encoder, head: Dict[str, torch.Tensor], x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``head_kind="mean_ln_linear"``: mean of the patch tokens → fc_norm (eps 1e-6) → head."""
    pooled = encoder(x).tokens.mean(dim=1)
    feats = F.layer_norm(pooled, pooled.shape[-1:], head["fc_norm.weight"], head["fc_norm.bias"], 1e-6)
    return feats, F.linear(feats, head["head.weight"], head["head.bias"])


# ---------------------------------------------------------------------------------- AudioMAE
def test_audiomae_pretrain_matches_upstream(tmp_path: Path) -> None:
    fx = load_fixture("audiomae_pretrain")
    payload = convert_audiomae(fx["checkpoint"], **TINY)
    assert payload["family"] == "mae"
    cfg = payload["config"]
    enc = cfg["encoder"]
    assert (enc["embed_dim"], enc["depth"], enc["num_heads"], enc["num_prefix_tokens"]) == (16, 2, 4, 1)
    assert enc["patch_size"] == [16, 16] and enc["pos_grid"] == [4, 8] and enc["in_chans"] == 1
    assert enc["sincos_swap_axes"] is True and enc["pos_embed"] == "sincos_2d" and enc["final_norm"] is True
    assert (cfg["decoder_dim"], cfg["decoder_depth"], cfg["mask_ratio"], cfg["norm_pix_loss"]) == (16, 1, 0.8, True)
    assert payload["target_length"] == 64
    assert payload["normalizer"] == {"mean": -4.2677393, "std": 4.5689974}
    assert payload["fbank"] == FbankConfig.preset("ast").to_dict()
    assert payload["meta"]["epoch"] == 32 and payload["meta"]["source"] == "audiomae"

    model = roundtrip(payload, tmp_path)
    assert isinstance(model, MAE)
    x = fx["input"]
    num_keep = int(x.shape[2] // 16 * 8 * (1 - fx["mask_ratio"]))
    mask = MaskInfo.from_shuffle(fx["ids_shuffle"], num_keep)
    full = MaskInfo.from_shuffle(fx["ids_shuffle_full"], fx["ids_shuffle_full"].shape[1])
    with torch.no_grad():
        out = model(x, mask=mask)
        latent = model.forward_encoder(x, mask)
        latent_full = model.encoder(x, mask=full).x
    assert torch.equal(out.mask.mask.float(), fx["mask"])
    assert max_diff(latent, fx["latent"]) <= TOL
    assert max_diff(latent_full, fx["latent_full"]) <= TOL
    assert max_diff(out.pred, fx["pred"]) <= TOL
    assert abs(out.loss.item() - fx["loss"].item()) <= TOL


def test_audiomae_positions_are_the_transposed_table() -> None:
    """AudioMAE's quirk matters: the untransposed table gives other outputs."""
    fx = load_fixture("audiomae_pretrain")
    model = model_from_checkpoint(convert_audiomae(fx["checkpoint"], **TINY)).eval()
    full = MaskInfo.from_shuffle(fx["ids_shuffle_full"], fx["ids_shuffle_full"].shape[1])
    model.encoder.config.sincos_swap_axes = False
    model.encoder._pos_cache = {}
    with torch.no_grad():
        wrong = model.encoder(fx["input"], mask=full).x
    assert max_diff(wrong, fx["latent_full"]) > 1e-2


def test_audiomae_args_namespace_and_inferred_heads() -> None:
    """Release files store ``args`` as an argparse.Namespace; without overrides the heads come
    from the width table and are recorded as assumed."""
    ckpt = dict(load_fixture("audiomae_pretrain")["checkpoint"])
    ckpt["args"] = argparse.Namespace(**{**ckpt["args"], "dataset": "esc50", "norm_pix_loss": False})
    payload = convert_audiomae(ckpt)
    assert payload["config"]["encoder"]["num_heads"] == 1  # 16 // 64, floored at one
    assert payload["config"]["decoder_heads"] == 16  # 16 wide decoder: upstream's 16
    assert payload["config"]["norm_pix_loss"] is False
    assert payload["normalizer"] == {"mean": -6.6268077, "std": 5.358466}
    assert payload["target_length"] == 64  # esc50 means 512 frames, but the table holds 4 x 8 tokens
    assert any("num_heads=1" in s for s in payload["meta"]["inferred"])


def test_audiomae_finetuned_matches_upstream(tmp_path: Path) -> None:
    fx = load_fixture("audiomae_finetuned")
    payload = convert_audiomae(fx["checkpoint"], num_heads=4)
    assert payload["family"] == "encoder"
    cfg = payload["config"]
    assert cfg["final_norm"] is False and cfg["sincos_swap_axes"] is True and cfg["depth"] == 2
    meta = payload["meta"]
    assert meta["head_kind"] == "mean_ln_linear" and meta["num_classes"] == 5
    assert sorted(meta["head"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    encoder = roundtrip(payload, tmp_path)
    with torch.no_grad():
        feats, logits = classifier(encoder, load_checkpoint(tmp_path / "native.pt")["meta"]["head"], fx["input"])
    assert max_diff(feats, fx["features"]) <= TOL
    assert max_diff(logits, fx["logits"]) <= TOL


def vit_keys(dim: int, depth: int, hidden: int, prefix: str = "blocks") -> Dict[str, Tuple[int, ...]]:
    shapes: Dict[str, Tuple[int, ...]] = {}
    for i in range(depth):
        b = f"{prefix}.{i}"
        shapes.update({
            f"{b}.norm1.weight": (dim,), f"{b}.norm1.bias": (dim,),
            f"{b}.attn.qkv.weight": (3 * dim, dim), f"{b}.attn.qkv.bias": (3 * dim,),
            f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,),
            f"{b}.norm2.weight": (dim,), f"{b}.norm2.bias": (dim,),
            f"{b}.mlp.fc1.weight": (hidden, dim), f"{b}.mlp.fc1.bias": (hidden,),
            f"{b}.mlp.fc2.weight": (dim, hidden), f"{b}.mlp.fc2.bias": (dim,),
        })
    return shapes


def release_encoder(dim: int, depth: int, patch: Tuple[int, int], in_chans: int, grid: Tuple[int, int],
                    swap: bool) -> Dict[str, torch.Tensor]:
    """A real-size timm ViT state dict: meta tensors, except the sin-cos table (values checked)."""
    shapes = {"cls_token": (1, 1, dim), "patch_embed.proj.weight": (dim, in_chans, *patch),
              "patch_embed.proj.bias": (dim,), "norm.weight": (dim,), "norm.bias": (dim,)}
    shapes.update(vit_keys(dim, depth, 4 * dim))
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    sd["pos_embed"] = sincos_2d(dim, grid[::-1] if swap else grid, cls_token=True).unsqueeze(0)
    return sd


def swin_decoder(dim: int = 512, depth: int = 16, heads: int = 16) -> Dict[str, torch.Tensor]:
    """AudioMAE decoder_mode=1 keys (timm_patch/swin_transformer.py SwinTransformerBlock)."""
    shapes = vit_keys(dim, depth, 4 * dim, "decoder_blocks")
    for i in range(depth):
        b = f"decoder_blocks.{i}.attn"
        shapes.update({f"{b}.tau": (heads,), f"{b}.meta_mlp.fc1.weight": (384, 2), f"{b}.meta_mlp.fc1.bias": (384,),
                       f"{b}.meta_mlp.fc2.weight": (heads, 384), f"{b}.meta_mlp.fc2.bias": (heads,)})
    shapes.update({"mask_token": (1, 1, dim), "decoder_embed.weight": (dim, 768), "decoder_embed.bias": (dim,),
                   "decoder_norm.weight": (dim,), "decoder_norm.bias": (dim,), "decoder_pred.weight": (256, dim),
                   "decoder_pred.bias": (256,)})
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    sd["decoder_pos_embed"] = sincos_2d(dim, (8, 64), cls_token=True).unsqueeze(0)  # AudioMAE's (F', T') call
    return sd


def assert_maps(plan) -> torch.nn.Module:
    """The planned state dict fits the model, built on the meta device. Initialisation is
    skipped: it does not change names or shapes, and ``normal_`` on meta tensors would import
    torch._dynamo (seconds)."""
    with torch.device("meta"), mock.patch.object(Encoder, "reset_parameters", no_init), \
            mock.patch.object(MAE, "reset_parameters", no_init):
        model = model_from_config(plan.family, plan.config.to_dict())
    check_state_dict(model, plan.state_dict)
    return model


def no_init(self: torch.nn.Module) -> None:
    pass


def test_audiomae_release_pretrain_layout_maps_the_local_decoder() -> None:
    """The released ViT-B AudioMAE pretraining file (decoder_mode=1: 16 Swin blocks) is the whole
    ``audiomae_base_local`` objective."""
    sd = {**release_encoder(768, 12, (16, 16), 1, (64, 8), swap=True), **swin_decoder()}
    assert len(sd) == 430  # what the upstream model's state_dict() holds
    plan = plan_mae(sd, None, audio=True)
    assert plan.family == "mae" and "dropped" not in plan.meta
    assert plan.config == mae_config("audiomae_base_local", decoder_mlp_ratio=4.0)  # None there: the encoder's 4
    assert plan.target_length == 1024
    assert any("decoder_shift=(2, 0)" in s for s in plan.meta["inferred"])
    assert len(plan.state_dict) == 430 - 2  # every tensor but the two fixed sin-cos tables
    model = assert_maps(plan)
    assert [b.shift for b in model.decoder_blocks] == [(0, 0), (2, 0)] * 8


def test_audiomae_local_pretrain_matches_upstream(tmp_path: Path) -> None:
    """Tiny decoder_mode=1 model from the official code (2 Swin blocks of 4 heads on an 8 x 8
    grid, one temperature under the 0.01 clamp): prediction and loss under a stored shuffle."""
    fx = load_fixture("audiomae_pretrain_local")
    payload = convert_audiomae(fx["checkpoint"], num_heads=4)
    cfg = payload["config"]
    assert payload["family"] == "mae" and cfg["decoder_mode"] == "local"
    assert (cfg["decoder_dim"], cfg["decoder_depth"], cfg["decoder_heads"]) == (16, 2, 4)  # heads: len(tau)
    assert cfg["decoder_window"] == [4, 4] and cfg["decoder_shift"] == [2, 0]
    assert "inferred" not in payload["meta"]  # args.no_shift is stored, the heads are read
    model = roundtrip(payload, tmp_path)
    x = fx["input"]
    mask = MaskInfo.from_shuffle(fx["ids_shuffle"], int(64 * (1 - fx["mask_ratio"])))
    with torch.no_grad():
        out = model(x, mask=mask)
        latent = model.forward_encoder(x, mask)
    assert torch.equal(out.mask.mask.float(), fx["mask"])
    assert max_diff(latent, fx["latent"]) <= TOL
    assert max_diff(out.pred, fx["pred"]) <= TOL  # measured 3.8e-6 (logits reach 1/0.01 = 100)
    assert abs(out.loss.item() - fx["loss"].item()) <= TOL

    # The shift (and its mask) is part of what the file means: without it the outputs differ.
    ckpt = dict(fx["checkpoint"])
    ckpt["args"] = {**ckpt["args"], "no_shift": True}
    unshifted = model_from_checkpoint(convert_audiomae(ckpt, num_heads=4)).eval()
    assert unshifted.config.decoder_shift == (0, 0)
    with torch.no_grad():
        assert max_diff(unshifted(x, mask=mask).pred, fx["pred"]) > 1e-2


def test_local_decoder_heads_are_read_from_the_file() -> None:
    ckpt = fixture_model("audiomae_pretrain_local")
    with pytest.raises(CheckpointError, match="stores 4 temperatures"):
        convert_audiomae(ckpt, num_heads=4, decoder_heads=16)
    del ckpt["model"]["decoder_blocks.0.attn.tau"]
    with pytest.raises(CheckpointError, match=r"missing keys \['decoder_blocks\.0\.attn\.tau'\]"):
        convert_audiomae(ckpt, num_heads=4)


def test_stride10_pretraining_file_keeps_its_encoder() -> None:
    """``--use_custom_patch`` pretraining reconstructs overlapping patches, which the MAE objective
    does not: the encoder is imported and the decoder listed as dropped."""
    sd = {**release_encoder(768, 12, (16, 16), 1, (101, 12), swap=False), **swin_decoder()}
    sd["decoder_pos_embed"] = sincos_2d(512, (101, 12), cls_token=True).unsqueeze(0)
    plan = plan_mae(sd, {"use_custom_patch": True}, audio=True)
    assert plan.family == "encoder" and plan.config.patch_stride == (10, 10)
    assert "stride (10, 10)" in plan.meta["dropped"]
    assert_maps(plan)


def test_audiomae_release_finetuned_layout() -> None:
    sd = release_encoder(768, 12, (16, 16), 1, (64, 8), swap=True)
    del sd["norm.weight"], sd["norm.bias"]
    sd.update({"fc_norm.weight": torch.ones(768), "fc_norm.bias": torch.zeros(768),
               "head.weight": torch.zeros(527, 768), "head.bias": torch.zeros(527)})
    plan = plan_mae(sd, {"dataset": "audioset", "model": "vit_base_patch16"}, audio=True)
    assert plan.family == "encoder" and plan.config.final_norm is False
    assert (plan.meta["head_kind"], plan.meta["num_classes"]) == ("mean_ln_linear", 527)
    assert_maps(plan)


def test_audiomae_stride10_layout_is_inferred_from_the_table() -> None:
    """``--use_custom_patch``: 101 x 12 tokens from (1024, 128) at stride 10, table not transposed."""
    sd = release_encoder(768, 12, (16, 16), 1, (101, 12), swap=False)
    plan = plan_mae(sd, None, audio=True)
    assert plan.config.patch_stride == (10, 10) and plan.config.pos_grid == (101, 12)
    assert plan.config.sincos_swap_axes is False and plan.config.pos_embed == "sincos_2d"
    assert plan.target_length == 1016  # the shortest input with 101 rows
    assert plan_mae(sd, {"dataset": "audioset", "use_custom_patch": True}, audio=True).target_length == 1024
    encoder = assert_maps(plan)
    assert encoder.grid_shape(1024) == (101, 12)


# ---------------------------------------------------------------------------------- image MAE
def test_mae_pretrain_matches_upstream(tmp_path: Path) -> None:
    fx = load_fixture("mae_pretrain")
    payload = convert_mae(fx["checkpoint"], **TINY)
    assert payload["family"] == "mae"
    enc = payload["config"]["encoder"]
    assert (enc["in_chans"], enc["patch_size"], enc["pos_grid"], enc["n_mels"]) == (3, [8, 8], [4, 4], 32)
    assert enc["sincos_swap_axes"] is False and payload["config"]["decoder_depth"] == 2
    assert payload["config"]["norm_pix_loss"] is False  # no args: upstream's argparse default
    assert payload["fbank"] is None and payload["meta"]["image_size"] == [32, 32]
    model = roundtrip(payload, tmp_path)
    mask = MaskInfo.from_shuffle(fx["ids_shuffle"], int(16 * (1 - fx["mask_ratio"])))
    with torch.no_grad():
        out = model(fx["input"], mask=mask)
        latent = model.forward_encoder(fx["input"], mask)
    assert torch.equal(out.mask.mask.float(), fx["mask"])
    assert max_diff(latent, fx["latent"]) <= TOL
    assert max_diff(out.pred, fx["pred"]) <= TOL
    assert abs(out.loss.item() - fx["loss"].item()) <= TOL


def test_mae_encoder_only_file_gives_an_encoder() -> None:
    """``mae_pretrain_vit_*.pth`` ship the encoder alone."""
    fx = load_fixture("mae_pretrain")
    full = model_from_checkpoint(convert_mae(fx["checkpoint"], **TINY)).eval()
    sd = {k: v for k, v in fx["checkpoint"]["model"].items() if not k.startswith(("decoder", "mask_token"))}
    payload = convert_mae({"model": sd}, num_heads=4)
    assert payload["family"] == "encoder" and payload["config"]["final_norm"] is True
    encoder = model_from_checkpoint(payload).eval()
    with torch.no_grad():
        assert max_diff(encoder(fx["input"]).x, full.encoder(fx["input"]).x) == 0.0


def test_half_precision_file_keeps_its_fixed_tables() -> None:
    """Tables stored in fp16 still read as sin-cos (compared at fp16 rounding), not as learned."""
    ckpt = fixture_model("mae_pretrain")
    ckpt["model"] = {k: v.half() for k, v in ckpt["model"].items()}
    payload = convert_mae(ckpt, **TINY)
    assert payload["family"] == "mae" and payload["config"]["encoder"]["pos_embed"] == "sincos_2d"
    assert payload["model"]["encoder.blocks.0.attn.qkv.weight"].dtype == torch.float32


def test_cls_token_head() -> None:
    """``--cls_token`` fine-tuning keeps the final norm and puts ``head`` on the normed cls."""
    ckpt = fixture_model("mae_pretrain")
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith(("decoder", "mask_token"))}
    ckpt["model"].update({"head.weight": torch.randn(3, 16), "head.bias": torch.randn(3)})
    meta = convert_mae(ckpt, num_heads=4)["meta"]
    assert (meta["head_kind"], meta["num_classes"], sorted(meta["head"])) == ("cls_linear", 3, ["head.bias", "head.weight"])


def test_mae_finetuned_matches_upstream(tmp_path: Path) -> None:
    fx = load_fixture("mae_finetuned")
    payload = convert_mae(fx["checkpoint"], num_heads=4)
    cfg = payload["config"]
    assert payload["family"] == "encoder"
    assert cfg["pos_embed"] == "learned" and cfg["prefix_pos"] is True and cfg["final_norm"] is False
    assert payload["meta"]["head_kind"] == "mean_ln_linear" and payload["meta"]["num_classes"] == 7
    encoder = roundtrip(payload, tmp_path)
    with torch.no_grad():
        feats, logits = classifier(encoder, payload["meta"]["head"], fx["input"])
    assert max_diff(feats, fx["features"]) <= TOL
    assert max_diff(logits, fx["logits"]) <= TOL


def test_mae_release_layouts_full_size() -> None:
    """ViT-L/16 visualize file (encoder + 8-block decoder) and a ViT-H/14 fine-tuned file."""
    sd = release_encoder(1024, 24, (16, 16), 3, (14, 14), swap=False)
    dec = {k: torch.empty(s, device="meta") for k, s in vit_keys(512, 8, 2048, "decoder_blocks").items()}
    dec.update({"mask_token": torch.empty(1, 1, 512, device="meta"),
                "decoder_embed.weight": torch.empty(512, 1024, device="meta"),
                "decoder_embed.bias": torch.empty(512, device="meta"),
                "decoder_norm.weight": torch.empty(512, device="meta"), "decoder_norm.bias": torch.empty(512, device="meta"),
                "decoder_pred.weight": torch.empty(768, 512, device="meta"),
                "decoder_pred.bias": torch.empty(768, device="meta"),
                "decoder_pos_embed": sincos_2d(512, (14, 14), cls_token=True).unsqueeze(0)})
    plan = plan_mae({**sd, **dec}, None, audio=False)
    assert plan.family == "mae" and plan.config.encoder.num_heads == 16 and plan.config.decoder_heads == 16
    assert plan.meta["image_size"] == [224, 224]
    assert_maps(plan)

    huge = release_encoder(1280, 32, (14, 14), 3, (16, 16), swap=False)
    del huge["norm.weight"], huge["norm.bias"]
    huge["pos_embed"] = huge["pos_embed"] + 0.01  # fine-tuning trains the table
    huge.update({"fc_norm.weight": torch.ones(1280), "fc_norm.bias": torch.zeros(1280),
                 "head.weight": torch.zeros(1000, 1280), "head.bias": torch.zeros(1000)})
    plan = plan_mae(huge, None, audio=False)
    assert plan.config.num_heads == 16 and plan.config.pos_embed == "learned" and plan.meta["num_classes"] == 1000
    assert_maps(plan)


def test_upstream_head_table() -> None:
    assert [default_heads(d) for d in (192, 384, 768, 1024, 1280, 1408, 512)] == [3, 6, 12, 16, 16, 16, 8]


# ---------------------------------------------------------------------------------- errors
def fixture_model(name: str = "audiomae_pretrain") -> Dict:
    ckpt = load_fixture(name)["checkpoint"]
    ckpt = dict(ckpt)
    ckpt["model"] = dict(ckpt["model"])
    return ckpt


def test_truncated_checkpoint_names_the_missing_key() -> None:
    ckpt = fixture_model()
    del ckpt["model"]["blocks.1.mlp.fc2.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \[encoder\.blocks\.1\.mlp\.fc2\.weight\]"):
        convert_audiomae(ckpt, **TINY)
    ckpt = fixture_model()
    for k in [k for k in ckpt["model"] if k.startswith("blocks.0.")]:
        del ckpt["model"][k]
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight"):
        convert_audiomae(ckpt, **TINY)
    ckpt = fixture_model()
    del ckpt["model"]["decoder_norm.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \['decoder_norm\.weight'\]"):
        convert_audiomae(ckpt, **TINY)


def test_mismatched_checkpoint_names_keys_and_shapes() -> None:
    ckpt = fixture_model()
    ckpt["model"]["blocks.1.attn.proj.weight"] = torch.zeros(16, 8)
    with pytest.raises(CheckpointError, match=r"encoder\.blocks\.1\.attn\.proj\.weight: checkpoint \(16, 8\) vs"):
        convert_audiomae(ckpt, **TINY)
    ckpt = fixture_model()
    ckpt["model"]["visual_proj.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['visual_proj\.weight'\]"):
        convert_audiomae(ckpt, **TINY)
    ckpt = fixture_model()
    ckpt["model"]["decoder_pos_embed"] = ckpt["model"]["decoder_pos_embed"] + 0.1
    with pytest.raises(CheckpointError, match="decoder_pos_embed is not the fixed sin-cos table"):
        convert_audiomae(ckpt, **TINY)
    ckpt = fixture_model()
    ckpt["model"]["pos_embed"] = ckpt["model"]["pos_embed"][:, :30]
    with pytest.raises(CheckpointError, match="29 patch rows"):
        convert_audiomae(ckpt, **TINY)


def test_not_an_mae_checkpoint() -> None:
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        convert_mae({"encoder": {}, "predictor": {}})
    with pytest.raises(CheckpointError, match=r"missing keys \['cls_token'"):
        convert_mae({"model": {"patch_embed.proj.weight": torch.zeros(16, 3, 8, 8)}})
    ckpt = fixture_model("mae_finetuned")
    ckpt["model"]["norm.weight"] = torch.ones(16)
    ckpt["model"]["norm.bias"] = torch.zeros(16)
    with pytest.raises(CheckpointError, match="next to fc_norm"):
        convert_mae(ckpt, num_heads=4)


def test_ddp_prefix_and_convert_entry_point(tmp_path: Path) -> None:
    """A ``module.``-prefixed dict converts the same; ``audiossl.convert.convert`` dispatches here."""
    from audiossl.convert import convert, converter

    assert converter("mae") is convert_mae and converter("audiomae") is convert_audiomae
    ckpt = fixture_model("mae_pretrain")
    prefixed = copy.deepcopy(ckpt)
    prefixed["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}
    a, b = convert_mae(ckpt, **TINY), convert_mae(prefixed, **TINY)
    assert a["config"] == b["config"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    src = tmp_path / "mae_visualize.pth"
    torch.save(ckpt, src)
    out = convert("mae", src, tmp_path / "native.pt")
    native = load_checkpoint(out)
    assert native["family"] == "mae" and native["meta"]["source"] == "mae"
    assert native["meta"]["source_file"] == "mae_visualize.pth"
