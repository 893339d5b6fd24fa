#!/usr/bin/env python3
"""ESC-50 -> audiossl manifests.

    python data_prep/esc50.py ROOT OUT_DIR [--audio-dir audio] [--ast-json] [--check-audio]

ROOT is the unpacked ESC-50 (``ESC-50-master/`` with ``meta/esc50.csv`` and ``audio/``). Writes
``OUT_DIR/manifest.csv`` (every clip, with its fold) and ``OUT_DIR/class_labels_indices.csv``
(the classes in target order, with AST's fake mids ``/m/07rwj00``...), and with ``--ast-json``
AST's per-fold datafiles ``esc_train_data_{k}.json`` / ``esc_eval_data_{k}.json``.

Every listed file must exist. ``--check-audio`` also reads each file's header and reports clips
that are not ESC-50's 44.1 kHz mono 5 s (220 500 frames); use ``--expect-sample-rate 16000``
after AST's sox resampling into ``audio_16k`` (``--audio-dir audio_16k``).

Nothing is downloaded. Outputs are written atomically and an unchanged output is left as it
was, so re-running is harmless.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import audiossl  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audiossl.data.manifest import (  # noqa: E402
    LABEL_MAP_NAME,
    ManifestError,
    probe_audio,
    read_esc50,
    write_ast_json,
    write_manifest,
)

MAX_LISTED = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="data_prep/esc50.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="ESC-50 root (contains meta/esc50.csv and audio/)")
    parser.add_argument("out_dir", type=Path, help="where the manifests go")
    parser.add_argument("--audio-dir", default="audio", help="audio folder under ROOT (default: audio)")
    parser.add_argument("--ast-json", action="store_true", help="also write AST's per-fold train/eval json files")
    parser.add_argument("--check-audio", action="store_true", help="read every header and report deviations")
    parser.add_argument("--expect-sample-rate", type=int, default=44100, help="for --check-audio (default 44100)")
    parser.add_argument("--expect-seconds", type=float, default=5.0, help="for --check-audio (default 5.0)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when --check-audio finds deviations")
    parser.add_argument("--relative-paths", action="store_true", help="write paths relative to OUT_DIR")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def check_audio(manifest, sample_rate: int, seconds: float) -> int:
    """Print every clip whose header differs from the expectation; return how many."""
    info = probe_audio(manifest, progress=True)
    frames = round(sample_rate * seconds)
    problems = []
    for row in info.itertuples(index=False):
        if row.error:
            problems.append(f"{row.path}: unreadable ({row.error})")
            continue
        found = []
        if row.sample_rate != sample_rate:
            found.append(f"{row.sample_rate} Hz")
        if row.num_frames != frames:
            found.append(f"{row.num_frames} frames")
        if row.channels != 1:
            found.append(f"{row.channels} channels")
        if found:
            problems.append(f"{row.path}: {', '.join(found)}")
    if problems:
        print(f"{len(problems)} of {len(info)} clips are not {sample_rate} Hz mono x {frames} frames:")
        for line in problems[:MAX_LISTED]:
            print(f"  {line}")
        if len(problems) > MAX_LISTED:
            print(f"  ... and {len(problems) - MAX_LISTED} more")
    else:
        print(f"all {len(info)} clips are {sample_rate} Hz mono x {frames} frames")
    return len(problems)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = read_esc50(args.root, audio_dir=args.audio_dir)
        out = args.out_dir
        write_manifest(
            manifest, out / "manifest.csv", label_map_path=out / LABEL_MAP_NAME, relative_paths=args.relative_paths
        )
        folds = sorted(int(k) for k in manifest.table["fold"].dropna().unique())
        if args.ast_json:
            for k in folds:
                train, test = manifest.by_fold(k)
                write_ast_json(train, out / f"esc_train_data_{k}.json", relative_paths=args.relative_paths)
                write_ast_json(test, out / f"esc_eval_data_{k}.json", relative_paths=args.relative_paths)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(manifest)} clips, {manifest.num_classes} classes, folds {folds} -> {out / 'manifest.csv'}")
    if args.ast_json:
        print(f"AST json: {out}/esc_{{train,eval}}_data_{{{','.join(map(str, folds))}}}.json")
    if args.check_audio:
        deviations = check_audio(manifest, args.expect_sample_rate, args.expect_seconds)
        if deviations and args.strict:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
