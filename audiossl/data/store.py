"""HDF5 fbank store: the precompute writer (parallel, sharded, resumable, atomic) and its reader.

Layout of ``STORE.h5`` (``format_version`` 1)::

    fbank           (total_rows, F) float16|float32   clips concatenated in manifest order, each
                                                      starting on a chunk boundary, chunks=(C, F)
    offsets         (N,) int64     first row of clip i in ``fbank``
    num_frames      (N,) int32     true frame count of clip i (rows past it are chunk padding)
    ids             (N,) utf-8
    manifest_index  (N,) int64     manifest row of clip i (skipped clips leave gaps)
    labels          (N, K) bool    multi-hot, absent when the manifest has no label map
    label_mid, label_name  (K,) utf-8
    attrs: fbank_config, normalizer (JSON), manifest_sha256, audiossl_version, format_version,
           dtype, num_clips, num_skipped, chunk_frames, shard_index, num_shards, ...

Why this shape: log-mel mantissas are noise, so filters buy little (gzip+shuffle saves ~20 % of
float32 and makes random reads several times slower) while float16 halves the size with an error
of ~1e-3 and reads fastest. A clip of at most C frames is exactly one chunk (one read, no chunk
cache tuning); C comes from the true frame counts (:func:`choose_chunk_frames`). Ragged
concatenation avoids vlen arrays (filters see heap references) and one dataset per clip (slow to
open with 10^6 objects). The log-mel is stored un-normalised: the normalizer is metadata.

A plain HDF5 file killed mid-write can be unreadable, so the writer never builds the final file
incrementally. Finished clips go into small segment files under ``STORE.h5.partial.d/``, each
written to ``*.tmp`` and renamed; a re-run skips the rows those segments cover, and only when every
row is done is ``STORE.h5.partial`` assembled, fsynced and renamed to ``STORE.h5``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

import audiossl

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "gzip", "lzf")
# h5py's advice is 10 KiB - 1 MiB per chunk; 1 MiB is also HDF5's default chunk cache, so a
# chunk never needs the cache to be tuned.
MAX_CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 32 << 10
# Chunk padding we accept before giving up one-chunk reads for clips near the chunk length.
MAX_PAD_FRACTION = 0.10
# Bytes reserved for the normalizer attr so that `stats --write` overwrites it in place.
NORMALIZER_ATTR_BYTES = 8192
SEGMENT_CLIPS = 1000
SEGMENT_SECONDS = 20.0
SEGMENT_BYTES = 256 << 20
CLIPS_PER_TASK = 4


class StoreError(Exception):
    """A store (or one of its segment/shard files) is missing, inconsistent or unreadable."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across process boundaries
        return (type(self), (self.path, self.reason))


# ---------------------------------------------------------------------------------------------
# layout helpers


