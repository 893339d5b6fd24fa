"""SSAST / AST / Hugging Face AST imports reproduce the upstream models, and the HF export
round-trips.

The fixtures in ``tests/fixtures/convert/`` were recorded by running the upstream code (YuanGongND
ssast a1a3eec and ast 31088be with timm 0.4.5; transformers 5.23.0) in tiny configurations
(embed 32, depth 2, 4 heads, 10-class DeiT heads): the state dict in the release layout, a fixed
input and the upstream outputs. Upstream tokens are frequency-major; ours time-major, so the
reference token rows are permuted before comparing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F

from audiossl.convert.ast import (
    CONVERTERS,
    convert_ast,
    convert_ast_hf,
    convert_ssast,
    export_ast_hf,
    export_ast_hf_preprocessor,
    freq_to_time_major,
    plan_ast,
    plan_ast_hf,
    plan_ssast,
)
from audiossl.features import FbankConfig, Normalizer
from audiossl.masking.base import MaskInfo
from audiossl.models.registry import model_from_config
from audiossl.checkpoint import CheckpointError, check_state_dict, load_checkpoint, save_checkpoint
from audiossl.models.registry import encoder_from_checkpoint, model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
TOL = 1e-4


def fixture(name: str) -> Dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def tokens_time_major(hidden: torch.Tensor, f_dim: int, t_dim: int) -> torch.Tensor:
    """Upstream ``(B, 2 + F'T', D)`` outputs with the token rows in our order."""
    body = torch.stack([freq_to_time_major(h[None, 2:], f_dim, t_dim)[0] for h in hidden])
    return torch.cat([hidden[:, :2], body], dim=1)


def head_logits(x: torch.Tensor, meta: Dict) -> torch.Tensor:
    """What meta["head_kind"] documents: pool, LayerNorm, Linear."""
    pooled = x[:, 2:].mean(1) if meta["head_kind"] == "mean_ln_linear" else (x[:, 0] + x[:, 1]) / 2
    h = meta["head"]
    pooled = F.layer_norm(pooled, pooled.shape[-1:], h["fc_norm.weight"], h["fc_norm.bias"], meta["head_norm_eps"])
    return F.linear(pooled, h["head.weight"], h["head.bias"])


def encode(payload: Dict, x: torch.Tensor) -> torch.Tensor:
    model = model_from_checkpoint(payload).eval()
    encoder = getattr(model, "encoder", model)
    with torch.no_grad():
        return encoder(x.unsqueeze(1)).x


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_converters_registered():
    assert set(CONVERTERS) == {"ssast", "ast", "ast_hf"}


# ------------------------------------------------------------------------------ SSAST pretraining
@pytest.mark.parametrize("name, kernel_tf, grid_tf",
                         [("ssast_patch", (16, 16), (3, 8)), ("ssast_frame", (2, 128), (20, 1))])
def test_ssast_pretrain_parity(name, kernel_tf, grid_tf):
    fx = fixture(name)
    payload = convert_ssast(fx["checkpoint"], num_heads=4)
    cfg = payload["config"]
    assert payload["family"] == "ssast"
    enc = cfg["encoder"]
    assert (enc["embed_dim"], enc["depth"], enc["num_heads"], enc["num_prefix_tokens"]) == (32, 2, 4, 2)
    assert tuple(enc["patch_size"]) == kernel_tf and tuple(enc["pos_grid"]) == grid_tf
    assert enc["tokenizer"] == ("patch" if kernel_tf == (16, 16) else "frame")
    assert payload["target_length"] == fx["input"].shape[1]
    assert payload["fbank"] == FbankConfig.preset("ast").to_dict()
    assert payload["normalizer"] == Normalizer.preset("audioset").to_dict()

    f_dim, t_dim = fx["grid_freq_major"].tolist()
    assert (t_dim, f_dim) == grid_tf
    x = fx["input"]
    diff = max_diff(encode(payload, x), tokens_time_major(fx["hidden"], f_dim, t_dim))
    assert diff <= TOL

    # Both pretraining losses on upstream's masks (mapped to our token order).
    model = model_from_checkpoint(payload).eval()

    def mask_of(ids: torch.Tensor) -> MaskInfo:
        mask = torch.zeros(ids.shape[0], f_dim * t_dim, dtype=torch.bool)
        for row, cells in zip(mask, ids):
            row[(cells % t_dim) * f_dim + cells // t_dim] = True
        return MaskInfo.from_mask(mask)

    with torch.no_grad():
        mpc = model(x, "pretrain_mpc", mask=mask_of(fx["mpc_mask_ids"]))
        mpg = model(x, "pretrain_mpg", mask=mask_of(fx["mpg_mask_ids"]))
    assert abs(mpc.nce.item() - fx["nce"].item()) <= TOL
    assert mpc.acc.item() == pytest.approx(fx["acc"].item())
    assert abs(mpg.mse.item() - fx["mse"].item()) <= TOL


def test_ssast_num_masked_keeps_the_release_ratio():
    plan = plan_ssast(fixture("ssast_patch")["checkpoint"], num_heads=4)
    assert plan.config.num_masked == 24 * 400 // 512


def test_ssast_encoder_only_file_gives_an_encoder():
    sd = {k: v for k, v in fixture("ssast_patch")["checkpoint"].items()
          if not k.startswith(("module.cpredlayer", "module.gpredlayer", "module.mask_embed"))}
    payload = convert_ssast(sd, num_heads=4)
    assert payload["family"] == "encoder"
    fx = fixture("ssast_patch")
    assert max_diff(encode(payload, fx["input"]), tokens_time_major(fx["hidden"], 8, 3)) <= TOL


# ------------------------------------------------------------------------------ fine-tuned files
@pytest.mark.parametrize("head_kind, ref", [("mean_ln_linear", "logits"), ("cls_dist_mean_ln_linear", "logits_cls")])
def test_ssast_finetuned_parity(head_kind, ref):
    fx = fixture("ssast_ft")
    payload = convert_ssast(fx["checkpoint"], num_heads=4, head_kind=head_kind)
    assert payload["family"] == "encoder"
    cfg, meta = payload["config"], payload["meta"]
    # stride inferred from the 60 positional rows: 12 frequency rows at stride 10, 5 columns
    assert tuple(cfg["patch_stride"]) == (10, 10) and tuple(cfg["pos_grid"]) == (5, 12)
    assert meta["head_kind"] == head_kind and meta["num_classes"] == 5 and meta["head_norm_eps"] == 1e-5
    x = encode(payload, fx["input"])
    assert max_diff(x, tokens_time_major(fx["hidden"], 12, 5)) <= TOL
    assert max_diff(head_logits(x, meta), fx[ref]) <= TOL


def test_ast_parity_with_explicit_unequal_strides():
    fx = fixture("ast")
    payload = convert_ast(fx["checkpoint"], num_heads=4, stride=(12, 10))
    cfg, meta = payload["config"], payload["meta"]
    assert tuple(cfg["patch_stride"]) == (12, 10) and tuple(cfg["pos_grid"]) == (5, 12)
    assert meta["head_kind"] == "cls_dist_mean_ln_linear" and set(meta["head"]) == {
        "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert payload["target_length"] == 64  # shortest input giving 5 columns at time stride 12
    x = encode(payload, fx["input"])
    assert max_diff(x, tokens_time_major(fx["hidden"], 12, 5)) <= TOL
    assert max_diff(head_logits(x, meta), fx["logits"]) <= TOL


def test_ast_stride_is_checked_against_the_table():
    with pytest.raises(CheckpointError, match="stride"):
        plan_ast(fixture("ast")["checkpoint"], num_heads=4, stride=(12, 16))
    with pytest.raises(CheckpointError, match="target_length 100"):
        plan_ast(fixture("ast")["checkpoint"], num_heads=4, stride=(12, 10), target_length=100)


def test_payload_saves_and_loads_as_a_native_checkpoint(tmp_path):
    fx = fixture("ast")
    path = save_checkpoint(tmp_path / "ast.pt", convert_ast(fx["checkpoint"], num_heads=4, stride=(12, 10)))
    encoder, ckpt = encoder_from_checkpoint(path)
    assert load_checkpoint(path)["meta"]["source"] == "ast"
    with torch.no_grad():
        x = encoder(fx["input"].unsqueeze(1)).x
    assert max_diff(head_logits(x, ckpt["meta"]), fx["logits"]) <= TOL


# ------------------------------------------------------------------------------ Hugging Face
def hub_to_v5(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The names transformers >= 5 uses in memory for the same weights."""
    out = {}
    for k, v in sd.items():
        for a, b in ((".encoder.layer.", ".layers."), ("attention.attention.query", "attention.q_proj"),
                     ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
                     ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
                     ("output.dense", "mlp.fc2")):
            k = k.replace(a, b)
        out[k] = v
    return out


