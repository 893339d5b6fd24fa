"""MAE-AST fairseq checkpoints import as the native ``maeast`` objective with upstream outputs.

Fixtures ``maeast_{patch,frame}.pt`` were recorded with AlanBaade/MAE-AST-Public 287574d
(``mae_ast/models/mae_ast.py``) on fairseq's own ``MultiheadAttention`` (facebookresearch/fairseq
3d262bb2) with the rest of fairseq stubbed: embed 32, 4 heads, FFN 64, 2 encoder + 1 decoder
layers, ``max_token_length`` 64 (so the stored ``pe`` buffers stay small), BatchNorm running
statistics set to mean -4 / var 9. Each holds the fairseq file (``cfg`` + ``model``), a padded
batch of raw fbanks, upstream's ``features_only`` encoder output, and for clip 0 the mask its
sampler drew and the two heads' predictions and the targets at the masked tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
import torch

from audiossl.convert.maeast import CONVERTERS, convert_maeast, plan_maeast
from audiossl.features import FbankConfig
from audiossl.masking.base import MaskInfo
from audiossl.models.registry import model_from_config
from audiossl.checkpoint import CheckpointError, check_state_dict
from audiossl.models.registry import model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
TOL = 1e-4


def fixture(name: str) -> Dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_converter_registered():
    assert set(CONVERTERS) == {"maeast"}


@pytest.mark.parametrize("name, patch, mask_type", [("maeast_patch", (16, 16), "chunk"),
                                                     ("maeast_frame", (2, 128), "random_batched")])
def test_parity_and_inferred_config(name, patch, mask_type):
    fx = fixture(name)
    payload = convert_maeast(fx["checkpoint"])
    assert payload["family"] == "maeast"
    cfg = payload["config"]
    enc = cfg["encoder"]
    assert (enc["embed_dim"], enc["depth"], enc["num_heads"], enc["mlp_ratio"]) == (32, 2, 4, 2.0)
    assert tuple(enc["patch_size"]) == patch and enc["tokenizer"] == "linear_patch" and enc["num_prefix_tokens"] == 0
    assert (enc["drop"], enc["attn_drop"], enc["act_drop"], enc["input_drop"]) == (0.1, 0.1, 0.0, 0.1)
    assert (cfg["decoder_depth"], cfg["mask_type"], cfg["mask_ratio"]) == (1, mask_type, 0.75)
    assert cfg["encoder_layerdrop"] == 0.05
    assert payload["fbank"] == FbankConfig.preset("mae_ast").to_dict()
    assert payload["normalizer"] is None and payload["target_length"] is None

    model = model_from_checkpoint(payload).eval()
    assert model.batch_norm.running_mean.item() == -4.0
    with torch.no_grad():
        features = model.extract_features(fx["input"], fx["lengths"])
        # clip 1 is zero-padded: compare the tokens that hold real frames (upstream leaves the
        # others as its own padding values)
        valid = ~features.padding_mask
        assert valid[0].all() and not valid[1].all()
        assert max_diff(features.x[valid], fx["features"][valid]) <= TOL
        out = model(fx["input"][:1], mask=MaskInfo.from_mask(fx["mask"]))
    assert max_diff(out.target, fx["target"]) <= TOL
    assert max_diff(out.pred_reconstruction, fx["pred_reconstruction"]) <= TOL
    assert max_diff(out.pred_classification, fx["pred_classification"]) <= TOL


def test_bare_state_dict_needs_the_kernel():
    fx = fixture("maeast_patch")
    sd = fx["checkpoint"]["model"]
    with pytest.raises(CheckpointError, match="patch_size"):
        convert_maeast(sd)
    payload = convert_maeast(sd, patch_size=(16, 16), num_heads=4)
    model = model_from_checkpoint(payload).eval()
    with torch.no_grad():
        x = model.extract_features(fx["input"][:1]).x
    assert max_diff(x, fx["features"][:1]) <= TOL


def with_model_cfg(ckpt: Dict, **changes) -> Dict:
    return {**ckpt, "cfg": {**ckpt["cfg"], "model": {**ckpt["cfg"]["model"], **changes}}}


def test_missing_and_unexpected_keys_are_named():
    ckpt = fixture("maeast_patch")["checkpoint"]
    sd = dict(ckpt["model"])
    del sd["decoder.layers.0.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.0\.self_attn\.k_proj\.bias"):
        convert_maeast({**ckpt, "model": sd})
    sd = dict(ckpt["model"])
    del sd["final_proj_classification.weight"]
    with pytest.raises(CheckpointError, match="final_proj_classification.weight"):
        convert_maeast({**ckpt, "model": sd})
    sd = dict(ckpt["model"], **{"encoder.layers.0.self_attn.bias_k": torch.zeros(1, 1, 32)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \[encoder\.layers\.0\.self_attn\.bias_k\]"):
        convert_maeast({**ckpt, "model": sd})
    sd = dict(ckpt["model"], **{"encoder.layers.1.fc1.weight": torch.zeros(64, 16)})
    with pytest.raises(CheckpointError, match=r"encoder\.blocks\.1\.mlp\.fc1\.weight: checkpoint \(64, 16\)"):
        convert_maeast({**ckpt, "model": sd})


def test_cfg_is_checked_against_the_weights():
    ckpt = fixture("maeast_patch")["checkpoint"]
    with pytest.raises(CheckpointError, match="encoder_layers=12"):
        convert_maeast(with_model_cfg(ckpt, encoder_layers=12))
    with pytest.raises(CheckpointError, match="layer_norm_first=True"):
        convert_maeast(with_model_cfg(ckpt, layer_norm_first=True))
    with pytest.raises(CheckpointError, match="does not fit post_extract_proj"):
        convert_maeast(with_model_cfg(ckpt, ast_kernel_size_time=2, ast_kernel_stride_time=2))
    sd = dict(ckpt["model"])
    sd["enc_sine_pos_embed.pe"] = sd["enc_sine_pos_embed.pe"] * 2
    with pytest.raises(CheckpointError, match="enc_sine_pos_embed.pe is not MAE-AST's sinusoid"):
        convert_maeast({**ckpt, "model": sd})


def test_not_a_maeast_file():
    with pytest.raises(CheckpointError, match="post_extract_proj"):
        convert_maeast({"cfg": {}, "model": {"encoder.weight": torch.zeros(2)}})
    with pytest.raises(CheckpointError, match="fairseq MAE-AST"):
        convert_maeast([1, 2])


@pytest.mark.parametrize("kind", ["patch", "frame"])
def test_real_size_release_maps(kind):
    """chunk_patch_75_12LayerEncoder.pt / random_frame_75_12LayerEncoder.pt: 768 wide, 12 + 2
    layers, 48000-row pe buffers — as meta tensors, checked against a meta-built model."""
    k_t, k_c = (16, 16) if kind == "patch" else (2, 128)
    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    D = 768
    sd = {"post_extract_proj.weight": m(D, 256), "post_extract_proj.bias": m(D), "layer_norm.weight": m(128),
          "layer_norm.bias": m(128), "batch_norm.running_mean": m(1), "batch_norm.running_var": m(1),
          "batch_norm.num_batches_tracked": torch.empty((), dtype=torch.long, device="meta"),
          "encoder_mask_emb": m(D), "decoder_mask_emb": m(D), "enc_sine_pos_embed.pe": m(1, 48000, D),
          "dec_sine_pos_embed.pe": m(1, 48000, D), "final_proj_reconstruction.weight": m(256, D),
          "final_proj_reconstruction.bias": m(256), "final_proj_classification.weight": m(256, D),
          "final_proj_classification.bias": m(256)}
    for stack, depth in (("encoder", 12), ("decoder", 2)):
        sd[f"{stack}.layer_norm.weight"], sd[f"{stack}.layer_norm.bias"] = m(D), m(D)
        for i in range(depth):
            b = f"{stack}.layers.{i}."
            for name, shape in (("self_attn.q_proj", (D, D)), ("self_attn.k_proj", (D, D)),
                                ("self_attn.v_proj", (D, D)), ("self_attn.out_proj", (D, D)),
                                ("self_attn_layer_norm", (D,)), ("fc1", (3072, D)), ("fc2", (D, 3072)),
                                ("final_layer_norm", (D,))):
                sd[f"{b}{name}.weight"], sd[f"{b}{name}.bias"] = m(*shape), m(shape[0])
    model_cfg = {"_name": "mae_ast", "ast_kernel_size_chan": k_c, "ast_kernel_size_time": k_t,
                 "ast_kernel_stride_chan": k_c, "ast_kernel_stride_time": k_t, "encoder_layers": 12,
                 "encoder_embed_dim": D, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
                 "decoder_layers": 2, "activation_fn": "gelu", "layer_norm_first": False, "dropout": 0.1,
                 "attention_dropout": 0.1, "activation_dropout": 0.0, "dropout_input": 0.1, "encoder_layerdrop": 0.05,
                 "decoder_layerdrop": 0.0, "random_mask_prob": 0.75, "enc_sine_pos": True, "dec_sine_pos": True,
                 "enc_conv_pos": False, "dec_conv_pos": False, "max_token_length": 48000}
    task_cfg = {"_name": "mae_ast_pretraining", "feature_dim": 128,
                "mask_type": "chunk_mask" if kind == "patch" else "random_mask"}
    plan = plan_maeast({"cfg": {"model": model_cfg, "task": task_cfg}, "model": sd, "extra_state": {}})
    cfg = plan.config
    assert (cfg.encoder.depth, cfg.encoder.num_heads, cfg.decoder_depth) == (12, 12, 2)
    assert cfg.encoder.patch_size == (k_t, k_c) and cfg.mask_type == ("chunk" if kind == "patch" else "random")
    with torch.device("meta"):
        model = model_from_config(plan.family, cfg.to_dict())
    check_state_dict(model, plan.state_dict)
