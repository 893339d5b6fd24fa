"""Mean and standard deviation of a store's log-mel, for the dataset normalisation.

Computes the exact global mean/std over the true frames of every clip (all mel bins pooled),
in one sequential pass. Upstream AST (src/get_norm_stats.py) instead averaged per-batch means
and per-batch stds of padded, augmented training batches, which biases both numbers (padding
frames are zeros in log space, and the mean of stds is not the std); its published presets
(AudioSet -4.2677/4.5690, ESC-50 -6.6268/5.3585) therefore differ a little from what this
prints for the same data. Use the presets to match released checkpoints and these numbers for
new data. Normalisation applies (x - mean) / (2 * std), the AST convention.

With --write the result is saved as the store's `normalizer` attr: the attr has a fixed size
and is overwritten in place (no reallocation, the fbank data is not touched), so an
interrupted write leaves the old or the new value. The store must not be open for writing
elsewhere. For a merged store only the merged file's attr changes.

  audiossl stats train.h5 --write
"""

from __future__ import annotations

import argparse
import json
import logging

HELP = "exact mean/std of a store's log-mel (optionally saved as its normalizer)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE", help="an fbank store (.h5)")
    parser.add_argument("--write", action="store_true", help="save the result as the store's normalizer attr")
    parser.add_argument("--json", action="store_true", help="print the normalizer as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from audiossl.data.store import FbankStore, StoreError, compute_stats, write_normalizer

    try:
        store = FbankStore(args.store)
        stats = compute_stats(store, progress=not args.quiet)
        store.close()
        normalizer = stats.to_normalizer()
        if args.write:
            write_normalizer(args.store, normalizer)
    except StoreError as exc:
        logger.error("%s", exc)
        return 1
    frames = int(store.num_frames.astype("int64").sum())
    if args.json:
        print(json.dumps(normalizer.to_dict()))
    else:
        print(f"{args.store}: mean {float(stats.mean):.7g} std {float(stats.std):.7g} over {frames} frames of {len(store)} clips")
    if args.write:
        print(f"saved as the normalizer of {args.store}")
    return 0
