"""Draw every masking family over a real spectrogram, with per-position heat maps and statistics.

For each family (random, chunk, faithful SSAST chunk, time/frequency drop, EAT inverse block,
I-JEPA multi-block, hierarchical and learned masks) this writes
``<out>/<family>.png``: a few example masks over the log-mel spectrogram of ``--audio`` (or of a
generated test signal) and the per-position masking frequency over many draws, which exposes edge
bias. A statistics table (coverage, frequency extremes, edge ratio, block sizes) is printed and
saved as ``<out>/stats.json``.

    audiossl show-masks --audio speech.wav --out masks/
"""

from __future__ import annotations

import argparse
import logging

HELP = "plot masks of every masking family over a spectrogram, with statistics"

logger = logging.getLogger(__name__)

# audiossl.masking.gallery.FAMILIES, named here so that --help imports no torch (a test keeps
# the two equal)
FAMILIES = (
    "random", "chunk", "chunk-ssast-faithful", "drop", "inverse-block", "multiblock", "hierarchical", "learned",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio", help="wav/flac file to draw on (default: a generated test signal)")
    parser.add_argument("--out", default="masks", help="output folder for the PNGs and stats.json (default: masks)")
    parser.add_argument(
        "--families",
        default="all",
        help="comma-separated families (default: all available): " + ", ".join(FAMILIES),
    )
    parser.add_argument(
        "--target-length",
        type=int,
        default=None,
        help="frames (10 ms) to crop/pad to (default: the clip's own length rounded up to whole patches, "
        "so every drawn token is real audio; 1024 for the generated signal)",
    )
    parser.add_argument("--examples", type=int, default=3, help="example masks drawn per family (default 3)")
    parser.add_argument("--stats-rows", type=int, default=512, help="masks drawn for heat maps and stats (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask generator (default 0)")
    parser.add_argument("--device", default="cpu", help="device the samplers run on (default cpu)")


def run(args: argparse.Namespace) -> int:
    from audiossl.audio import AudioError
    from audiossl.viz import mask_gallery

    families = None if args.families.strip() == "all" else [s.strip() for s in args.families.split(",") if s.strip()]
    try:
        gallery = mask_gallery(
            args.out, args.audio, families=families, target_length=args.target_length,
            examples=args.examples, stats_rows=args.stats_rows, seed=args.seed, device=args.device,
        )
    except (ImportError, AudioError) as exc:  # matplotlib missing; the file's path is in the message
        logger.error("%s", exc)
        return 1
    except ValueError as exc:  # unknown family, target length under one patch
        logger.error("%s", exc)
        return 2
    if not gallery.rows:
        logger.error("no masking family could be drawn")
        return 1
    print(gallery.table())
    return 0
