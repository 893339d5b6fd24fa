"""audiossl/models/mae.py against hand-computed losses, a manual decoder input, closed-form
parameter counts and a short training run on real speech."""

from __future__ import annotations

import json
import math

import pytest
import torch

from audiossl.masking.base import MaskInfo
from audiossl.models.encoder import family_config
from audiossl.models.mae import (
    MAE,
    MAE_PRESETS,
    MAEConfig,
    audiomae_base_local,
    audiomae_tiny,
    mae_config,
    mae_tiny,
    mae_vit_base,
)
from audiossl.nn.blocks import Block
from audiossl.nn.pos_embed import sincos_2d
from audiossl.nn.swin import SwinBlock


def image(B: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def spec(B: int = 2, T: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 1, T, 128, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def build(preset, **kw) -> MAE:
    torch.manual_seed(0)
    return preset(**kw).double().eval()


def patches_by_hand(x: torch.Tensor, p: int) -> torch.Tensor:
    """MAE's own patchify: ``einsum('nchpwq->nhwpqc')`` — row-in-patch, col-in-patch, channel."""
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(B, h * w, p * p * C)


# ---------------------------------------------------------------------------------------- shapes
def test_image_shapes() -> None:
    model = build(mae_tiny)
    out = model(image(), generator=0)
    assert out.pred.shape == (2, 16, 8 * 8 * 3)
    assert out.grid == (4, 4) and out.patch_size == (8, 8)
    assert out.mask.num_keep == int(16 * (1 - 0.75)) == 4
    assert out.mask.mask.sum(1).tolist() == [12, 12]
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)


def test_audio_shapes_and_audiomae_keep_count() -> None:
    model = build(audiomae_tiny)
    out = model(spec(T=1024), generator=0)
    # AudioMAE: 64 x 8 time-major grid, ratio 0.8 keeps int(512 * 0.2) = 102 tokens.
    assert out.grid == (64, 8)
    assert out.pred.shape == (2, 512, 256)
    assert out.mask.num_keep == 102
    assert model.forward_encoder(spec(T=1024), out.mask).shape == (2, 1 + 102, 64)
    # (B, T, F) is accepted for one-channel audio.
    assert model(spec(T=64)[:, 0], generator=0).pred.shape == (2, 32, 256)


def test_rejects_input_off_the_patch_grid() -> None:
    with pytest.raises(ValueError, match="multiples of the patch"):
        build(audiomae_tiny)(spec(T=70), generator=0)


# ---------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_masked_mse_by_hand(norm_pix: bool) -> None:
    model = build(mae_tiny, norm_pix_loss=norm_pix)
    x = image(seed=3)
    out = model(x, generator=5)
    target = patches_by_hand(x, 8)
    if norm_pix:
        n = target.shape[-1]
        mu = target.sum(-1, keepdim=True) / n
        var = ((target - mu) ** 2).sum(-1, keepdim=True) / (n - 1)  # unbiased
        target = (target - mu) / torch.sqrt(var + 1e-6)
    total, count = 0.0, 0
    for b in range(x.shape[0]):
        for n in range(target.shape[1]):
            if out.mask.mask[b, n]:
                total += float(((out.pred[b, n] - target[b, n]) ** 2).mean().detach())
                count += 1
    assert count == 2 * 12
    assert out.loss.item() == pytest.approx(total / count, rel=1e-12)


def test_norm_pix_uses_unbiased_variance() -> None:
    """A biased variance would change the loss: guard the n-1 explicitly on a tiny patch."""
    model = build(mae_tiny, norm_pix_loss=True)
    x = image(B=1)
    t = model.target(x)
    n = t.shape[-1]
    assert t.var(-1, unbiased=True).mean().item() == pytest.approx(1.0, abs=1e-4)
    assert t.pow(2).sum(-1).mean().item() == pytest.approx(n - 1, rel=1e-4)


def test_loss_ignores_visible_patches() -> None:
    model = build(audiomae_tiny, norm_pix_loss=False)
    x = spec(seed=1)
    mask = model(x, generator=2).mask
    out = model(x, mask=mask)
    # Moving a visible patch's target changes the encoder input, so instead perturb pred directly.
    pred = out.pred.clone()
    pred = torch.where(mask.mask.unsqueeze(-1), pred, pred + 100.0)
    assert model.forward_loss(x, pred, mask).item() == pytest.approx(out.loss.item(), rel=1e-12)
    pred = torch.where(mask.mask.unsqueeze(-1), out.pred + 1.0, out.pred)
    assert model.forward_loss(x, pred, mask).item() != pytest.approx(out.loss.item(), rel=1e-3)


# ---------------------------------------------------------------------------------------- encoder / decoder
def test_encoder_never_sees_hidden_patches() -> None:
    model = build(audiomae_tiny)
    x = spec(seed=4)
    mask = model(x, generator=1).mask
    hidden_pixels = mask.mask.reshape(2, 4, 8).repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1)
    y = torch.where(hidden_pixels, torch.full_like(x, 123.0), x)
    torch.testing.assert_close(model.forward_encoder(y, mask), model.forward_encoder(x, mask), rtol=0, atol=0)


