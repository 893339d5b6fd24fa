"""Audio headers of every clip in a manifest: sample rate, length, channels, duration.

Not a format, but what every format lacks: most readers leave ``duration`` unknown (NaN), and
:func:`probe_durations` fills it from the files themselves.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Tuple

import numpy as np
import pandas as pd

from audiossl.data.table import Manifest

logger = logging.getLogger(__name__)


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


__all__ = ["probe_audio", "probe_durations"]
