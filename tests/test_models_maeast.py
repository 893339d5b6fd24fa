"""audiossl/models/maeast.py against hand-computed targets and losses (nn.Unfold patches, an
explicit log-softmax over candidate targets), closed-form parameter counts, the masking and
layerdrop contracts, and a short training run on real speech."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from audiossl.masking.base import MaskInfo
from audiossl.models.maeast import (
    MAEAST,
    MAEAST_PRESETS,
    MAEASTConfig,
    maeast_config,
    maeast_frame_base,
    maeast_frame_tiny,
    maeast_patch_base,
    maeast_patch_tiny,
)


def spec(B: int = 2, T: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(B, 1, T, 128, generator=g, dtype=torch.float64) - 4.0


def build(preset, **kw) -> MAEAST:
    torch.manual_seed(0)
    return preset(**kw).double().eval()


def unfold_patches(x: torch.Tensor, k_time: int, k_chan: int) -> torch.Tensor:
    """MAE-AST's own tokenisation: ``nn.Unfold`` on ``(B, 1, T, F)``, transposed to (B, N, k·k)."""
    return nn.Unfold((k_time, k_chan), stride=(k_time, k_chan))(x).transpose(1, 2)


def nce_by_hand(pred: torch.Tensor, target: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """-mean_i log softmax(pred_i · target_j over j)[i] via an explicit logsumexp."""
    s = pred @ target.transpose(1, 2)
    diag = s.diagonal(dim1=1, dim2=2)
    return -(diag - torch.logsumexp(s, dim=dim)).mean()


# ---------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "preset, T, grid, masked",
    [
        # 70 frames: 4 whole 16-frame rows of 8 patches (6 remainder frames dropped, as Unfold);
        # keep max(1, int(0.25 * 32)) = 8.
        (maeast_patch_tiny, 70, (4, 8), 24),
        # 35 frame tokens; keep int(0.25 * 35) = 8.
        (maeast_frame_tiny, 71, (35, 1), 27),
    ],
)
def test_shapes_and_mask_counts(preset, T, grid, masked) -> None:
    out = build(preset)(spec(B=3, T=T), generator=0)
    assert out.grid == grid
    assert out.mask.num_masked == masked and out.mask.num_tokens == grid[0] * grid[1]
    for t in (out.pred_reconstruction, out.pred_classification, out.target):
        assert t.shape == (3, masked, 256)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)


def test_min_keep_one_on_a_short_clip() -> None:
    # 2 frame tokens: int(0.25 * 2) = 0 visible, MAE-AST keeps max(1, .) = 1.
    out = build(maeast_frame_tiny)(spec(B=2, T=4), generator=0)
    assert out.mask.num_keep == 1 and out.mask.num_masked == 1


