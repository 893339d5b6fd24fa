"""The benchmark's cache: one NPZ per (representation pass, task), one JSON of probe results per task.

A pass's file holds, per split, the embedding matrix (``train``, ``valid``, ...) and the clip ids
it was computed for (``ids_train``, ...), plus a JSON ``meta`` string (the key it was made for,
the resolved pooling/layers, the width). It is written as ``name.partial`` and renamed, so a run
killed mid-write leaves either the whole file or none, and a re-run picks up every finished pass.
A file whose key or clip ids no longer match (a re-trained checkpoint at the same path, a changed
manifest or ``max_per_split``) is recomputed, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from audiossl.files import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
CACHE_VERSION = 1


def key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(path: Optional[PathLike]) -> Optional[Dict[str, Any]]:
    """Absolute path, size and mtime of a file: changes when the file is replaced."""
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p)}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "rep"


class PassCache:
    """Embedding passes of one task under ``root`` (``out/cache/<task>/``)."""

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)

    def path(self, label: str, key: Mapping[str, Any]) -> Path:
        return self.root / f"{slug(label)}-{key_hash({**key, 'cache_version': CACHE_VERSION})}.npz"

    def load(self, path: Path, ids: Mapping[str, Sequence[str]]) -> Optional[Tuple[Dict[str, np.ndarray], Dict[str, Any]]]:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("%s: unreadable cache (%s); recomputing", path, exc)
            return None
        meta = json.loads(str(arrays.pop("meta")))
        for split, wanted in ids.items():
            have = arrays.get(f"ids_{split}")
            if have is None or have.tolist() != list(wanted):
                logger.info("%s: clips of split %r changed; recomputing", path, split)
                return None
        return {s: arrays[s] for s in ids}, meta

    def save(self, path: Path, features: Mapping[str, np.ndarray], ids: Mapping[str, Sequence[str]],
             meta: Mapping[str, Any]) -> None:
        arrays: Dict[str, np.ndarray] = {"meta": np.asarray(json.dumps(dict(meta), default=str))}
        for split, x in features.items():
            arrays[split] = np.asarray(x, dtype=np.float32)
            arrays[f"ids_{split}"] = np.asarray(list(ids[split]), dtype=str)
        with atomic_path(path) as partial, open(partial, "wb") as fh:
            np.savez(fh, **arrays)


class ProbeCache:
    """Probe results of one task: ``probes.json`` ``{key: ProbeResult dict}``, rewritten atomically
    after every new entry (entries are small)."""

    def __init__(self, root: PathLike) -> None:
        self.path = Path(root) / "probes.json"
        self.entries: Dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                logger.warning("%s: unreadable (%s); probes will be refitted", self.path, exc)

    def get(self, key: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        return self.entries.get(key_hash(key))

    def put(self, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        self.entries[key_hash(key)] = dict(value)
        atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))
