#!/usr/bin/env python3
"""AudioSet segment lists + a folder of downloaded clips -> audiossl manifests.

    python data_prep/audioset.py --segments balanced_train_segments.csv eval_segments.csv \\
        --audio-dir /data/audioset --label-csv class_labels_indices.csv OUT_DIR

For each segment CSV, writes ``OUT_DIR/{split}.csv`` (the clips found; split named from the
file: ``balanced_train``, ``eval``, ``unbalanced_train``) and ``OUT_DIR/missing_{split}.csv``
(segments with no audio: ``ytid, start, end, labels, source, line``), plus
``OUT_DIR/class_labels_indices.csv``, and prints how many clips were found. Results are only
comparable on the same eval list, so keep ``eval.csv`` next to every mAP you report.

The audio folders are scanned recursively once; clips may be named ``Y{YTID}.wav`` (PANNs),
``{YTID}_{start}.flac`` (AST; start in seconds or milliseconds), ``Y{YTID}_{start}_{end}.wav``
(DCASE) or ``{YTID}.flac`` (Hugging Face), in any sub-folder. A MID missing from the label CSV
stops with the file and line. Nothing is downloaded; outputs are written atomically and an
unchanged output is left as it was, so re-running is harmless.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import os
import sys
from pathlib import Path

try:
    import audiossl  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audiossl.data.manifest import (  # noqa: E402
    AUDIO_EXTENSIONS,
    LABEL_MAP_NAME,
    ManifestError,
    audioset_split_name,
    join_audioset_clips,
    read_audioset_segments,
    read_label_map,
    scan_audioset_clips,
    write_ast_json,
    write_manifest,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="data_prep/audioset.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--segments", nargs="+", required=True, type=Path, metavar="CSV", help="AudioSet segment lists")
    parser.add_argument(
        "--audio-dir", action="append", required=True, type=Path, metavar="DIR",
        help="folder of downloaded clips, scanned recursively (repeat the option for several)",
    )
    parser.add_argument("--label-csv", required=True, type=Path, help="AudioSet's class_labels_indices.csv")
    parser.add_argument("out_dir", type=Path, help="where the manifests go")
    parser.add_argument(
        "--extensions", nargs="+", default=list(AUDIO_EXTENSIONS),
        help="audio extensions, preferred first when a clip exists twice (default: %(default)s)",
    )
    parser.add_argument("--ast-json", action="store_true", help="also write an AST json datafile per split")
    parser.add_argument("--relative-paths", action="store_true", help="write paths relative to OUT_DIR")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _write_missing(missing, path: Path) -> None:
    """Atomically, leaving an identical existing report untouched (like the manifests)."""
    partial = path.with_name(path.name + ".partial")
    missing.to_csv(partial, index=False, lineterminator="\n")
    if path.is_file() and filecmp.cmp(partial, path, shallow=False):
        partial.unlink()
    else:
        os.replace(partial, path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    splits = [audioset_split_name(p) for p in args.segments]
    if len(set(splits)) != len(splits):
        print(f"error: two segment lists give the same split name: {splits}", file=sys.stderr)
        return 2
    out = args.out_dir
    summary = []
    try:
        label_map = read_label_map(args.label_csv)
        segments = [read_audioset_segments(p, label_map=label_map) for p in args.segments]
        extensions = [e if e.startswith(".") else f".{e}" for e in args.extensions]
        files = scan_audioset_clips(args.audio_dir, extensions)
        used = set()
        for split, seg in zip(splits, segments):
            manifest, missing = join_audioset_clips(seg, files, label_map, split=split)
            write_manifest(
                manifest, out / f"{split}.csv", label_map_path=out / LABEL_MAP_NAME, relative_paths=args.relative_paths
            )
            if args.ast_json:
                write_ast_json(manifest, out / f"{split}.json", relative_paths=args.relative_paths)
            _write_missing(missing, out / f"missing_{split}.csv")
            used.update(manifest.table["path"])
            summary.append((split, len(manifest), len(seg), out / f"missing_{split}.csv"))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, found, total, missing_path in summary:
        pct = 100.0 * found / total if total else 0.0
        print(f"{split}: {found}/{total} clips found ({pct:.1f}%), {total - found} missing -> {missing_path}")
    print(f"{len(files)} audio files scanned, {len(files) - len(used)} not used; manifests in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
