"""Sharded stores: which manifest rows shard ``i/N`` computes, and the merge of the shards.

``precompute(..., shard=(i, N))`` writes one ordinary store per contiguous block of rows (on as
many machines as there are shards); :func:`merge_shards` then writes a small store whose
``fbank`` is a virtual dataset over theirs, so the merge copies no feature data.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Sequence, Tuple

import h5py
import numpy as np

import audiossl
from audiossl.files import atomic_path, remove_quietly

from .store_format import (
    FORMAT_VERSION,
    FbankStore,
    PathLike,
    StoreError,
    _fsync_dir,
    _json_attr,
    _normalizer_attr,
    _read_skipped,
    _skipped_list,
    _write_skipped,
    _writing_h5,
)

# As every store module: the name the store's messages have always had.
logger = logging.getLogger("audiossl.data.store")


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
    lists = [_skipped_list(s.path) for s in ordered]
    skipped = [row for path in lists if path.exists() for row in _read_skipped(path)]
    sidecar = _skipped_list(out)
    with atomic_path(out) as partial:
        with _writing_h5(partial) as fh:
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
        # Inside the store's atomic write: a list that does not fit leaves no merged store either.
        if skipped:
            _write_skipped(sidecar, skipped)
        else:
            remove_quietly(sidecar)
    _fsync_dir(out.parent)
    logger.info("merged %d shards (%d clips) into %s", num_shards, sum(len(s) for s in ordered), out)
    return out
