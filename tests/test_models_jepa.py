"""I-JEPA / H-JEPA objective: targets and loss against hand computations, EMA schedule and update,
presets, parameter counts and a short training run on real speech."""

from __future__ import annotations

import copy

import pytest
import torch

from audiossl.masking.hierarchical import HierarchicalMasks
from audiossl.masking.multiblock import MultiBlockMasks
from audiossl.models.jepa import (
    JEPA,
    JEPAConfig,
    ijepa_audio_tiny,
    ijepa_tiny,
    ijepa_vit_base,
    ijepa_vit_huge,
    jepa_config,
)

HIER = dict(num_levels=2, scale_min=0.1, scale_max=0.2, aspect_units="grid", min_keep=4)


def spec(B: int = 2, T: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 1, T, 128, generator=torch.Generator().manual_seed(seed))


def build(preset, **kw) -> JEPA:
    torch.manual_seed(0)
    return preset(**kw)


def _layer_norm_by_hand(h: torch.Tensor) -> torch.Tensor:
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)
    return (h - mean) / torch.sqrt(var + 1e-5)


def _smooth_l1_by_hand(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs()
    return torch.where(d < 1.0, 0.5 * d * d, d - 0.5).mean()


# ---------------------------------------------------------------------------------------- forward
def test_targets_and_loss_match_hand_computation() -> None:
    model = build(ijepa_audio_tiny)
    x = spec()
    out = model(x, generator=3)
    masks = out.masks
    assert isinstance(masks, MultiBlockMasks) and out.grid == (8, 8)
    npred, B, Kt = masks.target_ids.shape
    with torch.no_grad():
        h = _layer_norm_by_hand(model.target_encoder(x).x)
    # Block-major rows: row i*B + b is target block i of clip b.
    expect = torch.stack([h[b, masks.target_ids[i, b]] for i in range(npred) for b in range(B)])
    torch.testing.assert_close(out.targets[0], expect, rtol=1e-4, atol=1e-4)
    assert out.predictions[0].shape == (npred * B, Kt, 64)
    torch.testing.assert_close(out.loss, _smooth_l1_by_hand(out.predictions[0], expect), rtol=1e-5, atol=1e-6)
    assert not out.targets[0].requires_grad and out.loss.requires_grad


def test_context_encoder_sees_only_context_tokens() -> None:
    model = build(ijepa_audio_tiny)
    x = spec()
    out = model(x, generator=5)
    ctx = out.masks.context
    # Changing the input under hidden (non-context) patches leaves the prediction unchanged.
    y = x.clone()
    hidden = ctx.mask[0].view(8, 8)
    t, f = torch.nonzero(hidden)[0].tolist()
    y[0, 0, t * 16 : (t + 1) * 16, f * 16 : (f + 1) * 16] += 10.0
    with torch.no_grad():
        z_x = model.forward_context(x, ctx)
        z_y = model.forward_context(y, ctx)
    torch.testing.assert_close(z_x, z_y)
    assert z_x.shape == (2, ctx.num_keep, 64)
    # The context never contains target tokens.
    for i in range(out.masks.target_ids.shape[0]):
        assert not (ctx.mask.gather(1, out.masks.target_ids[i]) == False).any()  # noqa: E712


def test_predictor_positions_decide_predictions() -> None:
    model = build(ijepa_audio_tiny)
    z = torch.randn(1, 10, 64)
    ctx_ids = torch.arange(10).view(1, 10)
    a = model.predictor(z, ctx_ids, torch.tensor([[[20, 21]]]), (8, 8))
    b = model.predictor(z, ctx_ids, torch.tensor([[[21, 20]]]), (8, 8))
    # Permuting the target positions permutes the predictions (no other order dependence).
    torch.testing.assert_close(a[:, [1, 0]], b, rtol=1e-5, atol=1e-6)


def test_same_seed_same_loss_and_no_global_rng() -> None:
    model = build(ijepa_audio_tiny)
    x = spec()
    torch.manual_seed(1)
    l1 = model(x, generator=11).loss
    torch.manual_seed(2)
    l2 = model(x, generator=11).loss
    assert l1.item() == l2.item()
    assert model(x, generator=12).loss.item() != l1.item()


def test_image_preset_forward() -> None:
    model = build(ijepa_tiny)
    out = model(torch.randn(2, 3, 64, 64), generator=0)
    assert out.grid == (8, 8) and out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_hierarchical_levels_average() -> None:
    model = build(ijepa_audio_tiny, hierarchical=HIER)
    assert model.predictor.level_embed.shape == (2, 32)
    x = spec()
    out = model(x, generator=4)
    assert isinstance(out.masks, HierarchicalMasks) and len(out.level_losses) == 2
    with torch.no_grad():
        h = _layer_norm_by_hand(model.target_encoder(x).x)
    hand = []
    for level, mb in enumerate(out.masks.levels):
        ids = mb.target_ids
        expect = torch.stack([h[b, ids[i, b]] for i in range(ids.shape[0]) for b in range(ids.shape[1])])
        torch.testing.assert_close(out.targets[level], expect, rtol=1e-4, atol=1e-4)
        hand.append(_smooth_l1_by_hand(out.predictions[level], expect))
    torch.testing.assert_close(out.loss, (hand[0] + hand[1]) / 2, rtol=1e-5, atol=1e-6)
    # Level 1 has larger targets than level 0.
    assert out.masks.levels[1].target_ids.shape[-1] > out.masks.levels[0].target_ids.shape[-1]
    # The level embedding changes what the shared predictor outputs.
    mb = out.masks.levels[0]
    with torch.no_grad():
        z = model.forward_context(x, mb.context)
        p0 = model.forward_predictor(z, mb.context, mb.target_ids, out.grid, level=0)
        p1 = model.forward_predictor(z, mb.context, mb.target_ids, out.grid, level=1)
    assert not torch.allclose(p0, p1)


# ---------------------------------------------------------------------------------------- teacher
def test_ema_schedule_and_update() -> None:
    model = build(ijepa_audio_tiny)
    assert model.momentum(0, 100) == pytest.approx(0.996)
    assert model.momentum(50, 100) == pytest.approx(0.998)
    assert model.momentum(100, 100) == pytest.approx(1.0)
    assert model.momentum(150, 100) == pytest.approx(1.0)
    teacher0 = copy.deepcopy(model.target_encoder.state_dict())
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    m = model.update_teacher(25, 100)
    assert m == pytest.approx(0.997)
    student = model.encoder.state_dict()
    for name, t in model.target_encoder.state_dict().items():
        torch.testing.assert_close(t, 0.997 * teacher0[name] + 0.003 * student[name])
    # At the end of training the teacher is frozen.
    before = copy.deepcopy(model.target_encoder.state_dict())
    model.update_teacher(100, 100)
    for name, t in model.target_encoder.state_dict().items():
        torch.testing.assert_close(t, before[name], rtol=0, atol=0)


def test_target_encoder_frozen_and_eval() -> None:
    model = build(ijepa_audio_tiny, encoder={"drop_path": 0.2})
    model.train()
    assert model.encoder.training and not model.target_encoder.training
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.predictor.parameters()}
    model(spec(), generator=0).loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.predictor.mask_token.grad is not None and model.encoder.blocks[0].attn.qkv.weight.grad is not None


