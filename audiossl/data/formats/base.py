"""What every format reader shares: input checks, atomic writes, path resolution, line numbers.

Not a public API (the names are ``_``-prefixed); the modules beside this one import it so that
every reader checks its input, resolves relative paths and reports a bad row the same way, as
``file:line: reason`` (:class:`~audiossl.data.table.ManifestError`).
"""

from __future__ import annotations

import csv
import filecmp
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from audiossl.files import is_no_space, no_space_error
from audiossl.data.table import (
    LineOf,
    Manifest,
    ManifestError,
    PathLike,
    _canonical_table,
    _first_unknown_label,
    _raise_at,
    _RowProblem,
)


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield ``path.partial`` to write; rename it into place on success. An existing identical
    file is left untouched, so a re-run changes no mtime and downstream steps see no change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
    except BaseException as e:
        partial.unlink(missing_ok=True)
        if isinstance(e, Exception) and is_no_space(e):
            raise no_space_error(path, e, kept=f"kept {path.name} as it was" if path.exists() else None) from e
        raise
    if path.is_file() and filecmp.cmp(partial, path, shallow=False):
        partial.unlink()
    else:
        os.replace(partial, path)


def _check_input(path: PathLike) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise ManifestError(p, "no such file")
    if p.is_dir():
        raise ManifestError(p, "is a directory, not a file")
    return p


def _resolve(path: str, base: str) -> str:
    """Absolute path; relative ones are relative to ``base`` (the manifest's folder), not the cwd."""
    path = os.path.expanduser(path)
    return os.path.abspath(path if os.path.isabs(path) else os.path.join(base, path))


# An absolute POSIX path with nothing to normalise: most rows of a manifest we wrote ourselves.
_CLEAN_ABSOLUTE = re.compile(r"^/(?!.*//)(?!.*/\.\.?(?:/|$))(?!.*/$)")


def _resolve_all(paths: Sequence[str], base: str) -> np.ndarray:
    if os.sep != "/":
        return np.array([_resolve(p, base) for p in paths], dtype=object)
    clean = _CLEAN_ABSOLUTE.match
    return np.array([p if clean(p) else _resolve(p, base) for p in paths], dtype=object)


class _CsvLines:
    """Row position -> editor line of a CSV data record, computed only when an error needs it
    (pandas parses fast but forgets lines; blank lines and quoted newlines shift them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines: Optional[List[int]] = None

    def __call__(self, row: int) -> Optional[int]:
        if self._lines is None:
            self._lines = []
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                next(reader, None)
                previous = reader.line_num
                for record in reader:
                    start, previous = previous + 1, reader.line_num
                    if not record or (len(record) == 1 and not record[0].strip()):
                        continue
                    self._lines.append(start)
        return self._lines[row] if 0 <= row < len(self._lines) else None


def _read_csv_frame(path: Path, text_columns: Sequence[str]) -> pd.DataFrame:
    """A CSV as strings where identifiers live, inferred types elsewhere; only empty cells are NaN
    (a label or id spelled "NA" stays itself). Every record must have the header's fields: pandas
    would otherwise read one extra field on every row as an index and shift the columns."""
    header = _read_csv_frame_header(path)
    dtype = {c: str for c in header if c in text_columns}  # pandas' own text dtype, as inference gives
    try:
        with _csv_errors(path), warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                               index_col=False)
    except pd.errors.ParserWarning:
        line, fields = _first_long_record(path, len(header))
        raise ManifestError(path, f"a record has {fields} fields, the header has {len(header)} "
                                  f"({', '.join(header)})", line=line) from None


def _read_csv_frame_header(path: Path) -> List[str]:
    with _csv_errors(path):
        return [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """pandas' errors for a CSV that cannot be parsed, as :class:`ManifestError` at its line."""
    try:
        yield
    except pd.errors.EmptyDataError:
        raise ManifestError(path, "empty file (no header line)") from None
    except pd.errors.ParserError as e:
        raise _csv_parser_error(path, e) from None
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _csv_parser_error(path: Path, e: Exception) -> ManifestError:
    text = str(e).strip()
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        want, line, saw = (int(g) for g in fields.groups())
        return ManifestError(path, f"a record has {saw} fields, the header has {want}", line=line)
    quote = re.search(r"EOF inside string starting at row (\d+)", text)
    if quote:  # pandas counts rows from 0 (the header), editors count lines from 1
        return ManifestError(path, "a quoted field is never closed (unbalanced \")", line=int(quote.group(1)) + 1)
    m = re.search(r"line (\d+)", text)
    return ManifestError(path, f"malformed CSV: {text}", line=int(m.group(1)) if m else None)


def _first_long_record(path: Path, width: int) -> Tuple[Optional[int], int]:
    """(line, field count) of the first record with more than ``width`` fields."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)
        previous = reader.line_num
        for record in reader:
            if len(record) > width:
                return previous + 1, len(record)
            previous = reader.line_num
    return None, width + 1


def _check_known(
    labels: Sequence[Tuple[str, ...]], label_map: Optional[pd.DataFrame], source: PathLike, line_of: LineOf
) -> None:
    if label_map is None:
        return
    unknown = _first_unknown_label(labels, label_map)
    if unknown is not None:
        row, label = unknown
        raise ManifestError(
            source, f"label {label!r} is not in the label map ({len(label_map)} classes)", line=line_of(row)
        )


def _build(
    table: pd.DataFrame, label_map: Optional[pd.DataFrame], source: PathLike, line_of: LineOf
) -> Manifest:
    """Validate a table read from ``source`` once, with errors pointing at its lines."""
    try:
        table = _canonical_table(table)
    except _RowProblem as p:
        _raise_at(source, p, line_of)
    _check_known(table["labels"].tolist(), label_map, source, line_of)
    return Manifest._trusted(table, label_map, os.fspath(source))


def _derive_ids(paths: Sequence[str]) -> np.ndarray:
    """File stems, or paths relative to their common folder (without extension) when stems collide."""
    stems = np.array([os.path.splitext(os.path.basename(p))[0] for p in paths], dtype=object)
    if len(stems) == len(set(stems.tolist())):
        return stems
    common = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    return np.array(
        [os.path.splitext(os.path.relpath(p, common))[0].replace(os.sep, "/") for p in paths], dtype=object
    )
