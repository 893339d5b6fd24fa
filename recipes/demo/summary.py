#!/usr/bin/env python3
"""Read a finished fbank store the way training will, and print what is in it.

    python recipes/demo/summary.py STORE.h5 [--target-length 512] [--workers 2]

Goes through the real training path (``FbankDataset`` in a ``DataLoader`` with worker processes,
``collate``, the store's own normalisation statistics) and prints: the store's front end and
statistics, clips per class, frames per clip, and the normalised batch statistics, which should
be about mean 0 and std 0.5 for real frames (the ``(x - mean) / (2 std)`` convention).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from audiossl.data.dataset import FbankDataset, collate
from audiossl.data.store import FbankStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--target-length", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    store = FbankStore(args.store)
    cfg = store.fbank_config
    norm = store.normalizer
    print(f"store        {args.store} ({args.store.stat().st_size / 1e6:.1f} MB, {store.dtype})")
    print(f"front end    {cfg.num_mel_bins} mel bins, {cfg.frame_shift} ms shift, {cfg.window_type} window, "
          f"htk_compat={cfg.htk_compat}, {cfg.sample_frequency:g} Hz")
    print(f"normaliser   mean {norm.mean:.4f}  std {norm.std:.4f}" if norm else "normaliser   none")
    frames = store.num_frames
    print(f"clips        {len(store)}  frames/clip min {frames.min()} median {int(np.median(frames))} max {frames.max()}")
    if store.labels is not None and store.label_map is not None:
        counts = store.labels.sum(0)
        print("per class    " + ", ".join(f"{name} {int(c)}" for name, c in zip(store.label_map["display_name"], counts)))

    ds = FbankDataset(args.store, target_length=args.target_length, normalizer="store")
    loader = DataLoader(ds, batch_size=16, num_workers=args.workers, collate_fn=collate)
    start = time.perf_counter()
    total, s1, s2, n = 0, 0.0, 0.0, 0
    for batch in loader:
        x, lengths = batch["fbank"], batch["lengths"]
        real = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        vals = x[real]
        s1 += vals.sum().item()
        s2 += (vals.double() ** 2).sum().item()
        n += vals.numel()
        total += x.shape[0]
        shape = tuple(x.shape)
    seconds = time.perf_counter() - start
    mean = s1 / n
    std = (s2 / n - mean**2) ** 0.5
    print(f"loader       {total} clips in {seconds:.2f} s with {args.workers} workers; last batch {shape}")
    print(f"normalised   real frames: mean {mean:+.3f}, std {std:.3f} (expect about 0 and 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
