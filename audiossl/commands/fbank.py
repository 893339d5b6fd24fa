"""Precompute the log-mel fbank of every clip of a manifest into one HDF5 store.

Clips are loaded, resampled and turned into Kaldi-compatible fbanks by a pool of worker
processes (one per core) and written, in manifest order, as float16 rows of STORE.h5; a clip
that cannot be read (or is shorter than one frame) is skipped and listed with its reason in
STORE.h5.skipped.tsv. The log-mel is stored un-normalised; --norm only records which
mean/std the training should apply (`audiossl stats STORE --write` can compute them instead).

Interrupting is safe, kill -9 included: finished clips sit in STORE.h5.partial.d/ and the
same command continues where it stopped. STORE.h5 appears only when complete. A second run on
the same STORE.h5 while one is writing it (--overwrite included) is refused, naming the first
one's pid. A full disk stops the run (exit 1) naming the file that did not fit: nothing half
written is left, a previous STORE.h5 stays as it was, and the same command resumes from the
finished segments once there is room.

Large corpora can be split across machines with --shard i/N (each shard its own --out) and
joined without copying by `audiossl fbank-merge`:

  audiossl fbank --manifest train.csv --out train.h5 --norm audioset
  audiossl fbank --manifest as.csv --out as.shard-0-of-4.h5 --shard 0/4   # ... 1/4, 2/4, 3/4
  audiossl fbank-merge as.h5 as.shard-*-of-4.h5
"""

from __future__ import annotations

import argparse
import logging

HELP = "precompute log-mel fbanks of a manifest into an HDF5 store (parallel, resumable, shardable)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest file (any format `read_manifest` reads) or a folder of audio files (unlabelled)")
    parser.add_argument("--out", required=True, help="the store to write, e.g. train.h5")
    parser.add_argument(
        "--config", default="ast", help="front-end preset (ast, mae_ast, beats, ...) or a YAML file of FbankConfig fields"
    )
    parser.add_argument("--norm", default=None, metavar="PRESET", help="normalizer preset to record in the store")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--shard", default=None, metavar="i/N", help="process the i-th of N contiguous manifest blocks")
    parser.add_argument(
        "--compression",
        choices=["none", "gzip", "lzf"],
        default="none",
        help="HDF5 filter (default none: log-mels hardly compress and filters slow random reads)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store built from other inputs")
    parser.add_argument(
        "--segment-clips", type=int, default=None, help="clips per resume segment (default 1000)"
    )
    parser.add_argument("--segment-seconds", type=float, default=None, help="longest time between resume segments (default 20)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_fbank_config(spec: str):
    """A preset name or a YAML file (its fields, or a mapping under a top-level ``fbank`` key)."""
    from pathlib import Path

    from audiossl.features import FbankConfig

    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        import yaml

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if isinstance(data, dict) and isinstance(data.get("fbank"), dict):
            data = data["fbank"]
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of FbankConfig fields")
        return FbankConfig.from_dict(data)
    return FbankConfig.preset(spec)


def run(args: argparse.Namespace) -> int:
    from audiossl.data import store as store_lib
    from audiossl.data.manifest import ManifestError, read_manifest
    from audiossl.features import Normalizer

    try:
        config = load_fbank_config(args.config)
        normalizer = Normalizer.preset(args.norm) if args.norm else None
        shard = store_lib.parse_shard(args.shard) if args.shard else None
    except (ValueError, KeyError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    options = {}
    if args.segment_clips is not None:
        options["segment_clips"] = args.segment_clips
    if args.segment_seconds is not None:
        options["segment_seconds"] = args.segment_seconds
    try:
        manifest = read_manifest(args.manifest)
        summary = store_lib.precompute(
            manifest,
            args.out,
            config,
            normalizer=normalizer,
            dtype=args.dtype,
            workers=args.workers,
            shard=shard,
            compression=None if args.compression == "none" else args.compression,
            overwrite=args.overwrite,
            progress=not args.quiet,
            **options,
        )
    except (store_lib.StoreError, ManifestError) as exc:
        logger.error("%s", exc)
        return 1
    print(summary.format())
    return 0
