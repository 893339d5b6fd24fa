"""AST / SSAST / AudioMAE datafiles: ``{"data": [{"wav": ..., "labels": "mid1,mid2"}, ...]}``."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from audiossl.data.formats.base import _atomic_path, _build, _check_input, _derive_ids, _resolve_all
from audiossl.data.formats.label_map import LabelMapArg, _resolve_label_map
from audiossl.data.table import Manifest, ManifestError, PathLike

logger = logging.getLogger(__name__)


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


__all__ = ["read_ast_json", "write_ast_json"]
