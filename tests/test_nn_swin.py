"""audiossl/nn/swin.py: window layout, the shift mask's meaning, the SDPA form of scaled cosine
attention against the explicit softmax it replaces, and a shifted block against unshifted
attention on the window that the shift does not wrap. (Parity with AudioMAE's own blocks is in
tests/test_convert_mae.py, on a fixture recorded with the official code.)"""

from __future__ import annotations

import math

import pytest
import torch

from audiossl.nn.swin import (
    SHIFT_MASK_VALUE,
    SwinBlock,
    WindowAttention,
    pad_to_windows,
    relative_coords_log,
    shift_mask,
    window_partition,
    window_reverse,
    window_shift,
)


def test_window_partition_order_and_round_trip() -> None:
    x = torch.arange(2 * 8 * 8 * 3, dtype=torch.float64).view(2, 8, 8, 3)
    windows = window_partition(x, (4, 4))
    assert windows.shape == (2 * 4, 16, 3)
    # Example-major, then windows row-major: index 1 is example 0's top-right window.
    assert torch.equal(windows[1], x[0, 0:4, 4:8].reshape(16, 3))
    assert torch.equal(windows[6], x[1, 4:8, 0:4].reshape(16, 3))
    assert torch.equal(window_reverse(windows, (4, 4), (8, 8)), x)


def test_window_and_shift_shrink_on_small_grids() -> None:
    assert window_shift((64, 8), (4, 4), (2, 0)) == ((4, 4), (2, 0))  # AudioMAE's 1024-frame grid
    assert window_shift((4, 8), (4, 4), (2, 0)) == ((4, 4), (0, 0))  # one window of rows: no shift
    assert window_shift((3, 8), (4, 4), (2, 0)) == ((3, 4), (0, 0))
    assert window_shift((102, 12), (6, 6), (2, 0)) == ((6, 6), (2, 0))  # the stride-10 model


@pytest.mark.parametrize("shift", [(2, 0), (0, 2), (2, 2), (1, 3)])
def test_shift_mask_allows_exactly_the_true_neighbours(shift) -> None:
    """After rolling by ``-shift``, two tokens of one window may attend iff their offset in the
    rolled grid is their offset in the original grid (no wrap-around between them)."""
    grid, window = (8, 8), (4, 4)
    mask = shift_mask(grid, window, shift)
    assert mask.shape == (4, 16, 16)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    orig = torch.stack([(rows + shift[0]) % 8, (cols + shift[1]) % 8], dim=-1)  # source of rolled (r, c)
    rolled = torch.stack([rows, cols], dim=-1)
    o = window_partition(orig.view(1, 8, 8, 2), window)  # (nW, L, 2)
    r = window_partition(rolled.view(1, 8, 8, 2), window)
    same_offset = ((o[:, :, None] - o[:, None, :]) == (r[:, :, None] - r[:, None, :])).all(-1)
    assert torch.equal(mask == 0, same_offset)
    assert set(mask.unique().tolist()) <= {0.0, SHIFT_MASK_VALUE}
    assert (mask == SHIFT_MASK_VALUE).any()
    assert shift_mask(grid, window, (0, 0)) is None


def test_relative_coords_are_log_spaced_query_minus_key() -> None:
    rel = relative_coords_log((2, 3))
    assert rel.shape == (36, 2)
    # query (0, 0) = index 0, key (1, 2) = index 5: offset (-1, -2).
    assert torch.allclose(rel[0 * 6 + 5], torch.tensor([-math.log(2), -math.log(3)]))
    assert torch.allclose(rel[5 * 6 + 0], torch.tensor([math.log(2), math.log(3)]))
    assert torch.equal(rel[7], torch.zeros(2))  # query 1 with itself


