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

Where the code lives. Import from this module; it is the front door and re-exports every public
name. Behind it, imports point one way only, downward:

- :mod:`audiossl.data.table`: the :class:`Manifest` class, label maps in memory,
  :class:`ManifestError`. Knows no file format.
- :mod:`audiossl.data.formats`: one module per format or corpus (``csv_labels``, ``ast_json``,
  ``fairseq``, ``esc50``, ``audioset``, ``panns``, ``folder``), plus label map files
  (``label_map``), header probing (``probe``) and the helpers they share (``base``). Each builds a
  :class:`Manifest` and never imports this module.
- this module: :func:`read_manifest` (which reader for which file) and :func:`write_manifest`
  (our CSV and its sibling label map).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

from audiossl.data.formats.ast_json import read_ast_json, write_ast_json
from audiossl.data.formats.audioset import (
    audioset_split_name,
    join_audioset_clips,
    read_audioset_segments,
    scan_audioset_clips,
)
from audiossl.data.formats.base import _atomic_path, _check_input
from audiossl.data.formats.csv_labels import read_csv_labels
from audiossl.data.formats.esc50 import esc50_mid, read_esc50
from audiossl.data.formats.fairseq import read_fairseq_tsv, write_fairseq_tsv
from audiossl.data.formats.folder import AUDIO_EXTENSIONS, scan_folder
from audiossl.data.formats.label_map import LABEL_MAP_NAME, LabelMapArg, read_label_map, write_label_map
from audiossl.data.formats.panns import read_panns_hdf5
from audiossl.data.formats.probe import probe_audio, probe_durations
from audiossl.data.table import (
    COLUMNS,
    LABEL_MAP_COLUMNS,
    Manifest,
    ManifestError,
    PathLike,
    label_map_from_labels,
)

# Importable from here before the formats moved out, though never in __all__: kept for callers.
from audiossl.data.formats.esc50 import ESC50_NUM_FRAMES, ESC50_SAMPLE_RATE  # noqa: F401
from audiossl.data.table import LineOf  # noqa: F401


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
