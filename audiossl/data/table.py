"""The manifest table in memory: :class:`Manifest`, label maps, and :class:`ManifestError`.

(Label map *files* are read and written in :mod:`audiossl.data.formats.label_map`.)

This is the bottom of the manifest code and knows no file format. The readers in
:mod:`audiossl.data.formats` build a :class:`Manifest` from their files, and
:mod:`audiossl.data.manifest` (the module to import) picks a reader and re-exports all of this.
The table sits *below* the readers so that ``read_manifest`` can dispatch to them without an
import cycle.

A :class:`Manifest` has the columns ``id, path, labels, duration, split, fold`` in that order,
then any extra columns, plus an optional label map ``index, mid, display_name`` (AudioSet's
``class_labels_indices.csv`` schema, which AST, SSAST, AudioMAE, PANNs and EAT all use).

Validating a table that came from a file raises :class:`_RowProblem` with a row position; the
reader, which knows the line each row came from, turns it into ``file:line: reason``
(:func:`_raise_at`).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

PathLike = Union[str, "os.PathLike[str]"]
#: A row position -> the line of the file it came from (``None`` when unknown).
LineOf = Callable[[int], Optional[int]]

COLUMNS = ("id", "path", "labels", "duration", "split", "fold")
LABEL_MAP_COLUMNS = ("index", "mid", "display_name")

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


__all__ = [
    "COLUMNS",
    "LABEL_MAP_COLUMNS",
    "LineOf",
    "Manifest",
    "ManifestError",
    "PathLike",
    "label_map_from_labels",
]
