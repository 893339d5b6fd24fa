"""Loader throughput: precomputed HDF5 store (FbankDataset) vs on-the-fly fbank (WavDataset).

Claim: reading stored float16 log-mels is >= 10x faster than decoding audio and computing the
Kaldi fbank per item, at the training shape (batch 32, target_length 1024, 128 bins,
``num_workers`` = CPU cores), so a precompute pays for itself within the first epoch.

Builds M clips of 10 s at 16 kHz (PCM-16 wav, ~998 frames each) and float16 and float32
stores of the same clips, then runs each dataset through the same DataLoader, in one run:

* a warm-up epoch (untimed) starts the persistent workers and imports;
* **cold**: the files are first evicted from the page cache with
  ``posix_fadvise(POSIX_FADV_DONTNEED)`` (no root needed; Linux only, otherwise skipped), so
  the epoch reads from disk, as the first epoch of a run over a corpus larger than RAM;
* **warm**: epochs repeated until ``--min-seconds``, the files in the page cache.

Besides samples/s (wall clock, which other load on the machine drags down) it prints the CPU
time per sample of the main process plus the workers (from ``/proc``): the load-independent
cost, and the ratio to trust on a shared machine.

    python benchmarks/bench_loader.py                    # 256 clips, about a minute on 2 cores
    python benchmarks/bench_loader.py --clips 2048 --workdir /data/tmp --keep
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiossl.data.dataset import FbankDataset, WavDataset
from audiossl.data.manifest import Manifest, label_map_from_labels
from audiossl.data.store import precompute
from audiossl.features import FbankConfig, Normalizer

SAMPLE_RATE = 16000
SECONDS = 10.0


def synth_clip(rng: np.random.Generator) -> np.ndarray:
    """Ten seconds of tones, a sweep and noise bursts: broadband like real audio, so neither
    loader gets an easy (silent or constant) input."""
    n = int(SAMPLE_RATE * SECONDS)
    t = np.arange(n) / SAMPLE_RATE
    wav = 0.05 * rng.standard_normal(n)
    for _ in range(3):
        f = rng.uniform(80, 4000)
        wav += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    f0, f1 = rng.uniform(100, 7000, size=2)
    wav += 0.1 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * SECONDS)))
    for start in rng.integers(0, n - 4000, size=5):
        wav[start : start + 4000] += 0.3 * rng.standard_normal(4000) * np.hanning(4000)
    return (wav / np.abs(wav).max() * 0.8).astype(np.float32)


def build_corpus(root: Path, clips: int, workers: int, dtypes: tuple[str, ...]) -> tuple[Manifest, dict[str, Path]]:
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    classes = [f"/m/bench{k:02d}" for k in range(10)]
    rows = []
    for i in range(clips):
        path = wav_dir / f"clip{i:05d}.wav"
        wav = synth_clip(rng)
        if not path.exists():
            sf.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
        labels = tuple(sorted({classes[i % 10], classes[int(rng.integers(0, 10))]}))
        rows.append({"id": f"clip{i:05d}", "path": str(path), "labels": labels, "duration": SECONDS})
    table = pd.DataFrame(rows)
    manifest = Manifest(table, label_map_from_labels(table["labels"]))
    stores = {}
    for dtype in dtypes:
        stores[dtype] = root / f"bench_{dtype}.h5"
        precompute(
            manifest,
            stores[dtype],
            FbankConfig.preset("ast"),
            normalizer=Normalizer.preset("audioset"),
            dtype=dtype,
            workers=workers,
            progress=False,
        )
    return manifest, stores


def evict(paths: list[Path]) -> bool:
    """Drop the files' clean pages from the page cache; False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def _record_pid(pids: torch.Tensor, worker_id: int) -> None:
    pids[worker_id] = os.getpid()


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of the given live workers.

    CPU time, unlike wall time, does not depend on what else the machine runs, so the
    CPU-per-sample ratio is the number to trust on a shared or busy machine.
    """
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def shared_batch_ms(shape: tuple[int, ...], repeats: int = 10) -> float:
    """CPU ms to fill a fresh shared-memory batch, the fixed cost of every DataLoader worker
    batch (tmpfs page faults), whichever dataset produced it."""
    src = torch.randn(shape)
    nbytes = src.numel() * src.element_size()
    t0 = time.process_time()
    for _ in range(repeats):
        buf = torch.empty(0).set_(torch.UntypedStorage._new_shared(nbytes), 0, shape)
        buf.copy_(src)
        del buf
    return (time.process_time() - t0) / repeats * 1e3


def run_epochs(loader: DataLoader, epochs: int, first: int) -> int:
    seen = 0
    for e in range(first, first + epochs):
        loader.dataset.set_epoch(e)
        for batch in loader:
            seen += batch["fbank"].shape[0]
    return seen


def measure(name: str, dataset, files: list[Path], args) -> dict:
    g = torch.Generator().manual_seed(0)
    pids = torch.zeros(max(args.workers, 1), dtype=torch.int64).share_memory_()
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        generator=g,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        collate_fn=dataset.collate_fn,
        worker_init_fn=functools.partial(_record_pid, pids) if args.workers > 0 else None,
        multiprocessing_context="fork" if args.workers > 0 and sys.platform == "linux" else None,
    )
    epoch = 0
    run_epochs(loader, 1, epoch)  # warm-up: worker start-up, imports, first file opens
    epoch += 1
    workers = [int(p) for p in pids.tolist() if p > 0] if args.workers > 0 else []

    cold = math.nan
    if evict(files):
        t0 = time.perf_counter()
        n = run_epochs(loader, 1, epoch)
        epoch += 1
        cold = n / (time.perf_counter() - t0)

    n = 0
    c0, t0 = _cpu_seconds(workers), time.perf_counter()
    while True:
        n += run_epochs(loader, 1, epoch)
        epoch += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= args.min_seconds:
            break
    cpu_ms = (_cpu_seconds(workers) - c0) / n * 1e3
    warm = n / elapsed
    del loader
    print(f"{name:<22} {cold:10.1f} {warm:10.1f} {cpu_ms:14.2f}   ({n} samples timed warm)")
    return {"cold": cold, "warm": warm, "cpu_ms": cpu_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=256, help="number of 10 s clips (M)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--target-length", type=int, default=1024)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (default: cores)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed span of the warm measurement")
    p.add_argument("--dtypes", nargs="+", default=["float16", "float32"], choices=["float16", "float32"])
    p.add_argument("--workdir", type=Path, default=None, help="where to build the corpus (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the corpus (reused by a later run with --workdir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # the workers are the parallelism, as in training

    root = Path(tempfile.mkdtemp(prefix="bench_loader_")) if args.workdir is None else args.workdir
    try:
        t0 = time.perf_counter()
        manifest, stores = build_corpus(root, args.clips, args.workers, tuple(args.dtypes))
        build_s = time.perf_counter() - t0
        wav_files = [Path(p) for p in manifest.table["path"]]
        wav_mb = sum(f.stat().st_size for f in wav_files) / 2**20
        sizes = ", ".join(f"{d} store {p.stat().st_size / 2**20:.0f} MB" for d, p in stores.items())
        print(
            f"corpus: {args.clips} clips x {SECONDS:.0f} s @ {SAMPLE_RATE} Hz ({wav_mb:.0f} MB wav, {sizes}; "
            f"built in {build_s:.1f} s)\nbatch {args.batch}, target_length {args.target_length}, 128 bins, "
            f"{args.workers} workers, torch {torch.__version__}, numpy {np.__version__}, load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        normalizer = Normalizer.preset("audioset")
        wav_ds = WavDataset(manifest, "ast", target_length=args.target_length, normalizer=normalizer)
        datasets = {
            f"FbankDataset {d}": (FbankDataset(p, target_length=args.target_length, normalizer=normalizer), [p])
            for d, p in stores.items()
        }
        # Same items from both paths (float16 storage error aside): the comparison is fair.
        for ds, _ in datasets.values():
            a, b = ds[0]["fbank"], wav_ds[0]["fbank"]
            assert a.shape == b.shape == (args.target_length, 128), (a.shape, b.shape)
            assert float((a - b).abs().max()) < 0.01, float((a - b).abs().max())

        shm_ms = shared_batch_ms((args.batch, args.target_length, 128))
        print(
            f"a fresh shared-memory batch ({args.batch} x {args.target_length} x 128 float32) costs "
            f"{shm_ms:.1f} ms CPU here = {shm_ms / args.batch:.2f} ms/sample, paid by both loaders with workers"
        )
        print(f"{'':<22} {'cold/s':>10} {'warm/s':>10} {'CPU ms/sample':>14}")
        results = {name: measure(name, ds, files, args) for name, (ds, files) in datasets.items()}
        wv = measure("WavDataset", wav_ds, wav_files, args)
        for name, r in results.items():
            print(
                f"{name} / WavDataset: warm {r['warm'] / wv['warm']:.1f}x, cold {r['cold'] / wv['cold']:.1f}x, "
                f"CPU per sample {wv['cpu_ms'] / r['cpu_ms']:.1f}x (target >= 10x)"
            )
    finally:
        if args.keep:
            print(f"kept corpus in {root}", file=sys.stderr)
        elif args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
