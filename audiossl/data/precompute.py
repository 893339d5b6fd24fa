"""The store writer: ``precompute`` the fbank of every clip of a manifest (or of one shard of it)
into a store, in parallel, resumably and atomically; bad clips are skipped and listed.

A plain HDF5 file killed mid-write can be unreadable, so the writer never builds the final file
incrementally. Finished clips go into small segment files under ``STORE.h5.partial.d/``, each
written to ``*.partial`` and renamed; a re-run skips the rows those segments cover, and only when
every row is done is ``STORE.h5.partial`` assembled, fsynced and renamed to ``STORE.h5``.

One writer at a time: a run holds ``STORE.h5.lock`` (an ``flock``, with its pid written in it)
from before it looks at anything of the store to its end; another run on the same store is
refused, naming that pid. A full disk stops the run with an :class:`~audiossl.files.OutputError`
naming the file that did not fit; the partial file is removed, a previous ``STORE.h5`` is left as
it was, and the segments finished so far stay: the same command resumes from them once there is
room (they hold computed features, often hours of decoding, and they are complete by construction).

The layout written is the one ``audiossl.data.store_format`` reads; shard row blocks come from
``audiossl.data.shards``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import h5py
import numpy as np

import audiossl
from audiossl.files import OutputError, atomic_path, is_no_space, no_space_error, remove_quietly

from .shards import shard_rows
from .store_format import (
    COMPRESSIONS,
    DTYPES,
    FORMAT_VERSION,
    FbankStore,
    PathLike,
    StoreError,
    _atomic_h5,
    _attr_text,
    _fsync_dir,
    _json_attr,
    _label_columns,
    _normalizer_attr,
    _ragged_index,
    _skipped_list,
    _write_skipped,
    _writing_h5,
    chunk_aligned_offsets,
    choose_chunk_frames,
    manifest_sha256,
    write_normalizer,
)

# As every store module: the name the store's messages have always had.
logger = logging.getLogger("audiossl.data.store")

SEGMENT_CLIPS = 1000
SEGMENT_SECONDS = 20.0
SEGMENT_BYTES = 256 << 20
CLIPS_PER_TASK = 4


# ---------------------------------------------------------------------------------------------
# workers


_WORKER: Dict[str, Any] = {}


def _init_worker(config_dict: dict, dtype: str, threads: int) -> None:
    """Pool initializer (a module-level function, so it works under spawn)."""
    import torch

    from audiossl.features import FbankConfig

    torch.set_num_threads(threads)
    _WORKER["config"] = FbankConfig.from_dict(config_dict)
    _WORKER["dtype"] = np.dtype(dtype)


def _compute_clips(task: List[Tuple[int, str]]) -> List[Tuple[int, Optional[np.ndarray], str]]:
    """Load and fbank a few clips; a bad clip gives ``(row, None, reason)``, never an exception."""
    import torch

    from audiossl.audio import AudioError, load
    from audiossl.features import fbank

    config, dtype = _WORKER["config"], _WORKER["dtype"]
    results: List[Tuple[int, Optional[np.ndarray], str]] = []
    for row, path in task:
        try:
            wav = load(path, sample_rate=int(config.sample_frequency))
        except AudioError as exc:
            results.append((row, None, f"unreadable audio: {getattr(exc, 'reason', exc)}"))
            continue
        # Dither noise is seeded by the manifest row, so it does not depend on workers or shards.
        generator = torch.Generator().manual_seed(row) if config.dither else None
        with torch.inference_mode():
            feats, frames = fbank(wav.reshape(1, -1), config, generator=generator)
        count = int(frames[0])
        if count == 0:
            results.append((row, None, f"too short: {wav.numel()} samples give no frame"))
            continue
        # torch rounds to half exactly as numpy does (to nearest even), and ~10x faster.
        block = feats[0, :count].to(torch.float16 if dtype == np.float16 else torch.float32)
        if not bool(torch.isfinite(block).all()):
            results.append((row, None, "fbank is not finite (overflow in the store dtype?)"))
            continue
        results.append((row, block.numpy(), ""))
    return results


# ---------------------------------------------------------------------------------------------
# segments


@dataclasses.dataclass
class _Segment:
    path: Path
    rows: np.ndarray  # manifest rows covered, consecutive
    num_frames: np.ndarray  # 0 for skipped rows
    reasons: List[str]  # "" for stored rows


def _key_diff(have: dict, want: dict) -> str:
    keys = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    return ", ".join(keys) or "unknown"


def _write_segment(
    seg_dir: Path, key_json: str, rows: List[int], blocks: List[Optional[np.ndarray]], reasons: List[str], dtype: str, bins: int
) -> _Segment:
    final = seg_dir / f"seg-{rows[0]:012d}.h5"
    frames = np.array([0 if b is None else len(b) for b in blocks], dtype=np.int32)
    good = [b for b in blocks if b is not None]
    data = np.concatenate(good) if good else np.zeros((0, bins), dtype=dtype)
    with _atomic_h5(final) as fh:
        fh.attrs["key"] = key_json
        fh.create_dataset("rows", data=np.asarray(rows, dtype=np.int64))
        fh.create_dataset("num_frames", data=frames)
        fh.create_dataset("reasons", data=np.array(reasons, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("fbank", data=data)
    return _Segment(final, np.asarray(rows, dtype=np.int64), frames, list(reasons))


def _scan_segments(seg_dir: Path, key: dict) -> List[_Segment]:
    for stale in (*seg_dir.glob("*.partial"), *seg_dir.glob("*.tmp")):  # *.tmp: earlier versions' name
        remove_quietly(stale)
    segments = []
    for path in sorted(seg_dir.glob("seg-*.h5")):
        try:
            with h5py.File(path, "r") as fh:
                have = json.loads(_attr_text(fh.attrs["key"]))
                seg = _Segment(
                    path,
                    fh["rows"][()].astype(np.int64),
                    fh["num_frames"][()].astype(np.int32),
                    list(fh["reasons"].asstr()[()]),
                )
                if fh["fbank"].shape[0] != int(seg.num_frames.sum()):
                    raise KeyError("fbank rows")
        except (OSError, KeyError, ValueError) as exc:
            # Renamed segments are complete by construction; one that is not was damaged outside
            # this program (e.g. a power cut before fsync): recompute its rows.
            logger.warning("%s is damaged (%s); its clips will be recomputed", path, exc)
            path.unlink()
            continue
        if have != key:
            raise StoreError(
                seg_dir,
                f"holds segments of a different run ({_key_diff(have, key)} differ); "
                "delete this folder (or pass --overwrite) to start over",
            )
        segments.append(seg)
    return segments


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One writer per store, from before it looks at the store to its end: a second run would
    interleave segments, delete the first one's (``--overwrite``, or taking them for the debris
    of a finished run) or rename its own store over the first one's.

    The lock is ``STORE.h5.lock`` beside the store, not in the segment folder, which writers
    delete; the holder writes its pid in it for the refusal to name, and deletes it on release
    (a run killed with -9 leaves it, unlocked, for the next run to take).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = out.with_name(out.name + ".lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if is_no_space(exc):
                raise no_space_error(lock, exc) from exc
            raise StoreError(out, f"cannot create the lock file {lock} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise StoreError(
                out,
                f"another `audiossl fbank` run ({holder}) is writing this store (it holds {lock}); "
                "wait for it to end, or stop it, and run again",
            ) from None
        # The previous holder deletes the file on release: the lock taken may be on a file that
        # is no longer there, which the next run would not see. Then take the new one.
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # the pid is for the message only: a full disk may refuse it
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        remove_quietly(lock)  # while still holding it, so no other run locks the deleted file
        os.close(fd)


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "its pid is not recorded yet"


# ---------------------------------------------------------------------------------------------
# the precompute


@dataclasses.dataclass
class PrecomputeSummary:
    path: Path
    num_clips: int
    num_skipped: int
    num_frames: int
    bytes_on_disk: int
    seconds: float
    processed: int  # clips (stored or skipped) computed by this run
    resumed: int  # clips found done in segments of an earlier, interrupted run

    @property
    def clips_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def format(self) -> str:
        size = self.bytes_on_disk / 2**20
        text = (
            f"{self.path}: {self.num_clips} clips written, {self.num_skipped} skipped, "
            f"{self.num_frames} frames, {size:.1f} MiB on disk, {self.seconds:.1f} s, "
            f"{self.clips_per_second:.1f} clips/s"
        )
        if self.resumed:
            text += f" ({self.resumed} clips resumed from an interrupted run)"
        return text


def _as_manifest(manifest):
    if hasattr(manifest, "table"):
        return manifest
    from audiossl.data.manifest import read_manifest

    return read_manifest(manifest)


def _store_key(path: Path) -> Optional[dict]:
    try:
        with h5py.File(path, "r") as fh:
            return json.loads(_attr_text(fh.attrs["run_key"]))
    except (OSError, KeyError, ValueError):
        return None


def _summary_of(path: Path, seconds: float, processed: int, resumed: int) -> PrecomputeSummary:
    store = FbankStore(path)
    return PrecomputeSummary(
        path=path,
        num_clips=len(store),
        num_skipped=int(store.attrs.get("num_skipped", 0)),
        num_frames=int(store.num_frames.astype(np.int64).sum()),
        bytes_on_disk=path.stat().st_size,
        seconds=seconds,
        processed=processed,
        resumed=resumed,
    )


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _default_context() -> str:
    # fork starts workers in milliseconds; the parent has run no torch op, so no thread pool is
    # forked. Elsewhere (macOS, Windows) spawn is the only safe choice.
    return "fork" if sys.platform.startswith("linux") else "spawn"


def precompute(
    manifest,
    out: PathLike,
    config=None,
    *,
    normalizer=None,
    dtype: str = "float16",
    workers: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
    compression: Optional[str] = None,
    overwrite: bool = False,
    progress: bool = True,
    segment_clips: int = SEGMENT_CLIPS,
    segment_seconds: float = SEGMENT_SECONDS,
    clips_per_task: int = CLIPS_PER_TASK,
    mp_context: Optional[str] = None,
) -> PrecomputeSummary:
    """Compute the fbank of every clip of ``manifest`` (or of one shard of it) into ``out``.

    Resumable: re-running the same call after an interruption (kill -9 included) computes only the
    clips that no finished segment holds, and the store it writes equals an uninterrupted run's.
    ``config`` is a ``FbankConfig`` (default: the ``ast`` preset); ``normalizer`` only goes into
    the attrs. ``workers`` <= 1 computes in this process.
    """
    from audiossl.features import FbankConfig

    started = time.perf_counter()
    out = Path(out)
    manifest = _as_manifest(manifest)
    config = config if config is not None else FbankConfig.preset("ast")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    shard_index, num_shards = shard if shard is not None else (0, 1)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"bad shard {shard_index}/{num_shards}")
    num_rows = len(manifest.table)
    lo, hi = shard_rows(num_rows, shard_index, num_shards)
    config_dict = config.to_dict()
    key = {
        "format_version": FORMAT_VERSION,
        "manifest_sha256": manifest_sha256(manifest),
        "fbank_config": config_dict,
        "dtype": dtype,
        "shard_index": shard_index,
        "num_shards": num_shards,
    }
    key_json = _json_attr(key)
    seg_dir = out.with_name(out.name + ".partial.d")

    _make_folder(out.parent)
    with _exclusive(out):
        if out.exists() and not overwrite:
            if _store_key(out) != json.loads(key_json):
                raise StoreError(out, "exists and was built from another manifest/config; delete it or pass --overwrite")
            if seg_dir.exists():  # killed after the final rename, before the clean-up
                shutil.rmtree(seg_dir)
            if normalizer is not None and FbankStore(out).attrs.get("normalizer") != _json_attr(normalizer.to_dict()):
                write_normalizer(out, normalizer)
            logger.info("%s is already complete", out)
            return _summary_of(out, time.perf_counter() - started, 0, hi - lo)

        if overwrite and seg_dir.exists() and any(seg_dir.glob("seg-*.h5")):
            keys = {_segment_key(p) for p in seg_dir.glob("seg-*.h5")}
            if keys != {key_json}:
                logger.info("--overwrite: removing segments of another run in %s", seg_dir)
                shutil.rmtree(seg_dir)
        _make_folder(seg_dir)
        segments = _scan_segments(seg_dir, json.loads(key_json))
        done = np.zeros(hi - lo, dtype=bool)
        for seg in segments:
            if len(seg.rows) == 0 or seg.rows.min() < lo or seg.rows.max() >= hi or done[seg.rows - lo].any():
                raise StoreError(seg.path, "segment rows overlap another segment or leave the shard; delete the folder")
            done[seg.rows - lo] = True
        resumed = int(done.sum())
        todo = np.flatnonzero(~done) + lo
        if resumed:
            logger.info("%s: resuming, %d of %d clips already done", out, resumed, hi - lo)
        paths = manifest.table["path"].to_numpy()
        try:
            segments += _run_workers(
                todo,
                paths,
                seg_dir=seg_dir,
                key_json=key_json,
                config_dict=config_dict,
                dtype=dtype,
                bins=int(config.num_mel_bins),
                workers=default_workers() if workers is None else workers,
                segment_clips=segment_clips,
                segment_seconds=segment_seconds,
                clips_per_task=clips_per_task,
                mp_context=mp_context or _default_context(),
                progress=progress,
                progress_initial=resumed,
                progress_total=hi - lo,
                desc=out.name,
            )
            _assemble(
                out,
                segments,
                manifest=manifest,
                lo=lo,
                hi=hi,
                key_json=key_json,
                config_dict=config_dict,
                normalizer=normalizer,
                dtype=dtype,
                bins=int(config.num_mel_bins),
                compression=compression,
            )
        except OutputError as exc:
            raise _keeping_segments(exc, seg_dir) from exc
        shutil.rmtree(seg_dir)
    return _summary_of(out, time.perf_counter() - started, len(todo), resumed)


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_no_space(exc):
            raise no_space_error(path, exc) from exc
        raise


def _keeping_segments(exc: OutputError, seg_dir: Path) -> OutputError:
    """``exc`` (a file of the run could not be written) with what a re-run finds: the segments
    finished so far are kept for it to resume from; an empty segment folder is removed."""
    kept = len(list(seg_dir.glob("seg-*.h5")))
    if kept == 0:
        with contextlib.suppress(OSError):
            seg_dir.rmdir()
        note = "no finished segment to keep"
    else:
        note = (f"{kept} finished {'segment stays' if kept == 1 else 'segments stay'} in {seg_dir}: run the same "
                "command again once there is room, it resumes from them")
    return OutputError(exc.path, f"{exc.reason}; {note}")


def _segment_key(path: Path) -> Optional[str]:
    try:
        with h5py.File(path, "r") as fh:
            return _json_attr(json.loads(_attr_text(fh.attrs["key"])))
    except (OSError, KeyError, ValueError):
        return None


def _run_workers(
    todo: np.ndarray,
    paths: np.ndarray,
    *,
    seg_dir: Path,
    key_json: str,
    config_dict: dict,
    dtype: str,
    bins: int,
    workers: int,
    segment_clips: int,
    segment_seconds: float,
    clips_per_task: int,
    mp_context: str,
    progress: bool,
    progress_initial: int,
    progress_total: int,
    desc: str,
) -> List[_Segment]:
    """Compute the ``todo`` rows in manifest order, writing a segment every few clips/seconds."""
    from tqdm import tqdm

    if len(todo) == 0:
        return []
    tasks = [
        [(int(r), str(paths[r])) for r in todo[i : i + clips_per_task]] for i in range(0, len(todo), clips_per_task)
    ]
    written: List[_Segment] = []
    rows: List[int] = []
    blocks: List[Optional[np.ndarray]] = []
    reasons: List[str] = []
    state = {"bytes": 0, "since": time.monotonic()}

    def flush() -> None:
        if rows:
            written.append(_write_segment(seg_dir, key_json, rows, blocks, reasons, dtype, bins))
            rows.clear(), blocks.clear(), reasons.clear()
        state["bytes"], state["since"] = 0, time.monotonic()

    workers = max(1, min(workers, len(tasks)))
    with contextlib.ExitStack() as stack:
        import torch

        # In this process, one thread as in the workers: torch's reductions round differently
        # with more threads, and the store must not depend on how many workers built it.
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        _init_worker(config_dict, dtype, 1)
        if workers > 1:
            first: List[Any] = []
            if mp_context == "fork":
                # The first task here imports what loading needs (librosa's lazy submodules cost
                # ~2 s of CPU) once, before the fork, instead of once per worker.
                first = [_compute_clips(tasks[0])]
                tasks = tasks[1:]
            ctx = multiprocessing.get_context(mp_context)
            pool = stack.enter_context(ctx.Pool(workers, initializer=_init_worker, initargs=(config_dict, dtype, 1)))
            results = itertools.chain(first, pool.imap(_compute_clips, tasks))
        else:
            results = map(_compute_clips, tasks)
        # The bar starts after the pool so that fork never copies tqdm's monitor thread.
        bar = stack.enter_context(
            tqdm(total=progress_total, initial=progress_initial, unit="clip", desc=desc, disable=not progress, file=sys.stderr)
        )
        if progress:
            from tqdm.contrib.logging import logging_redirect_tqdm

            stack.enter_context(logging_redirect_tqdm())  # skip warnings print above the bar
        skipped = 0
        for batch in results:
            for row, block, reason in batch:
                if rows and row != rows[-1] + 1:
                    flush()  # a segment covers consecutive rows only
                rows.append(row)
                blocks.append(block)
                reasons.append(reason)
                if block is None:
                    skipped += 1
                    logger.warning("skipping %s: %s", paths[row], reason)
                else:
                    state["bytes"] += block.nbytes
                if (
                    len(rows) >= segment_clips
                    or state["bytes"] >= SEGMENT_BYTES
                    or time.monotonic() - state["since"] >= segment_seconds
                ):
                    flush()
            bar.update(len(batch))
            if skipped:
                bar.set_postfix(skipped=skipped, refresh=False)
        flush()
    return written


def _assemble(
    out: Path,
    segments: List[_Segment],
    *,
    manifest,
    lo: int,
    hi: int,
    key_json: str,
    config_dict: dict,
    normalizer,
    dtype: str,
    bins: int,
    compression: Optional[str],
) -> None:
    """Write the final store from the segments, in manifest order, then rename it into place."""
    segments = sorted(segments, key=lambda s: int(s.rows[0]))
    rows = np.concatenate([s.rows for s in segments]) if segments else np.zeros(0, np.int64)
    if not np.array_equal(rows, np.arange(lo, hi)):
        raise StoreError(out.with_name(out.name + ".partial.d"), "segments do not cover the manifest rows exactly once")
    frames = np.concatenate([s.num_frames for s in segments]) if segments else np.zeros(0, np.int32)
    reasons = [r for s in segments for r in s.reasons]
    good = np.array([r == "" for r in reasons], dtype=bool)
    lengths = frames[good].astype(np.int64)
    itemsize = np.dtype(dtype).itemsize
    chunk = choose_chunk_frames(lengths, bins, itemsize)
    offsets, total_rows = chunk_aligned_offsets(lengths, chunk)
    table = manifest.table
    ids, paths = table["id"].to_numpy(), table["path"].to_numpy()
    skipped = [(int(r), str(ids[r]), str(paths[r]), reasons[k]) for k, r in zip(np.flatnonzero(~good), rows[~good])]
    sidecar = _skipped_list(out)
    try:
        with atomic_path(out) as partial:
            with _writing_h5(partial) as fh:
                _write_fbank(fh, segments, offsets, lengths, chunk, total_rows, dtype=dtype, bins=bins,
                             compression=compression)
                _write_clip_index(fh, manifest, rows[good], offsets, lengths)
                _write_attrs(fh, manifest, key_json, config_dict=config_dict, normalizer=normalizer, dtype=dtype,
                             bins=bins, chunk=chunk, compression=compression, lo=lo, hi=hi,
                             num_clips=int(good.sum()), num_skipped=len(skipped))
            # Inside the store's atomic write: a list that does not fit leaves no store behind either.
            if skipped:
                _write_skipped(sidecar, skipped)
                logger.warning("%d clips skipped, listed in %s", len(skipped), sidecar)
            else:
                remove_quietly(sidecar)
    except OutputError as exc:
        if exc.path != str(out):
            raise
        need = f"{total_rows * bins * itemsize / 2**20:.1f} MiB" + (" before compression" if compression else "")
        raise OutputError(exc.path, f"{exc.reason}; the store needs about {need}") from exc
    _fsync_dir(out.parent)


def _write_clip_index(fh: h5py.File, manifest, kept_rows: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> None:
    """The per-clip datasets: where each clip's rows are, its id, manifest row and labels."""
    fh.create_dataset("offsets", data=offsets)
    fh.create_dataset("num_frames", data=lengths.astype(np.int32))
    ids = np.array([str(x) for x in manifest.table["id"].to_numpy()[kept_rows]], dtype=object)
    fh.create_dataset("ids", data=ids, dtype=h5py.string_dtype())
    fh.create_dataset("manifest_index", data=kept_rows.astype(np.int64))
    mids, names = _label_columns(manifest)
    if mids:
        multi_hot = np.asarray(manifest.labels_multi_hot(), dtype=bool)[kept_rows]
        fh.create_dataset("labels", data=multi_hot, compression="gzip" if multi_hot.size else None)
        fh.create_dataset("label_mid", data=np.array(mids, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("label_name", data=np.array(names, dtype=object), dtype=h5py.string_dtype())


def _write_attrs(fh: h5py.File, manifest, key_json: str, *, config_dict: dict, normalizer, dtype: str, bins: int,
                 chunk: int, compression: Optional[str], lo: int, hi: int, num_clips: int, num_skipped: int) -> None:
    key = json.loads(key_json)
    attrs = fh.attrs
    attrs["format_version"] = FORMAT_VERSION
    attrs["audiossl_version"] = audiossl.__version__
    attrs["fbank_config"] = _json_attr(config_dict)
    attrs.create("normalizer", _normalizer_attr(normalizer.to_dict() if normalizer is not None else None))
    attrs["manifest_sha256"] = key["manifest_sha256"]
    attrs["manifest_rows"] = len(manifest.table)
    attrs["dtype"] = dtype
    attrs["num_clips"] = num_clips
    attrs["num_skipped"] = num_skipped
    attrs["num_mel_bins"] = bins
    attrs["chunk_frames"] = chunk
    attrs["compression"] = compression or "none"
    attrs["shard_index"] = key["shard_index"]
    attrs["num_shards"] = key["num_shards"]
    attrs["row_start"] = lo
    attrs["row_stop"] = hi
    attrs["run_key"] = key_json


def _write_fbank(
    fh: h5py.File,
    segments: List[_Segment],
    offsets: np.ndarray,
    lengths: np.ndarray,
    chunk: int,
    total_rows: int,
    *,
    dtype: str,
    bins: int,
    compression: Optional[str],
) -> None:
    """The ``fbank`` dataset of the store: each segment's clips copied to their chunk-aligned rows."""
    if total_rows:
        filters: Dict[str, Any] = {}
        if compression == "gzip":
            filters = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        elif compression == "lzf":
            filters = {"compression": "lzf"}
        dset = fh.create_dataset("fbank", shape=(total_rows, bins), dtype=dtype, chunks=(chunk, bins), **filters)
    else:
        dset = fh.create_dataset("fbank", shape=(0, bins), dtype=dtype)
    clip = 0
    for seg in segments:
        count = sum(1 for r in seg.reasons if r == "")
        if count == 0:
            continue
        with h5py.File(seg.path, "r") as src:
            data = src["fbank"][()]
        seg_offsets = offsets[clip : clip + count]
        seg_lengths = lengths[clip : clip + count]
        base = int(seg_offsets[0])
        end = min(int(seg_offsets[-1]) + -(-int(seg_lengths[-1]) // chunk) * chunk, total_rows)
        # Whole chunks, padding included, so HDF5 never reads back a partly written chunk.
        slab = np.zeros((end - base, bins), dtype=dtype)
        slab[_ragged_index(seg_offsets - base, seg_lengths)] = data
        dset.write_direct(slab, dest_sel=np.s_[base:end])
        clip += count
