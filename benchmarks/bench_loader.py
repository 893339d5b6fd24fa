"""Loader throughput: precomputed HDF5 store (FbankDataset) vs on-the-fly fbank (WavDataset).

Claim: reading stored float16 log-mels is >= 10x faster than decoding audio and computing the
Kaldi fbank per item, at the training shape (batch 32, target_length 1024, 128 bins,
``num_workers`` = CPU cores), so a precompute pays for itself within the first epoch.

What on-the-fly loading costs depends on the files users have, so the audio comes in several
``--source`` forms (default: ``wav16k`` and ``flac48k``, both in one run):

* ``wav16k``: 16 kHz PCM-16 wav, already at the model's rate: the best case for WavDataset
  (no resampling, the cheapest decode);
* ``flac48k``: 48 kHz 24-bit FLAC (mono), the common AudioSet download (most Hugging Face
  copies): every item pays a FLAC decode and soxr_hq resampling to 16 kHz, every epoch;
* ``wav44k``: 44.1 kHz PCM-16 wav, as ESC-50 ships (resampling, cheap decode);
* ``panns32k``: 32 kHz int16 rows of one PANNs waveform HDF5 pack (``pack.h5#row``).

For each source it synthesises M clips of 10 s at the source's rate (the same tones, sweep and
noise bursts at every rate), writes them in that form, and precomputes float16 and float32
stores *from those files* (so a store holds exactly the features WavDataset computes from the
same audio), then runs each dataset through the same DataLoader:

* a warm-up epoch (untimed) starts the persistent workers and imports;
* **cold**: the files are first evicted from the page cache with
  ``posix_fadvise(POSIX_FADV_DONTNEED)`` (no root needed; Linux only, otherwise skipped), so
  the epoch reads from disk, as the first epoch of a run over a corpus larger than RAM;
* **warm**: epochs repeated until ``--min-seconds``, the files in the page cache.

The float16 store is measured three ways: ``batched`` (the default: ``__getitems__`` reads the
whole batch into one shared-memory float32 tensor, normalised in place), ``per-item`` (each item
built by ``__getitem__`` and collated, the path before batched reads) and ``f16 out``
(``output_dtype=torch.float16``: the stored log-mel crosses to the main process at half the
bytes; its ``normalize_batch`` belongs on the training device and is not part of the CPU time).

Besides samples/s (wall clock, which other load on the machine drags down) it prints the CPU
time per sample of the main process plus the workers (from ``/proc``): the load-independent
cost, and the ratio to trust on a shared machine.

    python benchmarks/bench_loader.py                    # 256 clips x 2 sources, ~1 min on 2 cores
    python benchmarks/bench_loader.py --source flac48k wav44k panns32k
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiossl.data.dataset import FbankDataset, WavDataset, collate
from audiossl.data.manifest import Manifest, label_map_from_labels
from audiossl.data.store import precompute
from audiossl.features import FbankConfig, Normalizer

SECONDS = 10.0


@dataclass(frozen=True)
class Source:
    rate: int
    format: str  # a libsndfile format, or "PANNS" for rows of a PANNs waveform HDF5 pack
    subtype: str
    ext: str
    what: str


SOURCES = {
    "wav16k": Source(16000, "WAV", "PCM_16", "wav", "16 kHz PCM-16 wav (no resampling: the best case on the fly)"),
    "flac48k": Source(48000, "FLAC", "PCM_24", "flac", "48 kHz 24-bit FLAC (Hugging Face AudioSet copies)"),
    "wav44k": Source(44100, "WAV", "PCM_16", "wav", "44.1 kHz PCM-16 wav (ESC-50)"),
    "panns32k": Source(32000, "PANNS", "int16", "h5", "32 kHz int16 rows of a PANNs waveform HDF5 pack"),
}


def _sine(amp: float, cycles: np.ndarray) -> np.ndarray:
    """``amp sin(2 pi cycles)`` in float32, ``cycles`` (float64, overwritten) wrapped first."""
    cycles -= np.floor(cycles)
    cycles *= 2 * np.pi
    return np.float32(amp) * np.sin(cycles.astype(np.float32))


def synth_clip(rng: np.random.Generator, rate: int) -> np.ndarray:
    """Ten seconds of tones, a sweep and noise bursts at ``rate``: broadband like real audio, so
    neither loader gets an easy (silent or constant) input, and FLAC cannot shrink it to nothing.
    Every parameter is drawn before the noise, so one seed gives the same tones, sweep and burst
    times at every rate. Phases are wrapped in float64 and the sines taken in float32 (numpy's
    SIMD path): float64 sines made the 48 kHz clips dominate the set-up."""
    n = int(rate * SECONDS)
    tones = [(rng.uniform(80, 4000), rng.uniform(0.05, 0.2), rng.uniform(0, 1)) for _ in range(3)]
    f0, f1 = rng.uniform(100, 7000, size=2)
    burst = rate // 4
    starts = (rng.uniform(0, SECONDS - 0.25, size=5) * rate).astype(np.int64)
    t = np.arange(n, dtype=np.float64) / rate
    wav = rng.standard_normal(n, dtype=np.float32) * np.float32(0.05)
    for f, amp, phase in tones:
        wav += _sine(amp, f * t + phase)
    wav += _sine(0.1, f0 * t + (f1 - f0) * t**2 / (2 * SECONDS))
    window = np.hanning(burst).astype(np.float32) * np.float32(0.3)
    for start in starts:
        wav[start : start + burst] += rng.standard_normal(burst, dtype=np.float32) * window
    wav *= np.float32(0.8) / np.abs(wav).max()
    return wav


def _clip_rng(i: int) -> np.random.Generator:
    return np.random.default_rng([0, i])  # per clip: a kept corpus is extended, not redrawn


def _write_audio(path: Path, source: Source, i: int) -> None:
    if path.exists():
        return
    partial = path.with_name(path.name + ".partial")
    sf.write(partial, synth_clip(_clip_rng(i), source.rate), source.rate, format=source.format, subtype=source.subtype)
    os.replace(partial, path)  # an interrupted --keep run never leaves a short file behind


def _write_panns_pack(path: Path, source: Source, clips: int, pool: ThreadPoolExecutor) -> None:
    """PANNs' layout: ``waveform`` (N, samples) int16 = clip(x, -1, 1) * 32767, ``audio_name``."""
    if path.exists():
        return
    partial = path.with_name(path.name + ".partial")
    samples = int(source.rate * SECONDS)
    with h5py.File(partial, "w") as h5:
        h5.create_dataset("audio_name", data=np.array([f"Yclip{i:05d}.wav".encode() for i in range(clips)], dtype="S20"))
        wave = h5.create_dataset("waveform", shape=(clips, samples), dtype=np.int16)
        for lo in range(0, clips, 64):  # in blocks, so a large --clips never holds every clip
            block = pool.map(lambda i: synth_clip(_clip_rng(i), source.rate), range(lo, min(lo + 64, clips)))
            for i, x in enumerate(block, start=lo):
                wave[i] = (np.clip(x, -1, 1) * 32767.0).astype(np.int16)
    os.replace(partial, path)


