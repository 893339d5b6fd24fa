"""audiossl/tokenizers.py: patch order, round trips, grids, padding masks, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audiossl.tokenizers import FrameTokenizer, PatchTokenizer, grid_shape, patchify, unpatchify


def loop_patchify(x, ph, pw):
    """Reference: token h*W + w holds patch (h, w), flattened (row, col, channel)."""
    B, C, H, W = x.shape
    out = []
    for h in range(H // ph):
        for w in range(W // pw):
            patch = x[:, :, h * ph : (h + 1) * ph, w * pw : (w + 1) * pw]  # (B, C, ph, pw)
            out.append(patch.permute(0, 2, 3, 1).reshape(B, -1))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("shape,patch", [((2, 1, 32, 48), (16, 16)), ((1, 1, 12, 8), (4, 2)), ((2, 3, 28, 28), (14, 14))])
def test_patchify_matches_loop_and_round_trips(shape, patch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    tokens = patchify(x, patch)
    assert torch.equal(tokens, loop_patchify(x, *patch))
    grid = (shape[2] // patch[0], shape[3] // patch[1])
    assert torch.equal(unpatchify(tokens, patch, grid, shape[1]), x)
    f_tokens = patchify(x, patch, within="freq_major")
    assert torch.equal(unpatchify(f_tokens, patch, grid, shape[1], within="freq_major"), x)


def test_time_major_equals_mae_ast_unfold():
    # MAE-AST: nn.Unfold on (B, 1, T, F): time-major tokens, time-major inside each patch.
    x = torch.randn(2, 1, 64, 32)
    ref = nn.Unfold(kernel_size=(16, 16), stride=(16, 16))(x).transpose(1, 2)
    assert torch.equal(patchify(x, 16), ref)


def test_freq_major_equals_ssast_unfold_after_token_reorder():
    # SSAST: nn.Unfold on (B, 1, F, T): frequency-major tokens f*T' + t, (f, t) inside each patch.
    T, F_, p = 48, 32, 16
    x = torch.randn(2, 1, T, F_)
    ssast = nn.Unfold(kernel_size=(p, p), stride=(p, p))(x.transpose(2, 3)).transpose(1, 2)
    ours = patchify(x, p, within="freq_major")
    H, W = T // p, F_ // p
    for t in range(H):
        for f in range(W):
            assert torch.equal(ours[:, t * W + f], ssast[:, f * H + t])


def test_image_patches():
    tok = PatchTokenizer(768, 16, in_chans=3)
    out = tok(torch.randn(2, 3, 224, 224))
    assert out.tokens.shape == (2, 196, 768)
    assert out.grid == (14, 14)
    assert out.padding_mask is None


def test_conv_equals_linear_on_patchify():
    tok = PatchTokenizer(8, (4, 4))
    x = torch.randn(3, 1, 16, 8)
    ref = patchify(x, 4) @ tok.proj.weight.flatten(1).T + tok.proj.bias
    out = tok(x)
    torch.testing.assert_close(out.tokens, ref, rtol=1e-5, atol=1e-5)
    assert out.grid == (4, 2)
    # a (B, T, F) batch is the same as (B, 1, T, F)
    torch.testing.assert_close(tok(x[:, 0]).tokens, out.tokens)


@pytest.mark.parametrize(
    "frames,stride,grid",
    [
        (1024, 16, (64, 8)),  # EAT / AudioMAE pretraining: 512 tokens
        (1024, 10, (101, 12)),  # AST/SSAST AudioSet fine-tuning: 1212 tokens
        (512, 10, (50, 12)),  # ESC-50: 600 tokens
        (128, 10, (12, 12)),  # Speech Commands: 144 tokens
        (1000, 16, (63, 8)),  # padded up to 1008 frames
    ],
)
def test_grid_shapes_match_the_papers(frames, stride, grid):
    tok = PatchTokenizer(4, 16, stride=stride)
    assert tok.grid_shape(frames, 128) == grid
    assert grid_shape(frames, 128, 16, stride) == grid


def test_frame_tokenizer_grid_and_stride():
    tok = FrameTokenizer(4)
    assert tok.grid_shape(1024, 128) == (512, 1)
    assert tok.grid_shape(998, 128) == (499, 1)
    assert tok.grid_shape(999, 128) == (500, 1)  # padded by one frame
    tok.set_stride((1, 128))  # SSAST frame fine-tuning
    assert tok.grid_shape(512, 128) == (511, 1)
    out = tok(torch.randn(2, 1, 512, 128))
    assert out.tokens.shape == (2, 511, 4)


def test_padding_to_a_multiple_and_pad_false():
    tok = PatchTokenizer(4, 16)
    x = torch.randn(2, 1, 1000, 128)
    out = tok(x)
    assert out.tokens.shape == (2, 63 * 8, 4)
    # no token lies entirely in 8 frames of padding
    assert out.padding_mask is not None and not out.padding_mask.any()
    ref = tok.proj(nn.functional.pad(x, (0, 0, 0, 8))).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out.tokens, ref)
    strict = PatchTokenizer(4, 16, pad=False)
    with pytest.raises(ValueError, match="1000.*16"):
        strict(x)


def test_lengths_mark_tokens_entirely_in_padding():
    tok = PatchTokenizer(4, 16)
    x = torch.randn(3, 1, 64, 128)
    out = tok(x, lengths=torch.tensor([64, 20, 33]))
    mask = out.padding_mask.view(3, 4, 8)
    # token rows start at frames 0, 16, 32, 48
    assert mask[0].sum() == 0
    assert mask[1, :2].sum() == 0 and mask[1, 2:].all()  # 20 frames: rows 0-1 hold audio
    assert mask[2, :3].sum() == 0 and mask[2, 3:].all()  # 33 frames: row 2 starts at 32 < 33


def test_lengths_with_overlapping_stride():
    tok = PatchTokenizer(4, 16, stride=10)
    out = tok(torch.randn(2, 1, 100, 128), lengths=torch.tensor([100, 35]))
    assert out.grid == (9, 12)
    rows = out.padding_mask.view(2, 9, 12)[:, :, 0]
    # starts 0, 10, ..., 80: with 35 true frames rows starting at 40.. are padding
    assert rows[0].tolist() == [False] * 9
    assert rows[1].tolist() == [False] * 4 + [True] * 5


def test_bad_inputs_raise_clear_errors():
    tok = PatchTokenizer(4, 16)
    with pytest.raises(ValueError, match="width 120"):
        tok(torch.randn(1, 1, 32, 120))
    with pytest.raises(ValueError, match="lengths"):
        tok(torch.randn(2, 1, 32, 128), lengths=torch.tensor([32]))
    with pytest.raises(ValueError, match="smaller than the patch height"):
        PatchTokenizer(4, 16, stride=10)(torch.randn(1, 1, 8, 128))
    with pytest.raises(ValueError, match="not a multiple"):
        patchify(torch.randn(1, 1, 30, 32), 16)


def test_short_input_pads_to_one_row():
    out = PatchTokenizer(4, 16)(torch.randn(1, 1, 5, 128), lengths=torch.tensor([5]))
    assert out.grid == (1, 8) and not out.padding_mask.any()


def test_xavier_uniform_init_on_flattened_weight():
    torch.manual_seed(0)
    tok = PatchTokenizer(768, 16)
    bound = math.sqrt(6.0 / (768 + 256))  # fan_in = 1*16*16 as a Linear, fan_out = 768
    w = tok.proj.weight
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.01 * bound


def test_set_stride_keeps_weights():
    tok = PatchTokenizer(4, 16)
    w = tok.proj.weight.clone()
    tok.set_stride(10)
    assert tok.stride == (10, 10) and tok.overlapping
    assert torch.equal(tok.proj.weight, w)
    assert tok(torch.randn(1, 1, 1024, 128)).tokens.shape[1] == 1212