def reference_attention(attn: WindowAttention, x: torch.Tensor, window, mask) -> torch.Tensor:
    """Upstream's explicit form: cos via the clamped product of norms, / max(tau, 0.01), + bias
    from the meta MLP, + shift mask per window, softmax, weighted values, projection."""
    Bw, L, C = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).view(Bw, L, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
    denom = q.norm(dim=-1, keepdim=True) @ k.norm(dim=-1, keepdim=True).transpose(-2, -1)
    logits = (q @ k.transpose(-2, -1)) / denom.clamp(min=1e-6)
    logits = logits / attn.tau.clamp(min=0.01).view(1, h, 1, 1)
    coords = relative_coords_log(window).to(x.dtype)
    bias = attn.meta_mlp.fc2(torch.relu(attn.meta_mlp.fc1(coords)))  # (L*L, heads)
    logits = logits + bias.t().reshape(h, L, L)
    if mask is not None:
        nw = mask.shape[0]
        logits = (logits.view(Bw // nw, nw, h, L, L) + mask.view(1, nw, 1, L, L)).view(Bw, h, L, L)
    out = logits.softmax(dim=-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(Bw, L, C))


@pytest.mark.parametrize("shifted", [False, True])
def test_sdpa_form_equals_the_explicit_cosine_softmax(shifted: bool) -> None:
    torch.manual_seed(0)
    attn = WindowAttention(16, 4).double().eval()
    with torch.no_grad():
        attn.tau.copy_(torch.tensor([0.004, 0.2, 1.0, 3.0]))  # one under the clamp
        attn.meta_mlp.fc2.weight.mul_(10)
    mask = shift_mask((8, 8), (4, 4), (2, 0)) if shifted else None
    x = torch.randn(2 * 4, 16, 16, dtype=torch.float64)
    ours = attn(x, (4, 4), None if mask is None else mask.double())
    ref = reference_attention(attn, x, (4, 4), None if mask is None else mask.double())
    assert (ours - ref).abs().max().item() < 1e-12
    # The clamp and the bias both matter at this size.
    assert ref.abs().max() > 0.1


def test_shifted_block_equals_plain_attention_on_an_unwrapped_window() -> None:
    """With shift (2, 0), the first window of the rolled grid is original rows 2..5: the block's
    output there is the same block run on that 4x4 crop alone (a grid of one window, unshifted).
    A roll in the wrong direction or along the wrong axis fails this."""
    torch.manual_seed(1)
    block = SwinBlock(16, 4, window=(4, 4), shift=(2, 0)).double().eval()
    x = torch.randn(2, 8, 8, 16, dtype=torch.float64)
    full = block(x.reshape(2, 64, 16), (8, 8)).view(2, 8, 8, 16)
    for r0, c0 in ((2, 0), (2, 4)):
        crop = x[:, r0 : r0 + 4, c0 : c0 + 4]
        alone = block(crop.reshape(2, 16, 16), (4, 4)).view(2, 4, 4, 16)
        assert (full[:, r0 : r0 + 4, c0 : c0 + 4] - alone).abs().max().item() < 1e-12
    # and the wrapped window is not plain attention over its rows 6, 7, 0, 1
    wrapped = torch.cat([x[:, 6:8, 0:4], x[:, 0:2, 0:4]], dim=1)
    plain = block(wrapped.reshape(2, 16, 16), (4, 4)).view(2, 4, 4, 16)
    assert (full[:, 6:8, 0:4] - plain[:, 0:2]).abs().max().item() > 1e-3


def test_block_is_res_post_norm() -> None:
    """``x + norm1(attn(x))``: with norm1's scale and bias at zero the attention branch vanishes."""
    torch.manual_seed(2)
    block = SwinBlock(8, 2, window=(2, 2)).double().eval()
    with torch.no_grad():
        block.norm1.weight.zero_()
        block.norm1.bias.zero_()
    x = torch.randn(1, 16, 8, dtype=torch.float64)
    expect = x + block.norm2(block.mlp(x))
    assert (block(x, (4, 4)) - expect).abs().max().item() < 1e-12


def test_position_bias_drops_out_in_training_and_gradients_reach_it() -> None:
    torch.manual_seed(3)
    block = SwinBlock(8, 2, window=(2, 2), shift=(1, 1))
    block.train()
    a, b = block.attn.position_bias((2, 2)), block.attn.position_bias((2, 2))
    assert not torch.equal(a, b)  # upstream's meta MLP has dropout 0.1
    block.eval()
    assert torch.equal(block.attn.position_bias((2, 2)), block.attn.position_bias((2, 2)))
    x = torch.randn(2, 16, 8)
    block(x, (4, 4)).square().sum().backward()
    for p in (block.attn.tau, block.attn.meta_mlp.fc1.weight, block.attn.meta_mlp.fc2.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_pad_to_windows_repeats_the_last_row() -> None:
    x = torch.randn(1, 101, 12, 4)
    padded = pad_to_windows(x, (6, 6))
    assert padded.shape == (1, 102, 12, 4)
    assert torch.equal(padded[:, :101], x) and torch.equal(padded[:, 101], x[:, 100])
    assert pad_to_windows(x[:, :96], (6, 6)).shape[1] == 96
    assert pad_to_windows(torch.randn(1, 4, 5, 2), (4, 4)).shape == (1, 4, 8, 2)


def test_grid_off_the_window_is_an_error() -> None:
    block = SwinBlock(8, 2, window=(4, 4))
    with pytest.raises(ValueError, match="pad_to_windows"):
        block(torch.randn(1, 6 * 8, 8), (6, 8))
