"""The canonical manifest table, and readers/writers of the formats audio SSL users already hold.

Everything after data preparation reads one table (lhotse's rule): a :class:`Manifest` with the
columns ``id, path, labels, duration, split, fold`` in that order, then any extra columns, plus an
optional label map ``index, mid, display_name`` (AudioSet's ``class_labels_indices.csv`` schema,
which AST, SSAST, AudioMAE, PANNs and EAT all use).

On disk, our format is a CSV (``manifest.csv``) with those columns, labels ``,``-joined in one
field, and the label map **next to it** as ``class_labels_indices.csv``: :func:`write_manifest`
writes it there unless told otherwise, and every reader looks there (then for EAT's
``label_descriptors.csv``) when no label map is given. A CSV cannot carry the label map's path
without breaking plain CSV readers, so the sibling file is the convention.

Readers of foreign formats: AST/SSAST json (:func:`read_ast_json`), fairseq tsv + ``.lbl``
(:func:`read_fairseq_tsv`), ESC-50 (:func:`read_esc50`), AudioSet segment CSVs joined to a folder
of downloaded clips (:func:`read_audioset_segments`, :func:`join_audioset_clips`), PANNs waveform
HDF5 (:func:`read_panns_hdf5`), plain/AudioFolder CSVs (:func:`read_csv_labels`) and bare folders
(:func:`scan_folder`). :func:`read_manifest` picks the reader from the file.

Every problem raises :class:`ManifestError` as ``file:line: reason`` with the line a user sees in
an editor, because a 2-million-row AudioSet table is fixed in an editor, not in a debugger.
"""

from __future__ import annotations

import csv
import filecmp
import itertools
import json
import logging
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
#: A label map argument: a table, a file to read, ``None`` (look for the sibling file) or
#: ``False`` (no label map).
LabelMapArg = Union[pd.DataFrame, str, "os.PathLike[str]", bool, None]

COLUMNS = ("id", "path", "labels", "duration", "split", "fold")
LABEL_MAP_COLUMNS = ("index", "mid", "display_name")
LABEL_MAP_NAME = "class_labels_indices.csv"
_LABEL_MAP_SIBLINGS = (LABEL_MAP_NAME, "label_descriptors.csv")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wv")
ESC50_SAMPLE_RATE = 44100
ESC50_NUM_FRAMES = 220500

# Extra columns that look numeric to pandas but are identifiers (a YTID of digits, a leading 0).
_TEXT_EXTRAS = ("ytid", "take", "category", "file_name", "filename")
_MISSING_TEXT = frozenset({"", "nan", "na", "none", "null"})


