"""audiossl/nn/pos_embed.py against transcriptions of the formulas and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiossl.nn.pos_embed import LearnedPosEmbed, resize_pos_embed, sincos_1d, sincos_2d


def numpy_sincos_2d(D, H, W):
    """Straight transcription: first D/2 channels from the column w, last D/2 from the row h."""
    q = D // 4
    pe = np.zeros((H * W, D))
    for h in range(H):
        for w in range(W):
            for k in range(q):
                omega = 1.0 / 10000 ** (k / q)
                pe[h * W + w, k] = math.sin(w * omega)
                pe[h * W + w, q + k] = math.cos(w * omega)
                pe[h * W + w, 2 * q + k] = math.sin(h * omega)
                pe[h * W + w, 3 * q + k] = math.cos(h * omega)
    return pe


@pytest.mark.parametrize("D,grid", [(16, (5, 3)), (32, (2, 7)), (8, (1, 1))])
def test_sincos_2d_matches_transcription(D, grid):
    out = sincos_2d(D, grid)
    assert out.dtype == torch.float32 and out.shape == (grid[0] * grid[1], D)
    np.testing.assert_allclose(out.numpy(), numpy_sincos_2d(D, *grid), atol=1e-6)


def test_sincos_2d_hand_values_and_cls_row():
    pe = sincos_2d(8, (2, 3), cls_token=True)
    assert pe.shape == (7, 8)
    assert torch.equal(pe[0], torch.zeros(8))
    # token (h=1, w=2) is row 1 + 1*3 + 2; omega = [1, 1/100]
    expected = [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02), math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]
    np.testing.assert_allclose(pe[1 + 5].numpy(), expected, atol=1e-7)


def test_first_half_encodes_frequency_column_on_audio_grid():
    pe = sincos_2d(64, (64, 8))
    grid = pe.view(64, 8, 64)
    # first half depends only on w (frequency), last half only on h (time)
    assert torch.equal(grid[:, :, :32], grid[:1, :, :32].expand(64, -1, -1))
    assert torch.equal(grid[:, :, 32:], grid[:, :1, 32:].expand(-1, 8, -1))


def test_eat_long_table_prefix_equals_short_table():
    # EAT's (768 x 8) table: its first 512 rows are the old 64 x 8 table
    assert torch.equal(sincos_2d(32, (768, 8))[:512], sincos_2d(32, (64, 8)))


def test_sincos_2d_rejects_bad_dim():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(10, (2, 2))


def test_sincos_1d_mae_ast_interleaved():
    D, L = 16, 50
    pe = sincos_1d(D, L)
    ref = np.zeros((L, D))
    for p in range(L):
        for k in range(D // 2):
            w = math.exp(-2 * k * math.log(10000.0) / D)
            ref[p, 2 * k] = math.sin(p * w)
            ref[p, 2 * k + 1] = math.cos(p * w)
    np.testing.assert_allclose(pe.numpy(), ref, atol=2e-6)
    # D = 4: omega = [1, 10000^-0.5 = 0.01]
    np.testing.assert_allclose(sincos_1d(4, 2)[1].numpy(), [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)], atol=1e-7)
    assert torch.equal(sincos_1d(16, 10, start=5), sincos_1d(16, 15)[5:])


def test_sincos_1d_fairseq_concatenated():
    # D = 6: half = 3, omega_k = 10000^(-k/2) = [1, 0.01, 1e-4]
    pe = sincos_1d(6, 3, style="fairseq")
    w = [1.0, 0.01, 1e-4]
    np.testing.assert_allclose(pe[1].numpy(), [math.sin(x) for x in w] + [math.cos(x) for x in w], atol=1e-7)
    odd = sincos_1d(7, 3, style="fairseq", start=2)
    assert torch.equal(odd[:, -1], torch.zeros(3))
    np.testing.assert_allclose(odd[0, :3].numpy(), [math.sin(2 * x) for x in w], atol=1e-6)
    with pytest.raises(ValueError):
        sincos_1d(8, 2, style="other")


def test_sincos_1d_uses_float32_arithmetic_like_the_checkpoint_buffers():
    # MAE-AST builds `pe` with float32 ops; at large positions that differs from float64 math
    pe = sincos_1d(8, 48000)
    p = 47999
    w32 = torch.exp(torch.arange(0, 8, 2) * (-math.log(10000.0) / 8))
    exact32 = torch.sin(torch.tensor(p) * w32)
    assert torch.equal(pe[p, 0::2], exact32)


def test_learned_pos_embed_init_and_forward():
    torch.manual_seed(0)
    pe = LearnedPosEmbed((64, 8), 192, num_prefix=2)
    assert pe.weight.shape == (1, 514, 192)
    assert abs(pe.weight.std().item() - 0.02) < 0.001
    x = torch.randn(2, 514, 192)
    torch.testing.assert_close(pe(x), x + pe.weight)
    y = torch.randn(2, 512, 192)
    torch.testing.assert_close(pe(y), y + pe.weight[:, 2:])
    assert torch.equal(pe.prefix_pos, pe.weight[:, :2])
    with pytest.raises(ValueError, match="resize"):
        pe(torch.randn(1, 100, 192))


def test_resize_crop_is_centred_and_keeps_prefix():
    table = torch.arange(2 + 6 * 4, dtype=torch.float32).view(1, -1, 1)
    out = resize_pos_embed(table, (6, 4), (4, 4), num_prefix=2)
    assert torch.equal(out[0, :2, 0], torch.tensor([0.0, 1.0]))
    # rows 6//2 - 4//2 = 1 .. 4 of the 6 x 4 grid
    expected = (torch.arange(24).view(6, 4)[1:5] + 2).float().reshape(-1)
    assert torch.equal(out[0, 2:, 0], expected)


def test_resize_interpolation_hand_values():
    # a time ramp 0, 1 upsampled to 4 rows, align_corners=False: [0, .25, .75, 1]
    table = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 4, 1)  # grid (2, 2)
    out = resize_pos_embed(table, (2, 2), (4, 2))
    torch.testing.assert_close(out.view(4, 2)[:, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    torch.testing.assert_close(out.view(4, 2)[:, 1], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_resize_esc50_case_crops_time_then_interpolates_frequency():
    # SSAST patch -> ESC-50 (512 frames, stride 10): time 64 -> 50 keeps rows 7..56, freq 8 -> 12
    D = 3
    time_code = torch.arange(64, dtype=torch.float32).view(64, 1, 1).expand(64, 8, D)
    out = resize_pos_embed(time_code.reshape(1, 512, D), (64, 8), (50, 12))
    assert out.shape == (1, 600, D)
    torch.testing.assert_close(out.view(50, 12, D)[:, 5, 0], torch.arange(7, 57, dtype=torch.float32))


def test_module_resize_modes():
    pe = LearnedPosEmbed((64, 8), 4, num_prefix=2)
    prefix = pe.prefix_pos.detach().clone()
    pe.resize((101, 12))
    assert pe.grid == (101, 12) and pe.weight.shape == (1, 2 + 1212, 4)
    assert torch.equal(pe.prefix_pos, prefix)
    with pytest.raises(ValueError, match="crop"):
        LearnedPosEmbed((4, 4), 4).resize((8, 4), mode="crop")
    interp = resize_pos_embed(torch.randn(1, 16, 2), (4, 4), (2, 4), mode="interpolate")
    assert interp.shape == (1, 8, 2)
