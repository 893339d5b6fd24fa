"""fairseq / wav2vec / data2vec / EAT / MAE-AST manifests: a ``.tsv`` of ``relpath<TAB>num_samples``
under a root folder, labels in a ``.lbl`` aligned line by line, classes in
``label_descriptors.csv``."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from audiossl.data.formats.audioset import _clip_id
from audiossl.data.formats.base import _atomic_path, _build, _check_input, _check_known, _derive_ids, _resolve
from audiossl.data.formats.label_map import LabelMapArg, _resolve_label_map, write_label_map
from audiossl.data.table import Manifest, ManifestError, PathLike, _parse_label_text

logger = logging.getLogger(__name__)

# A PANNs pack row ("file.h5#row", see read_panns_hdf5): not a file fairseq could open.
_H5_ROW = re.compile(r"\.(h5|hdf5)#\d+$", re.IGNORECASE)


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


__all__ = ["read_fairseq_tsv", "write_fairseq_tsv"]
