"""Label map files: AudioSet's ``class_labels_indices.csv`` and fairseq/EAT's header-less
``label_descriptors.csv``, and finding one beside a manifest.

Every reader that takes ``label_map=`` resolves it here (:func:`_resolve_label_map`): a table, a
file, ``None`` for the sibling file if there is one, ``False`` for none.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import List, Optional, Union

import pandas as pd

from audiossl.data.formats.base import _atomic_path, _check_input
from audiossl.data.table import ManifestError, PathLike, _canonical_label_map, _raise_at, _RowProblem

logger = logging.getLogger(__name__)

#: A label map argument: a table, a file to read, ``None`` (look for the sibling file) or
#: ``False`` (no label map).
LabelMapArg = Union[pd.DataFrame, str, "os.PathLike[str]", bool, None]

LABEL_MAP_NAME = "class_labels_indices.csv"
_LABEL_MAP_SIBLINGS = (LABEL_MAP_NAME, "label_descriptors.csv")


def read_label_map(path: PathLike) -> pd.DataFrame:
    """``index,mid,display_name`` (AudioSet's ``class_labels_indices.csv``); the header may be
    absent (fairseq/EAT ``label_descriptors.csv``) and display names may contain quoted commas."""
    path = _check_input(path)
    rows: List[List[str]] = []
    lines: List[int] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        previous = 0
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            rows.append([x.strip() for x in record])
            lines.append(start)
    if rows and [x.lower() for x in rows[0][:2]] == ["index", "mid"]:
        rows, lines = rows[1:], lines[1:]
    for record, line in zip(rows, lines):
        if len(record) < 2:
            raise ManifestError(path, f"expected index,mid,display_name, found {','.join(record)!r}", line=line)
    table = pd.DataFrame(
        {
            "index": [r[0] for r in rows],
            "mid": [r[1] for r in rows],
            "display_name": [",".join(r[2:]) if len(r) > 2 else r[1] for r in rows],
        }
    )
    if table.empty:
        raise ManifestError(path, "label map has no classes")
    try:
        return _canonical_label_map(table)
    except _RowProblem as p:
        _raise_at(path, p, lambda r: lines[r])


def write_label_map(label_map: pd.DataFrame, path: PathLike, header: bool = True) -> Path:
    """Write in AudioSet's layout (display names always quoted, as in the original file).

    ``header=False`` gives fairseq/EAT's ``label_descriptors.csv``, whose readers count every line
    as a class."""
    try:
        label_map = _canonical_label_map(label_map)
    except _RowProblem as p:
        _raise_at("<label map>", p, None)
    path = Path(path)
    with _atomic_path(path) as partial, open(partial, "w", encoding="utf-8", newline="") as f:
        if header:
            f.write("index,mid,display_name\n")
        for i, mid, name in label_map.itertuples(index=False):
            f.write(f'{i},{mid},"{name.replace(chr(34), chr(34) * 2)}"\n')
    return path


def _resolve_label_map(arg: LabelMapArg, near: Path) -> Optional[pd.DataFrame]:
    if arg is False:
        return None
    if isinstance(arg, pd.DataFrame):
        try:
            return _canonical_label_map(arg)
        except _RowProblem as p:
            _raise_at("<label map>", p, None)
    if arg is None or arg is True:
        for name in _LABEL_MAP_SIBLINGS:
            candidate = near.parent / name
            if candidate.is_file():
                logger.debug("label map for %s: %s", near, candidate)
                return read_label_map(candidate)
        if arg is True:
            raise ManifestError(near, f"no label map given and none beside it ({' or '.join(_LABEL_MAP_SIBLINGS)})")
        return None
    return read_label_map(arg)


__all__ = ["LABEL_MAP_NAME", "LabelMapArg", "read_label_map", "write_label_map"]
