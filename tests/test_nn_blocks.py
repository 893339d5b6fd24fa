"""audiossl/nn/attention.py and audiossl/nn/blocks.py against straightforward transcriptions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audiossl.nn.attention import Attention
from audiossl.nn.blocks import Block, drop_path, init_bert, init_xavier


def naive_attention(attn: Attention, x, key_padding_mask=None):
    B, N, D = x.shape
    H, hd = attn.num_heads, attn.head_dim
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.split(D, dim=-1)
    q, k, v = (t.view(B, N, H, hd).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, D)
    return out @ attn.proj.weight.T + attn.proj.bias


def test_attention_matches_matmul_softmax():
    torch.manual_seed(0)
    attn = Attention(32, 4).double()
    x = torch.randn(3, 7, 32, dtype=torch.float64)
    torch.testing.assert_close(attn(x), naive_attention(attn, x), rtol=1e-10, atol=1e-10)


def test_key_padding_mask_equals_running_the_unpadded_sequence():
    torch.manual_seed(1)
    attn = Attention(16, 2).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    lengths = [9, 5]
    kpm = torch.arange(9)[None, :] >= torch.tensor(lengths)[:, None]
    out = attn(x, kpm)
    torch.testing.assert_close(out, naive_attention(attn, x, kpm))
    # Real tokens of the short row see only real tokens: same as attending over the cut sequence.
    torch.testing.assert_close(out[1, :5], attn(x[1:2, :5])[0])
    # And the padding really matters: without the mask the outputs differ.
    assert not torch.allclose(attn(x)[1, :5], out[1, :5])


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)


def test_pre_norm_block_formula():
    torch.manual_seed(2)
    blk = Block(16, 2).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    h = x + naive_attention(blk.attn, blk.norm1(x))
    ffn = blk.mlp(blk.norm2(h))
    out, got_ffn = blk(x, return_ffn=True)
    torch.testing.assert_close(out, h + ffn)
    torch.testing.assert_close(got_ffn, ffn)


def test_post_norm_block_formula():
    torch.manual_seed(3)
    blk = Block(16, 2, post_norm=True).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    h = blk.norm1(x + naive_attention(blk.attn, x))
    ffn = blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(h)))
    out, got_ffn = blk(x, return_ffn=True)
    torch.testing.assert_close(got_ffn, ffn)
    torch.testing.assert_close(out, blk.norm2(h + ffn))


def test_timm_parameter_names():
    names = set(dict(Block(8, 2).named_parameters()))
    assert {"norm1.weight", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "norm2.bias",
            "mlp.fc1.weight", "mlp.fc2.bias"} <= names


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(4)
    x = torch.ones(20000, 3, 2)
    y = drop_path(x, 0.25, training=True)
    per_sample = y.flatten(1)
    # each sample is either all zero or all 1/keep
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.25) < 0.02
    assert abs(y.mean().item() - 1.0) < 0.03
    assert torch.equal(drop_path(x, 0.25, training=False), x)


def test_inits():
    torch.manual_seed(5)
    lin = nn.Linear(512, 512)
    init_bert(lin)
    assert abs(lin.weight.std().item() - 0.02) < 0.001 and lin.bias.abs().max() == 0
    init_xavier(lin)
    bound = math.sqrt(6 / 1024)
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
