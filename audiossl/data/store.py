"""HDF5 fbank store: one import for its reader, its writer and its shards.

A store holds the log-mel of every clip of a manifest, with ids, labels and the front-end config
in attrs (``audiossl fbank`` writes one, ``FbankDataset`` reads it). Three modules, each one
idea, lowest first:

* ``store_format``: the layout on disk and its reader :class:`FbankStore` (with the statistics
  and the in-place normalizer update that act on a finished store);
* ``shards``: the row block of shard ``i/N`` and :func:`merge_shards`;
* ``precompute``: the writer :func:`precompute` (parallel, resumable, atomic).

This module only re-exports them, so none of them imports it.
"""

from __future__ import annotations

from .precompute import (
    CLIPS_PER_TASK,
    SEGMENT_BYTES,
    SEGMENT_CLIPS,
    SEGMENT_SECONDS,
    PrecomputeSummary,
    default_workers,
    precompute,
)
from .shards import merge_shards, parse_shard, shard_rows
from .store_format import (
    COMPRESSIONS,
    DTYPES,
    FORMAT_VERSION,
    MAX_CHUNK_BYTES,
    MAX_PAD_FRACTION,
    MIN_CHUNK_BYTES,
    NORMALIZER_ATTR_BYTES,
    FbankStore,
    PathLike,
    StoreError,
    choose_chunk_frames,
    chunk_aligned_offsets,
    compute_stats,
    manifest_sha256,
    write_normalizer,
)

__all__ = [
    "CLIPS_PER_TASK",
    "COMPRESSIONS",
    "DTYPES",
    "FORMAT_VERSION",
    "MAX_CHUNK_BYTES",
    "MAX_PAD_FRACTION",
    "MIN_CHUNK_BYTES",
    "NORMALIZER_ATTR_BYTES",
    "SEGMENT_BYTES",
    "SEGMENT_CLIPS",
    "SEGMENT_SECONDS",
    "FbankStore",
    "PathLike",
    "PrecomputeSummary",
    "StoreError",
    "choose_chunk_frames",
    "chunk_aligned_offsets",
    "compute_stats",
    "default_workers",
    "manifest_sha256",
    "merge_shards",
    "parse_shard",
    "precompute",
    "shard_rows",
    "write_normalizer",
]
