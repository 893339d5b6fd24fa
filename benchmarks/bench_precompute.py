"""Precompute throughput: `audiossl fbank` (library path) vs a straightforward single-process loop.

Claim: on a 2-core machine our precompute is >= 1.8x faster than the loop a user would write
first, at the ESC-50 shape (5 s, 44.1 kHz, stereo, 16-bit wav -> 16 kHz AST fbank, 498 x 128).

Generates M such clips (noise + tones) in a temp dir, then times, in the same run:

* **loop**: for each file ``soundfile.read`` -> mean of channels -> ``librosa.resample(...,
  res_type="soxr_hq")`` to 16 kHz -> ``torchaudio.compliance.kaldi.fbank`` with the AST options
  (waveform mean removed, hanning, htk_compat, 128 bins, no dither) -> h5py write of one row
  of an ``(M, T, 128)`` float32 dataset; run twice, with torch's default thread count (what a
  user gets) and with one torch thread (the loop's best case on a busy machine, where torch's
  threads fight other processes for the cores and kaldi.fbank slows down by 10x or more);
* **audiossl**: ``audiossl.data.store.precompute`` (what ``audiossl fbank`` runs): worker pool
  on all cores, segments for resume, chunk-aligned float16 store, assembly and rename included.

Each side runs ``--repeats`` times (best time kept; the first loop run also warms the page
cache and imports). Both outputs are compared, to show that they are the same features.

    python benchmarks/bench_precompute.py              # 256 clips, ~30 s on 2 quiet cores (fixed pool and assembly costs amortised)
    python benchmarks/bench_precompute.py --clips 64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import librosa
import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio

from audiossl.data.manifest import Manifest
from audiossl.data.store import FbankStore, default_workers, precompute
from audiossl.features import FbankConfig

RATE = 44100
SECONDS = 5.0
AST_KALDI = dict(
    htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning", num_mel_bins=128,
    dither=0.0, frame_shift=10,
)


def make_clips(root: Path, count: int, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    n = int(RATE * SECONDS)
    t = np.arange(n) / RATE
    rows = []
    for i in range(count):
        x = 0.05 * rng.standard_normal((n, 2))
        for c in range(2):
            for _ in range(3):
                x[:, c] += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(60, 12000) * t)
        x = (x / np.abs(x).max() * 0.8).astype(np.float32)
        path = root / f"clip{i:04d}.wav"
        sf.write(path, x, RATE, subtype="PCM_16")
        rows.append({"id": f"clip{i:04d}", "path": str(path), "labels": ()})
    return Manifest(pd.DataFrame(rows))


def straightforward_loop(paths: list, out: Path) -> None:
    with h5py.File(out, "w") as fh:
        dset = None
        for i, path in enumerate(paths):
            x, rate = sf.read(path, dtype="float32")
            x = x.mean(axis=1)
            y = librosa.resample(x, orig_sr=rate, target_sr=16000, res_type="soxr_hq")
            w = torch.from_numpy(y)[None]
            feats = torchaudio.compliance.kaldi.fbank(w - w.mean(), **AST_KALDI).numpy()
            if dset is None:
                dset = fh.create_dataset("fbank", (len(paths), *feats.shape), "float32", chunks=(1, *feats.shape))
            dset[i] = feats


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--workdir", default=None, help="where to generate the clips (default: a temp dir)")
    args = parser.parse_args()

    workers = args.workers or default_workers()
    root = Path(tempfile.mkdtemp(prefix="bench_precompute_", dir=args.workdir))
    try:
        manifest = make_clips(root, args.clips)
        paths = list(manifest.table["path"])
        loop_out, ours_out = root / "loop.h5", root / "ours.h5"

        def ours() -> None:
            precompute(manifest, ours_out, FbankConfig.preset("ast"), workers=workers, progress=False, overwrite=True)

        straightforward_loop(paths[:4], loop_out)  # imports, librosa/soxr warm-up, page cache
        threads = torch.get_num_threads()
        t_loop = best_of(args.repeats, lambda: straightforward_loop(paths, loop_out))
        torch.set_num_threads(1)
        t_loop1 = best_of(args.repeats, lambda: straightforward_loop(paths, loop_out))
        torch.set_num_threads(threads)
        t_ours = best_of(args.repeats, ours)

        with h5py.File(loop_out, "r") as fh:
            ref = fh["fbank"][()]
        store = FbankStore(ours_out)
        diff = max(float(np.abs(store.read(i) - ref[i]).max()) for i in range(len(store)))
        rel = diff / float(np.abs(ref).max())
        per_clip_mib = ours_out.stat().st_size / 2**20 / len(store)

        print(f"clips: {args.clips} x {SECONDS:.0f} s {RATE} Hz stereo -> {ref.shape[1]} x {ref.shape[2]} fbank")
        print(f"cores: {os.cpu_count()}, workers: {workers}, load average: {os.getloadavg()[0]:.1f}")
        print(f"loop, {threads} torch threads {args.clips / t_loop:8.1f} clips/s  ({t_loop:.2f} s)")
        print(f"loop, 1 torch thread   {args.clips / t_loop1:8.1f} clips/s  ({t_loop1:.2f} s)")
        print(f"audiossl               {args.clips / t_ours:8.1f} clips/s  ({t_ours:.2f} s)  {per_clip_mib * 1024:.0f} KiB/clip")
        print(f"ratio vs loop ({threads} threads) {t_loop / t_ours:6.2f}x")
        print(f"ratio vs loop (1 thread)  {t_loop1 / t_ours:6.2f}x  (target >= 1.8x on 2 cores vs the faster loop)")
        print(f"max |ours - loop| = {diff:.4f} ({rel:.1e} of max |value|; float16 storage)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