@pytest.mark.parametrize("preset, x, swap", [(mae_tiny, image(seed=7), False), (audiomae_tiny, spec(seed=7), True)])
def test_decoder_input_matches_manual_restore(preset, x, swap) -> None:
    model = build(preset)
    out = model(x, generator=11)
    mask, (gh, gw) = out.mask, out.grid
    seen = {}
    model.decoder_blocks[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    model(x, mask=mask)

    latent = model.decoder_embed(model.forward_encoder(x, mask))
    B, N, Dd = latent.shape[0], gh * gw, latent.shape[-1]
    full = model.mask_token.detach().expand(B, N, Dd).clone()
    for b in range(B):
        for j, n in enumerate(mask.ids_keep[b].tolist()):
            full[b, n] = latent[b, 1 + j]
    pos = sincos_2d(Dd, (gw, gh) if swap else (gh, gw), cls_token=True).double()
    expected = torch.cat([latent[:, :1], full], 1) + pos
    torch.testing.assert_close(seen["x"], expected, rtol=1e-12, atol=1e-12)
    # Hidden places hold exactly mask_token + position; visible ones never do.
    tok = seen["x"][:, 1:] - pos[1:]
    is_mask_token = (tok - model.mask_token).abs().amax(-1) < 1e-12
    assert torch.equal(is_mask_token, mask.mask)
    assert torch.equal(pos[0], torch.zeros(Dd, dtype=pos.dtype))


def test_explicit_mask_is_used() -> None:
    model = build(audiomae_tiny)
    m = torch.zeros(2, 32, dtype=torch.bool)
    m[:, ::2] = True
    info = MaskInfo.from_mask(m)
    out = model(spec(), mask=info)
    assert out.mask is info
    assert model(spec(), generator=0, mask_ratio=0.5).mask.num_keep == 16


def test_gradients_reach_mask_token_and_decoder_tables_are_fixed() -> None:
    model = build(audiomae_tiny).train()
    model(spec(), generator=0).loss.backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert model.encoder.cls_token.grad is not None
    names = {n for n, _ in model.named_parameters()}
    assert not any("pos_embed" in n for n in names)
    assert {"decoder_embed.weight", "mask_token", "decoder_blocks.1.attn.qkv.weight", "decoder_norm.weight",
            "decoder_pred.weight", "encoder.patch_embed.proj.weight", "encoder.norm.weight"} <= names


def test_decoder_init_is_mae() -> None:
    model = mae_tiny()
    w = model.decoder_blocks[0].mlp.fc1.weight
    bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))  # Xavier-uniform bound
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert model.decoder_pred.bias.abs().sum() == 0
    assert 0.005 < model.mask_token.std().item() < 0.05


# ---------------------------------------------------------------------------------------- sizes
def _vit_block(d: int, mlp: int = 4) -> int:
    # 2 LayerNorms, fused qkv, proj, fc1, fc2 (all with bias).
    return 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp * d + mlp * d) + (mlp * d * d + d)


