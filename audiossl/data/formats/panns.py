"""PANNs HDF5 packs: waveform files (``audio_name``, ``waveform``, ``target``) and index files
pointing into them. Clips are addressed as ``file.h5#row``, which :mod:`audiossl.audio` loads."""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from audiossl.data.formats.audioset import _clip_id, audioset_split_name
from audiossl.data.formats.base import _check_input, _resolve
from audiossl.data.formats.label_map import LABEL_MAP_NAME, LabelMapArg, _resolve_label_map
from audiossl.data.table import Manifest, ManifestError, PathLike, _canonical_table, _RowProblem

logger = logging.getLogger(__name__)


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


__all__ = ["read_panns_hdf5"]
