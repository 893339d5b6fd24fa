"""Plain CSVs that name audio files: ours (``manifest.csv``), HF AudioFolder ``metadata.csv``, and
anything similar. Our own CSV is written by :func:`audiossl.data.manifest.write_manifest`."""

from __future__ import annotations

import logging
from typing import Optional

from audiossl.data.formats.base import (
    _build,
    _check_input,
    _CsvLines,
    _derive_ids,
    _read_csv_frame,
    _read_csv_frame_header,
    _resolve_all,
)
from audiossl.data.formats.label_map import LabelMapArg, _resolve_label_map
from audiossl.data.table import (
    Manifest,
    ManifestError,
    PathLike,
    _labels_column,
    _raise_at,
    _RowProblem,
    _text_column,
    label_map_from_labels,
)

logger = logging.getLogger(__name__)

# Extra columns that look numeric to pandas but are identifiers (a YTID of digits, a leading 0).
_TEXT_EXTRAS = ("ytid", "take", "category", "file_name", "filename")


_PATH_COLUMNS = ("path", "file_name", "filename", "file", "wav", "audio", "audio_path", "filepath")
_LABEL_COLUMNS = ("labels", "label", "target", "class", "category")


def read_csv_labels(
    path: PathLike,
    path_column: Optional[str] = None,
    label_column: Optional[str] = None,
    id_column: Optional[str] = "id",
    label_map: LabelMapArg = None,
    label_sep: str = ",",
    derive_label_map: bool = True,
) -> Manifest:
    """A CSV that names audio files: ours, or a user's (HF AudioFolder ``metadata.csv`` with
    ``file_name`` + a label column, or anything similar).

    Columns are found by name when not given (path: ``path, file_name, filename, file, wav,
    audio...``; labels: ``labels, label, target, class, category``). Relative paths resolve against
    the CSV's folder (AudioFolder's rule). ``id`` comes from ``id_column`` when present, else from
    file names. Columns named like canonical ones (``duration, split, fold``) are used as such,
    others are kept as extras. Without a label map (none given, none beside the file) and with
    ``derive_label_map``, one is built from the labels found, in sorted order, with a warning.
    """
    path = _check_input(path)
    header = _read_csv_frame_header(path)
    path_column = path_column or next((c for c in _PATH_COLUMNS if c in header), None)
    if path_column is None or path_column not in header:
        raise ManifestError(
            path, f"no file column: expected one of {', '.join(_PATH_COLUMNS)} (found {', '.join(header)})", line=1
        )
    if label_column is None:
        label_column = next((c for c in _LABEL_COLUMNS if c in header), None)
    elif label_column not in header:
        raise ManifestError(path, f"no column {label_column!r} (found {', '.join(header)})", line=1)
    text = {path_column, "id", "split", *(c for c in _TEXT_EXTRAS if c in header)}
    if label_column:
        text.add(label_column)
    if id_column and id_column in header:
        text.add(id_column)
    frame = _read_csv_frame(path, tuple(text))
    rename = {path_column: "path"}
    if label_column:
        rename[label_column] = "labels"
    if id_column and id_column in frame.columns:
        rename[id_column] = "id"
    taken = set(rename.values())
    clashes = [c for c in frame.columns if c in taken and c not in rename]
    frame = frame.rename(columns={c: f"{c}_original" for c in clashes}).rename(columns=rename)
    line_of = _CsvLines(path)
    try:
        raw_paths = _text_column(frame["path"], "path", required=True)
    except _RowProblem as p:
        _raise_at(path, p, line_of)
    frame["path"] = _resolve_all(raw_paths, str(path.parent))
    if "id" not in frame.columns:
        frame.insert(0, "id", _derive_ids(frame["path"].tolist()))
    if "labels" in frame.columns and label_sep != ",":
        frame["labels"] = [
            tuple(t.strip() for t in v.split(label_sep) if t.strip()) if isinstance(v, str) else v
            for v in frame["labels"]
        ]
    resolved_map = _resolve_label_map(label_map, path)
    if resolved_map is None and derive_label_map and "labels" in frame.columns:
        try:
            labels = _labels_column(frame["labels"])
        except _RowProblem as p:
            _raise_at(path, p, line_of)
        resolved_map = label_map_from_labels(labels)
        if len(resolved_map):
            logger.warning(
                "%s: no label map given or found beside it; derived %d classes from its labels in sorted order "
                "(pass the same label_map= to every split so indices agree)",
                path, len(resolved_map),
            )
        else:
            resolved_map = None
    return _build(frame, resolved_map, path, line_of)


__all__ = ["read_csv_labels"]