@pytest.mark.parametrize("layout", ["hub", "transformers_v5", "no_config"])
def test_ast_hf_parity(layout):
    fx = fixture("ast_hf")
    sd, config = fx["checkpoint"], fx["config"]
    if layout == "transformers_v5":
        sd = hub_to_v5(sd)
    if layout == "no_config":
        payload = convert_ast_hf(sd, num_heads=4)  # eps defaults to HF's 1e-12, strides inferred
    else:
        payload = convert_ast_hf(sd, hf_config=config)
    cfg, meta = payload["config"], payload["meta"]
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["norm_eps"]) == (32, 2, 4, 1e-12)
    assert tuple(cfg["pos_grid"]) == (5, 12)
    # without config.json, the shortest input giving 5 columns
    assert payload["target_length"] == (56 if layout == "no_config" else 60)
    if layout != "no_config":
        assert meta["labels"] == [f"LABEL_{i}" for i in range(5)]
    x = encode(payload, fx["input"])
    assert max_diff(x, tokens_time_major(fx["hidden"], 12, 5)) <= TOL
    assert max_diff(head_logits(x, meta), fx["logits"]) <= TOL


def test_ast_hf_normaliser_from_the_preprocessor_config():
    fx = fixture("ast_hf")
    plan = plan_ast_hf(fx["checkpoint"], hf_config=fx["config"])
    assert plan.normalizer == Normalizer.preset("audioset").to_dict()  # 5 classes: no recipe of its own
    pre = {"feature_extractor_type": "ASTFeatureExtractor", "mean": -6.845978, "std": 5.5654526, "max_length": 128}
    plan = plan_ast_hf(fx["checkpoint"], hf_config=fx["config"], hf_preprocessor=pre)
    assert plan.normalizer == {"mean": -6.845978, "std": 5.5654526}


