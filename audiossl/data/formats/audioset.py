"""AudioSet: segment lists (``balanced_train_segments.csv`` ...) joined to a folder of downloaded
clips, whatever naming scheme the downloader used (PANNs, AST, DCASE, HF).

The segment lists name no files, so they are read into a segment table
(:func:`read_audioset_segments`) and matched to the clips found on disk
(:func:`scan_audioset_clips`, :func:`join_audioset_clips`), which gives the manifest and the list
of segments without audio.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from audiossl.data.formats.base import _check_input
from audiossl.data.formats.folder import AUDIO_EXTENSIONS, _walk_files
from audiossl.data.formats.label_map import LabelMapArg, _resolve_label_map
from audiossl.data.table import (
    Manifest,
    ManifestError,
    PathLike,
    _canonical_table,
    _first_unknown_label,
    _parse_label_text,
)

logger = logging.getLogger(__name__)


_YTID = re.compile(r"^[A-Za-z0-9_-]{11}$")
# By length, never by '_': YTIDs contain '_' and may start with '-'.
_CLIP_NAMES = (
    re.compile(r"^Y?([A-Za-z0-9_-]{11})_(\d+(?:\.\d+)?)(?:_\d+(?:\.\d+)?)?$"),  # {id}_{start}[_{end}], DCASE's Y prefix
    re.compile(r"^Y([A-Za-z0-9_-]{11})$"),  # PANNs
    re.compile(r"^([A-Za-z0-9_-]{11})$"),  # HF agkphysics, bare ids
)
_SEGMENT_COLUMNS = ("ytid", "start", "end", "labels", "source", "line")


def audioset_split_name(path: PathLike) -> str:
    """``balanced_train_segments.csv`` -> ``balanced_train``; ``eval_segments.csv`` -> ``eval``."""
    stem = Path(path).name.split(".")[0]
    stem = re.sub(r"_segments$", "", stem)
    return re.sub(r"_part\d+$", "", stem)


def _clip_id(name: str) -> str:
    """A file name's AudioSet YTID when it is one (``Y--PJHxphWEs.wav`` -> ``--PJHxphWEs``), else its stem."""
    stem = os.path.splitext(os.path.basename(name))[0]
    for pattern in _CLIP_NAMES:
        m = pattern.match(stem)
        if m:
            return m.group(1)
    return stem


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


__all__ = ["audioset_split_name", "join_audioset_clips", "read_audioset_segments", "scan_audioset_clips"]