def test_mae_vit_base_parameter_count_matches_official() -> None:
    D, Dd, p, C, L = 768, 512, 16, 3, 196
    encoder = (D * C * p * p + D) + D + 12 * _vit_block(D) + 2 * D  # patch conv, cls, blocks, norm
    decoder = (D * Dd + Dd) + Dd + 8 * _vit_block(Dd) + 2 * Dd + (Dd * p * p * C + p * p * C)
    fixed_tables = (1 + L) * D + (1 + L) * Dd  # official pos_embed / decoder_pos_embed (frozen)
    assert encoder + decoder + fixed_tables == 111_907_840  # official mae_vit_base_patch16
    with torch.device("meta"):
        model = mae_vit_base()
    counted = sum(p.numel() for p in model.parameters())
    # Our fixed sin-cos tables are rebuilt per grid, not stored: the count is the trainable ones.
    assert counted == encoder + decoder == 111_907_840 - 151_296 - 100_864
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder


def test_preset_sizes() -> None:
    expect = {
        "mae_vit_base": (768, 12, 12, (16, 16), 3, 512, 8, 16, 0.75, False),
        "mae_vit_large": (1024, 24, 16, (16, 16), 3, 512, 8, 16, 0.75, False),
        "mae_vit_huge": (1280, 32, 16, (14, 14), 3, 512, 8, 16, 0.75, False),
        "audiomae_base": (768, 12, 12, (16, 16), 1, 512, 8, 16, 0.8, True),
    }
    for name, want in expect.items():
        c = mae_config(name)
        e = c.encoder
        got = (e.embed_dim, e.depth, e.num_heads, e.patch_size, e.in_chans, c.decoder_dim, c.decoder_depth,
               c.decoder_heads, c.mask_ratio, c.norm_pix_loss)
        assert got == want, name
        assert e.final_norm and not e.post_norm and e.init == "xavier" and e.norm_eps == 1e-6
    assert mae_config("audiomae_base").encoder.sincos_swap_axes
    assert set(MAE_PRESETS) >= {"mae_tiny", "audiomae_tiny"}


def test_config_round_trip_and_validation() -> None:
    cfg = mae_config("audiomae_tiny", decoder_depth=3, encoder={"depth": 1})
    assert cfg.decoder_depth == 3 and cfg.encoder.depth == 1
    again = MAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown MAEConfig"):
        MAEConfig.from_dict({"decoder_width": 3})
    with pytest.raises(ValueError, match="divisible"):
        MAEConfig(decoder_dim=30, decoder_heads=4)
    with pytest.raises(ValueError, match="patch_stride"):
        MAEConfig(family_config("mae", patch_stride=(10, 10)))
    with pytest.raises(ValueError, match="unknown MAE preset"):
        mae_config("mae_vit_giant")


# ---------------------------------------------------------------------------------------- local decoder
def local_tiny(**kw) -> MAE:
    return build(audiomae_tiny, decoder_mode="local", **kw)


def test_local_decoder_is_opt_in() -> None:
    assert MAEConfig().decoder_mode == "global"
    for name in MAE_PRESETS:
        assert (mae_config(name).decoder_mode == "local") == (name == "audiomae_base_local"), name
    assert all(type(b) is Block for b in audiomae_tiny().decoder_blocks)


def test_audiomae_base_local_is_the_released_architecture() -> None:
    c = mae_config("audiomae_base_local")
    assert c.to_dict() == {**mae_config("audiomae_base").to_dict(), "decoder_depth": 16, "decoder_mode": "local",
                           "decoder_window": [4, 4], "decoder_shift": [2, 0]}
    D, Dd, p, H, meta = 768, 512, 16, 16, 384
    swin = _vit_block(Dd) + H + (2 * meta + meta) + (meta * H + H)  # + tau, meta_mlp.fc1, meta_mlp.fc2
    encoder = (D * p * p + D) + D + 12 * _vit_block(D) + 2 * D
    decoder = (D * Dd + Dd) + Dd + 16 * swin + 2 * Dd + (Dd * p * p + p * p)
    fixed_tables = 513 * D + 513 * Dd
    # facebookresearch/AudioMAE mae_vit_base_patch16(decoder_mode=1, img_size=(1024, 128)), counted upstream
    assert encoder + decoder + fixed_tables == 136_992_768
    with torch.device("meta"):
        model = audiomae_base_local()
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder
    assert all(isinstance(b, SwinBlock) for b in model.decoder_blocks)
    assert [b.shift for b in model.decoder_blocks] == [(0, 0), (2, 0)] * 8
    assert {b.attn.num_heads for b in model.decoder_blocks} == {16}
    assert model.decoder_blocks[0].layout((64, 8)) == ((4, 4), (0, 0))
    assert model.decoder_blocks[1].layout((64, 8)) == ((4, 4), (2, 0))


