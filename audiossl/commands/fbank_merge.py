"""Join the shard stores of one manifest (written with `audiossl fbank --shard i/N`) into one store.

OUT's fbank is an HDF5 virtual dataset over the shards' fbank: nothing is copied, the shard
files must stay next to OUT (paths are stored relative to OUT's folder, so the folder can move
as a whole). Every shard 0..N-1 of the same manifest and front-end config must be given; the
per-clip arrays (ids, labels, frame counts) are copied into OUT. Opening OUT later checks that
every shard file is still there and names the one that is not.

  audiossl fbank-merge audioset.h5 audioset.shard-*-of-8.h5
"""

from __future__ import annotations

import argparse
import logging

HELP = "merge shard stores into one store (a virtual dataset over the shards, no copy)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.h5", help="merged store to write")
    parser.add_argument("shards", metavar="SHARD.h5", nargs="+", help="every shard store of the manifest")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from audiossl.data.store import FbankStore, StoreError, merge_shards

    try:
        out = merge_shards(args.out, args.shards, overwrite=args.overwrite)
        store = FbankStore(out)
    except StoreError as exc:
        logger.error("%s", exc)
        return 1
    print(f"{out}: {len(store)} clips from {store.attrs['num_shards']} shards, {store.attrs['num_skipped']} skipped")
    return 0