def build_corpus(
    root: Path, name: str, clips: int, workers: int, dtypes: tuple[str, ...]
) -> tuple[Manifest, dict[str, Path], list[Path]]:
    """The clips of one source, their manifest, one store per dtype built from them, and the
    files a cold epoch of WavDataset reads."""
    source = SOURCES[name]
    audio_dir = root / name
    audio_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(workers, 1)) as pool:  # numpy and libsndfile release the GIL
        if source.format == "PANNS":
            pack = audio_dir / f"pack_{clips}.h5"
            _write_panns_pack(pack, source, clips, pool)
            paths, files = [f"{pack}#{i}" for i in range(clips)], [pack]
        else:
            files = [audio_dir / f"clip{i:05d}.{source.ext}" for i in range(clips)]
            list(pool.map(lambda i: _write_audio(files[i], source, i), range(clips)))
            paths = [str(f) for f in files]
    rng = np.random.default_rng(0)
    classes = [f"/m/bench{k:02d}" for k in range(10)]
    rows = []
    for i, path in enumerate(paths):
        labels = tuple(sorted({classes[i % 10], classes[int(rng.integers(0, 10))]}))
        rows.append({"id": f"clip{i:05d}", "path": path, "labels": labels, "duration": SECONDS})
    table = pd.DataFrame(rows)
    manifest = Manifest(table, label_map_from_labels(table["labels"]))
    stores = {}
    for dtype in dtypes:
        stores[dtype] = root / f"{name}_{clips}_{dtype}.h5"
        precompute(
            manifest,
            stores[dtype],
            FbankConfig.preset("ast"),
            normalizer=Normalizer.preset("audioset"),
            dtype=dtype,
            workers=workers,
            progress=False,
        )
    return manifest, stores, files


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


def per_item_collate(batch, pad_value) -> dict:
    """Build every item with ``__getitem__`` first, then collate: the path before batched reads."""
    return collate(list(batch), pad_value)


def run_epochs(loader: DataLoader, epochs: int, first: int) -> int:
    seen = 0
    for e in range(first, first + epochs):
        loader.dataset.set_epoch(e)
        for batch in loader:
            seen += batch["fbank"].shape[0]
    return seen


def measure(name: str, dataset, files: list[Path], args, collate_fn=None) -> dict:
    g = torch.Generator().manual_seed(0)
    pids = torch.zeros(max(args.workers, 1), dtype=torch.int64).share_memory_()
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        generator=g,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        collate_fn=collate_fn or dataset.collate_fn,
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