def test_rejects_bad_input() -> None:
    model = build(maeast_patch_tiny)
    with pytest.raises(ValueError, match="at least 16 frames"):
        model(spec(T=8), generator=0)
    with pytest.raises(ValueError, match=r"\(B, 1, T, F\)"):
        model(torch.zeros(2, 2, 32, 128, dtype=torch.float64), generator=0)
    wrong = MaskInfo.from_mask(torch.zeros(2, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask covers 10 tokens"):
        model(spec(T=32), mask=wrong)


# ---------------------------------------------------------------------------------------- targets and loss
@pytest.mark.parametrize("preset, k", [(maeast_patch_tiny, (16, 16)), (maeast_frame_tiny, (2, 128))])
def test_targets_are_unfold_patches_of_the_eval_batchnorm_input(preset, k) -> None:
    model = build(preset)
    x = spec(seed=1, T=70)
    out = model(x, generator=3)
    # Fresh running stats (mean 0, var 1): BN(x) = x / sqrt(1 + eps), then x 0.5.
    xn = x[:, :, : (70 // k[0]) * k[0]] / math.sqrt(1 + 1e-5) * 0.5
    patches = unfold_patches(xn, *k)
    hidden = out.mask.mask
    expect = patches[hidden].view(x.shape[0], -1, k[0] * k[1])
    # Our ids_masked order is a permutation of upstream's ascending boolean order: compare sorted ids.
    order = out.mask.ids_masked.argsort(dim=1)
    got = torch.gather(out.target, 1, order.unsqueeze(-1).expand_as(out.target))
    torch.testing.assert_close(got, expect)


def test_train_mode_normalises_with_batch_statistics() -> None:
    model = build(maeast_patch_tiny).train()
    x = spec(B=3, seed=2, T=64)
    out = model(x, generator=4)
    mean, var = x.mean(), x.var(unbiased=False)
    xn = (x - mean) / torch.sqrt(var + 1e-5) * 0.5
    expect = out.mask.gather_masked(unfold_patches(xn, 16, 16))
    torch.testing.assert_close(out.target, expect)
    # Running statistics moved towards the batch's (momentum 0.1), so eval mode differs now.
    torch.testing.assert_close(model.batch_norm.running_mean, 0.1 * mean.reshape(1))


def test_without_batch_norm_targets_are_raw_patches() -> None:
    model = build(maeast_patch_tiny, input_batch_norm=False)
    assert model.batch_norm is None
    x = spec(seed=5)
    out = model(x, generator=1)
    torch.testing.assert_close(out.target, out.mask.gather_masked(unfold_patches(x, 16, 16)))


@pytest.mark.parametrize("preset", [maeast_patch_tiny, maeast_frame_tiny])
def test_loss_by_hand(preset) -> None:
    model = build(preset)
    out = model(spec(B=3, seed=3), generator=7)
    pr, pc, X = out.pred_reconstruction, out.pred_classification, out.target
    mse = ((pr - X) ** 2).sum() / pr.numel()
    nce = nce_by_hand(pc, X, dim=-1)
    # The losses come back in float32 (from float64 predictions here), so float32 tolerances: the
    # total is a sum of two rounded parts, 1.3e-7 off in relative terms on one CPU.
    f32 = dict(rtol=1.3e-6, atol=1e-5)
    torch.testing.assert_close(out.mse.double(), mse, **f32)
    torch.testing.assert_close(out.nce.double(), nce, **f32)
    torch.testing.assert_close(out.loss.double(), nce + 10.0 * mse, **f32)
    # The axis matters on these outputs: SSAST's code axis (over predictions) gives another value.
    assert not torch.allclose(nce, nce_by_hand(pc, X, dim=-2))
    s = pc @ X.transpose(1, 2)
    acc = (s.argmax(-1) == torch.arange(s.shape[1])).double().mean()
    torch.testing.assert_close(out.accuracy.double(), acc)


def test_loss_weights_are_configurable() -> None:
    out = build(maeast_patch_tiny, classification_weight=0.0, reconstruction_weight=1.0)(spec(), generator=0)
    torch.testing.assert_close(out.loss, out.mse)


def test_nce_of_perfect_scaled_predictions_tends_to_zero() -> None:
    """Independent check of the contrastive term: if P_c = a·X with orthogonal targets, the
    diagonal dominates and the NCE is log(1 + (M-1)·exp(-a·|x|²)) exactly."""
    model = build(maeast_patch_tiny)
    M, P = 4, 256
    X = torch.zeros(1, M, P, dtype=torch.float64)
    X[0, torch.arange(M), torch.arange(M)] = 1.0
    mask = MaskInfo.from_mask(torch.tensor([[True] * M]))
    with torch.no_grad():
        model.final_proj_classification.weight.zero_()
        model.final_proj_classification.bias.zero_()
        model.final_proj_classification.weight[:M, :M] = 3.0 * torch.eye(M)
        decoded = torch.zeros(1, M, 64, dtype=torch.float64)
        decoded[0, :, :M] = torch.eye(M)
        _, nce, *_ = model.forward_loss(decoded, X, mask)
    torch.testing.assert_close(nce.double(), torch.tensor(math.log(1 + (M - 1) * math.exp(-3.0)), dtype=torch.float64))


# ---------------------------------------------------------------------------------------- architecture
def test_encoder_never_sees_hidden_tokens() -> None:
    model = build(maeast_patch_tiny)
    x = spec(seed=4)
    out = model(x, generator=1)
    mask = out.mask
    patches, _ = model.patches(model.normalize(x))
    latent = model.forward_encoder(patches, mask)
    noisy = patches + 5.0 * mask.mask.unsqueeze(-1).double()
    torch.testing.assert_close(model.forward_encoder(noisy, mask), latent)
    assert latent.shape == (2, mask.num_keep, 64)


def test_decoder_input_is_mask_embedding_plus_sine_positions() -> None:
    model = build(maeast_frame_tiny)
    x = spec(seed=6, T=32)
    mask = model(x, generator=2).mask
    patches, _ = model.patches(model.normalize(x))
    latent = model.forward_encoder(patches, mask)
    seen = {}
    handle = model.decoder_norm_pre.register_forward_hook(lambda m, i, o: seen.setdefault("in", i[0]))
    model.forward_decoder(latent, mask)
    handle.remove()
    N, D = 16, 64
    pos = torch.arange(N, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, D, 2, dtype=torch.float64) * (-math.log(10000.0) / D))
    pe = torch.zeros(N, D, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    full = model.decoder_mask_emb.expand(2, N, D).clone()
    for b in range(2):
        full[b, mask.ids_keep[b]] = latent[b]
    torch.testing.assert_close(seen["in"], full + pe, atol=1e-6, rtol=1e-6)


def test_layer_structure_and_init() -> None:
    model = maeast_patch_tiny()
    assert len(model.encoder.blocks) == 2 and len(model.decoder_blocks) == 2
    assert all(b.post_norm for b in list(model.encoder.blocks) + list(model.decoder_blocks))
    assert isinstance(model.encoder.norm_pre, nn.LayerNorm) and isinstance(model.encoder.norm, nn.Identity)
    e = model.decoder_mask_emb.detach()
    assert e.shape == (64,) and 0.0 <= float(e.min()) and float(e.max()) <= 1.0 and float(e.mean()) > 0.3
    w = model.decoder_blocks[0].mlp.fc1.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.003  # BERT init in the decoder stack
    bn = model.batch_norm
    assert isinstance(bn, nn.BatchNorm2d) and not bn.affine and bn.num_features == 1
    assert model.encoder.patch_embed.proj.in_features == 256


def test_layerdrop_uses_the_generator_and_skips_layers() -> None:
    kw = dict(encoder={"drop": 0.0, "attn_drop": 0.0, "input_drop": 0.0}, encoder_layerdrop=0.5)
    model = build(maeast_patch_tiny, **kw).train()
    x = spec(seed=8)
    with torch.no_grad():
        losses = [float(model(x, generator=s).loss) for s in (1, 1, 2, 3, 4, 5)]
    assert losses[0] == losses[1]
    # Same seeds (so the same masks) without layerdrop: some step must differ, i.e. layers were skipped.
    model.config.encoder_layerdrop = 0.0
    with torch.no_grad():
        plain = [float(model(x, generator=s).loss) for s in (1, 2, 3, 4, 5)]
    assert plain != losses[1:]
    # Every layer dropped: the stack is just the input LayerNorm.
    tokens = torch.randn(2, 5, 64, dtype=torch.float64)
    out, _ = model.run_stack(tokens, model.encoder.norm_pre, model.encoder.blocks, 0.999999, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, model.encoder.norm_pre(tokens))


def test_same_seed_same_loss_and_mask_families() -> None:
    model = build(maeast_patch_tiny)
    x = spec(B=3, seed=2)
    a, b, c = model(x, generator=42), model(x, generator=torch.Generator().manual_seed(42)), model(x, generator=43)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.mask.mask, b.mask.mask)
    assert not torch.equal(a.mask.mask, c.mask.mask)
    # Corrected chunks: one mask per clip; faithful MAE-AST: one per batch.
    assert not torch.equal(a.mask.mask[0], a.mask.mask[1])
    faithful = build(maeast_patch_tiny, chunk_faithful=True)(x, generator=0).mask.mask
    assert torch.equal(faithful[0], faithful[1]) and torch.equal(faithful[0], faithful[2])
    batched = build(maeast_frame_tiny, mask_type="random_batched")(x, generator=0).mask.mask
    assert torch.equal(batched[0], batched[2])
    per_clip = build(maeast_frame_tiny)(x, generator=0).mask.mask
    assert not torch.equal(per_clip[0], per_clip[1])


def test_gradients_reach_mask_embedding_heads_and_projection() -> None:
    model = build(maeast_patch_tiny).train()
    model(spec(), generator=0).loss.backward()
    for p in (model.decoder_mask_emb, model.final_proj_classification.weight, model.final_proj_reconstruction.weight,
              model.encoder.patch_embed.proj.weight, model.encoder.blocks[0].attn.qkv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_extract_features_all_tokens_every_layer_with_padding() -> None:
    model = build(maeast_frame_tiny)
    x = spec(B=2, T=40, seed=9)
    feats = model.extract_features(x, lengths=torch.tensor([40, 30]))
    assert feats.x.shape == (2, 20, 64) and len(feats.hidden) == 2
    torch.testing.assert_close(feats.hidden[-1], feats.x)
    assert feats.padding_mask[1].sum() == 5 and not feats.padding_mask[0].any()
    # Features of the short clip do not depend on what sits in its padding.
    y = x.clone()
    y[1, :, 30:] = 100.0
    torch.testing.assert_close(model.extract_features(y, lengths=torch.tensor([40, 30])).x[1, :15], feats.x[1, :15])


# ---------------------------------------------------------------------------------------- presets
def _post_ln_block(D: int, ffn: int) -> int:
    return 4 * (D * D + D) + (D * ffn + ffn) + (ffn * D + D) + 2 * 2 * D


@pytest.mark.parametrize("preset", [maeast_patch_base, maeast_frame_base])
def test_base_parameter_count_closed_form(preset) -> None:
    D, ffn, P = 768, 3072, 256  # 16x16 and 2x128 tokens both flatten to 256 values
    encoder = (P * D + D) + 2 * D + 12 * _post_ln_block(D, ffn)  # post_extract_proj, input LN, layers
    decoder = D + 2 * D + 2 * _post_ln_block(D, ffn)  # decoder_mask_emb, input LN, layers
    heads = 2 * (D * P + P)
    with torch.device("meta"):
        model = preset()
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder + heads == 99_825_152
    # BatchNorm(affine=False) holds only buffers, no parameters.
    assert [n for n, _ in model.batch_norm.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]


def test_preset_fields() -> None:
    expect = {
        "maeast_patch_base": (768, 12, 12, (16, 16), "chunk"),
        "maeast_frame_base": (768, 12, 12, (2, 128), "random"),
        "maeast_patch_tiny": (64, 2, 4, (16, 16), "chunk"),
        "maeast_frame_tiny": (64, 2, 4, (2, 128), "random"),
    }
    assert set(MAEAST_PRESETS) == set(expect)
    for name, (D, depth, heads, patch, mask_type) in expect.items():
        cfg = maeast_config(name)
        e = cfg.encoder
        assert (e.embed_dim, e.depth, e.num_heads, e.patch_size, cfg.mask_type) == (D, depth, heads, patch, mask_type)
        assert cfg.decoder_depth == 2 and cfg.mask_ratio == 0.75
        assert (cfg.classification_weight, cfg.reconstruction_weight) == (1.0, 10.0)
        assert (e.drop, e.attn_drop, e.act_drop, e.input_drop, e.norm_eps) == (0.1, 0.1, 0.0, 0.1, 1e-5)
        assert (cfg.encoder_layerdrop, cfg.decoder_layerdrop) == (0.05, 0.0)
        assert e.tokenizer == "linear_patch" and e.pos_embed == "sincos_1d" and e.post_norm and e.input_norm


def test_config_round_trip_and_validation() -> None:
    cfg = maeast_config("maeast_patch_tiny", decoder_depth=1, encoder={"depth": 1}, chunk_sizes=(4,))
    assert cfg.decoder_depth == 1 and cfg.encoder.depth == 1
    again = MAEASTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown MAEASTConfig fields"):
        MAEASTConfig.from_dict({"decoder_width": 3})
    with pytest.raises(ValueError, match="linear_patch"):
        maeast_config("maeast_patch_tiny", encoder={"tokenizer": "patch"})
    with pytest.raises(ValueError, match="mask_type"):
        maeast_config("maeast_patch_tiny", mask_type="spans")
    with pytest.raises(ValueError, match="mask_ratio"):
        maeast_config("maeast_frame_tiny", mask_ratio=1.0)
    with pytest.raises(ValueError, match="unknown MAE-AST preset"):
        maeast_config("maeast_huge")


# ---------------------------------------------------------------------------------------- training
def test_tiny_maeast_learns_on_speech(speech_fbank_batch) -> None:
    batch = speech_fbank_batch(64, (0, 96), preset="mae_ast", norm=None)
    assert batch.shape == (4, 1, 64, 128)

    torch.manual_seed(0)
    model = maeast_patch_tiny()
    model.train()
    eval_mask = model(batch, generator=1000).mask

    def held_out() -> float:
        # Train-mode BatchNorm statistics but no dropout/layerdrop: a fixed function of the batch.
        was = {m: m.training for m in model.modules()}
        for m in model.modules():
            m.training = isinstance(m, nn.BatchNorm2d)
        with torch.no_grad():
            loss = model(batch, mask=eval_mask).loss.item()
        for m, t in was.items():
            m.training = t
        return loss

    before = held_out()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        model(batch, generator=gen).loss.backward()
        opt.step()
    after = held_out()
    assert after < 0.85 * before, (before, after)  # measured 14.41 -> 5.15
