"""Pretraining step cost: MAE-AST (encoder on the 25 % visible tokens, 2-layer decoder over all)
against SSAST (encoder on all tokens) at equal encoder depth and width.

    python benchmarks/bench_maeast_vs_ssast.py                 # ~10 s on 2 CPU cores (192 wide, batch 2)
    python benchmarks/bench_maeast_vs_ssast.py --size small    # 384 wide, ~30 s
    python benchmarks/bench_maeast_vs_ssast.py --size base --device cuda --batch 32

Input: ``(B, 1, 1024, 128)`` fbanks, 16x16 patches, a (64, 8) grid of 512 tokens. MAE-AST hides
75 % with its chunk masks (128 visible tokens enter the encoder; ``audiossl.models.maeast``);
SSAST hides 400 of 512 but runs its encoder on all 512 + 2 prefix tokens
(``audiossl.models.ssast``), once for the generative task (``pretrain_mpg``) and twice for the
joint task (``pretrain_joint``: one discriminative and one generative pass, as SSAST trains).

One training step = forward (masks drawn inside, as in training) + backward + ``Adam.step``.
Each model is timed in interleaved repeats against the others; the table reports the best.

Memory: bytes autograd saves for backward during the forward (each storage once, parameters
excluded; ``torch.autograd.graph.saved_tensors_hooks``), which is the activation memory at the
peak of a step on any device; on CUDA also ``max_memory_allocated`` over a step above the level
before it (parameters, gradients and Adam state are then already allocated).

For an equal-work comparison both models run without dropout and without MAE-AST's encoder
layerdrop (0.05 upstream: on average 0.6 of 12 layers skipped per step, which would make the
encoder shallower than SSAST's); ``--paper-dropout`` restores MAE-AST's configured dropouts
(0.1 on inputs, attention and residual branches; SSAST has none), layerdrop stays off.

The MAE-AST paper (Baade et al. 2022, Table 1) reports 3x faster steps and 2x less memory than
SSAST at base size on GPU; targets here are >= 3x and >= 2x.
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

from audiossl.models.maeast import MAEAST, maeast_config  # noqa: E402
from audiossl.models.ssast import SSAST, ssast_config  # noqa: E402

SIZES: Dict[str, Tuple[int, int, int]] = {  # name: (width, depth, heads)
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}
NO_DROPOUT = {"drop": 0.0, "attn_drop": 0.0, "act_drop": 0.0, "input_drop": 0.0, "drop_path": 0.0}


def build_models(width: int, depth: int, heads: int, decoder_depth: int, paper_dropout: bool) -> Tuple[MAEAST, SSAST]:
    size = {"embed_dim": width, "depth": depth, "num_heads": heads}
    mae_enc = size if paper_dropout else {**size, **NO_DROPOUT}
    maeast = MAEAST(
        maeast_config("maeast_patch_base", encoder=mae_enc, decoder_depth=decoder_depth, encoder_layerdrop=0.0)
    )
    ssast = SSAST(ssast_config("ssast_base_patch", encoder={**size, **NO_DROPOUT}))
    return maeast, ssast


def encoder_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.encoder.blocks.parameters())  # type: ignore[union-attr]


class Runner:
    """One model, one task: a training step and a forward whose saved tensors can be counted."""

    def __init__(self, name: str, model: nn.Module, forward: Callable[[Tensor, torch.Generator], Tensor], seed: int, device: torch.device) -> None:
        self.name = name
        self.model = model
        self.forward = forward
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def step(self, x: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.forward(x, self.gen)
        loss.backward()
        self.opt.step()

    def saved_bytes(self, x: Tensor) -> int:
        """Bytes saved for backward by one forward, each storage once, parameters excluded."""
        param_ptrs = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        seen: Dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in param_ptrs:
                seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.forward(x, self.gen)
        del loss
        return sum(seen.values())

    def cuda_peak(self, x: Tensor) -> Optional[int]:
        if x.device.type != "cuda":
            return None
        torch.cuda.synchronize(x.device)
        self.opt.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        self.step(x)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - base


def time_interleaved(runners: List[Runner], x: Tensor, repeats: int, warmup: int) -> List[float]:
    """Best ms per training step of each runner, in interleaved rounds (same machine load)."""
    sync = (lambda: torch.cuda.synchronize(x.device)) if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for r in runners:
            r.step(x)
    best = [math.inf] * len(runners)
    for _ in range(repeats):
        for i, r in enumerate(runners):
            sync()
            t0 = time.perf_counter()
            r.step(x)
            sync()
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


def mib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny", help="encoder width/depth/heads preset")
    ap.add_argument("--width", type=int, default=None, help="override the preset's width")
    ap.add_argument("--depth", type=int, default=None, help="override the preset's depth")
    ap.add_argument("--heads", type=int, default=None, help="override the preset's heads")
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--paper-dropout", action="store_true", help="keep MAE-AST's configured dropouts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames != 1024:
        ap.error("both presets are built for 1024-frame input (SSAST's learned positions cover a (64, 8) grid)")
    width, depth, heads = SIZES[args.size]
    width, depth, heads = args.width or width, args.depth or depth, args.heads or heads
    device = torch.device(args.device)
    torch.manual_seed(args.seed)  # parameter init only
    maeast, ssast = build_models(width, depth, heads, args.decoder_depth, args.paper_dropout)
    if encoder_params(maeast) != encoder_params(ssast):
        raise SystemExit(f"encoder sizes differ: MAE-AST {encoder_params(maeast)} vs SSAST {encoder_params(ssast)}")
    maeast.to(device).train()
    ssast.to(device).train()

    x = torch.randn(args.batch, 1, args.frames, 128, generator=torch.Generator().manual_seed(args.seed)).to(device)
    runners = [
        Runner("MAE-AST (75 % masked, 2-layer decoder)", maeast, lambda v, g: maeast(v, generator=g).loss, args.seed, device),
        Runner("SSAST pretrain_mpg (1 pass)", ssast, lambda v, g: ssast(v, "pretrain_mpg", generator=g).loss, args.seed, device),
        Runner("SSAST pretrain_joint (2 passes)", ssast, lambda v, g: ssast(v, "pretrain_joint", generator=g).loss, args.seed, device),
    ]
    with torch.no_grad():
        visible = maeast.sample_mask(args.batch, (args.frames // 16, 8), torch.Generator(device=device).manual_seed(0), device).ids_keep.shape[1]
    saved = [r.saved_bytes(x) for r in runners]
    ms = time_interleaved(runners, x, args.repeats, args.warmup)
    peaks = [r.cuda_peak(x) for r in runners]

    where = f"{device}" + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else f" ({torch.cuda.get_device_name(device)})")
    print(
        f"# training step (fwd + bwd + Adam), encoder {width} wide x {depth} deep ({heads} heads, "
        f"{encoder_params(maeast) / 1e6:.2f} M block params each), batch {args.batch} x 1 x {args.frames} x 128, "
        f"512 tokens, MAE-AST encoder sees {visible}, "
        f"{'MAE-AST paper dropout' if args.paper_dropout else 'no dropout'}, on {where}"
    )
    print("| model / task | ms per step | saved MiB | CUDA peak MiB | MAE-AST speed-up | MAE-AST memory ratio (saved) | (CUDA peak) |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(runners):
        if i == 0:
            ratios = "- | - | -"
        else:
            cuda_ratio = f"{peaks[i] / peaks[0]:.2f}x" if peaks[0] else "-"
            ratios = f"**{ms[i] / ms[0]:.2f}x** | **{saved[i] / saved[0]:.2f}x** | {cuda_ratio}"
        print(f"| {r.name} | {ms[i]:.1f} | {mib(saved[i])} | {mib(peaks[i])} | {ratios} |")
    print("speed-up = SSAST ms / MAE-AST ms (target >= 3x); memory ratio = SSAST / MAE-AST bytes (target >= 2x)")


if __name__ == "__main__":
    main()