def run_source(name: str, root: Path, args) -> dict[str, dict]:
    """Build one source's corpus and stores, measure every loader on it, print its block."""
    source = SOURCES[name]
    t0 = time.perf_counter()
    manifest, stores, files = build_corpus(root, name, args.clips, args.workers, tuple(args.dtypes))
    build_s = time.perf_counter() - t0
    audio_mb = sum(f.stat().st_size for f in files) / 2**20
    sizes = ", ".join(f"{d} store {p.stat().st_size / 2**20:.0f} MB" for d, p in stores.items())
    print(
        f"\n[{name}] {source.what}\n{args.clips} clips x {SECONDS:.0f} s ({audio_mb:.0f} MB audio, {sizes}; "
        f"built in {build_s:.1f} s), load average {os.getloadavg()[0]:.1f}"
    )
    normalizer = Normalizer.preset("audioset")
    wav_ds = WavDataset(manifest, "ast", target_length=args.target_length, normalizer=normalizer)
    datasets = {}  # name -> (dataset, files to evict, collate_fn or None for dataset.collate_fn)
    for d, p in stores.items():
        ds = FbankDataset(p, target_length=args.target_length, normalizer=normalizer)
        datasets[f"FbankDataset {d}"] = (ds, [p], None)
        if d == "float16":
            per_item = functools.partial(per_item_collate, pad_value=ds.pad_value)
            datasets["  f16 per-item"] = (ds, [p], per_item)
            half = FbankDataset(p, target_length=args.target_length, normalizer=normalizer, output_dtype=torch.float16)
            datasets["  f16 out"] = (half, [p], None)
    # Same items from both paths (float16 storage error aside): the comparison is fair.
    reference = wav_ds[0]["fbank"]
    for ds, _, _ in datasets.values():
        a = ds.normalize_batch(ds[0]["fbank"][None])[0]
        assert a.shape == reference.shape == (args.target_length, 128), (a.shape, reference.shape)
        assert float((a - reference).abs().max()) < 0.01, float((a - reference).abs().max())

    print(f"{'':<22} {'cold/s':>10} {'warm/s':>10} {'CPU ms/sample':>14}")
    results = {n: measure(n, ds, f, args, c) for n, (ds, f, c) in datasets.items()}
    results["WavDataset"] = wv = measure("WavDataset", wav_ds, files, args)
    for n, r in results.items():
        if n != "WavDataset":
            print(
                f"{n} / WavDataset: warm {r['warm'] / wv['warm']:.1f}x, cold {r['cold'] / wv['cold']:.1f}x, "
                f"CPU per sample {wv['cpu_ms'] / r['cpu_ms']:.1f}x (target >= 10x)"
            )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=256, help="number of 10 s clips (M) per source")
    p.add_argument(
        "--source",
        nargs="+",
        default=["wav16k", "flac48k"],
        choices=[*SOURCES, "all"],
        help="audio forms WavDataset decodes (default: wav16k flac48k)",
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--target-length", type=int, default=1024)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (default: cores)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed span of the warm measurement")
    p.add_argument("--dtypes", nargs="+", default=["float16", "float32"], choices=["float16", "float32"])
    p.add_argument("--workdir", type=Path, default=None, help="where to build the corpus (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the corpus (reused by a later run with --workdir)")
    args = p.parse_args(argv)
    sources = list(SOURCES) if "all" in args.source else list(dict.fromkeys(args.source))
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # the workers are the parallelism, as in training

    root = Path(tempfile.mkdtemp(prefix="bench_loader_")) if args.workdir is None else args.workdir
    started = time.perf_counter()
    try:
        print(
            f"batch {args.batch}, target_length {args.target_length}, 128 bins, {args.workers} workers, "
            f"torch {torch.__version__}, numpy {np.__version__}, libsndfile {sf.__libsndfile_version__}, "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        shm_ms = shared_batch_ms((args.batch, args.target_length, 128))
        print(
            f"a fresh shared-memory batch ({args.batch} x {args.target_length} x 128 float32) costs "
            f"{shm_ms:.1f} ms CPU here = {shm_ms / args.batch:.2f} ms/sample, paid by both loaders with workers"
        )
        results = {name: run_source(name, root, args) for name in sources}
        head = args.dtypes[0]
        print(f"\nsummary, FbankDataset {head} / WavDataset (CPU per sample is the ratio to trust here):")
        print(f"{'source':<10} {'Wav CPU ms':>10} {'store CPU ms':>12} {'CPU ratio':>9} {'warm':>7} {'cold':>7}")
        for name, r in results.items():
            st, wv = r[f"FbankDataset {head}"], r["WavDataset"]
            print(
                f"{name:<10} {wv['cpu_ms']:10.2f} {st['cpu_ms']:12.2f} {wv['cpu_ms'] / st['cpu_ms']:8.1f}x "
                f"{st['warm'] / wv['warm']:6.1f}x {st['cold'] / wv['cold']:6.1f}x"
            )
        if "float16" in args.dtypes:
            print("\nfloat16 store, CPU ms/sample by path (batched is the default):")
            heads = ("per-item", "batched", "f16 out", "per-item/batched", "per-item/f16 out")
            print(f"{'source':<10} " + " ".join(f"{h:>{9 if i < 3 else 17}}" for i, h in enumerate(heads)))
            for name, r in results.items():
                pi, bt, fo = (r[k]["cpu_ms"] for k in ("  f16 per-item", "FbankDataset float16", "  f16 out"))
                print(f"{name:<10} {pi:9.2f} {bt:9.2f} {fo:9.2f} {pi / bt:16.2f}x {pi / fo:16.2f}x")
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        if args.keep:
            print(f"kept corpus in {root}", file=sys.stderr)
        elif args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