# ---------------------------------------------------------------------------------------- config
def test_config_round_trip_and_errors() -> None:
    c = jepa_config("ijepa_audio_tiny", hierarchical=HIER)
    d = c.to_dict()
    assert JEPAConfig.from_dict(d).to_dict() == d
    with pytest.raises(ValueError, match="unknown JEPAConfig"):
        JEPAConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="prefix"):
        jepa_config("ijepa_tiny", encoder={"num_prefix_tokens": 1})
    with pytest.raises(ValueError, match="masker"):
        jepa_config("ijepa_tiny", masker="nope")
    with pytest.raises(TypeError):
        jepa_config("ijepa_tiny", hierarchical={"levels": 3})


def test_preset_sizes() -> None:
    expect = {
        "ijepa_vit_base": (768, 12, 12, (16, 16), 384, 12, 12),
        "ijepa_vit_huge": (1280, 32, 16, (14, 14), 384, 12, 16),
    }
    for name, want in expect.items():
        c = jepa_config(name)
        e = c.encoder
        assert (e.embed_dim, e.depth, e.num_heads, e.patch_size, c.pred_dim, c.pred_depth, c.heads) == want
        assert (e.num_prefix_tokens, e.final_norm, e.post_norm, c.ema_start, c.ema_end) == (0, True, False, 0.996, 1.0)


def _vit_block(d: int) -> int:
    return 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)


@pytest.mark.parametrize("preset, D, depth, heads, p, P", [
    (ijepa_vit_base, 768, 12, 12, 16, 384), (ijepa_vit_huge, 1280, 32, 16, 14, 384),
])
def test_parameter_count_closed_form(preset, D, depth, heads, p, P) -> None:
    encoder = (D * 3 * p * p + D) + depth * _vit_block(D) + 2 * D
    predictor = (D * P + P) + P + 12 * _vit_block(P) + 2 * P + (P * D + D)
    with torch.device("meta"):
        model = preset()
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder
    assert sum(p.numel() for p in model.predictor.parameters()) == predictor
    assert sum(p.numel() for p in model.trainable_parameters()) == encoder + predictor
    assert sum(p.numel() for p in model.parameters()) == 2 * encoder + predictor
    if D == 1280:
        assert encoder == 630_434_560  # the paper's "ViT-H/14, 632M" rounds the same encoder


# ---------------------------------------------------------------------------------------- training
def test_tiny_audio_jepa_learns_on_speech(speech_fbank_batch) -> None:
    batch = speech_fbank_batch(128, (0, 64))
    assert batch.shape == (4, 1, 128, 128)

    model = build(ijepa_audio_tiny)
    eval_masks = model.sample_masks(4, (8, 8), generator=1000)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(batch, masks=eval_masks).loss.item()

    def teacher_spread() -> float:
        # Std over all tokens of the raw teacher features: collapse would drive it to 0.
        with torch.no_grad():
            return model.target_encoder(batch).tokens.flatten(0, 1).std(0).mean().item()

    before, spread = held_out_loss(), teacher_spread()
    model.train()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    steps = 30
    for step in range(steps):
        opt.zero_grad()
        model(batch, generator=gen).loss.backward()
        opt.step()
        model.update_teacher(step + 1, steps)
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)  # measured 0.426 -> 0.275
    assert teacher_spread() > 0.8 * spread  # the loss fell by learning, not by collapse
