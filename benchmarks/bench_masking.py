"""Mask sampling speed: our vectorised samplers against per-sample loops of the same algorithms.

    python benchmarks/bench_masking.py                # about 15 s, one CPU thread
    python benchmarks/bench_masking.py --threads 4 --repeats 25

Masks are drawn in dataloader workers, one CPU thread each, so that is the default setting.
Every loop below is written for this file: a straightforward per-sample Python version of the
algorithm our sampler implements (same parameters, same output: a ``MaskInfo`` or, for I-JEPA,
the collator's index lists). Each setting is timed in interleaved repeats (ours, loop, ours,
...) so that both see the same machine load; the table reports the best repeat of each.

Settings:
  (a) EAT inverse block masks, 12 clips x 16 clones on 64x8 (EAT-base pretraining, per GPU),
      against a per-row loop and against upstream's own structure (one call per clip, blocks
      painted for the 16 clones at once, then a per-row multinomial loop).
  (b) SSAST chunk masks, 24 clips (SSAST-base batch), 400 of 512 hidden on SSAST's 8x64
      (frequency-major) grid, i.e. our (64, 8): faithful sampler against SSAST's per-clip
      loop, corrected sampler against a per-clip loop of the corrected algorithm.
  (c) I-JEPA multi-block masks, 128 images (per-GPU batch of the released configs) on 14x14:
      faithful sampler against the MaskCollator's per-image loop, corrected sampler against a
      per-image V-JEPA-style loop.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiossl.masking.base import MaskInfo  # noqa: E402
from audiossl.masking.block import inverse_block_mask  # noqa: E402

# ------------------------------------------------------------------------------------------
# (a) EAT inverse block masking


def eat_per_row_loop(clips: int, clones: int, grid: Tuple[int, int], g: torch.Generator) -> MaskInfo:
    """EAT-base masks one row at a time: centres, clamped 5x5 blocks, multinomial trim / top-up."""
    H, W = grid
    L, p, ml = H * W, 1 - 0.8, 5
    n_centres, final, off = int(L * ((p + 0.07) / ml**2)), int(L * p), ml // 2
    rows = []
    for _ in range(clips * clones):
        keep = torch.zeros(H, W)
        for c in torch.randint(0, L, (n_centres,), generator=g).tolist():
            r, col = divmod(c, W)
            keep[max(r - off, 0) : min(r - off + ml, H), max(col - off, 0) : min(col - off + ml, W)] = 1
        keep = keep.view(-1)
        n = int(keep.sum())
        if n > final:
            keep[torch.multinomial(keep, n - final, generator=g)] = 0
        elif n < final:
            keep[torch.multinomial(1 - keep, final - n, generator=g)] = 1
        rows.append(keep == 0)
    return MaskInfo.from_mask(torch.stack(rows))


def eat_per_clip_loop(clips: int, clones: int, grid: Tuple[int, int], g: torch.Generator) -> MaskInfo:
    """EAT's own structure: one call per clip paints all clones' blocks with index lists, then
    fixes the counts row by row with multinomial."""
    H, W = grid
    L, p, ml = H * W, 1 - 0.8, 5
    n_centres, final, off = int(L * ((p + 0.07) / ml**2)), int(L * p), ml // 2
    out = []
    for _ in range(clips):
        keep = torch.zeros(clones, H, W)
        keep.view(clones, -1).scatter_(1, torch.randint(0, L, (clones, n_centres), generator=g), 1)
        b, r, c = keep.nonzero(as_tuple=True)
        idx_b, idx_r, idx_c = [], [], []
        for i in range(ml):
            for j in range(ml):
                idx_b.append(b)
                idx_r.append(r + i - off)
                idx_c.append(c + j - off)
        keep[torch.cat(idx_b), torch.cat(idx_r).clamp_(0, H - 1), torch.cat(idx_c).clamp_(0, W - 1)] = 1
        keep = keep.view(clones, -1)
        counts = keep.sum(-1)
        for i in range(clones):
            n, row = int(counts[i]), keep[i]
            if n > final:
                row[torch.multinomial(row, n - final, generator=g)] = 0
            elif n < final:
                row[torch.multinomial(1 - row, final - n, generator=g)] = 1
        out.append(keep == 0)
    return MaskInfo.from_mask(torch.cat(out))


# ------------------------------------------------------------------------------------------
# (b) SSAST chunk masking


def ssast_per_clip_loop(clips: int, grid: Tuple[int, int], num_masked: int, rnd: random.Random) -> MaskInfo:
    """SSAST's chunk loop per clip, in its frequency-major index space (``f * H + t``)."""
    H, W = grid
    N = H * W
    mask = torch.zeros(clips, N, dtype=torch.bool)
    for b in range(clips):
        c = rnd.randrange(3) + 3
        ids: set = set()
        while len(ids) <= num_masked:
            s = rnd.randrange(N)
            for i in range(c):
                for j in range(c):
                    k = s + H * i + j
                    if 0 < k < N:
                        ids.add(k)
        chosen = torch.tensor(list(ids)[:num_masked])
        mask[b, (chosen % H) * W + chosen // H] = True
    return MaskInfo.from_mask(mask)


def corrected_chunk_per_clip_loop(clips: int, grid: Tuple[int, int], num_masked: int, rnd: random.Random) -> MaskInfo:
    """The corrected chunk sampler per clip: edge-unbiased anchors, clipped chunks, the stopping
    chunk's surplus dropped uniformly at random."""
    H, W = grid
    mask = torch.zeros(clips, H * W, dtype=torch.bool)
    for b in range(clips):
        c = rnd.choice((3, 4, 5))
        covered: set = set()
        while len(covered) < num_masked:
            h0 = int(rnd.random() * (H + c - 1)) - (c - 1)
            w0 = int(rnd.random() * (W + c - 1)) - (c - 1)
            new = [
                h * W + w
                for h in range(max(h0, 0), min(h0 + c, H))
                for w in range(max(w0, 0), min(w0 + c, W))
                if h * W + w not in covered
            ]
            room = num_masked - len(covered)
            covered.update(new if len(new) <= room else rnd.sample(new, room))
        mask[b, list(covered)] = True
    return MaskInfo.from_mask(mask)


# ------------------------------------------------------------------------------------------
# (c) I-JEPA multi-block masking


def _ijepa_size(u: float, grid, scale, aspect) -> Tuple[int, int]:
    H, W = grid
    k = int(H * W * (scale[0] + u * (scale[1] - scale[0])))
    r = aspect[0] + u * (aspect[1] - aspect[0])
    return min(int(round(math.sqrt(k * r))), H - 1), min(int(round(math.sqrt(k / r))), W - 1)


def ijepa_per_image_loop(batch: int, grid: Tuple[int, int], g: torch.Generator, npred: int = 4, min_keep: int = 10):
    """I-JEPA's MaskCollator: per image, 4 targets, then a context avoiding them (20 tries per
    relaxation level), then every index list truncated to the batch minimum."""
    H, W = grid
    hp, wp = _ijepa_size(float(torch.rand(1, generator=g)), grid, (0.15, 0.2), (0.75, 1.5))
    he, we = _ijepa_size(float(torch.rand(1, generator=g)), grid, (0.85, 1.0), (1.0, 1.0))

    def place(h: int, w: int, constraints):
        relaxed, budget = 0, 20
        while True:
            top = int(torch.randint(0, H - h, (1,), generator=g))
            left = int(torch.randint(0, W - w, (1,), generator=g))
            block = torch.zeros(H, W, dtype=torch.int32)
            block[top : top + h, left : left + w] = 1
            for k in range(len(constraints) - relaxed if constraints else 0):
                block *= constraints[k]
            idx = torch.nonzero(block.flatten()).squeeze(1)
            if len(idx) > min_keep:
                break
            budget -= 1
            if budget == 0:
                relaxed, budget = relaxed + 1, 20
        complement = torch.ones(H, W, dtype=torch.int32)
        complement[top : top + h, left : left + w] = 0
        return idx, complement

    preds, contexts = [], []
    for _ in range(batch):
        placed = [place(hp, wp, None) for _ in range(npred)]
        preds.append([idx for idx, _ in placed])
        contexts.append(place(he, we, [comp for _, comp in placed])[0])
    k_pred = min(len(i) for p in preds for i in p)
    k_ctx = min(len(c) for c in contexts)
    masks_pred = [torch.stack([p[i][:k_pred] for p in preds]) for i in range(npred)]
    return torch.stack([c[:k_ctx] for c in contexts]), masks_pred


def _corrected_size(u_scale: float, u_aspect: float, grid, scale, aspect) -> Tuple[int, int]:
    H, W = grid
    k = max(1, int(H * W * (scale[0] + u_scale * (scale[1] - scale[0]))))
    r = aspect[0] + u_aspect * (aspect[1] - aspect[0])
    h = min(max(int(round(math.sqrt(k * r))), 1), H)
    w = int(round(k / h))
    if w > W:
        w, h = W, min(max(int(round(k / W)), 1), H)
    return h, max(w, 1)


def corrected_multiblock_per_image_loop(batch: int, grid: Tuple[int, int], g: torch.Generator, npred: int = 4,
                                        min_keep: int = 10):
    """The corrected multi-block sampler per image (V-JEPA style): inclusive bounds, context =
    context block minus the targets, redraw if too small, random truncation to the batch minimum."""
    H, W = grid
    u = torch.rand(4, generator=g).tolist()
    hp, wp = _corrected_size(u[0], u[1], grid, (0.15, 0.2), (0.75, 1.5))
    he, we = _corrected_size(u[2], u[3], grid, (0.85, 1.0), (1.0, 1.0))
    targets, contexts = [], []
    for _ in range(batch):
        while True:
            blocks = []
            for _ in range(npred):
                top = int(torch.randint(0, H - hp + 1, (1,), generator=g))
                left = int(torch.randint(0, W - wp + 1, (1,), generator=g))
                block = torch.zeros(H, W, dtype=torch.bool)
                block[top : top + hp, left : left + wp] = True
                blocks.append(block)
            top = int(torch.randint(0, H - he + 1, (1,), generator=g))
            left = int(torch.randint(0, W - we + 1, (1,), generator=g))
            context = torch.zeros(H, W, dtype=torch.bool)
            context[top : top + he, left : left + we] = True
            for block in blocks:
                context &= ~block
            if int(context.sum()) >= min_keep:
                break
        targets.append(torch.stack(blocks).flatten(1))
        contexts.append(context.flatten())
    k = min(int(c.sum()) for c in contexts)
    kept = []
    for c in contexts:
        idx = torch.nonzero(c).squeeze(1)
        kept.append(idx[torch.randperm(len(idx), generator=g)[:k]].sort().values)
    return torch.stack(kept), torch.stack(targets)


# ------------------------------------------------------------------------------------------
# Timing


def measure(fns: List[Callable[[], object]], repeats: int, min_repeat_s: float = 0.05) -> List[float]:
    """Best ms per call of each function over ``repeats`` interleaved repeats."""
    calls = []
    for fn in fns:
        fn()  # warm-up
        t = time.perf_counter()
        fn()
        calls.append(max(1, math.ceil(min_repeat_s / max(time.perf_counter() - t, 1e-6))))
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            for _ in range(calls[k]):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t) / calls[k] * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: List[Tuple[str, int, float, str, float]] = []

    def bench(setting: str, masks: int, ours, loops):
        times = measure([ours] + [fn for _, fn in loops], args.repeats)
        for (name, _), t in zip(loops, times[1:]):
            rows.append((setting, masks, times[0], name, t))

    g, rnd = torch.Generator().manual_seed(0), random.Random(0)

    info = inverse_block_mask(12, (64, 8), clone_batch=16, generator=g)
    assert info.num_masked == eat_per_row_loop(1, 16, (64, 8), g).num_masked == 410
    bench(
        "(a) EAT-base 12x16 clones, 64x8",
        192,
        lambda: inverse_block_mask(12, (64, 8), clone_batch=16, generator=g),
        [("per-row loop", lambda: eat_per_row_loop(12, 16, (64, 8), g)),
         ("upstream per-clip", lambda: eat_per_clip_loop(12, 16, (64, 8), g))],
    )

    try:
        from audiossl.masking.chunk import chunk_mask
    except ImportError:
        print("(b) skipped: audiossl.masking.chunk is not available")
    else:
        assert chunk_mask(2, (64, 8), 400, faithful=True, upstream="ssast", generator=g).num_masked == 400
        bench(
            "(b) SSAST chunks faithful, 24 clips",
            24,
            lambda: chunk_mask(24, (64, 8), 400, faithful=True, upstream="ssast", generator=g),
            [("SSAST per-clip loop", lambda: ssast_per_clip_loop(24, (64, 8), 400, rnd))],
        )
        bench(
            "(b) chunks corrected, 24 clips",
            24,
            lambda: chunk_mask(24, (64, 8), 400, generator=g),
            [("per-clip loop", lambda: corrected_chunk_per_clip_loop(24, (64, 8), 400, rnd))],
        )

    try:
        from audiossl.masking.multiblock import multiblock_masks
    except ImportError:
        print("(c) skipped: audiossl.masking.multiblock is not available")
    else:
        bench(
            "(c) I-JEPA multi-block faithful, 128 imgs",
            128,
            lambda: multiblock_masks(128, (14, 14), mode="faithful", generator=g),
            [("MaskCollator per-image loop", lambda: ijepa_per_image_loop(128, (14, 14), g))],
        )
        bench(
            "(c) multi-block corrected, 128 imgs",
            128,
            lambda: multiblock_masks(128, (14, 14), mode="corrected", generator=g),
            [("per-image loop", lambda: corrected_multiblock_per_image_loop(128, (14, 14), g))],
        )

    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats} interleaved repeats")
    header = f"{'setting':<42} {'ours ms':>8} {'masks/s':>9}   {'reference loop':<28} {'loop ms':>8} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for setting, masks, ours, name, loop in rows:
        print(f"{setting:<42} {ours:8.2f} {masks / ours * 1e3:9.0f}   {name:<28} {loop:8.2f} {loop / ours:6.1f}x")


if __name__ == "__main__":
    main()