def test_local_decoder_shapes_any_length_and_init() -> None:
    model = local_tiny()
    assert model(spec(T=1024), generator=0).pred.shape == (2, 512, 256)
    assert model(spec(T=64), generator=0).pred.shape == (2, 32, 256)  # one window of rows: no shift
    assert model(spec(T=80), generator=0).pred.shape == (2, 40, 256)  # 5 rows, padded to 8 inside
    blk = audiomae_tiny(decoder_mode="local").decoder_blocks[1]
    assert torch.equal(blk.attn.tau, torch.ones(4))
    w = blk.attn.meta_mlp.fc1.weight
    assert w.abs().max() <= math.sqrt(6.0 / (w.shape[0] + w.shape[1]))  # Xavier, as upstream's self.apply
    assert blk.attn.meta_mlp.fc2.bias.abs().sum() == 0


def test_local_decoder_pads_by_repeating_the_last_row() -> None:
    """5 token rows run as 8 with rows 5..7 copies of row 4 (upstream's 101 -> 102 rule), then cropped."""
    model = local_tiny()
    x = torch.randn(2, 5 * 8, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = x.view(2, 5, 8, 32)
    padded = torch.cat([grid, grid[:, 4:5].expand(-1, 3, -1, -1)], dim=1).reshape(2, 64, 32)
    want = model.forward_local_decoder(padded, (8, 8)).view(2, 8, 8, -1)[:, :5].reshape(2, 40, -1)
    torch.testing.assert_close(model.forward_local_decoder(x, (5, 8)), want, rtol=0, atol=1e-12)


def test_local_decoder_drops_the_prefix_and_trains() -> None:
    model = local_tiny().train()
    x = spec(seed=5, T=128)
    mask = model(x, generator=3).mask
    # The cls token does not reach the local decoder: changing its decoder input changes nothing.
    latent = model.forward_encoder(x, mask)
    other = latent.clone()
    other[:, 0] += 5.0
    model.eval()
    torch.testing.assert_close(model.forward_decoder(other, mask, (8, 8)), model.forward_decoder(latent, mask, (8, 8)),
                               rtol=0, atol=0)
    model.train()
    model(x, mask=mask).loss.backward()
    for p in (model.mask_token, model.decoder_blocks[1].attn.tau, model.decoder_blocks[1].attn.meta_mlp.fc1.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_local_config_round_trip_and_validation() -> None:
    cfg = mae_config("audiomae_tiny", decoder_mode="local", decoder_shift=(0, 0))
    again = MAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.decoder_window == (4, 4) and again.decoder_shift == (0, 0)
    with pytest.raises(ValueError, match="decoder_mode"):
        MAEConfig(decoder_mode="swin")
    with pytest.raises(ValueError, match="decoder_shift"):
        MAEConfig(decoder_mode="local", decoder_window=(4, 4), decoder_shift=(4, 0))


# ---------------------------------------------------------------------------------------- randomness
def test_same_seed_same_loss() -> None:
    model = build(audiomae_tiny)
    x = spec(seed=2)
    a, b, c = model(x, generator=42), model(x, generator=torch.Generator().manual_seed(42)), model(x, generator=43)
    assert torch.equal(a.mask.mask, b.mask.mask) and a.loss.item() == b.loss.item()
    assert not torch.equal(a.mask.mask, c.mask.mask)
    state = torch.get_rng_state()
    model(x, generator=1)
    assert torch.equal(state, torch.get_rng_state())  # no global RNG draw


# ---------------------------------------------------------------------------------------- training
def test_tiny_audio_mae_learns_on_speech(speech_fbank_batch) -> None:
    batch = speech_fbank_batch(64, (0, 96))
    assert batch.shape == (4, 1, 64, 128)

    torch.manual_seed(0)
    model = audiomae_tiny()
    eval_mask = model(batch, generator=1000).mask

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(batch, mask=eval_mask).loss.item()

    before = held_out_loss()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        model(batch, generator=gen).loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.85 * before, (before, after)  # measured 1.233 -> 0.933
