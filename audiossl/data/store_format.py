"""The HDF5 fbank store on disk, and its reader ``FbankStore``.

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

Every store file (segment, store, merged store, skipped-clip list) is written aside as
``name.partial``, fsynced and renamed into place (``audiossl.files.atomic_path``), so a reader
never sees one half written and a full disk is one clear :class:`~audiossl.files.OutputError`
that leaves no partial file; the writers are ``audiossl.data.precompute`` and
``audiossl.data.shards``. HDF5 files are written with HDF5's chunk cache and sieve buffer off
(:func:`_writing_h5`): see there why.

A skipped-clip list ``STORE.h5.skipped.tsv`` has the columns ``manifest_index, id, path, reason``,
tab-separated, a field holding a tab, newline or double quote quoted (``csv`` with
``delimiter="\t"``, which reads it back exactly), as ``audiossl embed`` writes its own.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from audiossl.files import atomic_path

# Every store module logs as `audiossl.data.store`, the name their messages have always had.
logger = logging.getLogger("audiossl.data.store")

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
# durable writes (used by the writers; kept beside the format they protect)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable across power loss; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_h5(path: Path) -> h5py.File:
    """``h5py.File(path, "w")`` with HDF5's chunk cache and sieve buffer off (see :func:`_writing_h5`)."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)  # h5py's default
    mdc_slots, chunk_slots, _, w0 = fapl.get_cache()
    fapl.set_cache(mdc_slots, chunk_slots, 0, w0)
    fapl.set_sieve_buf_size(0)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # h5py's default: the same inputs give the same bytes
    return h5py.File(h5py.h5f.create(os.fsencode(str(path)), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


@contextlib.contextmanager
def _writing_h5(path: Path) -> Iterator[h5py.File]:
    """Create the HDF5 file ``path`` (the partial file of an ``atomic_path``), flush and close it
    when the block completes; on any failure free its space and close it as far as HDF5 can.

    Why the caches are off: with them, HDF5 defers raw data writes to the eviction of a chunk or
    to the close of a dataset, where a full disk goes wrong in two ways (HDF5 2.0, h5py 3.16,
    measured on a small tmpfs). A dataset closed by garbage collection drops its failed write
    with only an "Exception ignored" line, so a segment was renamed into place without its data;
    a chunk that fails to flush at ``close()`` leaves the file half closed, and HDF5's own clean
    up at interpreter exit then segfaults (``audiossl fbank`` exited 139 after a traceback).
    Without them every write reaches the disk in the call that made it and fails there, as an
    exception; the writers write whole chunks in large blocks, so nothing is lost in speed (97 MiB
    of 998-frame chunks: 0.09-0.12 s with or without the caches). The explicit ``flush`` makes
    the metadata's own failure an exception of the block, too.
    """
    fh = _create_h5(path)
    try:
        yield fh
        fh.flush()
    except BaseException:
        _abandon_h5(fh, path)
        raise
    try:
        fh.close()
    except BaseException:
        _abandon_h5(fh, path)
        raise


def _abandon_h5(fh: h5py.File, path: Path) -> None:
    # Truncating first gives the space back even where HDF5 keeps the file open after a failed
    # close, and gives its closing flush room to succeed (the file is deleted after).
    with contextlib.suppress(OSError):
        os.truncate(path, 0)
    with contextlib.suppress(Exception):
        fh.close()


@contextlib.contextmanager
def _atomic_h5(path: Path) -> Iterator[h5py.File]:
    """An HDF5 file written to ``path.partial`` and renamed over ``path`` when complete."""
    with atomic_path(path) as partial:
        with _writing_h5(partial) as fh:
            yield fh
    _fsync_dir(path.parent)


SKIPPED_COLUMNS = ("manifest_index", "id", "path", "reason")


def _skipped_list(store: Path) -> Path:
    return store.with_name(store.name + ".skipped.tsv")


def _write_skipped(path: Path, rows: Sequence[Tuple[Any, ...]]) -> None:
    """The skipped-clip list, atomically, in the dialect :func:`_read_skipped` reads."""
    with atomic_path(path) as partial:
        with open(partial, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(SKIPPED_COLUMNS)
            writer.writerows(rows)


def _read_skipped(path: Path) -> List[List[str]]:
    """The rows (header excluded) of a skipped-clip list, each as written."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows or tuple(rows[0]) != SKIPPED_COLUMNS:
        raise StoreError(path, f"is not a skipped-clip list (its first row is not {', '.join(SKIPPED_COLUMNS)})")
    return rows[1:]


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
