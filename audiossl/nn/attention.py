"""Multi-head self-attention through ``torch.nn.functional.scaled_dot_product_attention``.

Parameter names follow timm (``qkv``, ``proj``) so ViT-family checkpoints (MAE, AudioMAE, SSAST,
EAT's ``AltAttention`` uses the same fused layout) load without renaming; fairseq's separate
``q_proj/k_proj/v_proj`` (MAE-AST) are concatenated into ``qkv`` by the converters.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``x`` (B, N, D); ``key_padding_mask`` (B, N) bool, True = padding (never attended to)."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = None
        if key_padding_mask is not None:
            # SDPA's boolean mask is True where attention is allowed.
            attn_mask = ~key_padding_mask.view(B, 1, 1, N)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, D)))