class ManifestError(Exception):
    """A manifest, label map or segment list that cannot be used: ``file:line: reason``."""

    def __init__(self, path: PathLike, reason: str, line: Optional[int] = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keeps the error intact across DataLoader worker processes
        return (type(self), (self.path, self.reason, self.line))


class _RowProblem(Exception):
    """A bad row found while validating a table; the caller knows how rows map to lines."""

    def __init__(self, row: Optional[int], reason: str, also: Optional[int] = None) -> None:
        super().__init__(reason)
        self.row, self.reason, self.also = row, reason, also


LineOf = Callable[[int], Optional[int]]


def _raise_at(source: PathLike, problem: _RowProblem, line_of: Optional[LineOf]) -> NoReturn:
    if line_of is None:  # an in-memory table: rows are what the user can look up
        where = "" if problem.row is None else f"row {problem.row + 1}: "
        also = "" if problem.also is None else f" (also row {problem.also + 1})"
        raise ManifestError(source, f"{where}{problem.reason}{also}") from None
    line = None if problem.row is None else line_of(problem.row)
    also = ""
    if problem.also is not None:
        other = line_of(problem.also)
        also = f" (also on line {other})" if other is not None else ""
    raise ManifestError(source, problem.reason + also, line=line) from None


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def _text_column(col: pd.Series, name: str, required: bool) -> np.ndarray:
    """Python ``str`` values (whatever the input held: paths, ints, pandas strings); missing -> ""."""
    missing = col.isna().to_numpy()
    arr = col.to_numpy(dtype=object, copy=True)
    if pd.api.types.infer_dtype(arr, skipna=True) not in ("string", "empty"):
        arr = np.array(
            [
                v if isinstance(v, str) else os.fspath(v) if isinstance(v, os.PathLike) else str(v)
                for v in arr
            ],
            dtype=object,
        )
    if missing.any():
        arr[missing] = ""
    if required:
        empty = np.flatnonzero(arr == "")
        if len(empty):
            raise _RowProblem(int(empty[0]), f"empty {name}")
    return arr


def _parse_label_text(text: str) -> Tuple[str, ...]:
    if " " not in text and ",," not in text and not text.startswith(",") and not text.endswith(","):
        return tuple(text.split(",")) if text else ()  # the common, clean case, 3x faster
    return tuple(t for t in (s.strip() for s in text.split(",")) if t)


def _object_array(items: Sequence[Any]) -> np.ndarray:
    """1-D object array of arbitrary objects (``np.array`` would turn equal-length tuples into 2-D)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _labels_column(col: pd.Series) -> np.ndarray:
    """Tuples of label ids. Text is parsed once per distinct string and rows share the tuple,
    which keeps a 2M-row AudioSet table fast to read and small in memory."""
    values = col.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        parsed = _object_array([_parse_label_text(u) for u in uniques] + [()])
        return parsed[codes]  # code -1 (missing) picks the trailing ()
    out: List[Tuple[str, ...]] = []
    for i, v in enumerate(values):
        if type(v) is tuple:
            out.append(v)
        elif isinstance(v, str):
            out.append(_parse_label_text(v))
        elif v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out.append(())
        elif isinstance(v, (list, tuple, np.ndarray, pd.Series)):
            out.append(tuple(str(x) for x in v))
        else:
            raise _RowProblem(i, f"labels must be a sequence of label ids, not {type(v).__name__} {v!r}")
    return _object_array(out)


def _numeric_column(col: pd.Series, name: str) -> np.ndarray:
    """float64 values; empty/'nan' cells are NaN, anything else unparsable is an error."""
    if col.dtype.kind in "fiub":
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    suspects = np.flatnonzero(np.isnan(values) & ~col.isna().to_numpy())
    for i in suspects:
        text = str(col.iloc[i]).strip()
        if text.lower() not in _MISSING_TEXT:
            raise _RowProblem(int(i), f"{name} {text!r} is not a number")
    return values


def _canonical_table(table: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"Manifest.table must be a pandas DataFrame, not {type(table).__name__}")
    for name in ("id", "path"):
        if name not in table.columns:
            raise _RowProblem(None, f"missing column {name!r} (columns: {', '.join(map(str, table.columns))})")
    n = len(table)
    ids = _text_column(table["id"], "id", required=True)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = {}
        for r in rows:  # only the duplicated rows: few
            if ids[r] in first:
                raise _RowProblem(int(r), f"duplicate id {ids[r]!r}", also=first[ids[r]])
            first[ids[r]] = int(r)
    paths = _text_column(table["path"], "path", required=True)
    labels = _labels_column(table["labels"]) if "labels" in table.columns else _object_array([()] * n)
    duration = (
        _numeric_column(table["duration"], "duration") if "duration" in table.columns else np.full(n, np.nan)
    )
    bad = np.flatnonzero(~np.isnan(duration) & ((duration < 0) | ~np.isfinite(duration)))
    if len(bad):
        raise _RowProblem(int(bad[0]), f"duration {float(duration[bad[0]])!r} must be a finite number >= 0")
    split = _text_column(table["split"], "split", required=False) if "split" in table.columns else None
    if "fold" in table.columns:
        fold_values = _numeric_column(table["fold"], "fold")
        bad = np.flatnonzero(~np.isnan(fold_values) & (fold_values != np.round(fold_values)))
        if len(bad):
            raise _RowProblem(int(bad[0]), f"fold {float(fold_values[bad[0]])!r} is not an integer")
        fold = pd.array(
            np.where(np.isnan(fold_values), 0, fold_values).astype(np.int64), dtype="Int64"
        )
        fold[np.isnan(fold_values)] = pd.NA
    else:
        fold = pd.array([pd.NA] * n, dtype="Int64")
    columns: Dict[str, Any] = {
        "id": ids,
        "path": paths,
        "labels": labels,
        "duration": duration,
        "split": split if split is not None else np.full(n, "", dtype=object),
        "fold": fold,
    }
    out = pd.DataFrame({k: (v.to_numpy(dtype=object) if isinstance(v, pd.Series) else v) for k, v in columns.items()})
    for name in table.columns:
        if name not in COLUMNS:
            out[name] = table[name].reset_index(drop=True)
    return out


def _canonical_label_map(label_map: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(label_map, pd.DataFrame):
        raise TypeError(f"a label map must be a pandas DataFrame, not {type(label_map).__name__}")
    for name in ("index", "mid"):
        if name not in label_map.columns:
            raise _RowProblem(None, f"label map has no {name!r} column (needs index, mid, display_name)")
    mids = _text_column(label_map["mid"], "mid", required=True)
    index = _numeric_column(label_map["index"], "index")
    bad = np.flatnonzero(np.isnan(index) | (index != np.round(index)))
    if len(bad):
        raise _RowProblem(int(bad[0]), f"index {str(label_map['index'].iloc[bad[0]])!r} is not an integer")
    index = index.astype(np.int64)
    names = (
        _text_column(label_map["display_name"], "display_name", required=False)
        if "display_name" in label_map.columns
        else mids.copy()
    )
    seen: Dict[str, int] = {}
    for r, mid in enumerate(mids):
        if "," in mid:
            raise _RowProblem(r, f"mid {mid!r} contains ',' (labels are ','-joined in manifests)")
        if mid in seen:
            raise _RowProblem(r, f"duplicate mid {mid!r}", also=seen[mid])
        seen[mid] = r
    order = np.argsort(index, kind="stable")
    expected = np.arange(len(index))
    if not np.array_equal(index[order], expected):
        dups = pd.Series(index).duplicated(keep="first").to_numpy()
        if dups.any():
            r = int(np.flatnonzero(dups)[0])
            raise _RowProblem(r, f"duplicate index {index[r]}", also=int(np.flatnonzero(index == index[r])[0]))
        # n distinct values that are not 0..n-1: at least one lies outside that range
        r = int(np.flatnonzero((index < 0) | (index >= len(index)))[0])
        raise _RowProblem(r, f"index {index[r]} out of range: indices must be 0..{len(index) - 1}, each once")
    return pd.DataFrame({"index": expected, "mid": mids[order], "display_name": names[order]})


def _label_positions(
    labels: Sequence[Tuple[str, ...]], mids: Sequence[str]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class index per flat label, offsets (N+1), flat labels); unknown labels get index -1."""
    lengths = np.fromiter((len(t) for t in labels), dtype=np.int64, count=len(labels))
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = list(itertools.chain.from_iterable(labels))
    index = pd.Index(list(mids)).get_indexer(flat) if flat else np.zeros(0, dtype=np.int64)
    return np.asarray(index, dtype=np.int64), offsets, flat


def _first_unknown_label(
    labels: Sequence[Tuple[str, ...]], label_map: pd.DataFrame
) -> Optional[Tuple[int, str]]:
    index, offsets, flat = _label_positions(labels, label_map["mid"].tolist())
    bad = np.flatnonzero(index < 0)
    if not len(bad):
        return None
    row = int(np.searchsorted(offsets, bad[0], side="right") - 1)
    return row, flat[bad[0]]


@dataclass(eq=False)
class Manifest:
    """One row per clip: ``id, path, labels, duration, split, fold`` (+ extras), and a label map.

    ``labels`` holds tuples of label ids (AudioSet ``mid``s, or any string without ``,``), ``()``
    for unlabelled clips; when a label map is present every label must be one of its ``mid``s.
    ``duration`` is seconds (NaN when unknown), ``split`` a string (``""`` for none), ``fold`` a
    nullable ``Int64``. Constructing one validates and normalises the table (a copy).
    """

    table: pd.DataFrame
    label_map: Optional[pd.DataFrame] = None
    source: Optional[str] = None

    def __post_init__(self) -> None:
        where = self.source or "<manifest>"
        try:
            self.table = _canonical_table(self.table)
        except _RowProblem as p:
            _raise_at(where, p, None)
        if self.label_map is not None:
            try:
                self.label_map = _canonical_label_map(self.label_map)
            except _RowProblem as p:
                _raise_at("<label map>", p, None)
            unknown = _first_unknown_label(self.table["labels"].tolist(), self.label_map)
            if unknown is not None:
                row, label = unknown
                raise ManifestError(
                    where, f"row {row + 1} (id {self.table['id'].iat[row]!r}): label {label!r} is not in the label map"
                )

    @classmethod
    def _trusted(cls, table: pd.DataFrame, label_map: Optional[pd.DataFrame], source: Optional[str]) -> "Manifest":
        """A manifest from an already canonical table (a subset or a validated read)."""
        obj = cls.__new__(cls)
        obj.table, obj.label_map, obj.source = table, label_map, source
        return obj

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        classes = "no label map" if self.label_map is None else f"{len(self.label_map)} classes"
        return f"Manifest({len(self)} clips, {classes}, source={self.source!r})"

    @property
    def num_classes(self) -> int:
        return 0 if self.label_map is None else len(self.label_map)

    def labels_csr(self) -> Tuple[np.ndarray, np.ndarray]:
        """Class indices of every clip as CSR ``(indices, offsets)``: clip i has
        ``indices[offsets[i]:offsets[i+1]]``. Compact for 2M clips where multi-hot is 1 GB."""
        if self.label_map is None:
            raise ManifestError(
                self.source or "<manifest>",
                "no label map: pass label_map= when reading, or build one with label_map_from_labels()",
            )
        labels = self.table["labels"].tolist()
        index, offsets, flat = _label_positions(labels, self.label_map["mid"].tolist())
        bad = np.flatnonzero(index < 0)
        if len(bad):
            row = int(np.searchsorted(offsets, bad[0], side="right") - 1)
            raise ManifestError(
                self.source or "<manifest>",
                f"id {self.table['id'].iat[row]!r}: label {flat[bad[0]]!r} is not in the label map",
            )
        return index, offsets

    def labels_multi_hot(self) -> np.ndarray:
        """``(N, C)`` bool targets in label-map order (what BCE training and mAP need)."""
        index, offsets = self.labels_csr()
        out = np.zeros((len(self), self.num_classes), dtype=bool)
        rows = np.repeat(np.arange(len(self)), np.diff(offsets))
        out[rows, index] = True
        return out

    def subset(self, mask: Any) -> "Manifest":
        """Rows selected by a boolean mask or an array of row positions; the label map is kept."""
        mask = mask.to_numpy() if isinstance(mask, pd.Series) else np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (len(self),):
                raise ValueError(f"boolean mask of shape {mask.shape} for {len(self)} rows")
            table = self.table[mask]
        else:
            table = self.table.iloc[mask.astype(np.int64)]
            if table["id"].duplicated().any():
                raise ValueError("subset positions select a row twice: ids would not be unique")
        return Manifest._trusted(table.reset_index(drop=True), self.label_map, self.source)

    def by_fold(self, k: int) -> Tuple["Manifest", "Manifest"]:
        """``(train, test)`` for cross-validation fold ``k``: test is fold k, train every other
        clip that has a fold (the ESC-50 protocol: train on 4 folds, test on 1)."""
        fold = self.table["fold"]
        has = fold.notna().to_numpy()
        if not has.any():
            raise ManifestError(self.source or "<manifest>", "no clip has a fold")
        test = has & (fold.fillna(-(2**62)).to_numpy(dtype=np.int64) == int(k))
        if not test.any():
            folds = sorted(set(fold.dropna().astype(int).tolist()))
            raise ManifestError(self.source or "<manifest>", f"no clip in fold {k} (folds: {folds})")
        return self.subset(has & ~test), self.subset(test)

    @classmethod
    def concat(cls, manifests: Sequence["Manifest"]) -> "Manifest":
        """One manifest from several (e.g. the 41 unbalanced AudioSet parts); label maps must agree."""
        if not manifests:
            raise ValueError("nothing to concatenate")
        first = manifests[0].label_map
        for m in manifests[1:]:
            same = (first is None and m.label_map is None) or (
                first is not None and m.label_map is not None and first.equals(m.label_map)
            )
            if not same:
                raise ManifestError(m.source or "<manifest>", "label map differs from the first manifest's")
        table = pd.concat([m.table for m in manifests], ignore_index=True)
        sources = ", ".join(sorted({m.source or "<manifest>" for m in manifests}))
        return cls(table, first, source=sources)


def label_map_from_labels(
    labels: Iterable[Union[str, Sequence[str]]],
    display_names: Optional[Mapping[str, str]] = None,
) -> pd.DataFrame:
    """A label map over every label that occurs, in sorted order (numeric ids numerically).

    The order depends only on the set of labels, so build it from the *training* labels (or all
    splits together) and pass the same map to every split; a class missing from one split would
    otherwise shift every index after it.
    """
    seen = set()
    for item in labels:
        if isinstance(item, str):
            seen.update(_parse_label_text(item))
        else:
            seen.update(str(x) for x in item)
    if seen and all(s.lstrip("-").isdigit() for s in seen):
        ordered = sorted(seen, key=int)
    else:
        ordered = sorted(seen)
    names = [display_names.get(m, m) if display_names else m for m in ordered]
    return _canonical_label_map(pd.DataFrame({"index": range(len(ordered)), "mid": ordered, "display_name": names}))


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, line numbers
# ---------------------------------------------------------------------------------------------


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield ``path.partial`` to write; rename it into place on success. An existing identical
    file is left untouched, so a re-run changes no mtime and downstream steps see no change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
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
    (a label or id spelled "NA" stays itself)."""
    header = _read_csv_frame_header(path)
    try:
        dtype = {c: str for c in header if c in text_columns}  # pandas' own text dtype, as inference gives
        return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ManifestError(path, "empty file (no header line)") from None
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ManifestError(path, f"malformed CSV: {str(e).strip()}", line=int(m.group(1)) if m else None) from None
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


# ---------------------------------------------------------------------------------------------
# Label maps
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Our CSV and plain CSVs
# ---------------------------------------------------------------------------------------------

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


def _read_csv_frame_header(path: Path) -> List[str]:
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
    except pd.errors.EmptyDataError:
        raise ManifestError(path, "empty file (no header line)") from None
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def write_manifest(
    manifest: Manifest,
    path: PathLike,
    label_map_path: Optional[PathLike] = None,
    relative_paths: bool = False,
) -> Path:
    """Write our CSV atomically, and the label map beside it.

    The label map goes to ``label_map_path`` or, by default, ``class_labels_indices.csv`` in the
    same folder, where :func:`read_manifest` finds it. A *different* label map already sitting at
    that default place is an error rather than overwritten (two data sets sharing a folder would
    silently swap classes); pass ``label_map_path`` to write elsewhere or replace it on purpose.
    ``relative_paths`` writes paths relative to the CSV's folder, so the folder can move as a whole.
    """
    path = Path(path)
    table = manifest.table.copy()
    joined: Dict[Tuple[str, ...], str] = {}  # rows share label tuples: check and join each once
    texts = []
    for row, item in enumerate(table["labels"].tolist()):
        text = joined.get(item)
        if text is None:
            for label in item:
                if not label or "," in label or label != label.strip():
                    raise ManifestError(
                        path, f"id {table['id'].iat[row]!r}: label {label!r} cannot be written (empty, ',' or padding)"
                    )
            text = joined[item] = ",".join(item)
        texts.append(text)
    table["labels"] = texts
    if relative_paths:
        base = os.path.abspath(path.parent)
        table["path"] = [os.path.relpath(p, base) if os.path.isabs(p) else p for p in table["path"]]
    if manifest.label_map is not None:
        if label_map_path is None:
            target = path.parent / LABEL_MAP_NAME
            if target.is_file() and not read_label_map(target).equals(manifest.label_map):
                raise ManifestError(
                    target, "a different label map is already here; pass label_map_path= to write another one"
                )
        else:
            target = Path(label_map_path)
        write_label_map(manifest.label_map, target)
    with _atomic_path(path) as partial:
        table.to_csv(partial, index=False, na_rep="", lineterminator="\n")
    return path


# ---------------------------------------------------------------------------------------------
# AST / SSAST / AudioMAE json
# ---------------------------------------------------------------------------------------------


def _json_entry_lines(text: str) -> List[int]:
    """Line of each entry of the top-level ``data`` list (only called to report an error)."""
    m = re.search(r'"data"\s*:\s*\[', text)
    pos = m.end() if m else (text.index("[") + 1 if text.lstrip().startswith("[") else -1)
    if pos < 0:
        return []
    decoder = json.JSONDecoder()
    lines: List[int] = []
    line, counted = 1, 0
    try:
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] == "]":
                return lines
            line += text.count("\n", counted, pos)
            counted = pos
            lines.append(line)
            _, pos = decoder.raw_decode(text, pos)
    except ValueError:
        return lines


def read_ast_json(path: PathLike, label_csv: LabelMapArg = None) -> Manifest:
    """AST/SSAST/AudioMAE datafile ``{"data": [{"wav": ..., "labels": "mid1,mid2"}, ...]}``.

    Leading ``#`` lines (AST's ``sample_train_data.json`` has one) are dropped with a warning.
    ``labels`` may be missing or empty (unlabelled, for pretraining); optional ``id``, ``fold``,
    ``duration``, ``split`` are read, other keys (``video_id``...) ignored. Relative ``wav`` paths
    resolve against the json's folder.
    """
    path = _check_input(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    comments = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            lines[i] = ""  # blank, not removed: the decoder's line numbers stay the editor's
            comments += 1
        elif stripped:
            break
    if comments:
        logger.warning("%s: ignored %d leading '#' line(s); that is not JSON, AST's loader would fail", path, comments)
        text = "\n".join(lines)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(path, f"not valid JSON: {e.msg}", line=e.lineno) from None
    entries = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ManifestError(path, 'expected {"data": [...]} at the top level', line=1)
    entry_lines: Optional[List[int]] = None

    def line_of(i: int) -> Optional[int]:
        nonlocal entry_lines
        if entry_lines is None:
            entry_lines = _json_entry_lines(text)
        return entry_lines[i] if i < len(entry_lines) else None

    def fail(i: int, reason: str) -> None:
        raise ManifestError(path, f"data[{i}]: {reason}", line=line_of(i))

    n = len(entries)
    wav = np.empty(n, dtype=object)
    labels: List[Any] = [None] * n
    ids = np.empty(n, dtype=object)
    fold: List[Any] = [None] * n
    duration: List[Any] = [None] * n
    split: List[Any] = [None] * n
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            fail(i, f"expected an object, found {type(entry).__name__}")
        w = entry.get("wav")
        if not isinstance(w, str) or not w.strip():
            fail(i, "missing or empty 'wav'")
        wav[i] = w
        lab = entry.get("labels")
        if lab is not None and not isinstance(lab, (str, list)):
            fail(i, f"'labels' must be a ','-joined string or a list, not {type(lab).__name__}")
        labels[i] = lab
        ids[i] = entry.get("id")
        fold[i], duration[i], split[i] = entry.get("fold"), entry.get("duration"), entry.get("split")
    paths = _resolve_all(wav, str(path.parent))
    have_id = np.array([x is not None and x != "" for x in ids], dtype=bool)
    ids[have_id] = [str(x) for x in ids[have_id]]
    if not have_id.all():
        ids[~have_id] = _derive_ids(paths.tolist())[~have_id]
    table = pd.DataFrame(
        {"id": ids, "path": paths, "labels": pd.Series(labels, dtype=object).to_numpy(),
         "duration": pd.Series(duration, dtype=object).to_numpy(), "split": pd.Series(split, dtype=object).to_numpy(),
         "fold": pd.Series(fold, dtype=object).to_numpy()}
    )
    return _build(table, _resolve_label_map(label_csv, path), path, line_of)


def write_ast_json(manifest: Manifest, path: PathLike, relative_paths: bool = False) -> Path:
    """AST's datafile, one entry per line; ``labels`` is always present (``""`` when unlabelled)
    because AST's loader indexes it, and ``id``/``fold``/``duration``/``split`` ride along (AST
    ignores them, :func:`read_ast_json` reads them back)."""
    path = Path(path)
    base = os.path.abspath(path.parent)
    t = manifest.table
    folds = t["fold"].to_numpy(dtype=object, na_value=None)
    durations = t["duration"].to_numpy()
    out: List[str] = []
    for i, (id_, p, labels, split) in enumerate(zip(t["id"], t["path"], t["labels"], t["split"])):
        entry: Dict[str, Any] = {
            "wav": os.path.relpath(p, base) if relative_paths and os.path.isabs(p) else p,
            "labels": ",".join(labels),
            "id": id_,
        }
        if folds[i] is not None:
            entry["fold"] = int(folds[i])
        if not math.isnan(durations[i]):
            entry["duration"] = float(durations[i])
        if split:
            entry["split"] = split
        out.append(json.dumps(entry, ensure_ascii=False))
    with _atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as f:
        f.write('{"data": [\n' + ",\n".join(out) + ("\n" if out else "") + "]}\n")
    return path


# ---------------------------------------------------------------------------------------------
# fairseq / wav2vec / data2vec / EAT / MAE-AST tsv (+ .lbl)
# ---------------------------------------------------------------------------------------------


def _parse_lbl_line(line: str, mids: Sequence[str], known: Mapping[str, int]) -> Tuple[Optional[str], Tuple[str, ...]]:
    """One ``.lbl`` line in either dialect: EAT ``id<TAB>mid,mid`` or data2vec
    ``start<TAB>end<TAB>index,index`` (class indices into the label descriptors, turned into
    mids when a label map is known and the token is not itself a mid); a bare ``mid,mid`` line
    is accepted too. Returns (id or None, labels)."""
    fields = line.split("\t") if "\t" in line else line.split()
    key: Optional[str] = None
    if len(fields) >= 3:
        text = fields[2]
    elif len(fields) == 2:
        key, text = fields[0].strip(), fields[1]
    else:
        text = fields[0] if fields else ""
    labels = _parse_label_text(text)
    if mids and labels:
        labels = tuple(
            (mids[int(x)] if x not in known and x.isdigit() and int(x) < len(mids) else x) for x in labels
        )
    return key, labels


def read_fairseq_tsv(
    path: PathLike,
    lbl: Union[PathLike, bool, None] = None,
    label_map: LabelMapArg = None,
    sample_rate: Optional[int] = 16000,
) -> Manifest:
    """A wav2vec-style manifest: the root folder on line 1, then ``relpath<TAB>num_samples``.

    Labels come from ``lbl`` (default: the ``.lbl`` beside the tsv, if any), aligned line by line,
    in EAT's or data2vec's dialect. ``duration = num_samples / sample_rate`` (fairseq audio tasks
    run at 16 kHz; ``sample_rate=None`` leaves it NaN); ``num_samples`` is kept as a column and the
    split is the file's stem (``train``, ``valid``).
    """
    path = _check_input(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    root = lines[0].strip() if lines else ""
    if not root or "\t" in root:
        raise ManifestError(path, "line 1 must be the root folder of the relative paths", line=1)
    root = _resolve(root, str(path.parent))
    rel: List[str] = []
    nums: List[float] = []
    line_numbers: List[int] = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2 or not fields[0].strip():
            raise ManifestError(path, f"expected 'relative_path<TAB>num_samples', found {line!r}", line=number)
        count = float("nan")
        if len(fields) == 2 and fields[1].strip():
            text = fields[1].strip()
            if not text.isdigit():
                raise ManifestError(path, f"num_samples {text!r} is not a non-negative integer", line=number)
            count = float(text)
        rel.append(fields[0])
        nums.append(count)
        line_numbers.append(number)
    paths = [os.path.abspath(os.path.join(root, r)) for r in rel]
    num_samples = pd.array([None if math.isnan(x) else int(x) for x in nums], dtype="Int64")
    duration = np.asarray(nums) / sample_rate if sample_rate else np.full(len(nums), np.nan)
    resolved_map = _resolve_label_map(label_map, path)
    labels: List[Tuple[str, ...]] = [()] * len(rel)
    lbl_path = None if lbl is False else (path.with_suffix(".lbl") if lbl in (None, True) else Path(lbl))
    ids = _derive_ids(paths)
    if lbl_path is not None and (lbl_path.is_file() or lbl not in (None, True)):
        lbl_path = _check_input(lbl_path)
        lbl_lines = lbl_path.read_text(encoding="utf-8-sig").split("\n")
        if lbl_lines and lbl_lines[-1] == "":
            lbl_lines.pop()
        if len(lbl_lines) != len(rel):
            raise ManifestError(
                lbl_path,
                f"{len(lbl_lines)} label lines for {len(rel)} rows of {path}: the files must align line by line",
            )
        mids = [] if resolved_map is None else resolved_map["mid"].tolist()
        known = {m: i for i, m in enumerate(mids)}
        mismatched = 0
        for i, line in enumerate(lbl_lines):
            key, labels[i] = _parse_lbl_line(line.rstrip("\r"), mids, known)
            if key is not None and key not in (ids[i], os.path.basename(ids[i]), _clip_id(ids[i])):
                mismatched += 1
        if mismatched:
            logger.warning("%s: %d line(s) name another clip than the tsv row they align with", lbl_path, mismatched)
        if resolved_map is not None:
            _check_known(labels, resolved_map, lbl_path, lambda r: r + 1)
    table = pd.DataFrame(
        {"id": ids, "path": np.array(paths, dtype=object), "labels": pd.Series(labels, dtype=object).to_numpy(),
         "duration": duration, "split": np.full(len(rel), path.stem, dtype=object), "num_samples": num_samples}
    )
    return _build(table, resolved_map, path, lambda r: line_numbers[r])


def write_fairseq_tsv(
    manifest: Manifest,
    path: PathLike,
    sample_rate: int = 16000,
    lbl: bool = True,
    label_descriptors: bool = True,
) -> Path:
    """A wav2vec-style tsv (+ EAT-style ``.lbl`` ``id<TAB>mid,mid`` when any clip is labelled, and
    a header-less ``label_descriptors.csv`` when the manifest has a label map).

    ``num_samples`` comes from a ``num_samples`` column, else ``round(duration * sample_rate)``;
    fill unknown durations with :func:`probe_durations` first.
    """
    path = Path(path)
    t = manifest.table
    if any(_H5_ROW.search(p) for p in t["path"]):
        raise ManifestError(path, "HDF5 row references (file.h5#row) cannot go into a fairseq tsv")
    counts = np.full(len(t), np.nan)
    if "num_samples" in t:
        counts = t["num_samples"].to_numpy(dtype=np.float64, na_value=np.nan)
    from_duration = np.round(t["duration"].to_numpy() * sample_rate)
    counts = np.where(np.isnan(counts), from_duration, counts)
    unknown = np.flatnonzero(np.isnan(counts))
    if len(unknown):
        raise ManifestError(
            path,
            f"id {t['id'].iat[unknown[0]]!r} (and {len(unknown) - 1} more): duration unknown; "
            "run probe_durations() first",
        )
    dirs = [os.path.dirname(p) for p in t["path"]]
    root = os.path.commonpath(dirs) if dirs else os.path.abspath(path.parent)
    with _atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as f:
        f.write(root + "\n")
        for p, n in zip(t["path"], counts):
            f.write(f"{os.path.relpath(p, root)}\t{int(n)}\n")
    if lbl and any(len(x) for x in t["labels"]):
        with _atomic_path(path.with_suffix(".lbl")) as partial, open(partial, "w", encoding="utf-8") as f:
            for id_, labels in zip(t["id"], t["labels"]):
                f.write(f"{id_}\t{','.join(labels)}\n")
    if label_descriptors and manifest.label_map is not None:
        write_label_map(manifest.label_map, path.parent / "label_descriptors.csv", header=False)
    return path


# ---------------------------------------------------------------------------------------------
# ESC-50
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# AudioSet
# ---------------------------------------------------------------------------------------------

_YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
# By length, never by '_': YTIDs contain '_' and may start with '-'.
_CLIP_NAMES = (
    re.compile(r"^Y?([A-Za-z0-9_-]{11})_(\d+(?:\.\d+)?)(?:_\d+(?:\.\d+)?)?$"),  # {id}_{start}[_{end}], DCASE's Y prefix
    re.compile(r"^Y([A-Za-z0-9_-]{11})$"),  # PANNs
    re.compile(r"^([A-Za-z0-9_-]{11})$"),  # HF agkphysics, bare ids
)
_SEGMENT_COLUMNS = ("ytid", "start", "end", "labels", "source", "line")
_H5_ROW = re.compile(r"\.(h5|hdf5)#\d+$", re.IGNORECASE)


def audioset_split_name(path: PathLike) -> str:
    """``balanced_train_segments.csv`` -> ``balanced_train``; ``eval_segments.csv`` -> ``eval``."""
    stem = Path(path).name.split(".")[0]
    stem = re.sub(r"_segments$", "", stem)
    return re.sub(r"_part\d+$", "", stem)


def read_audioset_segments(csv_path: PathLike, label_map: LabelMapArg = False) -> pd.DataFrame:
    """An AudioSet segment list (``# YTID, start_seconds, end_seconds, positive_labels``).

    Tolerates what real copies contain: ``#`` comment lines, ``, `` separators, quoted label
    lists, YTIDs starting with ``-`` or containing ``_``, segments shorter than 10 s, and AST's
    spreadsheet-mangled rows (``\"\"\"/m/068hy\",/m/07q6cd_,...``). Returns a DataFrame
    ``ytid, start, end, labels (tuple), source, line`` so later errors can name the line. With a
    label map, unknown MIDs are an error here.
    """
    csv_path = _check_input(csv_path)
    source = os.fspath(csv_path)
    ytids: List[str] = []
    starts: List[float] = []
    ends: List[float] = []
    labels: List[Tuple[str, ...]] = []
    lines: List[int] = []
    cache: Dict[str, Tuple[str, ...]] = {}
    with open(csv_path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(",", 3)
            ytid = parts[0].strip(' "')
            if not ytids and ytid.upper() == "YTID":  # an uncommented header
                continue
            if len(parts) < 3:
                raise ManifestError(csv_path, f"expected 'YTID, start, end, \"labels\"', found {line!r}", line=number)
            if not _YTID.match(ytid):
                raise ManifestError(
                    csv_path, f"{ytid!r} is not a YouTube id (11 characters of A-Z a-z 0-9 _ -)", line=number
                )
            try:
                start, end = float(parts[1].strip(' "')), float(parts[2].strip(' "'))
            except ValueError:
                raise ManifestError(
                    csv_path, f"start/end {parts[1].strip()!r}, {parts[2].strip()!r} are not numbers", line=number
                ) from None
            if not (0 <= start < end):
                raise ManifestError(csv_path, f"segment {start}..{end} is empty or negative", line=number)
            text = parts[3] if len(parts) > 3 else ""
            parsed = cache.get(text)
            if parsed is None:
                parsed = cache[text] = _parse_label_text(text.replace('"', ""))
            ytids.append(ytid)
            starts.append(start)
            ends.append(end)
            labels.append(parsed)
            lines.append(number)
    segments = pd.DataFrame(
        {"ytid": np.array(ytids, dtype=object), "start": np.array(starts), "end": np.array(ends),
         "labels": pd.Series(labels, dtype=object).to_numpy(), "source": np.full(len(ytids), source, dtype=object),
         "line": np.array(lines, dtype=np.int64)}
    )
    resolved = _resolve_label_map(label_map, csv_path)
    if resolved is not None:
        _check_segment_labels(segments, resolved)
    return segments


def _check_segment_labels(segments: pd.DataFrame, label_map: pd.DataFrame) -> None:
    unknown = _first_unknown_label(segments["labels"].tolist(), label_map)
    if unknown is not None:
        row, label = unknown
        raise ManifestError(
            segments["source"].iat[row],
            f"label {label!r} is not in the label table ({len(label_map)} classes)",
            line=int(segments["line"].iat[row]),
        )


def scan_audioset_clips(
    audio_dirs: Union[PathLike, Sequence[PathLike]], extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> pd.DataFrame:
    """Every AudioSet clip under the folders (recursively), named in any known scheme:
    ``Y{YTID}.wav`` (PANNs), ``{YTID}_{start}.flac`` (AST: seconds with decimals; strong-label
    ``{YTID}_{start_ms}``), ``Y{YTID}_{start}_{end}.wav`` (DCASE), ``{YTID}.flac`` (HF).
    Returns ``ytid, start_text ("" when absent), path, rank`` (``rank``: position of the
    extension in ``extensions``, the preference when one clip exists twice)."""
    if isinstance(audio_dirs, (str, os.PathLike)):
        audio_dirs = [audio_dirs]
    rank_of = {e.lower(): i for i, e in enumerate(extensions)}
    ytid: List[str] = []
    start: List[str] = []
    paths: List[str] = []
    rank: List[int] = []
    unnamed = 0
    for directory in audio_dirs:
        directory = Path(os.path.expanduser(os.fspath(directory)))
        if not directory.is_dir():
            raise ManifestError(directory, "audio folder does not exist")
        for path in _walk_files(directory):
            stem, ext = os.path.splitext(os.path.basename(path))
            r = rank_of.get(ext.lower())
            if r is None:
                continue
            for pattern in _CLIP_NAMES:
                m = pattern.match(stem)
                if m:
                    ytid.append(m.group(1))
                    start.append(m.group(2) if pattern.groups >= 2 else "")
                    paths.append(path)
                    rank.append(r)
                    break
            else:
                unnamed += 1
    if unnamed:
        logger.warning(
            "%d audio file(s) under %s have no AudioSet clip name; ignored", unnamed, ", ".join(map(str, audio_dirs))
        )
    return pd.DataFrame(
        {"ytid": np.array(ytid, dtype=object), "start_text": np.array(start, dtype=object),
         "path": np.array(paths, dtype=object), "rank": np.array(rank, dtype=np.int64)}
    )


def join_audioset_clips(
    segments: pd.DataFrame,
    audio_dir: Union[PathLike, Sequence[PathLike], pd.DataFrame],
    label_map: LabelMapArg,
    split: Optional[str] = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
) -> Tuple[Manifest, pd.DataFrame]:
    """Match segment rows to downloaded files; return ``(manifest, missing)``.

    ``audio_dir`` is a folder (or several, or a :func:`scan_audioset_clips` table to scan once
    for many segment lists). A file whose name carries a start time must match the segment's
    start (seconds, or milliseconds when an integer); a file without one matches its YTID. When
    several files fit one segment, one with an explicit start wins, then the earlier extension in
    ``extensions``, then the path order. ``id`` is the YTID, ``duration`` the segment's length,
    ``split`` the segment list's name unless given; ``start``/``end`` are kept. ``missing`` lists
    the segments without audio (``ytid, start, end, labels, source, line``).
    """
    if not isinstance(segments, pd.DataFrame) or any(c not in segments.columns for c in _SEGMENT_COLUMNS):
        raise TypeError(f"segments must be read_audioset_segments() output with columns {_SEGMENT_COLUMNS}")
    segments = segments.reset_index(drop=True)
    first_source = Path(segments["source"].iat[0]) if len(segments) else Path(".")
    resolved = _resolve_label_map(label_map, first_source)
    if resolved is not None:
        _check_segment_labels(segments, resolved)
    dup = segments["ytid"].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first: Dict[str, int] = {}
        for r in rows:
            y = segments["ytid"].iat[r]
            if y in first:
                f = first[y]
                raise ManifestError(
                    segments["source"].iat[r],
                    f"YTID {y} is listed twice (also {segments['source'].iat[f]}:{segments['line'].iat[f]}); "
                    "ids must be unique",
                    line=int(segments["line"].iat[r]),
                )
            first[y] = int(r)
    files = audio_dir if isinstance(audio_dir, pd.DataFrame) else scan_audioset_clips(audio_dir, extensions)
    seg = pd.DataFrame({"_row": np.arange(len(segments)), "ytid": segments["ytid"], "start": segments["start"]})
    pairs = seg.merge(files, on="ytid", how="inner")
    text = pairs["start_text"].astype(object)
    has_start = (text != "").to_numpy()
    value = pd.to_numeric(text.where(has_start), errors="coerce").to_numpy(dtype=np.float64)
    is_int = has_start & np.array(["." not in x for x in text], dtype=bool)
    start = pairs["start"].to_numpy()
    fits = ~has_start | (np.abs(value - start) < 5e-4) | (is_int & (np.abs(value / 1000.0 - start) < 5e-4))
    if (~fits).any():
        logger.info("%d file(s) have a matching YTID but another start time; not used", int((~fits).sum()))
    pairs = pairs[fits].assign(_bare=~has_start[fits])  # False sorts first: an explicit start wins
    pairs = pairs.sort_values(["_row", "_bare", "rank", "path"], kind="stable")
    extra = int(pairs["_row"].duplicated().sum())
    if extra:
        logger.warning("%d extra file(s) match a segment that already has one; kept one per segment", extra)
    chosen = pairs.drop_duplicates("_row")
    found = np.zeros(len(segments), dtype=bool)
    found[chosen["_row"].to_numpy()] = True
    path_of = np.empty(len(segments), dtype=object)
    path_of[chosen["_row"].to_numpy()] = chosen["path"].to_numpy()
    if split is None:
        names = {source: audioset_split_name(source) for source in segments["source"].unique()}
        split_names = segments["source"].map(names).to_numpy(dtype=object)
    else:
        split_names = np.full(len(segments), split, dtype=object)
    hit = segments[found]
    table = pd.DataFrame(
        {"id": hit["ytid"].to_numpy(dtype=object), "path": path_of[found], "labels": hit["labels"].to_numpy(),
         "duration": (hit["end"] - hit["start"]).to_numpy(), "split": split_names[found],
         "fold": pd.array([pd.NA] * len(hit), dtype="Int64"),
         "start": hit["start"].to_numpy(), "end": hit["end"].to_numpy()}
    )
    sources = ", ".join(sorted(set(segments["source"])))
    manifest = Manifest._trusted(_canonical_table(table), resolved, sources)
    missing = segments[~found].reset_index(drop=True).copy()
    missing["labels"] = [",".join(t) for t in missing["labels"]]
    return manifest, missing[list(_SEGMENT_COLUMNS)]


# ---------------------------------------------------------------------------------------------
# PANNs HDF5, folders
# ---------------------------------------------------------------------------------------------


def _clip_id(name: str) -> str:
    """A file name's AudioSet YTID when it is one (``Y--PJHxphWEs.wav`` -> ``--PJHxphWEs``), else its stem."""
    stem = os.path.splitext(os.path.basename(name))[0]
    for pattern in _CLIP_NAMES:
        m = pattern.match(stem)
        if m:
            return m.group(1)
    return stem


def read_panns_hdf5(path: PathLike, label_map: LabelMapArg = None) -> Manifest:
    """A PANNs HDF5 pack: a waveform file (``audio_name``, ``waveform`` int16, ``target`` bool)
    or an index file (``hdf5_path`` + ``index_in_hdf5`` pointing into waveform files).

    Rows with an empty ``audio_name`` (clips PANNs failed to download, left as zeros) are
    skipped. ``path`` is the row reference ``"{file.h5}#{row}"`` that :mod:`audiossl.audio`
    loads; labels are the ``target`` columns mapped to mids through the label map (needed, as
    the file stores only indices); ``id`` is the YTID; ``duration`` the waveform length.
    """
    import h5py

    path = _check_input(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ManifestError(path, f"not a readable HDF5 file ({e})") from None
    with f:
        for name in ("audio_name", "target"):
            if name not in f:
                raise ManifestError(path, f"no {name!r} dataset: not a PANNs pack (has {', '.join(f.keys())})")
        names = np.char.decode(np.asarray(f["audio_name"][()], dtype=np.bytes_), "utf-8").astype(object)
        keep = np.flatnonzero(names != "")
        num_classes = f["target"].shape[1]
        resolved = _resolve_label_map(label_map, path)
        if resolved is None:
            raise ManifestError(
                path, f"'target' has {num_classes} classes: pass label_map= (e.g. AudioSet's {LABEL_MAP_NAME})"
            )
        if len(resolved) != num_classes:
            raise ManifestError(path, f"'target' has {num_classes} classes but the label map has {len(resolved)}")
        mids = resolved["mid"].to_numpy(dtype=object)
        labels: List[Tuple[str, ...]] = []
        cache: Dict[bytes, Tuple[str, ...]] = {}
        block = 65536
        for lo in range(0, len(keep), block):
            rows = keep[lo : lo + block]
            target = np.asarray(f["target"][rows[0] : rows[-1] + 1], dtype=bool)[rows - rows[0]]
            for r in range(len(rows)):
                key = np.packbits(target[r]).tobytes()
                t = cache.get(key)
                if t is None:
                    t = cache[key] = tuple(mids[np.flatnonzero(target[r])].tolist())
                labels.append(t)
        if "hdf5_path" in f and "index_in_hdf5" in f:
            files = np.char.decode(np.asarray(f["hdf5_path"][()], dtype=np.bytes_), "utf-8")[keep]
            index = np.asarray(f["index_in_hdf5"][()])[keep]
            base = str(path.parent)
            paths = np.array([f"{_resolve(h, base)}#{int(i)}" for h, i in zip(files, index)], dtype=object)
            duration = np.full(len(keep), np.nan)
        else:
            absolute = os.path.abspath(path)
            paths = np.array([f"{absolute}#{int(i)}" for i in keep], dtype=object)
            if "waveform" in f:
                rate = float(f.attrs.get("sample_rate", 32000))
                duration = np.full(len(keep), f["waveform"].shape[1] / rate)
            else:
                duration = np.full(len(keep), np.nan)
    if len(keep) < len(names):
        logger.info("%s: skipped %d empty row(s) (clips that were never downloaded)", path, len(names) - len(keep))
    ids = np.array([_clip_id(n) for n in names[keep]], dtype=object)
    table = pd.DataFrame(
        {"id": ids, "path": paths, "labels": pd.Series(labels, dtype=object).to_numpy(), "duration": duration,
         "split": np.full(len(keep), audioset_split_name(path), dtype=object), "row": keep.astype(np.int64)}
    )
    try:
        canonical = _canonical_table(table)
    except _RowProblem as p:  # no lines in HDF5: name the dataset row instead
        also = "" if p.also is None else f" (also row {keep[p.also]})"
        raise ManifestError(path, f"audio_name row {keep[p.row]}: {p.reason}{also}") from None
    return Manifest._trusted(canonical, resolved, os.fspath(path))


def _walk_files(root: Path) -> List[str]:
    """Files under ``root``, sorted, hidden ones (``.``-prefixed, e.g. macOS ``._x.wav``) skipped;
    folder symlinks are followed once (data sets are often assembled from links)."""
    out: List[str] = []
    seen = set()
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            logger.warning("cannot list %s: %s", folder, e)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append(entry.path)
            elif entry.is_file():
                out.append(os.path.abspath(entry.path))
    out.sort()
    return out


def scan_folder(root: PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> Manifest:
    """Every audio file under ``root``, unlabelled; ``id`` is the path relative to ``root``
    without extension (``/``-separated), in sorted order. Two files differing only by extension
    would share an id: an error naming both."""
    root = Path(os.path.expanduser(os.fspath(root)))
    if not root.is_dir():
        raise ManifestError(root, "not a folder")
    wanted = {e.lower() for e in extensions}
    paths = [p for p in _walk_files(root) if os.path.splitext(p)[1].lower() in wanted]
    base = os.path.abspath(root)
    ids = [os.path.splitext(os.path.relpath(p, base))[0].replace(os.sep, "/") for p in paths]
    first: Dict[str, str] = {}
    for id_, p in zip(ids, paths):
        if id_ in first:
            raise ManifestError(p, f"same id {id_!r} as {first[id_]}: rename one of them")
        first[id_] = p
    table = pd.DataFrame({"id": np.array(ids, dtype=object), "path": np.array(paths, dtype=object)})
    return _build(table, None, root, lambda r: None)


# ---------------------------------------------------------------------------------------------
# Audio headers
# ---------------------------------------------------------------------------------------------


def _header_reader() -> Callable[[str], Tuple[int, int, int]]:
    """``path -> (sample_rate, num_frames, channels)`` from the header, via ``audiossl.audio``
    (which also knows ``file.h5#row`` and flags truncated WAVs), else plain soundfile. Imported
    once, before any progress bar starts, because ``audiossl.audio`` pulls in torch."""
    try:
        from audiossl.audio import info
    except ImportError:
        info = None
    if info is not None:
        def read(path: str) -> Tuple[int, int, int]:
            meta = info(path)
            return int(meta.sample_rate), int(meta.num_frames), int(meta.channels)

        return read
    import soundfile

    def read_soundfile(path: str) -> Tuple[int, int, int]:
        meta = soundfile.info(path)
        return int(meta.samplerate), int(meta.frames), int(meta.channels)

    return read_soundfile


def probe_audio(manifest: Manifest, progress: bool = False) -> pd.DataFrame:
    """Header of every clip: ``id, path, sample_rate, num_frames, channels, duration, error``.

    Unreadable files do not stop the scan: their ``error`` says why (empty string when fine)."""
    t = manifest.table
    n = len(t)
    rate = np.zeros(n, dtype=np.int64)
    frames = np.zeros(n, dtype=np.int64)
    channels = np.zeros(n, dtype=np.int64)
    errors = np.full(n, "", dtype=object)
    read = _header_reader()
    iterator: Iterable[Tuple[int, str]] = enumerate(t["path"].tolist())
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=n, desc="audio headers", unit="file")
    for i, p in iterator:
        try:
            rate[i], frames[i], channels[i] = read(p)
        except Exception as e:  # any decoder failure is a property of that file, reported per row
            errors[i] = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
    with np.errstate(divide="ignore", invalid="ignore"):
        duration = np.where(rate > 0, frames / np.maximum(rate, 1), np.nan)
    return pd.DataFrame(
        {"id": t["id"].to_numpy(), "path": t["path"].to_numpy(), "sample_rate": rate, "num_frames": frames,
         "channels": channels, "duration": duration, "error": errors}
    )


def probe_durations(manifest: Manifest, progress: bool = False) -> Manifest:
    """The manifest with ``duration`` read from every file's header; unreadable files keep NaN
    and are counted in a warning (the store writer lists them when it skips them)."""
    info = probe_audio(manifest, progress=progress)
    bad = info["error"] != ""
    if bad.any():
        logger.warning("%d of %d file(s) unreadable, duration left unknown; first: %s: %s",
                       int(bad.sum()), len(info), info["path"][bad].iat[0], info["error"][bad].iat[0])
    table = manifest.table.copy()
    table["duration"] = info["duration"].to_numpy()
    return Manifest._trusted(table, manifest.label_map, manifest.source)


# ---------------------------------------------------------------------------------------------
# Auto-detection
# ---------------------------------------------------------------------------------------------


def read_manifest(path: PathLike, label_map: LabelMapArg = None) -> Manifest:
    """Read any manifest we know, by extension then content: our CSV (or a plain CSV naming
    files), ESC-50's ``meta/esc50.csv``, AST/SSAST ``.json``, fairseq ``.tsv`` (+ ``.lbl``), PANNs
    ``.h5``. ``label_map``: a table or file; ``None`` looks for ``class_labels_indices.csv`` (then
    ``label_descriptors.csv``) beside the manifest; ``False`` reads none. A folder is read with
    :func:`scan_folder`: every audio file under it, unlabelled."""
    if Path(os.path.expanduser(os.fspath(path))).is_dir():
        return scan_folder(path)
    path = _check_input(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return read_panns_hdf5(path, label_map)
    if suffix == ".json":
        return read_ast_json(path, label_map)
    if suffix == ".tsv":
        return read_fairseq_tsv(path, label_map=label_map)
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8-sig", errors="replace")
    first_lines = [line for line in head.splitlines() if line.strip()]
    first = first_lines[0].strip() if first_lines else ""
    if suffix != ".csv":
        body = [line for line in first_lines if not line.lstrip().startswith("#")]
        if body and body[0].lstrip().startswith(("{", "[")):
            return read_ast_json(path, label_map)
        if len(first_lines) > 1 and "\t" not in first and "\t" in first_lines[1]:
            return read_fairseq_tsv(path, label_map=label_map)
    if first.startswith("#") or re.match(r'^"?[A-Za-z0-9_-]{11}"?\s*,\s*"?\d', first):
        raise ManifestError(
            path, "this is an AudioSet segment list: it names no audio files. Use read_audioset_segments() + "
            "join_audioset_clips(), or data_prep/audioset.py", line=1,
        )
    header = [h.strip().strip('"').lower() for h in next(csv.reader([first]), [])]
    if header[:3] == list(LABEL_MAP_COLUMNS):
        raise ManifestError(path, "this is a label map (index,mid,display_name), not a manifest", line=1)
    if {"filename", "fold", "target", "category"} <= set(header) and path.parent.name == "meta":
        return read_esc50(path.parent.parent)
    return read_csv_labels(path, label_map=label_map, derive_label_map=False)


__all__ = [
    "AUDIO_EXTENSIONS",
    "COLUMNS",
    "LABEL_MAP_COLUMNS",
    "LABEL_MAP_NAME",
    "Manifest",
    "ManifestError",
    "audioset_split_name",
    "esc50_mid",
    "join_audioset_clips",
    "label_map_from_labels",
    "probe_audio",
    "probe_durations",
    "read_ast_json",
    "read_audioset_segments",
    "read_csv_labels",
    "read_esc50",
    "read_fairseq_tsv",
    "read_label_map",
    "read_manifest",
    "read_panns_hdf5",
    "scan_audioset_clips",
    "scan_folder",
    "write_ast_json",
    "write_fairseq_tsv",
    "write_label_map",
    "write_manifest",
]
