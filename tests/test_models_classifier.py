"""Classifier heads, construction from every kind of checkpoint, and the random-init baseline."""

from __future__ import annotations

import pytest
import torch

from audiossl.checkpoint import CheckpointError, native_payload
from audiossl.models.classifier import Classifier, ClassifierConfig, split_head_kind
from audiossl.models.downstream import classifier_from_checkpoint, classifier_from_preset
from audiossl.models.registry import build_config, build_model


def _x(b: int = 2, t: int = 64) -> torch.Tensor:
    return torch.randn(b, 1, t, 128, generator=torch.Generator().manual_seed(0))


def test_split_head_kind_names_the_importers_kinds():
    assert split_head_kind("cls_ln_linear") == ("cls", "ln_linear")
    assert split_head_kind("mean_ln_linear") == ("mean", "ln_linear")
    assert split_head_kind("cls_linear") == ("cls", "linear")
    assert split_head_kind("cls_dist_mean_ln_linear") == ("cls_dist_mean", "ln_linear")
    with pytest.raises(ValueError):
        split_head_kind("linsoftmax_linear")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_matches_the_formula(pooling):
    model = classifier_from_preset("eat_tiny", 5, pooling=pooling).eval()
    x = _x()
    with torch.no_grad():
        out = model.encoder(x).x
        z = out[:, 0] if pooling == "cls" else out[:, 1:].mean(1)
        want = model.head(model.fc_norm(z))
        assert torch.allclose(model(x), want, atol=1e-6)


def test_cls_dist_mean_pooling_on_ssast_encoder():
    enc = build_config("ssast_tiny_patch").encoder
    enc = type(enc).from_dict({**enc.to_dict(), "depth": 1})
    model = Classifier(ClassifierConfig(enc, 3, "cls_dist_mean", "ln_linear", 1e-5)).eval()
    x = _x(2, 1024)
    with torch.no_grad():
        out = model.encoder(x).x
        assert torch.allclose(model(x), model.head(model.fc_norm((out[:, 0] + out[:, 1]) / 2)), atol=1e-6)
    with pytest.raises(ValueError, match="cls and dist"):
        ClassifierConfig(build_config("eat_tiny").encoder, 3, "cls_dist_mean")


def test_config_round_trip_and_random_init_seed():
    a = classifier_from_preset("eat_tiny", 4, seed=3)
    b = classifier_from_preset("eat_tiny", 4, seed=3)
    c = classifier_from_preset("eat_tiny", 4, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.encoder.blocks[0].attn.qkv.weight, c.encoder.blocks[0].attn.qkv.weight)
    cfg = ClassifierConfig.from_dict(a.config.to_dict())
    assert cfg.to_dict() == a.config.to_dict() and cfg.head_kind == "cls_ln_linear"


def test_from_pretraining_objective_uses_its_encoder():
    objective = build_model("eat_tiny")
    ckpt = native_payload(objective, family="eat", meta={"preset": "eat_tiny"})
    model = classifier_from_checkpoint(ckpt, num_classes=7)
    assert model.config.source == "eat_tiny" and model.config.num_classes == 7
    assert torch.equal(model.encoder.blocks[1].mlp.fc1.weight, objective.encoder.blocks[1].mlp.fc1.weight)
    with pytest.raises(CheckpointError, match="num_classes"):
        classifier_from_checkpoint(ckpt)


def test_audiomae_global_pool_strips_final_norm_and_keeps_weights():
    objective = build_model("audiomae_tiny")
    ckpt = native_payload(objective, family="mae", meta={"preset": "audiomae_tiny"})
    model = classifier_from_checkpoint(ckpt, num_classes=3, pooling="mean", strip_final_norm=True).eval()
    assert model.encoder.config.final_norm is False and isinstance(model.encoder.norm, torch.nn.Identity)
    x = _x()
    with torch.no_grad():
        ref = objective.encoder.forward_blocks(*objective.encoder.prepend_prefix(objective.encoder.tokenize(x).tokens))
        # forward_blocks applies the final norm; the stripped encoder's output is its input.
        raw = model.encoder(x).x
        assert torch.allclose(objective.encoder.norm(raw), ref.x, atol=1e-5)


def test_imported_head_in_meta_is_loaded_and_classifier_round_trips():
    src = classifier_from_preset("eat_tiny", 3).eval()
    enc_ckpt = native_payload(src.encoder, family="encoder", meta={
        "source": "eat", "head_kind": "cls_ln_linear", "num_classes": 3, "head_norm_eps": 1e-6,
        "head": {"fc_norm.weight": src.fc_norm.weight.detach() * 2, "fc_norm.bias": src.fc_norm.bias.detach(),
                 "head.weight": src.head.weight.detach(), "head.bias": src.head.bias.detach() + 1}})
    model = classifier_from_checkpoint(enc_ckpt).eval()
    assert model.config.head_kind == "cls_ln_linear"
    assert torch.equal(model.head.bias, src.head.bias + 1)
    assert torch.equal(model.fc_norm.weight, src.fc_norm.weight * 2)
    # A different class count replaces the stored head.
    assert classifier_from_checkpoint(enc_ckpt, num_classes=5).head.out_features == 5
    # Family "classifier" rebuilds exactly.
    saved = native_payload(model, family="classifier")
    again = classifier_from_checkpoint(saved).eval()
    x = _x()
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_bad_stored_head_is_a_checkpoint_error():
    src = classifier_from_preset("eat_tiny", 3)
    ckpt = native_payload(src.encoder, family="encoder", meta={
        "head_kind": "cls_ln_linear", "num_classes": 3, "head": {"head.weight": src.head.weight.detach()}})
    with pytest.raises(CheckpointError, match="missing keys"):
        classifier_from_checkpoint(ckpt)


def test_bn_linear_head_standardises_then_batchnorm():
    model = classifier_from_preset("eat_tiny", 2, head="bn_linear").eval()
    model.feature_mean.fill_(1.0)
    model.feature_std.fill_(2.0)
    z = torch.randn(4, model.embed_dim)
    want = model.head(model.bn((z - 1.0) / 2.0))
    assert torch.allclose(model.forward_head(z), want)
    assert not any(p.requires_grad for p in model.bn.parameters())  # affine=False: no parameters


def test_learned_positions_are_regridded():
    enc = build_config("ssast_tiny_patch").encoder
    enc = type(enc).from_dict({**enc.to_dict(), "depth": 1})
    model = Classifier(ClassifierConfig(enc, 2, "mean"))
    model.fit_grid(512)
    assert tuple(model.config.encoder.pos_grid) == (32, 8)
    assert model(_x(1, 512)).shape == (1, 2)
