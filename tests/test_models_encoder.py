"""audiossl/models/encoder.py against hand-built forward passes and closed-form counts."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from audiossl.masking.base import MaskInfo
from audiossl.models.encoder import Encoder, EncoderConfig, LinearPatchTokenizer, family_config
from audiossl.nn.pos_embed import sincos_1d, sincos_2d

TINY = dict(embed_dim=32, depth=3, num_heads=4)


def tiny(family: str, **kw) -> Encoder:
    torch.manual_seed(0)
    return Encoder(family_config(family, **{**TINY, **kw})).double().eval()


def spec(B: int = 2, T: int = 64, F_: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 1, T, F_, generator=g, dtype=torch.float64)


def random_mask(rows: int, num_tokens: int, num_masked: int, seed: int = 0) -> MaskInfo:
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(num_tokens, generator=g) for _ in range(rows)])
    mask = torch.zeros(rows, num_tokens, dtype=torch.bool)
    mask.scatter_(1, order[:, :num_masked], True)
    return MaskInfo.from_mask(mask)


# ---------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "family, kw, T, grid, prefix",
    [
        ("eat", {}, 64, (4, 8), 1),
        ("mae", {}, 64, (4, 8), 1),
        ("ssast", dict(pos_grid=(4, 8)), 64, (4, 8), 2),
        ("ssast", dict(tokenizer="frame", patch_size=(2, 128), pos_grid=(32, 1)), 64, (32, 1), 2),
        ("mae_ast", {}, 64, (4, 8), 0),
        ("mae_ast", dict(patch_size=(2, 128)), 64, (32, 1), 0),
        ("ijepa", {}, 64, (4, 8), 0),
    ],
)
def test_output_shapes(family, kw, T, grid, prefix):
    enc = tiny(family, **kw)
    out = enc(spec(3, T), return_hidden=True, return_ffn=True)
    n = grid[0] * grid[1]
    assert out.x.shape == (3, prefix + n, 32)
    assert out.grid == grid and out.num_prefix == prefix
    assert out.prefix.shape == (3, prefix, 32) and out.tokens.shape == (3, n, 32)
    assert len(out.hidden) == len(out.ffn) == 3
    assert all(h.shape == out.x.shape for h in out.hidden + out.ffn)
    assert out.padding_mask is None
    # A (B, T, F) batch is the same as (B, 1, T, F).
    torch.testing.assert_close(enc(spec(3, T)[:, 0]).x, out.x)


def test_timm_parameter_names():
    names = set(dict(tiny("ssast", pos_grid=(4, 8)).named_parameters()))
    assert {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "dist_token", "pos_embed",
            "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.bias",
            "blocks.2.mlp.fc1.weight", "blocks.2.mlp.fc2.bias", "norm.weight", "norm.bias"} <= names
    eat = set(dict(tiny("eat").named_parameters()))
    assert "norm_pre.weight" in eat and "cls_token" in eat
    assert not any(n.startswith("norm.") or n in ("dist_token", "pos_embed") for n in eat)
    assert set(dict(tiny("ijepa").named_parameters())).isdisjoint({"cls_token", "pos_embed", "norm_pre.weight"})
    # Fixed tables are neither parameters nor buffers: checkpoints do not carry them.
    assert not any("pos" in k for k in tiny("eat").state_dict())


# ---------------------------------------------------------------------------------------- positions
def test_eat_tokens_are_conv_plus_2d_sincos_with_frequency_first():
    enc = tiny("eat")
    tokens, pm, grid = enc.tokenize(torch.zeros(1, 1, 48, 128, dtype=torch.float64))
    assert grid == (3, 8) and pm is None
    pos = tokens[0] - enc.patch_embed.proj.bias  # zero input: only bias + positions remain
    D = 32
    for t, f in [(0, 0), (2, 3), (1, 7)]:
        row = pos[t * 8 + f]
        # Channel 0 of each half is sin(p * omega_0) with omega_0 = 1; cos at channel D/4 (float32 table).
        assert row[0].item() == pytest.approx(math.sin(f), abs=1e-6)
        assert row[D // 4].item() == pytest.approx(math.cos(f), abs=1e-6)
        assert row[D // 2].item() == pytest.approx(math.sin(t), abs=1e-6)
        assert row[3 * D // 4].item() == pytest.approx(math.cos(t), abs=1e-6)
    # The cls token carries no position and sits in front.
    out = enc(torch.zeros(1, 1, 48, 128, dtype=torch.float64), return_hidden=True)
    assert out.x.shape[1] == 25


def test_audiomae_table_is_generated_on_the_swapped_grid():
    enc = tiny("audiomae")
    tokens, _, grid = enc.tokenize(torch.zeros(1, 1, 64, 128, dtype=torch.float64))
    expected = sincos_2d(32, (8, 4)).double()  # (F', T') grid, rows used in token order
    torch.testing.assert_close(tokens[0] - enc.patch_embed.proj.bias, expected)


def test_mae_ast_positions_are_1d_over_the_token_sequence():
    enc = tiny("mae_ast", patch_size=(2, 128))
    tokens, _, grid = enc.tokenize(torch.zeros(1, 1, 20, 128, dtype=torch.float64))
    assert grid == (10, 1)
    torch.testing.assert_close(tokens[0] - enc.patch_embed.proj.bias, sincos_1d(32, 10).double())
    assert tokens[0, 3, 0].item() - enc.patch_embed.proj.bias[0].item() == pytest.approx(math.sin(3), abs=1e-6)


def test_fixed_tables_are_cached_per_grid_device_dtype():
    enc = tiny("eat")
    a = enc.position_table((4, 8), torch.device("cpu"), torch.float64)
    assert enc.position_table((4, 8), torch.device("cpu"), torch.float64) is a
    assert enc.position_table((2, 8), torch.device("cpu"), torch.float64).shape == (1, 16, 32)
    enc.float()
    assert enc._pos_cache == {}
    assert enc.tokenize(spec().float()).tokens.dtype == torch.float32


def test_ssast_learned_positions_cover_prefix_tokens_and_must_match_the_grid():
    enc = tiny("ssast", pos_grid=(4, 8))
    prefix = enc.prefix_tokens(2)
    torch.testing.assert_close(prefix[1, 0], enc.cls_token[0, 0] + enc.pos_embed[0, 0])
    torch.testing.assert_close(prefix[0, 1], enc.dist_token[0, 0] + enc.pos_embed[0, 1])
    tokens, _, _ = enc.tokenize(torch.zeros(1, 1, 64, 128, dtype=torch.float64))
    torch.testing.assert_close(tokens[0] - enc.patch_embed.proj.bias, enc.pos_embed[0, 2:])
    with pytest.raises(ValueError, match="resize_pos_embed"):
        enc(spec(1, 48))
    old = enc.pos_embed.detach().clone()
    enc.resize_pos_embed((3, 8))  # centre crop in time: rows 4//2 - 3//2 = 1 .. 3
    assert enc.config.pos_grid == (3, 8) and enc.pos_embed.shape == (1, 2 + 24, 32)
    torch.testing.assert_close(enc.pos_embed[0, :2], old[0, :2])
    torch.testing.assert_close(enc.pos_embed[0, 2:], old[0, 2 + 8 : 2 + 32])
    assert enc(spec(1, 48)).x.shape == (1, 26, 32)


# ---------------------------------------------------------------------------------------- masking
def hand_forward(enc: Encoder, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """Conv + table + index per row + cls + norm_pre + blocks + norm, written out by hand."""
    conv = enc.patch_embed.proj
    tok = F.conv2d(x, conv.weight, conv.bias, stride=16).flatten(2).transpose(1, 2)
    gh, gw = x.shape[2] // 16, x.shape[3] // 16
    tok = tok + sincos_2d(enc.config.embed_dim, (gh, gw)).double()
    vis = torch.stack([tok[b, ids_keep[b]] for b in range(len(ids_keep))])
    if enc.num_prefix:
        vis = torch.cat([enc.cls_token.expand(len(vis), -1, -1), vis], dim=1)
    h = enc.norm_pre(vis)
    for blk in enc.blocks:
        h = blk(h)
    return enc.norm(h)


@pytest.mark.parametrize("family", ["eat", "mae", "ijepa"])
def test_masked_forward_equals_blocks_on_gathered_visible_tokens(family):
    enc = tiny(family)
    x = spec(2, 64)
    mask = random_mask(2, 32, 24, seed=3)
    got = enc(x, mask=mask).x
    torch.testing.assert_close(got, hand_forward(enc, x, mask.ids_keep), rtol=1e-10, atol=1e-10)
    assert got.shape[1] == enc.num_prefix + 8


def test_clone_batch_equals_explicit_repeat_and_mask():
    enc = tiny("eat")
    x = spec(2, 64)
    mask = random_mask(2 * 3, 32, 20, seed=5)  # rows 3i .. 3i+2 are the clones of clip i
    lengths = torch.tensor([64, 40])
    clone = enc(x, lengths=lengths, mask=mask, return_ffn=True)
    explicit = enc(x.repeat_interleave(3, 0), lengths=lengths.repeat_interleave(3), mask=mask, return_ffn=True)
    torch.testing.assert_close(clone.x, explicit.x, rtol=0, atol=0)
    torch.testing.assert_close(clone.ffn[-1], explicit.ffn[-1], rtol=0, atol=0)
    torch.testing.assert_close(clone.padding_mask, explicit.padding_mask)
    assert clone.x.shape == (6, 13, 32)
    # Each clone really saw its own clip.
    torch.testing.assert_close(clone.x[3:6], enc(x[1:2].expand(3, -1, -1, -1), lengths=lengths[1:].expand(3),
                                                 mask=MaskInfo(*(t[3:6] for t in (mask.mask, mask.ids_keep, mask.ids_restore, mask.ids_masked)))).x)


def test_bad_masks_are_refused():
    enc = tiny("eat")
    with pytest.raises(ValueError, match="covers 16 tokens"):
        enc(spec(2, 64), mask=random_mask(2, 16, 4))
    with pytest.raises(ValueError, match="not a multiple"):
        enc(spec(2, 64), mask=random_mask(3, 32, 4))


def test_ssast_style_mask_embedding_through_the_public_steps():
    """Objectives that edit tokens before positions (SSAST) compose embed/add_positions/
    prepend_prefix/forward_blocks; with nothing edited it is forward()."""
    enc = tiny("ssast", pos_grid=(4, 8))
    x = spec(2, 64)
    tokens, pm, grid = enc.embed(x)
    hidden = torch.zeros(2, 32, dtype=torch.bool)
    hidden[:, [1, 5, 9]] = True
    mask_embed = torch.randn(1, 1, 32, dtype=torch.float64)
    edited = torch.where(hidden[..., None], mask_embed, tokens)
    seq, pm = enc.prepend_prefix(enc.add_positions(edited, grid), pm)
    out = enc.forward_blocks(seq, pm, grid=grid)
    assert out.x.shape == (2, 34, 32) and out.num_prefix == 2
    untouched = enc.forward_blocks(*enc.prepend_prefix(enc.add_positions(tokens, grid)), grid=grid)
    torch.testing.assert_close(untouched.x, enc(x).x)
    assert not torch.allclose(out.x, untouched.x)


# ---------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("family", ["eat", "mae_ast", "ijepa"])
def test_appended_padding_with_lengths_leaves_real_tokens_unchanged(family):
    enc = tiny(family)
    short = spec(1, 32, seed=1)
    long = spec(1, 64, seed=2)
    junk = 100 * torch.randn(1, 1, 32, 128, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    batch = torch.cat([long, torch.cat([short, junk], dim=2)])
    out = enc(batch, lengths=torch.tensor([64, 32]))
    P = enc.num_prefix
    alone = enc(short).x[0]
    torch.testing.assert_close(out.x[1, : P + 16], alone, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.x[0], enc(long).x[0], rtol=1e-10, atol=1e-10)
    expected_pm = torch.zeros(2, P + 32, dtype=torch.bool)
    expected_pm[1, P + 16 :] = True
    assert torch.equal(out.padding_mask, expected_pm)
    # Without lengths the junk is attended to and the real tokens change.
    assert not torch.allclose(enc(batch).x[1, : P + 16], alone)


def test_partial_last_patch_stays_visible():
    enc = tiny("eat")
    out = enc(spec(2, 40), lengths=torch.tensor([40, 17]))  # grid rows start at frames 0, 16, 32
    assert out.grid == (3, 8)
    assert out.padding_mask[1, 1:].tolist() == [False] * 16 + [True] * 8
    assert not out.padding_mask[0].any()


def test_rows_with_only_padding_visible_do_not_turn_nan():
    enc = tiny("ijepa")
    x = spec(2, 64)
    hidden = torch.zeros(2, 32, dtype=torch.bool)
    hidden[:, :16] = True  # keep only the last two token rows ...
    out = enc(x, lengths=torch.tensor([64, 16]), mask=MaskInfo.from_mask(hidden))  # ... padding for clip 1
    assert out.padding_mask[1].all() and not out.padding_mask[0].any()
    assert torch.isfinite(out.x).all()
    # Such a row attends over its (padding) tokens as if unmasked, on every SDPA backend.
    torch.testing.assert_close(out.x[1], enc(x[1:2], mask=MaskInfo.from_mask(hidden[1:])).x[0])


# ---------------------------------------------------------------------------------------- hidden / ffn
@pytest.mark.parametrize("family", ["eat", "mae"])
def test_hidden_and_ffn_lists(family):
    enc = tiny(family)
    x = spec(2, 64)
    mask = random_mask(2, 32, 16)
    out = enc(x, mask=mask, return_hidden=True, return_ffn=True)
    assert len(out.hidden) == len(out.ffn) == enc.config.depth
    torch.testing.assert_close(out.x, enc.norm(out.hidden[-1]))
    if family == "eat":
        torch.testing.assert_close(out.x, out.hidden[-1], rtol=0, atol=0)  # no final norm
    else:
        assert not torch.allclose(out.x, out.hidden[-1])
    seq = enc.norm_pre(enc.prepend_prefix(enc.apply_mask(enc.tokenize(x).tokens, None, mask)[0])[0])
    for blk, h, ffn in zip(enc.blocks, out.hidden, out.ffn):
        want_h, want_ffn = blk(seq, return_ffn=True)
        torch.testing.assert_close(h, want_h)
        torch.testing.assert_close(ffn, want_ffn)
        seq = h
    plain = enc(x, mask=mask)
    assert plain.hidden is None and plain.ffn is None
    torch.testing.assert_close(plain.x, out.x)


def test_drop_path_schedule_is_linear_from_zero():
    enc = Encoder(family_config("mae", **{**TINY, "depth": 5, "drop_path": 0.2}))
    assert [b.drop_path.p for b in enc.blocks] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    one = Encoder(family_config("mae", embed_dim=32, depth=1, num_heads=4, drop_path=0.1))
    assert [b.drop_path.p for b in one.blocks] == [0.0]


def test_eval_is_deterministic_and_training_drop_path_is_random():
    enc = Encoder(family_config("mae", **{**TINY, "drop_path": 0.5})).double()
    x = spec(4, 32)
    enc.eval()
    torch.testing.assert_close(enc(x).x, enc(x).x, rtol=0, atol=0)
    enc.train()
    torch.manual_seed(1)
    a = enc(x).x
    torch.manual_seed(2)
    assert not torch.allclose(a, enc(x).x)


# ---------------------------------------------------------------------------------------- tokenizers
def test_linear_patch_equals_conv_with_the_reshaped_weight():
    torch.manual_seed(0)
    tok = LinearPatchTokenizer(24, (4, 16)).double()
    x = spec(2, 22, 32)
    got = tok(x)
    ref = F.conv2d(F.pad(x, (0, 0, 0, 2)), tok.proj.weight.view(24, 1, 4, 16), tok.proj.bias, stride=(4, 16))
    torch.testing.assert_close(got.tokens, ref.flatten(2).transpose(1, 2))
    assert got.grid == (6, 2)
    assert got.padding_mask.tolist() == [[False] * 12] * 2  # the partial patch holds real frames


def test_frame_tokenizer_config_must_span_all_mel_bins():
    with pytest.raises(ValueError, match="spans all 128"):
        EncoderConfig(tokenizer="frame", patch_size=(2, 16))
    enc = tiny("ssast", tokenizer="frame", patch_size=(2, 128), pos_grid=(8, 1))
    assert enc.patch_embed.proj.weight.shape == (32, 1, 2, 128)


def test_overlapping_stride_grid():
    enc = tiny("ssast", patch_stride=(10, 10), pos_grid=(5, 12))
    out = enc(spec(1, 56))  # (56-16)//10+1 = 5 time rows, (128-16)//10+1 = 12 frequency columns
    assert out.grid == (5, 12) and out.x.shape == (1, 2 + 60, 32)


# ---------------------------------------------------------------------------------------- init
def test_family_inits():
    torch.manual_seed(0)
    eat = Encoder(family_config("eat", embed_dim=768, depth=1, num_heads=12))
    assert eat.cls_token.std().item() == pytest.approx(1.0, abs=0.1)  # N(0, 1), 768 draws
    assert eat.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert eat.blocks[0].attn.qkv.bias.abs().max().item() == 0.0
    mae = Encoder(family_config("mae", embed_dim=768, depth=1, num_heads=12))
    assert mae.cls_token.std().item() == pytest.approx(0.02, rel=0.1)
    bound = math.sqrt(6.0 / (768 + 3 * 768))  # xavier-uniform on the fused (3D, D) qkv
    w = mae.blocks[0].attn.qkv.weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_jepa_init_rescales_residual_outputs_by_depth():
    torch.manual_seed(7)
    bert = Encoder(family_config("ijepa", **{**TINY, "init": "bert"}))
    torch.manual_seed(7)
    jepa = Encoder(family_config("ijepa", **TINY))
    for layer, (a, b) in enumerate(zip(bert.blocks, jepa.blocks), start=1):
        torch.testing.assert_close(b.attn.proj.weight, a.attn.proj.weight / math.sqrt(2 * layer))
        torch.testing.assert_close(b.mlp.fc2.weight, a.mlp.fc2.weight / math.sqrt(2 * layer))
        torch.testing.assert_close(b.attn.qkv.weight, a.attn.qkv.weight)


def test_init_is_deterministic_under_manual_seed():
    def build(seed):
        torch.manual_seed(seed)
        return Encoder(family_config("ssast", **TINY, pos_grid=(4, 8))).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["cls_token"], c["cls_token"])


# ---------------------------------------------------------------------------------------- config
def test_config_round_trip_and_validation():
    cfg = family_config("ssast", **TINY, tokenizer="frame", patch_size=(2, 128), pos_grid=(32, 1), drop_path=0.1)
    d = json.loads(json.dumps(cfg.to_dict()))  # plain containers only
    assert EncoderConfig.from_dict(d) == cfg
    assert EncoderConfig.from_dict(d).patch_size == (2, 128)
    enc = Encoder(cfg)
    Encoder(EncoderConfig.from_dict(enc.config.to_dict())).load_state_dict(enc.state_dict())
    with pytest.raises(ValueError, match="unknown EncoderConfig fields"):
        EncoderConfig.from_dict({**d, "depht": 3})
    for bad in (dict(tokenizer="conv"), dict(pos_embed="rope"), dict(init="kaiming"),
                dict(num_prefix_tokens=3), dict(embed_dim=30, num_heads=4), dict(embed_dim=18, num_heads=3)):
        with pytest.raises(ValueError):
            EncoderConfig(**bad)
    with pytest.raises(ValueError, match="unknown encoder family"):
        family_config("beats")


def test_encoder_does_not_mutate_the_callers_config():
    cfg = family_config("ssast", **TINY, pos_grid=(4, 8))
    enc = Encoder(cfg)
    enc.resize_pos_embed((2, 8))
    assert cfg.pos_grid == (4, 8) and enc.config.pos_grid == (2, 8)
    assert Encoder(cfg, depth=1).config.depth == 1 and cfg.depth == 3


# ---------------------------------------------------------------------------------------- sizes
def block_params(D: int, hidden: int) -> int:
    qkv = D * 3 * D + 3 * D
    proj = D * D + D
    mlp = D * hidden + hidden + hidden * D + D
    norms = 2 * 2 * D
    return qkv + proj + mlp + norms


def n_params(enc: Encoder) -> int:
    return sum(p.numel() for p in enc.parameters())


def build_meta(cfg: EncoderConfig) -> Encoder:
    with torch.device("meta"):
        return Encoder(cfg)


def test_vit_b16_parameter_counts_against_closed_form():
    D = 768
    blocks = 12 * block_params(D, 4 * D)
    conv = D * 16 * 16 + D
    eat = build_meta(EncoderConfig())  # defaults: EAT-base
    assert n_params(eat) == blocks + conv + D + 2 * D  # + cls + input LN
    ssast = build_meta(family_config("ssast"))
    assert n_params(ssast) == blocks + conv + 2 * D + (2 + 512) * D + 2 * D  # cls, dist, table, final LN
    mae_ast = build_meta(family_config("mae_ast"))
    assert n_params(mae_ast) == blocks + (256 * D + D) + 2 * D  # Linear patch, input LN


def test_mae_vit_base_image_encoder_is_the_well_known_85_8m():
    mae = build_meta(family_config("mae", in_chans=3))
    trainable = n_params(mae)
    # 12 blocks of 7,087,872 + 3-channel conv 590,592 + cls 768 + final norm 1,536.
    assert block_params(768, 3072) == 7_087_872
    assert trainable == 85_647_360
    # MAE's 85,798,656 counts the frozen (1, 197, 768) sin-cos table too; we rebuild it instead.
    assert trainable + 197 * 768 == 85_798_656
    assert mae.grid_shape(224, 224) == (14, 14)
