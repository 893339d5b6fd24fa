"""Transformer blocks shared by every model: pre-LN (timm/MAE/SSAST/I-JEPA) and post-LN
(EAT/data2vec ``AltBlock``, fairseq's MAE-AST layers).

Both return the block output and, on request, the feed-forward output before its residual —
EAT's teacher targets are those "layer results" (``ffn_targets=True`` upstream).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from audiossl.nn.attention import Attention

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """fc1 → activation → dropout → fc2 → dropout (timm's ``Mlp``; fairseq's ``activation_dropout``
    is the first dropout)."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
        act_drop: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop if act_drop is None else act_drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One transformer layer.

    ``post_norm=False`` (timm): ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``.
    ``post_norm=True`` (EAT ``AltBlock``, fairseq): ``h = norm1(x + attn(x))``,
    ``out = norm2(h + mlp(h))``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        act_drop: Optional[float] = None,
        drop_path: float = 0.0,
        post_norm: bool = False,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop, act_drop=act_drop)

    def forward(
        self, x: Tensor, key_padding_mask: Optional[Tensor] = None, return_ffn: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if self.post_norm:
            h = self.norm1(x + self.drop_path(self.attn(x, key_padding_mask)))
            ffn = self.mlp(h)
            out = self.norm2(h + self.drop_path(ffn))
        else:
            x = x + self.drop_path(self.attn(self.norm1(x), key_padding_mask))
            ffn = self.mlp(self.norm2(x))
            out = x + self.drop_path(ffn)
        return (out, ffn) if return_ffn else out


@torch.no_grad()
def init_xavier(module: nn.Module) -> None:
    """MAE/timm ViT init: xavier-uniform Linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@torch.no_grad()
def init_bert(module: nn.Module) -> None:
    """BERT init (EAT/data2vec, fairseq ``init_bert_params``): N(0, 0.02) Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
