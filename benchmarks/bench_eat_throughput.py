"""EAT pretraining throughput: clips/s of a full training step (teacher targets, student on the
visible tokens of 16 clone masks per clip, CNN decoder, losses, backward, AdamW, EMA update).

    python benchmarks/bench_eat_throughput.py                       # eat_tiny, 1024 frames, CPU
    python benchmarks/bench_eat_throughput.py --preset eat_base --batch 2 --frames 1024
    python benchmarks/bench_eat_throughput.py --preset eat_base --device cuda --batch 12 --dtype bfloat16

Reference, measured in the same run: the same student work without clone batches, i.e. one
clone per clip and 16× as many steps, so the teacher and the patch embedding run once per
student sequence instead of once per clip. The ratio is what EAT's clone batching buys
(the paper trains 12 clips × 16 clones per GPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiossl.models.registry import build_model  # noqa: E402


def make_step(preset: str, clones: int, batch: int, frames: int, device: torch.device,
              dtype: torch.dtype) -> Callable[[], None]:
    model = build_model(preset, clone_batch=clones).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    x = torch.randn(batch, 1, frames, model.config.encoder.n_mels, device=device)
    g = torch.Generator(device="cpu").manual_seed(0)
    state = {"step": 0}

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(x, generator=g)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        model.update_teacher(state["step"])

    return step


def best_time(step: Callable[[], None], repeats: int, calls: int, device: torch.device) -> float:
    times: List[float] = []
    step()  # warm-up (allocations, autotuning)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(calls):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="eat_tiny")
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--frames", type=int, default=1024)
    p.add_argument("--clones", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)

    cloned = make_step(args.preset, args.clones, args.batch, args.frames, device, dtype)
    single = make_step(args.preset, 1, args.batch, args.frames, device, dtype)
    t_clone = best_time(cloned, args.repeats, 1, device)
    t_single = best_time(single, args.repeats, args.clones, device)  # same number of student sequences

    seqs = args.batch * args.clones
    print(f"{args.preset} on {device} ({args.dtype}), {args.batch} clips x {args.frames} frames, "
          f"{args.clones} clones = {seqs} student sequences per step")
    print(f"  clone batch {args.clones:>2}: {t_clone * 1e3:8.1f} ms/step  {args.batch / t_clone:8.2f} clips/s  "
          f"{seqs / t_clone:8.1f} student seqs/s")
    print(f"  clone batch  1: {t_single / args.clones * 1e3:8.1f} ms/step  {args.batch * args.clones / t_single:8.2f} clips/s  "
          f"{seqs / t_single:8.1f} student seqs/s  (x{args.clones} steps)")
    print(f"  student sequences/s, clones {args.clones} vs 1: {t_single / t_clone:.2f}x")


if __name__ == "__main__":
    main()
