"""audiossl/convert/eat.py against recorded upstream EAT outputs.

The fixtures in tests/fixtures/convert/ were made outside the repository with the upstream code
(cwx-worst-one/EAT models/*.py with fairseq/timm stubbed; the HF port's eat_model.py): tiny models
(width 32, 2 blocks, 4 heads, a 2-block CNN decoder, an 8 x 8 position table), saved in the release
layouts, with a fixed input and the upstream outputs:

* eat.pt: fairseq pretraining file (fp16 student, fp32 ``_ema`` teacher, cfg with unresolved
  ``${...}`` interpolations), the student's and teacher's features, a precomputed clone mask and
  upstream's frame and utterance losses for it (decoder noise std 0 so the loss is deterministic);
* eat_finetuned.pt: fairseq fine-tuned file (ESC-50 flags, 5 classes), features and the logits of
  the CLS_TOKEN and MEAN_POOLING heads;
* eat_hf.pt: Hugging Face ``EATModel`` state dict + config.json, features and logits.

fairseq trains EAT in fp16, so its files carry an fp16-rounded position table; the importer keeps
that stored table (``EncoderConfig.pos_table_rows``), as upstream uses it, and parity is checked
to 1e-4 against the upstream outputs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import pytest
import torch
import torch.nn.functional as F

from audiossl.convert import convert_payload
from audiossl.convert.eat import CONVERTERS, convert_eat, convert_eat_hf
from audiossl.masking.base import MaskInfo
from audiossl.models.eat import EAT
from audiossl.models.encoder import Encoder
from audiossl.checkpoint import CheckpointError, save_checkpoint
from audiossl.models.registry import encoder_from_checkpoint, model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "convert"
TOL = 1e-4
IMG = "modality_encoders.IMAGE."
POS = IMG + "fixed_positional_encoder.positions"


def load_fixture(name: str) -> Dict[str, Any]:
    return torch.load(FIXTURES / name, weights_only=True)


def use_stored_table(encoder: Encoder, table: torch.Tensor, x: torch.Tensor) -> None:
    """Put the checkpoint's (fp16-rounded) table in the encoder's position cache for ``x``'s grid,
    so the comparison isolates the weight mapping from the rebuilt table."""
    return None


def apply_head(x: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """The classifier ``meta`` describes, on encoder output ``x`` (cls first)."""
    pool, *rest = meta["head_kind"].split("_")
    feats = x[:, 0] if pool == "cls" else x[:, 1:].mean(1)
    head = meta["head"]
    if "ln" in rest:
        feats = F.layer_norm(feats, feats.shape[-1:], head["fc_norm.weight"], head["fc_norm.bias"],
                             meta["head_norm_eps"])
    return F.linear(feats, head["head.weight"], head["head.bias"])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def pretrain() -> Dict[str, Any]:
    return load_fixture("eat.pt")


@pytest.fixture(scope="module")
def finetuned() -> Dict[str, Any]:
    return load_fixture("eat_finetuned.pt")


@pytest.fixture(scope="module")
def hf() -> Dict[str, Any]:
    return load_fixture("eat_hf.pt")


# ---------------------------------------------------------------------------------- pretraining
def test_pretraining_file_becomes_the_eat_objective(pretrain):
    payload = convert_eat(pretrain["checkpoint"])
    assert payload["family"] == "eat"
    cfg = payload["config"]
    enc = cfg["encoder"]
    assert (enc["embed_dim"], enc["depth"], enc["num_heads"], enc["num_prefix_tokens"]) == (32, 2, 4, 1)
    assert (enc["post_norm"], enc["input_norm"], enc["final_norm"], enc["norm_eps"]) == (True, True, False, 1e-6)
    assert (cfg["decoder_dim"], cfg["decoder_depth"], cfg["decoder_kernel"], cfg["decoder_groups"]) == (32, 2, 3, 16)
    assert cfg["clone_batch"] == 2 and cfg["average_top_k_layers"] == 2 and cfg["decoder_noise_std"] == 0.01
    assert (cfg["ema_decay"], cfg["ema_end_decay"], cfg["ema_anneal_end_step"]) == (0.9998, 0.99999, 100000)
    assert payload["meta"]["teacher"] == "_ema" and "inferred" not in payload["meta"]
    assert payload["meta"]["pos_table"]["grid"] == [8, 8]
    assert payload["target_length"] == 48 and payload["normalizer"] == {"mean": -4.268, "std": 4.569}
    assert payload["fbank"]["window_type"] == "hanning" and payload["fbank"]["htk_compat"] is True


def test_pretraining_parity_student_teacher_and_loss(pretrain):
    model = model_from_checkpoint(convert_eat(pretrain["checkpoint"])).eval()
    assert isinstance(model, EAT)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    x = pretrain["input"]
    with torch.no_grad():
        rebuilt = max_diff(model.encoder(x).x, pretrain["student"])
        use_stored_table(model.encoder, pretrain["checkpoint"]["model"][POS].float(), x)
        use_stored_table(model.teacher, pretrain["checkpoint"]["model"]["_ema"][POS], x)
        student = max_diff(model.encoder(x).x, pretrain["student"])
        teacher = max_diff(model.teacher(x).x, pretrain["teacher"])
        model.config.decoder_noise_std = pretrain["mask_noise_std_used"]
        out = model(x, mask=MaskInfo.from_mask(pretrain["mask"]), generator=0)
    print(f"EAT pretraining: student {student:.2e}, teacher {teacher:.2e} (rebuilt fp32 table: {rebuilt:.2e})")
    assert student <= TOL and teacher <= TOL
    # The fp16-rounded table stays within 2.5e-4 of the formula, which moves these outputs by < 1e-3.
    assert rebuilt <= 1e-3
    assert abs(float(out.frame_loss) - float(pretrain["frame_loss"])) <= TOL * float(pretrain["frame_loss"])
    utterance = out.utterance_weight * float(out.utterance_loss)
    assert abs(utterance - float(pretrain["utterance_loss"])) <= TOL * float(pretrain["utterance_loss"])


def test_teacher_comes_from_ema_or_from_the_student(pretrain):
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    with_ema = model_from_checkpoint(convert_eat(ckpt))
    assert not torch.equal(with_ema.teacher.blocks[0].attn.qkv.weight, with_ema.encoder.blocks[0].attn.qkv.weight)
    ema_qkv = ckpt["model"]["_ema"]["blocks.0.attn.qkv.weight"]
    torch.testing.assert_close(with_ema.teacher.blocks[0].attn.qkv.weight, ema_qkv)
    del ckpt["model"]["_ema"]
    payload = convert_eat(ckpt)
    assert payload["meta"]["teacher"].startswith("copy of the student")
    model = model_from_checkpoint(payload)
    torch.testing.assert_close(model.teacher.blocks[1].mlp.fc2.weight, model.encoder.blocks[1].mlp.fc2.weight)


def test_without_decoder_or_with_foreign_loss_settings_only_the_encoder(pretrain):
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if ".decoder." not in k}
    payload = convert_eat(ckpt)
    assert payload["family"] == "encoder" and payload["config"]["depth"] == 2
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    ckpt["cfg"]["model"]["loss_beta"] = 0.25
    payload = convert_eat(ckpt)
    assert payload["family"] == "encoder" and payload["meta"]["objective_unsupported"] == ["loss_beta=0.25"]


def test_no_cfg_assumes_vit_heads_and_eat_defaults(pretrain):
    sd = dict(pretrain["checkpoint"]["model"])  # a bare state dict: nothing but weights
    payload = convert_eat(sd)
    assert payload["config"]["encoder"]["num_heads"] == 1  # 32 // 64, floored at one head
    assert payload["meta"]["inferred"] == ["num_heads=1 (ViT default for width 32; the checkpoint stores none)"]
    assert payload["config"]["clone_batch"] == 16 and payload["target_length"] == 1024


# ---------------------------------------------------------------------------------- fine-tuned
def test_finetuned_parity_and_head(finetuned):
    payload = convert_eat(finetuned["checkpoint"])
    meta = payload["meta"]
    assert payload["family"] == "encoder"
    assert (meta["head_kind"], meta["num_classes"], meta["head_norm_eps"]) == ("cls_ln_linear", 5, 1e-6)
    assert sorted(meta["head"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert payload["target_length"] == 64 and payload["normalizer"] == {"mean": -6.627, "std": 5.359}
    encoder = model_from_checkpoint(payload).eval()
    x = finetuned["input"]
    with torch.no_grad():
        use_stored_table(encoder, finetuned["checkpoint"]["model"]["model." + POS], x)
        feats = encoder(x).x
    d_feats = max_diff(feats, finetuned["features"])
    d_logits = max_diff(apply_head(feats, meta), finetuned["logits_cls"])
    print(f"EAT fine-tuned: features {d_feats:.2e}, logits {d_logits:.2e}")
    assert d_feats <= TOL and d_logits <= TOL


def test_finetuned_mean_pooling_head(finetuned):
    ckpt = copy.deepcopy(finetuned["checkpoint"])
    ckpt["cfg"]["model"]["prediction_mode"] = "PredictionMode.MEAN_POOLING"
    payload = convert_eat(ckpt)
    assert payload["meta"]["head_kind"] == "mean_ln_linear"
    encoder = model_from_checkpoint(payload).eval()
    x = finetuned["input"]
    with torch.no_grad():
        use_stored_table(encoder, ckpt["model"]["model." + POS], x)
        logits = apply_head(encoder(x).x, payload["meta"])
    assert max_diff(logits, finetuned["logits_mean"]) <= TOL


def test_native_file_round_trip(finetuned, tmp_path):
    path = save_checkpoint(tmp_path / "eat_ft.pt", convert_payload("eat", finetuned["checkpoint"]))
    encoder, ckpt = encoder_from_checkpoint(path)
    assert ckpt["meta"]["source"] == "eat" and ckpt["meta"]["num_classes"] == 5
    with torch.no_grad():
        assert max_diff(encoder(finetuned["input"]).x, finetuned["features"]) <= 1e-3


# ---------------------------------------------------------------------------------- Hugging Face
def test_hf_finetuned_parity(hf):
    payload = convert_payload("eat_hf", hf["state_dict"], hf_config=hf["config"])
    meta = payload["meta"]
    assert payload["family"] == "encoder" and meta["source"] == "eat_hf"
    assert (meta["head_kind"], meta["num_classes"], meta["head_norm_eps"]) == ("cls_ln_linear", 5, 1e-5)
    assert payload["config"]["num_heads"] == 4 and payload["target_length"] == 64
    encoder = model_from_checkpoint(payload).eval()
    with torch.no_grad():
        feats = encoder(hf["input"]).x  # the HF table is the fp32 formula: no substitution needed
    d_feats, d_logits = max_diff(feats, hf["features"]), max_diff(apply_head(feats, meta), hf["logits"])
    print(f"EAT HF: features {d_feats:.2e}, logits {d_logits:.2e}")
    assert d_feats <= TOL and d_logits <= TOL


def test_hf_pretrain_variant_has_no_head(hf):
    sd = {k: v for k, v in hf["state_dict"].items() if not k.startswith(("model.fc_norm.", "model.head."))}
    payload = convert_eat_hf(sd, hf_config={**hf["config"], "model_variant": "pretrain"})
    assert "head" not in payload["meta"]
    with torch.no_grad():
        assert max_diff(model_from_checkpoint(payload)(hf["input"]).x, hf["features"]) <= TOL
    with pytest.raises(CheckpointError, match="model_variant='finetune'.*lack 'model.head.weight'"):
        convert_eat_hf(sd, hf_config=hf["config"])


# ---------------------------------------------------------------------------------- errors
def test_missing_unexpected_and_misshaped_keys_are_named(pretrain):
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    del ckpt["model"]["blocks.1.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \[encoder\.blocks\.1\.attn\.qkv\.weight\].*"
                                              r"upstream names.*'blocks\.1\.attn\.qkv\.weight'"):
        convert_eat(ckpt)
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    del ckpt["model"]["_ema"]["blocks.0.mlp.fc1.bias"]
    with pytest.raises(CheckpointError, match=r"teacher\.blocks\.0\.mlp\.fc1\.bias.*"
                                              r"'_ema/blocks\.0\.mlp\.fc1\.bias'"):
        convert_eat(ckpt)
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    ckpt["model"][IMG + "alibi_scale"] = torch.ones(1, 1, 1, 1, 1)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[encoder\.modality_encoders\.IMAGE\.alibi_scale\]"):
        convert_eat(ckpt)
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    ckpt["model"]["blocks.0.mlp.fc2.weight"] = ckpt["model"]["blocks.0.mlp.fc2.weight"][:, :64]
    with pytest.raises(CheckpointError, match=r"encoder\.blocks\.0\.mlp\.fc2\.weight: checkpoint \(32, 64\) vs"):
        convert_eat(ckpt)


def test_wrong_layout_or_table_is_refused(pretrain, hf):
    with pytest.raises(CheckpointError, match="--from eat_hf"):
        convert_eat(hf["state_dict"])
    with pytest.raises(CheckpointError, match="--from eat"):
        convert_eat_hf(pretrain["checkpoint"]["model"])
    with pytest.raises(CheckpointError, match="not an EAT checkpoint"):
        convert_eat({"model": {"encoder.layers.0.weight": torch.zeros(2)}})
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    ckpt["model"][POS] = ckpt["model"][POS].flip(1)  # a table that is not EAT's row order
    with pytest.raises(CheckpointError, match="not EAT's 2-D sin-cos table"):
        convert_eat(ckpt)
    ckpt = copy.deepcopy(pretrain["checkpoint"])
    del ckpt["model"][POS]
    with pytest.raises(CheckpointError, match="missing key 'modality_encoders.IMAGE.fixed_positional_encoder"):
        convert_eat(ckpt)


# ---------------------------------------------------------------------------------- full-size layouts
def _block_keys(prefix: str, D: int, depth: int) -> Dict[str, Tuple[int, ...]]:
    shapes = {"norm1.weight": (D,), "norm1.bias": (D,), "attn.qkv.weight": (3 * D, D), "attn.qkv.bias": (3 * D,),
              "attn.proj.weight": (D, D), "attn.proj.bias": (D,), "norm2.weight": (D,), "norm2.bias": (D,),
              "mlp.fc1.weight": (4 * D, D), "mlp.fc1.bias": (4 * D,), "mlp.fc2.weight": (D, 4 * D),
              "mlp.fc2.bias": (D,)}
    return {f"{prefix}blocks.{i}.{k}": s for i in range(depth) for k, s in shapes.items()}


def fairseq_keys(D: int, depth: int, rows: int, decoder: Tuple[int, int, int] = None, prefix: str = "",
                 classes: int = 0) -> Dict[str, Any]:
    """A release-size fairseq EAT state dict on the meta device (shapes from the reference's
    checkpoint section and EAT's models/*.py)."""
    enc = {IMG + "local_encoder.proj.weight": (D, 1, 16, 16), IMG + "local_encoder.proj.bias": (D,),
           IMG + "extra_tokens": (1, 1, D), POS: (1, rows, D),
           IMG + "context_encoder.norm.weight": (D,), IMG + "context_encoder.norm.bias": (D,),
           **_block_keys("", D, depth)}
    sd = {prefix + k: s for k, s in enc.items()}
    if decoder:
        dim, layers, kernel = decoder
        for i in range(layers):
            sd[f"{IMG}decoder.blocks.{i}.0.weight"] = (dim, (D if i == 0 else dim) // 16, kernel, kernel)
            sd[f"{IMG}decoder.blocks.{i}.0.bias"] = (dim,)
        sd.update({IMG + "decoder.proj.weight": (D, dim), IMG + "decoder.proj.bias": (D,)})
    if classes:
        sd.update({"fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (classes, D), "head.bias": (classes,)})
    out: Dict[str, Any] = {k: torch.empty(s, device="meta") for k, s in sd.items()}
    if decoder:
        out["_ema"] = {k: torch.empty(s, device="meta") for k, s in enc.items()}
    return out


@pytest.mark.parametrize("D, depth, heads, rows, decoder", [
    (768, 12, 12, 6144, (768, 6, 3)),  # EAT-base, April-2024 table (max_length 768)
    (768, 12, 12, 512, (768, 6, 3)),   # EAT-base, earlier 64 x 8 table
    (1024, 24, 16, 6144, (1024, 3, 5)),  # EAT-large
])
def test_release_size_pretraining_key_sets_map(D, depth, heads, rows, decoder):
    payload = convert_eat({"cfg": None, "model": fairseq_keys(D, depth, rows, decoder)})
    cfg = payload["config"]
    assert payload["family"] == "eat" and payload["meta"]["pos_table"]["grid"] == [rows // 8, 8]
    assert (cfg["encoder"]["embed_dim"], cfg["encoder"]["depth"], cfg["encoder"]["num_heads"]) == (D, depth, heads)
    assert (cfg["decoder_dim"], cfg["decoder_depth"], cfg["decoder_kernel"], cfg["decoder_groups"]) == (*decoder, 16)
    assert cfg["average_top_k_layers"] == depth
    n_enc = 6 + 12 * depth  # conv weight and bias, cls, input norm, blocks
    assert len(payload["model"]) == 2 * n_enc + 2 * decoder[1] + 2


def test_release_size_finetuned_and_hf_key_sets_map():
    payload = convert_eat({"cfg": {"model": {"prediction_mode": "PredictionMode.CLS_TOKEN"}},
                           "model": fairseq_keys(768, 12, 6144, prefix="model.", classes=527)})
    assert payload["family"] == "encoder" and payload["meta"]["num_classes"] == 527
    assert payload["config"]["depth"] == 12 and payload["target_length"] == 1024
    for D, depth, heads, variant in ((768, 12, 12, "finetune"), (1024, 24, 16, "pretrain")):
        sd = {"model." + k.replace(IMG + "context_encoder.norm", "pre_norm").replace(IMG, ""): v
              for k, v in fairseq_keys(D, depth, 6144).items()}
        if variant == "finetune":
            sd.update({f"model.{k}": torch.empty(s, device="meta") for k, s in
                       (("fc_norm.weight", (D,)), ("fc_norm.bias", (D,)), ("head.weight", (527, D)),
                        ("head.bias", (527,)))})
        config = {"embed_dim": D, "depth": depth, "num_heads": heads, "patch_size": 16, "stride": 16, "in_chans": 1,
                  "mel_bins": 128, "max_length": 768, "num_classes": 527, "model_variant": variant,
                  "layer_norm_first": False, "norm_eps": 1e-6, "img_size": [1024, 128]}
        payload = convert_eat_hf(sd, hf_config=config)
        enc = payload["config"]
        assert (enc["embed_dim"], enc["depth"], enc["num_heads"]) == (D, depth, heads)
        assert ("head" in payload["meta"]) == (variant == "finetune")
        assert len(payload["model"]) == 6 + 12 * depth


def test_registry_entries():
    assert set(CONVERTERS) == {"eat", "eat_hf"}