def choose_chunk_frames(
    num_frames: Sequence[int] | np.ndarray,
    num_mel_bins: int,
    itemsize: int,
    *,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    min_chunk_bytes: int = MIN_CHUNK_BYTES,
    max_pad_fraction: float = MAX_PAD_FRACTION,
) -> int:
    """The chunk length C (frames): the largest candidate whose chunk padding stays small.

    Every clip starts on a chunk boundary, so a clip of L frames costs ``ceil(L / C) * C`` rows
    on disk. Nearly uniform sets (ESC-50: 498, AudioSet: 998) get C = the longest clip: one
    chunk, hence one read, per clip and no waste. Spread-out lengths (speech) would waste about
    C/2 frames per clip, so C steps down from the high quantiles through fractions of the median
    until the padding is at most ``max_pad_fraction`` of the data; a clip then spans a few
    consecutive chunks, which HDF5 reads back almost as fast as one. C stays within
    [``min_chunk_bytes``, ``max_chunk_bytes``] (h5py's advice: 10 KiB to 1 MiB per chunk).
    """
    lengths = np.asarray(num_frames, dtype=np.int64)
    lengths = lengths[lengths > 0]
    if lengths.size == 0:
        return 1
    row_bytes = num_mel_bins * itemsize
    cap = max(1, max_chunk_bytes // row_bytes)
    floor = min(max(1, min_chunk_bytes // row_bytes), cap, int(lengths.max()))
    high = np.quantile(lengths, [1.0, 0.99, 0.98, 0.95, 0.9], method="higher")
    median = float(np.quantile(lengths, 0.5, method="higher"))
    fractions = median * 0.85 ** np.arange(40)
    candidates = sorted({int(min(max(c, floor), cap)) for c in (*high, *fractions)}, reverse=True)
    total = int(lengths.sum())

    def padding(c: int) -> int:
        return int(((lengths + c - 1) // c * c).sum()) - total

    for c in candidates:
        if padding(c) <= max_pad_fraction * total:
            return c
    return min(candidates, key=lambda c: (padding(c), -c))


def chunk_aligned_offsets(num_frames: np.ndarray, chunk: int) -> Tuple[np.ndarray, int]:
    """Offsets that put every clip on a chunk boundary, and the dataset's row count."""
    lengths = np.asarray(num_frames, dtype=np.int64)
    if lengths.size == 0:
        return np.zeros(0, np.int64), 0
    padded = (lengths + chunk - 1) // chunk * chunk
    offsets = np.zeros(lengths.size, np.int64)
    np.cumsum(padded[:-1], out=offsets[1:])
    return offsets, int(offsets[-1] + lengths[-1])


def _ragged_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (s, l), without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    cum = np.zeros(lengths.size, np.int64)
    np.cumsum(lengths[:-1], out=cum[1:])
    return np.repeat(np.asarray(starts, np.int64) - cum, lengths) + np.arange(total, dtype=np.int64)


def manifest_sha256(manifest) -> str:
    """Digest of what decides a store's content: ids, paths, labels and the label map, in order.

    Hashing the table (not the file bytes) gives the same digest for a manifest passed as an
    object or read from any of the formats ``read_manifest`` understands.
    """
    table = manifest.table
    payload = {
        "id": [str(x) for x in table["id"]],
        "path": [str(x) for x in table["path"]],
        "labels": [list(x) if x is not None else [] for x in table["labels"]],
        "label_mid": _label_columns(manifest)[0],
    }
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode("utf-8")).hexdigest()


def _label_columns(manifest) -> Tuple[List[str], List[str]]:
    label_map = getattr(manifest, "label_map", None)
    if label_map is None or len(label_map) == 0:
        return [], []
    mids = [str(m) for m in label_map["mid"]]
    if "display_name" in label_map:
        names = [str(n) for n in label_map["display_name"]]
    else:
        names = list(mids)
    return mids, names


def parse_shard(spec: str) -> Tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N."""
    try:
        i_text, n_text = spec.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard expects i/N (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {spec}: need 0 <= i < N")
    return i, n


def shard_rows(num_rows: int, shard_index: int, num_shards: int) -> Tuple[int, int]:
    """The contiguous manifest block ``[i*n//N, (i+1)*n//N)`` that shard i processes."""
    return shard_index * num_rows // num_shards, (shard_index + 1) * num_rows // num_shards


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8")
    return str(value)


def _decode_attrs(attrs: h5py.AttributeManager) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, (bytes, np.bytes_, str)):
            value = _attr_text(value).rstrip()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _as_float32(block: np.ndarray) -> np.ndarray:
    """float16 -> float32 through torch: numpy's half conversion is scalar code, about 10x slower
    (0.6 ms against 0.05 ms for a 998 x 128 clip, more than the HDF5 read itself)."""
    if block.dtype == np.float32:
        return block
    import torch

    out = np.empty(block.shape, dtype=np.float32)
    torch.from_numpy(out).copy_(torch.from_numpy(block))
    return out


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable across power loss; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _normalizer_attr(normalizer_dict: Optional[dict]) -> np.bytes_:
    text = _json_attr(normalizer_dict).encode("utf-8")
    # Space padding keeps the JSON valid and the attr's size fixed, so it can be rewritten in place.
    return np.bytes_(text.ljust(max(NORMALIZER_ATTR_BYTES, len(text))))


def _read_rows(dset: h5py.Dataset, first: int, dest: np.ndarray) -> None:
    """Rows ``[first, first + len(dest))`` of a 2-D dataset into the C-contiguous ``dest``.

    One hyperslab on a fresh copy of the file space (a cached one would be shared state between
    threads) and a memory space of ``dest``'s shape: HDF5 copies the stored bytes, no conversion,
    when ``dest`` has the dataset's dtype.
    """
    fspace = dset.id.get_space()
    fspace.select_hyperslab((first, 0), dest.shape)
    mspace = h5py.h5s.create_simple(dest.shape)
    dset.id.read(mspace, fspace, dest)


# ---------------------------------------------------------------------------------------------
# reader


class FbankStore:
    """Random access to the clips of a store (or of a merged, virtual store over shards).

    Small per-clip arrays are read once at open; the HDF5 file itself is opened lazily on the
    first ``read`` and re-opened in a new process, and pickling drops the handle, so one
    instance can be handed to DataLoader workers under fork, spawn or forkserver.
    """

    def __init__(self, path: PathLike, *, expect_config=None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(self.path, "no such store file")
        try:
            fh = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(self.path, f"not a readable HDF5 file ({exc})") from None
        with fh:
            self.attrs = _decode_attrs(fh.attrs)
            version = self.attrs.get("format_version")
            if version != FORMAT_VERSION:
                raise StoreError(
                    self.path, f"format_version {version!r} is not {FORMAT_VERSION}; rebuild it with `audiossl fbank`"
                )
            try:
                dset = fh["fbank"]
                self.offsets = fh["offsets"][()].astype(np.int64)
                self.num_frames = fh["num_frames"][()].astype(np.int32)
                # A unicode array, unlike a list of str, is not touched by refcounting, so forked
                # DataLoader workers keep sharing its pages (pytorch#13246).
                self.ids = np.asarray(fh["ids"].asstr()[()], dtype=str)
                self.manifest_index = fh["manifest_index"][()].astype(np.int64)
                self.labels = fh["labels"][()].astype(bool) if "labels" in fh else None
                mids = list(fh["label_mid"].asstr()[()]) if "label_mid" in fh else []
                names = list(fh["label_name"].asstr()[()]) if "label_name" in fh else []
            except KeyError as exc:
                raise StoreError(self.path, f"incomplete store, missing {exc}") from None
            self._shape = tuple(dset.shape)
            self._dtype = dset.dtype
            self.is_virtual = bool(dset.is_virtual)
            self._sources = self._virtual_sources(dset) if self.is_virtual else []
        n = len(self.offsets)
        if not (len(self.num_frames) == len(self.ids) == len(self.manifest_index) == n):
            raise StoreError(self.path, "per-clip datasets disagree in length")
        if n and int((self.offsets + self.num_frames).max()) > self._shape[0]:
            raise StoreError(self.path, "offsets point past the end of the fbank dataset")
        self.label_map = None
        if mids:
            import pandas as pd

            self.label_map = pd.DataFrame({"index": np.arange(len(mids)), "mid": mids, "display_name": names})
        self._check_sources()
        if expect_config is not None:
            self.check_config(expect_config)
        self._h5: Optional[h5py.File] = None
        self._dset: Optional[h5py.Dataset] = None
        self._pid: Optional[int] = None

    # -- metadata ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def num_mel_bins(self) -> int:
        return int(self._shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def fbank_config(self):
        from audiossl.features import FbankConfig

        return FbankConfig.from_dict(json.loads(self.attrs["fbank_config"]))

    @property
    def normalizer(self):
        data = json.loads(self.attrs.get("normalizer", "null") or "null")
        if data is None:
            return None
        from audiossl.features import Normalizer

        return Normalizer.from_dict(data)

    def check_config(self, config) -> None:
        """Refuse features computed with another front end, naming the fields that differ."""
        want = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        have = json.loads(self.attrs["fbank_config"])
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            detail = ", ".join(f"{k}: store {have.get(k)!r} vs wanted {want.get(k)!r}" for k in diff)
            raise StoreError(self.path, f"fbank config differs ({detail})")

    # -- virtual stores ------------------------------------------------------------------------

    def _virtual_sources(self, dset: h5py.Dataset) -> List[Tuple[Path, str, Tuple[int, ...]]]:
        out = []
        for vmap in dset.virtual_sources():
            name = Path(vmap.file_name)
            resolved = name if name.is_absolute() else (self.path.parent / name)
            # The mapped block of the virtual dataset gives the source's expected shape (the
            # source dataspace itself may come back without an extent).
            (r0, c0), (r1, c1) = vmap.vspace.get_select_bounds()
            out.append((resolved, vmap.dset_name, (r1 - r0 + 1, c1 - c0 + 1)))
        return out

    def _check_sources(self) -> None:
        # HDF5 reads a missing source as fill values without any error: check every file first.
        for file, dset_name, shape in self._sources:
            if not file.is_file():
                raise StoreError(self.path, f"shard file {file} is missing (the merged store reads its fbank)")
            try:
                with h5py.File(file, "r") as src:
                    got = tuple(src[dset_name].shape)
                    dtype = src[dset_name].dtype
            except (OSError, KeyError) as exc:
                raise StoreError(self.path, f"shard file {file} is unreadable ({exc})") from None
            if got != shape or dtype != self._dtype:
                raise StoreError(
                    self.path, f"shard file {file} has fbank {got} {dtype}, the merged store expects {shape} {self._dtype}"
                )

    # -- reading --------------------------------------------------------------------------------

    def _dataset(self) -> h5py.Dataset:
        pid = os.getpid()
        if self._dset is None or self._pid != pid:
            # A handle inherited through fork is dropped, never used or closed here (pytorch#11929).
            self._h5, self._dset = None, None
            self._check_sources()
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as exc:
                raise StoreError(self.path, f"cannot open ({exc})") from None
            self._dset = self._h5["fbank"]
            self._pid = pid
        return self._dset

    def read(self, i: int, start: int = 0, length: Optional[int] = None) -> np.ndarray:
        """Frames ``[start, start + length)`` of clip ``i`` as float32 (T, F), never past its end.

        A window that runs past the clip's last true frame is cut there (the caller pads), so
        ``read(i)`` is exactly the clip and a random crop is ``read(i, s, target_length)``.
        """
        return _as_float32(self.read_raw(i, start, length))

    def read_raw(
        self, i: int, start: int = 0, length: Optional[int] = None, out: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """:meth:`read` in the stored dtype, optionally into the first rows of ``out``.

        The batched loader reads each clip straight into its slot of a shared-memory batch (or
        into one staging array per batch), so no per-clip array is allocated. ``out`` must be
        C-contiguous, of the store's dtype, ``F`` wide and at least as tall as the window;
        the filled rows ``out[:T]`` are returned.

        The read goes through h5py's low-level ``DatasetID.read`` with a hyperslab selection:
        ``Dataset.read_direct`` re-parses a slice and builds its selection in Python on every
        call: a 998 x 128 float16 clip read 54 us that way, 35 us this way (2-vCPU KVM).
        """
        n = len(self)
        index = int(i)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"clip index {i} out of range for a store of {n} clips")
        total = int(self.num_frames[index])
        if start < 0 or start > total:
            raise ValueError(f"start {start} outside clip {index} of {total} frames")
        if length is not None and length < 0:
            raise ValueError(f"negative length {length}")
        rows = (total if length is None else min(total, start + int(length))) - start
        bins = self._shape[1]
        if out is None:
            dest = np.empty((rows, bins), dtype=self._dtype)
        else:
            if out.dtype != self._dtype or out.ndim != 2 or out.shape[1] != bins or not out.flags.c_contiguous:
                raise ValueError(
                    f"out must be a C-contiguous (T, {bins}) {self._dtype} array, got "
                    f"{out.shape} {out.dtype}{'' if out.flags.c_contiguous else ' non-contiguous'}"
                )
            if out.shape[0] < rows:
                raise ValueError(f"out has {out.shape[0]} rows, the window needs {rows}")
            dest = out[:rows]
        if rows:
            _read_rows(self._dataset(), int(self.offsets[index]) + int(start), dest)
        if self.is_virtual and np.isnan(dest).any():
            raise StoreError(self.path, f"clip {index} reads NaN fill values: a shard file changed after the merge")
        return dest

    def __getitem__(self, i: int) -> np.ndarray:
        return self.read(i)

    def iter_frames(self, max_rows: int = 1 << 15) -> Iterator[np.ndarray]:
        """All true frames in store order, in (R, F) blocks of whole clips (sequential reads)."""
        n = len(self)
        a = 0
        while a < n:
            b = a + 1
            first = int(self.offsets[a])
            while b < n and int(self.offsets[b] + self.num_frames[b]) - first <= max_rows:
                b += 1
            last = int(self.offsets[b - 1] + self.num_frames[b - 1])
            slab = np.empty((last - first, self._shape[1]), dtype=self._dtype)
            if last > first:
                self._dataset().read_direct(slab, np.s_[first:last])
            rows = _ragged_index(self.offsets[a:b] - first, self.num_frames[a:b])
            block = _as_float32(slab[rows])
            if self.is_virtual and np.isnan(block).any():
                raise StoreError(self.path, f"clips {a}..{b - 1} read NaN fill values: a shard file changed")
            yield block
            a = b

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._dset, self._pid = None, None, None

    def __enter__(self) -> "FbankStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"] = state["_dset"] = state["_pid"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        kind = "virtual " if self.is_virtual else ""
        return f"FbankStore({str(self.path)!r}, {len(self)} clips, {kind}{self._dtype} x {self._shape[1]} bins)"


# ---------------------------------------------------------------------------------------------
# statistics


def compute_stats(store: Union[FbankStore, PathLike], *, progress: bool = True):
    """Exact mean/std of the log-mel over the true frames of every clip, as a ``RunningStats``.

    Upstream AST (``get_norm_stats.py``) averaged per-batch means and per-batch stds over padded,
    augmented training batches; the numbers here are the plain global moments of the stored
    (un-normalised, un-padded) features, which is what the normalisation is meant to use.
    """
    import torch
    from tqdm import tqdm

    from audiossl.features import RunningStats

    reader = store if isinstance(store, FbankStore) else FbankStore(store)
    if len(reader) == 0:
        raise StoreError(reader.path, "holds no clips, no statistics to compute")
    stats = RunningStats()
    total = int(reader.num_frames.astype(np.int64).sum())
    with tqdm(total=total, unit="frame", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for block in reader.iter_frames():
            stats.update(torch.from_numpy(block).unsqueeze(0))
            bar.update(len(block))
    return stats


def write_normalizer(path: PathLike, normalizer) -> None:
    """Store ``normalizer`` in the store's attrs in place.

    The attr was created with a fixed size, so this overwrites the same bytes of the object
    header: nothing is allocated or moved, and a kill at any moment leaves the old or the new
    value (a power cut in the middle of that one small write could, as for any in-place update,
    tear it).
    """
    path = Path(path)
    value = _normalizer_attr(normalizer.to_dict() if normalizer is not None else None)
    try:
        with h5py.File(path, "r+") as fh:
            if "normalizer" in fh.attrs and fh.attrs.get_id("normalizer").dtype.itemsize == len(value):
                fh.attrs.modify("normalizer", value)
            else:
                logger.warning("%s: normalizer attr has another size, rewriting it (not in place)", path)
                fh.attrs["normalizer"] = value
            fh.flush()
    except OSError as exc:
        hint = "is it open for reading in this process (close those FbankStore readers) or being written?"
        raise StoreError(path, f"cannot update the normalizer attr ({exc}); {hint}") from None


# ---------------------------------------------------------------------------------------------
# writer: workers


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
# writer: segments


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
    tmp = final.with_name(final.name + ".tmp")
    frames = np.array([0 if b is None else len(b) for b in blocks], dtype=np.int32)
    good = [b for b in blocks if b is not None]
    data = np.concatenate(good) if good else np.zeros((0, bins), dtype=dtype)
    with h5py.File(tmp, "w") as fh:
        fh.attrs["key"] = key_json
        fh.create_dataset("rows", data=np.asarray(rows, dtype=np.int64))
        fh.create_dataset("num_frames", data=frames)
        fh.create_dataset("reasons", data=np.array(reasons, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("fbank", data=data)
    _fsync_file(tmp)
    os.replace(tmp, final)
    _fsync_dir(seg_dir)
    return _Segment(final, np.asarray(rows, dtype=np.int64), frames, list(reasons))


def _scan_segments(seg_dir: Path, key: dict) -> List[_Segment]:
    for stale in seg_dir.glob("*.tmp"):
        stale.unlink()
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
def _exclusive(seg_dir: Path) -> Iterator[None]:
    """One writer per store: a second run on the same output would interleave segments."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fh = open(seg_dir / "lock", "w")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(seg_dir, "another `audiossl fbank` run is writing this store") from None
        yield
    finally:
        fh.close()


# ---------------------------------------------------------------------------------------------
# writer: the precompute


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
    partial = out.with_name(out.name + ".partial")

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
    seg_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(seg_dir):
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
            partial,
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
        shutil.rmtree(seg_dir)
    return _summary_of(out, time.perf_counter() - started, len(todo), resumed)


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
    partial: Path,
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
    kept_rows = rows[good]
    itemsize = np.dtype(dtype).itemsize
    chunk = choose_chunk_frames(lengths, bins, itemsize)
    offsets, total_rows = chunk_aligned_offsets(lengths, chunk)
    table = manifest.table
    mids, names = _label_columns(manifest)

    with h5py.File(partial, "w") as fh:
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
        fh.create_dataset("offsets", data=offsets)
        fh.create_dataset("num_frames", data=lengths.astype(np.int32))
        ids = np.array([str(x) for x in table["id"].to_numpy()[kept_rows]], dtype=object)
        fh.create_dataset("ids", data=ids, dtype=h5py.string_dtype())
        fh.create_dataset("manifest_index", data=kept_rows.astype(np.int64))
        if mids:
            multi_hot = np.asarray(manifest.labels_multi_hot(), dtype=bool)[kept_rows]
            fh.create_dataset("labels", data=multi_hot, compression="gzip" if multi_hot.size else None)
            fh.create_dataset("label_mid", data=np.array(mids, dtype=object), dtype=h5py.string_dtype())
            fh.create_dataset("label_name", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        key = json.loads(key_json)
        attrs = fh.attrs
        attrs["format_version"] = FORMAT_VERSION
        attrs["audiossl_version"] = audiossl.__version__
        attrs["fbank_config"] = _json_attr(config_dict)
        attrs.create("normalizer", _normalizer_attr(normalizer.to_dict() if normalizer is not None else None))
        attrs["manifest_sha256"] = key["manifest_sha256"]
        attrs["manifest_rows"] = len(table)
        attrs["dtype"] = dtype
        attrs["num_clips"] = int(good.sum())
        attrs["num_skipped"] = int((~good).sum())
        attrs["num_mel_bins"] = bins
        attrs["chunk_frames"] = chunk
        attrs["compression"] = compression or "none"
        attrs["shard_index"] = key["shard_index"]
        attrs["num_shards"] = key["num_shards"]
        attrs["row_start"] = lo
        attrs["row_stop"] = hi
        attrs["run_key"] = key_json
    _fsync_file(partial)

    sidecar = out.with_name(out.name + ".skipped.tsv")
    if (~good).any():
        paths = table["path"].to_numpy()
        lines = ["manifest_index\tid\tpath\treason"]
        for r, reason in zip(rows[~good], (reasons[k] for k in np.flatnonzero(~good))):
            clean = reason.replace("\t", " ").replace("\n", " ")
            lines.append(f"{r}\t{table['id'].iloc[r]}\t{paths[r]}\t{clean}")
        _atomic_write_text(sidecar, "\n".join(lines) + "\n")
        logger.warning("%d clips skipped, listed in %s", int((~good).sum()), sidecar)
    elif sidecar.exists():
        sidecar.unlink()
    os.replace(partial, out)
    _fsync_dir(out.parent)


# ---------------------------------------------------------------------------------------------
# shards


def merge_shards(out: PathLike, shards: Sequence[PathLike], *, overwrite: bool = False) -> Path:
    """Write ``out`` whose ``fbank`` is a virtual dataset over the shards' (no data is copied).

    Source paths are stored relative to ``out``'s folder, so the folder can be moved as a whole.
    Rows of a missing shard would read as the NaN fill value; ``FbankStore`` refuses to open a
    merged store whose shard files are not all there.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreError(out, "exists; delete it or pass --overwrite")
    if not shards:
        raise StoreError(out, "no shard files given")
    infos = []
    for path in map(Path, shards):
        store = FbankStore(path)
        if store.is_virtual:
            raise StoreError(path, "is itself a merged store; pass the shard files")
        infos.append(store)
    first = infos[0].attrs
    for store in infos[1:]:
        for name in ("manifest_sha256", "fbank_config", "dtype", "num_shards", "num_mel_bins"):
            if store.attrs.get(name) != first.get(name):
                raise StoreError(
                    store.path, f"{name} differs from {infos[0].path}; shards must come from one manifest and config"
                )
    num_shards = int(first["num_shards"])
    by_index: Dict[int, FbankStore] = {}
    for store in infos:
        index = int(store.attrs["shard_index"])
        if index in by_index:
            raise StoreError(store.path, f"shard {index} given twice (also {by_index[index].path})")
        by_index[index] = store
    missing = sorted(set(range(num_shards)) - set(by_index))
    if missing:
        raise StoreError(
            out, f"missing shard(s) {', '.join(map(str, missing))} of {num_shards} (given: {sorted(by_index)})"
        )
    ordered = [by_index[i] for i in range(num_shards)]
    bins = ordered[0].num_mel_bins
    dtype = ordered[0].dtype
    total = sum(s._shape[0] for s in ordered)
    layout = h5py.VirtualLayout(shape=(total, bins), dtype=dtype)
    offsets, row = [], 0
    for store in ordered:
        rows = store._shape[0]
        if rows:
            rel = os.path.relpath(store.path.resolve(), out.resolve().parent)
            layout[row : row + rows] = h5py.VirtualSource(rel, "fbank", shape=(rows, bins))
        offsets.append(store.offsets + row)
        row += rows
    normalizers = {_json_attr(json.loads(s.attrs.get("normalizer") or "null")) for s in ordered}
    normalizer = json.loads(normalizers.pop()) if len(normalizers) == 1 else None
    if len(normalizers) > 1:
        logger.warning("shards carry different normalizers; the merged store gets none (run `audiossl stats`)")
    partial = out.with_name(out.name + ".partial")
    with h5py.File(partial, "w") as fh:
        fh.create_virtual_dataset("fbank", layout, fillvalue=np.nan)
        fh.create_dataset("offsets", data=np.concatenate(offsets).astype(np.int64))
        fh.create_dataset("num_frames", data=np.concatenate([s.num_frames for s in ordered]).astype(np.int32))
        ids = np.array([str(x) for s in ordered for x in s.ids], dtype=object)
        fh.create_dataset("ids", data=ids, dtype=h5py.string_dtype())
        fh.create_dataset("manifest_index", data=np.concatenate([s.manifest_index for s in ordered]))
        if ordered[0].labels is not None:
            labels = np.concatenate([s.labels for s in ordered])
            fh.create_dataset("labels", data=labels, compression="gzip" if labels.size else None)
            table = ordered[0].label_map
            fh.create_dataset("label_mid", data=np.array(list(table["mid"]), dtype=object), dtype=h5py.string_dtype())
            fh.create_dataset(
                "label_name", data=np.array(list(table["display_name"]), dtype=object), dtype=h5py.string_dtype()
            )
        attrs = fh.attrs
        attrs["format_version"] = FORMAT_VERSION
        attrs["audiossl_version"] = audiossl.__version__
        attrs["fbank_config"] = first["fbank_config"]
        attrs.create("normalizer", _normalizer_attr(normalizer))
        attrs["manifest_sha256"] = first["manifest_sha256"]
        attrs["manifest_rows"] = first.get("manifest_rows", -1)
        attrs["dtype"] = first["dtype"]
        attrs["num_clips"] = sum(len(s) for s in ordered)
        attrs["num_skipped"] = sum(int(s.attrs.get("num_skipped", 0)) for s in ordered)
        attrs["num_mel_bins"] = bins
        attrs["num_shards"] = num_shards
        attrs["shard_index"] = -1
        attrs["shard_files"] = _json_attr([os.path.relpath(s.path.resolve(), out.resolve().parent) for s in ordered])
    _fsync_file(partial)
    skipped = [s.path.with_name(s.path.name + ".skipped.tsv") for s in ordered]
    skipped = [p for p in skipped if p.exists()]
    sidecar = out.with_name(out.name + ".skipped.tsv")
    if skipped:
        parts = [p.read_text(encoding="utf-8").splitlines() for p in skipped]
        lines = parts[0][:1] + [line for part in parts for line in part[1:]]
        _atomic_write_text(sidecar, "\n".join(lines) + "\n")
    elif sidecar.exists():
        sidecar.unlink()
    os.replace(partial, out)
    _fsync_dir(out.parent)
    logger.info("merged %d shards (%d clips) into %s", num_shards, sum(len(s) for s in ordered), out)
    return out
