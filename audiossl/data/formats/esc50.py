"""ESC-50 (``ROOT/meta/esc50.csv`` + ``ROOT/audio/``): 2000 clips of 5 s, 50 classes, 5 folds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from audiossl.data.formats.base import _build, _check_input, _CsvLines, _read_csv_frame
from audiossl.data.table import (
    Manifest,
    ManifestError,
    PathLike,
    _canonical_label_map,
    _numeric_column,
    _raise_at,
    _RowProblem,
    _text_column,
)

# The original recordings: 5 s at 44.1 kHz (AST's ``audio_16k`` copy is resampled).
ESC50_SAMPLE_RATE = 44100
ESC50_NUM_FRAMES = 220500


def esc50_mid(target: int) -> str:
    """AST's fake mid for ESC-50 class ``target`` (``/m/07rwj00`` ... ``/m/07rwj49``)."""
    return f"/m/07rwj{int(target):02d}"


def read_esc50(root: PathLike, audio_dir: str = "audio") -> Manifest:
    """ESC-50 (``ROOT/meta/esc50.csv`` + ``ROOT/audio/``) with its 5 folds.

    The label map is the classes in ``target`` order with AST's fake mids and the category as
    display name, built from the CSV (so the demo corpus and subsets work the same). Every file
    must exist; forks that prefix the category to file names (``dog_1-100032-A-0.wav``) are found
    too, and ids are the canonical ``1-100032-A-0`` either way. ``audio_dir`` selects e.g. AST's
    resampled ``audio_16k``. Duration is ESC-50's nominal 5 s.
    """
    root = Path(os.path.expanduser(os.fspath(root)))
    csv_path = _check_input(root / "meta" / "esc50.csv")
    frame = _read_csv_frame(csv_path, ("filename", "category", "take"))
    missing_cols = [c for c in ("filename", "fold", "target", "category") if c not in frame.columns]
    if missing_cols:
        raise ManifestError(csv_path, f"missing column(s) {', '.join(missing_cols)} (not ESC-50's meta file?)", line=1)
    line_of = _CsvLines(csv_path)
    try:
        filenames = _text_column(frame["filename"], "filename", required=True)
        categories = _text_column(frame["category"], "category", required=True)
        targets = _numeric_column(frame["target"], "target")
        folds = _numeric_column(frame["fold"], "fold")
    except _RowProblem as p:
        _raise_at(csv_path, p, line_of)
    for name, values in (("target", targets), ("fold", folds)):
        bad = np.flatnonzero(np.isnan(values) | (values != np.round(values)) | (values < 0))
        if len(bad):
            text = str(frame[name].iat[bad[0]])
            raise ManifestError(csv_path, f"{name} {text!r} is not a non-negative integer", line=line_of(int(bad[0])))
    targets = targets.astype(np.int64)
    category_of: Dict[int, Tuple[str, int]] = {}
    target_of: Dict[str, Tuple[int, int]] = {}
    for row, (t, c) in enumerate(zip(targets.tolist(), categories)):
        if category_of.setdefault(t, (c, row))[0] != c:
            raise ManifestError(
                csv_path,
                f"target {t} is {c!r} here but {category_of[t][0]!r} on line {line_of(category_of[t][1])}",
                line=line_of(row),
            )
        if target_of.setdefault(c, (t, row))[0] != t:
            raise ManifestError(
                csv_path,
                f"category {c!r} is target {t} here but {target_of[c][0]} on line {line_of(target_of[c][1])}",
                line=line_of(row),
            )
    num_classes = len(category_of)
    absent = sorted(set(range(num_classes)) - set(category_of))
    if absent:
        raise ManifestError(csv_path, f"targets must be 0..{num_classes - 1}; missing {absent[:10]}")
    label_map = pd.DataFrame(
        {"index": range(num_classes), "mid": [esc50_mid(t) for t in range(num_classes)],
         "display_name": [category_of[t][0] for t in range(num_classes)]}
    )
    audio = root / audio_dir
    if not audio.is_dir():
        raise ManifestError(csv_path, f"audio folder {audio} does not exist")
    present = set(os.listdir(audio))
    paths = np.empty(len(frame), dtype=object)
    ids = np.empty(len(frame), dtype=object)
    missing: List[str] = []
    for i, (name, category) in enumerate(zip(filenames, categories)):
        stem = os.path.splitext(name)[0]
        ids[i] = stem[len(category) + 1 :] if stem.startswith(category + "_") else stem
        for candidate in (name, f"{category}_{name}"):
            if candidate in present:
                paths[i] = os.path.abspath(audio / candidate)
                break
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:10]) + (f" ... (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise ManifestError(
            csv_path, f"{len(missing)} of {len(frame)} audio files listed here are missing from {audio}: {shown}"
        )
    table = pd.DataFrame(
        {"id": ids, "path": paths, "labels": [(esc50_mid(t),) for t in targets.tolist()],
         "duration": np.full(len(frame), 5.0), "split": np.full(len(frame), "", dtype=object), "fold": folds}
    )
    for extra in ("esc10", "src_file", "take"):
        if extra in frame.columns:
            table[extra] = frame[extra].to_numpy()
    return _build(table, _canonical_label_map(label_map), csv_path, line_of)


__all__ = ["ESC50_NUM_FRAMES", "ESC50_SAMPLE_RATE", "esc50_mid", "read_esc50"]
