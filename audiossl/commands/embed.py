"""Embed audio with a checkpoint: clip-level (and frame-level) embeddings into one HDF5 or NPZ.

INPUT is an audio file, a folder (every audio file under it) or a manifest. Audio of any length
works: clips longer than the model's training length (the checkpoint's target_length) are cut
into overlapping windows, shorter ones are padded with an attention mask, and batching changes a
clip's result only to float rounding (~1e-6). Clips that cannot be read, or whose fbank or
embedding is not finite, are skipped and listed in OUT.skipped.tsv; when no clip can be embedded
the command fails (exit 1) and writes no OUT.

  audiossl embed eat.pt clips/ -o emb.h5                     # one clip vector per file
  audiossl embed eat.pt train.csv -o emb.h5 --frames         # + per-time-step vectors, ms timestamps
  audiossl embed eat.pt song.wav -o song.npz --layers all    # every block's output

Output keys (both formats): ids, manifest_index, duration, clip (N, D) or (N, L, D); with
--frames also frames (S, D), timestamps (S,) in ms, frame_offsets and num_steps (clip i's frames
are frames[frame_offsets[i] : frame_offsets[i] + num_steps[i]]). `audiossl.embed.read_embeddings`
reads either format.
"""

from __future__ import annotations

import argparse
import logging

HELP = "embed audio files, a folder or a manifest with a checkpoint (clip/frame/layer embeddings)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="native audiossl checkpoint (trained or imported with `audiossl convert`)")
    parser.add_argument("input", help="an audio file, a folder of audio files, or a manifest")
    parser.add_argument("-o", "--out", required=True, help="output file (.h5 or .npz)")
    parser.add_argument("--format", choices=["h5", "npz"], default=None, help="default: from the suffix of --out")
    parser.add_argument("--frames", action="store_true", help="also write frame-level embeddings with timestamps")
    parser.add_argument(
        "--layers", default=None, metavar="all|i,j", help="block outputs to export (default: the encoder's output)"
    )
    parser.add_argument(
        "--pooling", choices=["auto", "cls", "mean", "bands"], default="auto",
        help="clip pooling: cls, mean of patch tokens, or bands (each frequency band's mean over time, "
             "concatenated; frames too); auto = what the checkpoint records, else CLS for EAT and mean "
             "otherwise (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8,
        help="files per batch; batch sizes differ only to float rounding, ~1e-6 (default: %(default)s)",
    )
    parser.add_argument(
        "--hop-ms", type=float, default=None,
        help="hop between windows for clips longer than the model's window (default: half a window)",
    )
    parser.add_argument("--window-frames", type=int, default=None, help="window length (default: the checkpoint's target_length)")
    parser.add_argument(
        "--which", choices=["student", "teacher"], default=None,
        help="encoder of an objective checkpoint (default: the family's: student, I-JEPA's target)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from audiossl.audio import AudioError
    from audiossl.data.manifest import ManifestError
    from audiossl.embed import embed_files
    from audiossl.checkpoint import CheckpointError

    try:
        summary = embed_files(
            args.checkpoint,
            args.input,
            args.out,
            fmt=args.format,
            frames=args.frames,
            batch_size=args.batch_size,
            progress=not args.quiet,
            pooling=args.pooling,
            layers=args.layers,
            which=args.which,
            window_frames=args.window_frames,
            hop_ms=args.hop_ms,
            device=args.device,
        )
    except (AudioError, CheckpointError, ManifestError, ValueError) as exc:  # AudioError: nothing embedded
        logger.error("%s", exc)
        return 1
    skipped = f", {summary['skipped']} skipped (listed in {summary['skipped_list']})" if summary["skipped"] else ""
    print(f"{summary['path']}: {summary['clips']} clips embedded{skipped}")
    return 0
