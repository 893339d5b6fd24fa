"""Attention cost: our ``Block`` (attention through ``scaled_dot_product_attention``) against the
same block with a plain matmul-softmax attention, same size, same weights.

    python benchmarks/bench_attention.py                       # about 20 s on 2 CPU cores
    python benchmarks/bench_attention.py --repeats 5 --tokens-per-batch 2048
    python benchmarks/bench_attention.py --device cuda --dtype bfloat16 --tokens-per-batch 65536

ViT-B width (768, 12 heads), sequence lengths 512 (EAT/SSAST patch grid of a 10 s clip), 1024
and 103 (EAT's visible tokens at 80 % masking of 512, plus the cls token). The batch of each
length is ``tokens_per_batch // length`` (at least 1), so each setting costs about the same.

Before timing, both blocks run on the same input and their outputs and input/parameter
gradients are compared (``allclose``); a mismatch aborts the run.

Two memory figures per setting:
  * saved bytes: the tensors autograd keeps for backward during the forward, counted through
    ``torch.autograd.graph.saved_tensors_hooks`` (each storage once, parameters excluded). It
    is device-independent: the activation memory a training step holds at its peak, which is
    what the N x N attention matrix of the reference inflates.
  * on CUDA, ``torch.cuda.max_memory_allocated`` over the forward+backward minus what was
    allocated before it.

The ≥ 1.5x speed target is a GPU target: SDPA's gain comes from fused (flash / memory-efficient)
kernels that never write the N x N matrix to memory. On a CPU both versions are bound by the
same GEMMs (QKV, projection, MLP are ~85 % of the FLOPs at N = 512), so expect a small gain
there and a large one in saved bytes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiossl.nn.blocks import Block, LayerNorm6, Mlp  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MatmulAttention(nn.Module):
    """Textbook multi-head attention: ``softmax(q kᵀ / √d) v`` with the score matrix materialised.

    Same parameter names and shapes as :class:`audiossl.nn.attention.Attention` (fused ``qkv``,
    ``proj``), so our block's ``state_dict`` loads into it unchanged.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, D))


class MatmulBlock(nn.Module):
    """Reference transformer layer around :class:`MatmulAttention`, pre-LN (timm) or post-LN
    (EAT ``AltBlock``); no dropout, no drop-path, as the benchmarked ``Block``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, post_norm: bool = False) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = LayerNorm6(dim)
        self.attn = MatmulAttention(dim, num_heads)
        self.norm2 = LayerNorm6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        if self.post_norm:
            h = self.norm1(x + self.attn(x))
            return self.norm2(h + self.mlp(h))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def saved_bytes(step: Callable[[], Tensor], params: List[Tensor]) -> int:
    """Bytes autograd saves for backward during ``step()`` (the forward), each storage counted
    once, parameter storages excluded: the activation memory held at the start of backward."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    seen: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    del out
    return sum(seen.values())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fwd_bwd(block: nn.Module, x: Tensor, grad: Tensor) -> None:
    block.zero_grad(set_to_none=True)
    x.grad = None
    block(x).backward(grad)


def cuda_peak(block: nn.Module, x: Tensor, grad: Tensor) -> Optional[int]:
    """Peak bytes allocated above the pre-step level during one forward+backward (CUDA only)."""
    if x.device.type != "cuda":
        return None
    block.zero_grad(set_to_none=True)
    x.grad = None
    sync(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    block(x).backward(grad)
    sync(x.device)
    return torch.cuda.max_memory_allocated(x.device) - base


def check_equal(ours: nn.Module, ref: nn.Module, x: Tensor, grad: Tensor, atol: float, rtol: float) -> float:
    """Same outputs and gradients (input and every parameter) or ``SystemExit``; returns the
    largest absolute difference seen."""
    xa = x.detach().clone().requires_grad_(True)
    xb = x.detach().clone().requires_grad_(True)
    ours.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    ya, yb = ours(xa), ref(xb)
    ya.backward(grad)
    yb.backward(grad)
    pairs: List[Tuple[str, Tensor, Tensor]] = [("output", ya, yb), ("grad input", xa.grad, xb.grad)]
    ref_params = dict(ref.named_parameters())
    pairs += [(f"grad {n}", p.grad, ref_params[n].grad) for n, p in ours.named_parameters()]
    worst = 0.0
    for name, a, b in pairs:
        a, b = a.float(), b.float()
        worst = max(worst, (a - b).abs().max().item())
        if not torch.allclose(a, b, atol=atol, rtol=rtol):
            raise SystemExit(f"SDPA block and matmul block disagree on {name}: max |diff| {(a - b).abs().max().item():.3g}")
    return worst


def time_pair(
    blocks: Tuple[nn.Module, nn.Module], x: Tensor, grad: Tensor, repeats: int, warmup: int
) -> Tuple[float, float]:
    """Best ms per forward+backward of each block, timed in interleaved repeats (A, B, A, B, ...)
    so both see the same machine load."""
    for _ in range(warmup):
        for blk in blocks:
            fwd_bwd(blk, x, grad)
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for i, blk in enumerate(blocks):
            sync(x.device)
            t0 = time.perf_counter()
            fwd_bwd(blk, x, grad)
            sync(x.device)
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best[0], best[1]


def mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 103])
    ap.add_argument("--tokens-per-batch", type=int, default=1024, help="batch = max(1, this // length)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--post-norm", action="store_true", help="EAT's post-LN block instead of timm's pre-LN")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # parameter init of the two blocks; weights are then shared
    ours = Block(args.dim, args.heads, post_norm=args.post_norm)
    ref = MatmulBlock(args.dim, args.heads, post_norm=args.post_norm)
    ref.load_state_dict(ours.state_dict())
    ours.to(device=device, dtype=dtype).train()
    ref.to(device=device, dtype=dtype).train()
    params = list(ours.parameters()) + list(ref.parameters())
    atol, rtol = (1e-4, 1e-4) if dtype == torch.float32 else (3e-2, 3e-2)

    print(
        f"# Block fwd+bwd, dim {args.dim}, {args.heads} heads, {'post' if args.post_norm else 'pre'}-LN, "
        f"{args.dtype} on {device}"
        + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else f" ({torch.cuda.get_device_name(device)})")
    )
    print(
        "| N | batch | max abs diff | SDPA ms | matmul ms | speed-up | SDPA saved MiB | matmul saved MiB "
        "| saved ratio | SDPA CUDA peak MiB | matmul CUDA peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.lengths:
        batch = max(1, args.tokens_per_batch // n)
        x = torch.randn(batch, n, args.dim, generator=g).to(device=device, dtype=dtype).requires_grad_(True)
        grad = torch.randn(batch, n, args.dim, generator=g).to(device=device, dtype=dtype)
        diff = check_equal(ours, ref, x, grad, atol, rtol)
        saved = [saved_bytes(lambda blk=blk: blk(x), params) for blk in (ours, ref)]
        peaks = [cuda_peak(blk, x, grad) for blk in (ours, ref)]
        t_ours, t_ref = time_pair((ours, ref), x, grad, args.repeats, args.warmup)
        print(
            f"| {n} | {batch} | {diff:.1e} | {t_ours:.1f} | {t_ref:.1f} | **{t_ref / t_ours:.2f}x** | "
            f"{mib(saved[0])} | {mib(saved[1])} | **{saved[1] / saved[0]:.2f}x** | {mib(peaks[0])} | {mib(peaks[1])} |"
        )
    print("speed-up = matmul ms / SDPA ms (target >= 1.5x, a GPU target); saved ratio = matmul / SDPA saved bytes")


if __name__ == "__main__":
    main()