def test_ast_hf_config_must_match_the_weights():
    fx = fixture("ast_hf")
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        plan_ast_hf(fx["checkpoint"], hf_config={**fx["config"], "num_hidden_layers": 3})
    with pytest.raises(CheckpointError, match="grid"):
        plan_ast_hf(fx["checkpoint"], hf_config={**fx["config"], "max_length": 128})
    with pytest.raises(CheckpointError, match="gelu"):
        plan_ast_hf(fx["checkpoint"], hf_config={**fx["config"], "hidden_act": "relu"})


# ------------------------------------------------------------------------------ errors
def test_missing_block_tensor_is_named_in_the_file_s_terms():
    sd = dict(fixture("ast")["checkpoint"])
    del sd["module.v.blocks.1.mlp.fc2.weight"]
    with pytest.raises(CheckpointError, match=r"v\.blocks\.1\.mlp\.fc2\.weight"):
        convert_ast(sd, num_heads=4, stride=(12, 10))
    hf = dict(fixture("ast_hf")["checkpoint"])
    del hf["audio_spectrogram_transformer.encoder.layer.0.attention.attention.key.bias"]
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.0\.attention\.attention\.key\.bias"):
        convert_ast_hf(hf, hf_config=fixture("ast_hf")["config"])


def test_unexpected_and_misshaped_keys_are_named():
    sd = dict(fixture("ssast_patch")["checkpoint"])
    sd["module.v.extra_token"] = torch.zeros(1, 1, 32)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[encoder\.extra_token\]"):
        convert_ssast(sd, num_heads=4)
    sd = dict(fixture("ssast_patch")["checkpoint"])
    sd["module.v.blocks.0.attn.proj.weight"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.proj\.weight: checkpoint \(32, 16\)"):
        convert_ssast(sd, num_heads=4)
    sd = dict(fixture("ssast_patch")["checkpoint"])
    sd["module.v.pos_embed"] = sd["module.v.pos_embed"][:, :-1]
    with pytest.raises(CheckpointError, match="positional table"):
        convert_ssast(sd, num_heads=4)


def test_wrong_source_is_refused():
    with pytest.raises(CheckpointError, match="use --from ssast"):
        convert_ast(fixture("ssast_patch")["checkpoint"])
    with pytest.raises(CheckpointError, match="p_input_fdim"):
        convert_ssast(fixture("ast_hf")["checkpoint"])
    with pytest.raises(CheckpointError, match="state dict"):
        convert_ast({"epoch": 3})


# ------------------------------------------------------------------------------ real-size layouts
def deit_keys(prefix: str, D: int, depth: int, kernel_ft, n_pos: int, classes: int = 1000) -> Dict[str, torch.Tensor]:
    """A timm 0.4.5 DeiT-distilled key set with the shapes of a release, on the meta device."""
    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    sd = {f"{prefix}cls_token": m(1, 1, D), f"{prefix}dist_token": m(1, 1, D), f"{prefix}pos_embed": m(1, n_pos, D),
          f"{prefix}patch_embed.proj.weight": m(D, 1, *kernel_ft), f"{prefix}patch_embed.proj.bias": m(D),
          f"{prefix}norm.weight": m(D), f"{prefix}norm.bias": m(D), f"{prefix}head.weight": m(classes, D),
          f"{prefix}head.bias": m(classes), f"{prefix}head_dist.weight": m(classes, D),
          f"{prefix}head_dist.bias": m(classes)}
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        for name, shape in (("norm1", (D,)), ("norm2", (D,)), ("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)),
                            ("mlp.fc1", (4 * D, D)), ("mlp.fc2", (D, 4 * D))):
            sd[f"{b}{name}.weight"] = m(*shape)
            sd[f"{b}{name}.bias"] = m(shape[0])
    return sd


def assert_plan_fits(plan) -> None:
    with torch.device("meta"):
        model = model_from_config(plan.family, plan.config.to_dict())
    check_state_dict(model, plan.state_dict)


@pytest.mark.parametrize("kernel_ft, grid_tf", [((16, 16), (64, 8)), ((128, 2), (512, 1))])
def test_real_size_ssast_base_release_maps(kernel_ft, grid_tf):
    sd = deit_keys("module.v.", 768, 12, kernel_ft, 514)
    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    sd.update({"module.p_input_fdim": torch.tensor(128), "module.p_input_tdim": torch.tensor(1024),
               "module.mask_embed": m(1, 1, 768)})
    for h in ("cpredlayer", "gpredlayer"):
        sd.update({f"module.{h}.0.weight": m(768, 768), f"module.{h}.0.bias": m(768),
                   f"module.{h}.2.weight": m(256, 768), f"module.{h}.2.bias": m(256)})
    plan = plan_ssast(sd)
    assert plan.family == "ssast" and plan.target_length == 1024 and plan.config.num_masked == 400
    enc = plan.config.encoder
    assert (enc.num_heads, enc.depth, enc.pos_grid, enc.patch_size) == (12, 12, grid_tf, kernel_ft[::-1])
    assert_plan_fits(plan)


@pytest.mark.parametrize("classes, n_pos, length, stats", [(527, 1214, 1024, "audioset"), (50, 602, 512, "esc50"),
                                                           (35, 146, 128, "speechcommands")])
def test_real_size_ast_release_maps(classes, n_pos, length, stats):
    sd = deit_keys("module.v.", 768, 12, (16, 16), n_pos)
    sd.update({"module.mlp_head.0.weight": torch.empty(768, device="meta"),
               "module.mlp_head.0.bias": torch.empty(768, device="meta"),
               "module.mlp_head.1.weight": torch.empty(classes, 768, device="meta"),
               "module.mlp_head.1.bias": torch.empty(classes, device="meta")})
    plan = plan_ast(sd)
    assert plan.config.patch_stride == (10, 10) and plan.config.pos_grid == ((length - 16) // 10 + 1, 12)
    assert plan.target_length == length and plan.normalizer == Normalizer.preset(stats).to_dict()
    assert plan.meta["num_classes"] == classes and plan.config.num_heads == 12
    assert_plan_fits(plan)


def test_real_size_ssast_frame_finetuned_on_speech_commands_maps():
    """SSAST-Base-Frame fine-tuned with SSAST's Speech Commands recipe: time stride 1, 128 frames."""
    sd = deit_keys("module.v.", 768, 12, (128, 2), 2 + 127)
    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    sd.update({"module.mlp_head.0.weight": m(768), "module.mlp_head.0.bias": m(768),
               "module.mlp_head.1.weight": m(35, 768), "module.mlp_head.1.bias": m(35)})
    plan = plan_ssast(sd)
    cfg = plan.config
    assert (cfg.tokenizer, cfg.patch_size, cfg.patch_stride, cfg.pos_grid) == ("frame", (2, 128), (1, 128), (127, 1))
    assert plan.target_length == 128 and plan.normalizer == Normalizer.preset("speechcommands").to_dict()
    assert plan.meta["head_kind"] == "mean_ln_linear"
    assert_plan_fits(plan)


def test_real_size_hf_release_maps():
    """MIT/ast-finetuned-audioset-10-10-0.4593: its config.json values and Hub key layout."""
    config = {"architectures": ["ASTForAudioClassification"], "hidden_size": 768, "num_hidden_layers": 12,
              "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
              "patch_size": 16, "qkv_bias": True, "frequency_stride": 10, "time_stride": 10, "max_length": 1024,
              "num_mel_bins": 128, "id2label": {str(i): f"class {i}" for i in range(527)}}
    m = lambda *s: torch.empty(*s, device="meta")  # noqa: E731
    p = "audio_spectrogram_transformer."
    sd = {f"{p}embeddings.cls_token": m(1, 1, 768), f"{p}embeddings.distillation_token": m(1, 1, 768),
          f"{p}embeddings.position_embeddings": m(1, 1214, 768),
          f"{p}embeddings.patch_embeddings.projection.weight": m(768, 1, 16, 16),
          f"{p}embeddings.patch_embeddings.projection.bias": m(768), f"{p}layernorm.weight": m(768),
          f"{p}layernorm.bias": m(768), "classifier.layernorm.weight": m(768), "classifier.layernorm.bias": m(768),
          "classifier.dense.weight": m(527, 768), "classifier.dense.bias": m(527)}
    for i in range(12):
        b = f"{p}encoder.layer.{i}."
        for name, shape in (("attention.attention.query", (768, 768)), ("attention.attention.key", (768, 768)),
                            ("attention.attention.value", (768, 768)), ("attention.output.dense", (768, 768)),
                            ("intermediate.dense", (3072, 768)), ("output.dense", (768, 3072)),
                            ("layernorm_before", (768,)), ("layernorm_after", (768,))):
            sd[f"{b}{name}.weight"], sd[f"{b}{name}.bias"] = m(*shape), m(shape[0])
    plan = plan_ast_hf(sd, hf_config=config)
    assert plan.config.pos_grid == (101, 12) and plan.target_length == 1024
    assert plan.normalizer == Normalizer.preset("audioset").to_dict()
    assert plan.meta["labels"][3] == "class 3"
    assert_plan_fits(plan)


# ------------------------------------------------------------------------------ export
def test_export_hf_round_trip_of_a_converted_ast():
    fx = fixture("ast")
    original = convert_ast(fx["checkpoint"], num_heads=4, stride=(12, 10))
    sd, config = export_ast_hf(original)
    assert config["architectures"] == ["ASTForAudioClassification"]
    assert (config["time_stride"], config["frequency_stride"], config["max_length"]) == (12, 10, 64)
    back = convert_ast_hf(sd, hf_config=config)
    x0, x1 = encode(original, fx["input"]), encode(back, fx["input"])
    assert max_diff(x0, x1) <= 1e-6
    # HF has one layer_norm_eps: the head's LayerNorm goes from AST's 1e-5 to the encoder's 1e-6.
    assert max_diff(head_logits(x1, back["meta"]), fx["logits"]) <= TOL


def test_export_reproduces_the_hub_file_exactly():
    fx = fixture("ast_hf")
    sd, config = export_ast_hf(convert_ast_hf(fx["checkpoint"], hf_config=fx["config"]))
    assert set(sd) == set(fx["checkpoint"])
    assert all(torch.equal(sd[k], fx["checkpoint"][k]) for k in sd)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_norm_eps",
                "patch_size", "frequency_stride", "time_stride", "max_length", "num_mel_bins", "id2label", "qkv_bias"):
        assert config[key] == fx["config"][key], key


def test_export_of_an_ssast_pretrain_model_is_a_bare_ast_model():
    fx = fixture("ssast_patch")
    payload = convert_ssast(fx["checkpoint"], num_heads=4)
    sd, config = export_ast_hf(payload)
    assert config["architectures"] == ["ASTModel"] and not any(k.startswith("classifier.") for k in sd)
    assert (config["frequency_stride"], config["time_stride"], config["max_length"]) == (16, 16, 48)
    back = convert_ast_hf(sd, hf_config=config)
    assert max_diff(encode(back, fx["input"]), tokens_time_major(fx["hidden"], 8, 3)) <= TOL
    pre = export_ast_hf_preprocessor(payload)
    assert (pre["mean"], pre["std"], pre["max_length"], pre["num_mel_bins"]) == (-4.2677393, 4.5689974, 48, 128)


def test_export_refuses_what_hf_ast_cannot_express():
    frame = convert_ssast(fixture("ssast_frame")["checkpoint"], num_heads=4)
    with pytest.raises(CheckpointError, match="frame"):
        export_ast_hf(frame)
    mean_head = convert_ssast(fixture("ssast_ft")["checkpoint"], num_heads=4)
    with pytest.raises(CheckpointError, match="include_head=False"):
        export_ast_hf(mean_head)
    sd, config = export_ast_hf(mean_head, include_head=False)
    assert config["architectures"] == ["ASTModel"]
    with pytest.raises(CheckpointError, match="no classifier head"):
        export_ast_hf(convert_ssast(fixture("ssast_patch")["checkpoint"], num_heads=4), include_head=True)
    with pytest.raises(CheckpointError, match="max_length 100"):
        export_ast_hf(convert_ast(fixture("ast")["checkpoint"], num_heads=4, stride=(12, 10)), target_length=100)
    mae_like = {"fbank": FbankConfig.preset("mae_ast").to_dict(), "normalizer": {"mean": 0.0, "std": 1.0}}
    with pytest.raises(CheckpointError, match="window_type"):
        export_ast_hf_preprocessor(mae_like)
