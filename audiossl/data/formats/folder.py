"""Bare folders of audio files: every file under a root, unlabelled, ids from relative paths."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

from audiossl.data.formats.base import _build
from audiossl.data.table import Manifest, ManifestError, PathLike

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wv")


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


__all__ = ["AUDIO_EXTENSIONS", "scan_folder"]
