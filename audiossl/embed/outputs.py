"""Embedding many files at once: :func:`embed_files` runs an :class:`~audiossl.embed.embedder.Embedder`
over a wav file, a folder or a manifest and writes one HDF5 or NPZ file (layout in its docstring)
atomically, listing unreadable or non-finite clips beside it; :func:`read_embeddings` reads it back.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

import audiossl
from audiossl.embed.embedder import ClipEmbedding, Embedder, PathLike
from audiossl.files import atomic_path, is_no_space, no_space_error

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["embed_files", "read_embeddings", "resolve_inputs"]


def resolve_inputs(inputs: PathLike) -> "pd.DataFrame":
    """``id, path`` (and ``manifest_index``) of what INPUT names: one audio file (id = its stem),
    a folder (every audio file under it, id = relative path without extension) or a manifest."""
    import pandas as pd

    from audiossl.data.manifest import AUDIO_EXTENSIONS, read_manifest

    path = Path(os.path.expanduser(os.fspath(inputs)))
    if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
        table = pd.DataFrame({"id": [path.stem], "path": [str(path)]})
    else:
        table = read_manifest(path).table[["id", "path"]].reset_index(drop=True)
    table["manifest_index"] = np.arange(len(table), dtype=np.int64)
    return table


class _Writer:
    """Accumulates clips and writes the layout :func:`embed_files` documents, to ``partial``.
    HDF5 datasets grow as clips arrive (bounded memory); NPZ is written at the end."""

    def __init__(self, partial: Path, fmt: str, attrs: Dict[str, Any]) -> None:
        self.partial, self.fmt, self.attrs = partial, fmt, attrs
        self.ids: List[str] = []
        self.index: List[int] = []
        self.duration: List[float] = []
        self.num_steps: List[int] = []
        self.clip: List[np.ndarray] = []
        self.frames: List[np.ndarray] = []
        self.timestamps: List[np.ndarray] = []
        self.h5 = None
        if fmt == "h5":
            import h5py

            self.h5 = h5py.File(partial, "w")

    def add(self, clip_id: str, index: int, duration: float, emb: ClipEmbedding) -> None:
        self.ids.append(clip_id)
        self.index.append(index)
        self.duration.append(duration)
        self.clip.append(emb.clip.float().cpu().numpy())
        if emb.frames is not None:
            self.num_steps.append(int(emb.frames.shape[0]))
            self.frames.append(emb.frames.float().cpu().numpy())
            self.timestamps.append(emb.timestamps.cpu().numpy())
        if self.h5 is not None and len(self.clip) >= 256:
            self._flush()

    def _append(self, name: str, block: np.ndarray) -> None:
        if name not in self.h5:
            self.h5.create_dataset(name, data=block, maxshape=(None,) + block.shape[1:], chunks=True)
            return
        ds = self.h5[name]
        start = ds.shape[0]
        ds.resize(start + block.shape[0], axis=0)
        ds[start:] = block

    def _flush(self) -> None:
        if self.clip:
            self._append("clip", np.stack(self.clip))
            self.clip = []
        if self.frames:
            self._append("frames", np.concatenate(self.frames))
            self._append("timestamps", np.concatenate(self.timestamps))
            self.frames, self.timestamps = [], []

    def close(self, embed_dim: int, layer_shape: Tuple[int, ...]) -> None:
        steps = np.asarray(self.num_steps, dtype=np.int64)
        frame_offsets = np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64) if len(steps) else steps
        meta = {
            "ids": np.asarray(self.ids, dtype=object),
            "manifest_index": np.asarray(self.index, dtype=np.int64),
            "duration": np.asarray(self.duration, dtype=np.float64),
        }
        if self.num_steps:
            meta["frame_offsets"] = frame_offsets
            meta["num_steps"] = steps.astype(np.int32)
        if self.h5 is not None:
            import h5py

            self._flush()
            if "clip" not in self.h5:  # every clip was skipped
                self.h5.create_dataset("clip", shape=(0,) + layer_shape + (embed_dim,), dtype=np.float32)
            for name, value in meta.items():
                if name == "ids":
                    self.h5.create_dataset(name, data=value, dtype=h5py.string_dtype())
                else:
                    self.h5.create_dataset(name, data=value)
            for key, value in self.attrs.items():
                self.h5.attrs[key] = value
            self.h5.close()
            _fsync(self.partial)
            return
        arrays: Dict[str, np.ndarray] = {
            "clip": np.stack(self.clip) if self.clip else np.zeros((0,) + layer_shape + (embed_dim,), np.float32),
            **meta,
            "ids": np.asarray(self.ids, dtype=str),
            "attrs": np.asarray(json.dumps(self.attrs)),
        }
        if self.frames:
            arrays["frames"] = np.concatenate(self.frames)
            arrays["timestamps"] = np.concatenate(self.timestamps)
        with open(self.partial, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())

    def abort(self) -> None:
        if self.h5 is not None:
            self.h5.close()
        self.partial.unlink(missing_ok=True)


def _is_finite(emb: ClipEmbedding) -> bool:
    return bool(torch.isfinite(emb.clip).all()) and (emb.frames is None or bool(torch.isfinite(emb.frames).all()))


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def embed_files(
    checkpoint: Union[PathLike, Embedder],
    inputs: PathLike,
    out: PathLike,
    *,
    fmt: Optional[str] = None,
    frames: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    allow_empty: bool = False,
    **embedder_options: Any,
) -> Dict[str, Any]:
    """Embed every clip ``inputs`` names (see :func:`resolve_inputs`) into ``out``.

    ``fmt``: ``"h5"`` or ``"npz"`` (default from the suffix of ``out``: ``.npz`` → NPZ, else
    HDF5). ``embedder_options`` go to :meth:`Embedder.from_checkpoint` when ``checkpoint`` is a
    path. Layout, the same keys in both formats (one dataset per kind, clips in input order)::

        ids             (N,) str        clip ids (file stem, folder-relative path, manifest id)
        manifest_index  (N,) int64      row of the clip in the input (skipped clips leave gaps)
        duration        (N,) float64    seconds of audio
        clip            (N, D) float32  or (N, L, D) with layers
        frames          (S, D) float32  or (S, L, D): every clip's frame embeddings, concatenated
        timestamps      (S,) float64    ms, centre of each frame embedding
        frame_offsets   (N,) int64      first row of clip i in ``frames``
        num_steps       (N,) int32      frame embeddings of clip i
        attrs           checkpoint, pooling, layers, window/hop frames, step_ms, sample_rate,
                        fbank_config (JSON), audiossl_version: HDF5 attributes; in NPZ one JSON
                        string array ``attrs``

    (``frames``, ``timestamps``, ``frame_offsets``, ``num_steps`` only with ``frames=True``.)
    One dataset per kind rather than one per clip: ``clip`` loads as a matrix for a probe, and an
    HDF5 file with 10^5–10^6 objects is slow to open. The file is written as ``out.partial`` and
    renamed when complete; clips that cannot be read (:class:`~audiossl.audio.AudioError`), are
    shorter than one fbank frame, or give a non-finite fbank (as ``audiossl fbank`` skips them:
    float32 power spectra overflow for samples of about 1e16 and up) or a non-finite embedding are
    skipped, logged and listed in ``out.skipped.tsv`` (``manifest_index, id, path, reason``; read
    it with ``csv.reader(fh, delimiter="\t")``: a name holding a tab or newline is quoted), which
    is removed when nothing was skipped. NPZ holds everything in memory until the end; HDF5
    streams. Returns a summary dict.

    A run that embeds no clip raises :class:`~audiossl.audio.AudioError` (naming the input, and
    the reason when it is one file) and writes no ``out``, only the skipped list: an empty file
    would pass for a finished run. ``allow_empty=True`` writes the empty file instead.
    """
    from tqdm import tqdm

    from audiossl.audio import AudioError, load

    out = Path(out)
    fmt = fmt or ("npz" if out.suffix.lower() == ".npz" else "h5")
    if fmt not in ("h5", "npz"):
        raise ValueError(f"fmt must be 'h5' or 'npz', got {fmt!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(checkpoint, Embedder):
        if embedder_options:
            raise ValueError(f"options {sorted(embedder_options)} apply to a checkpoint path, not to an Embedder")
        embedder, source = checkpoint, None
    else:
        embedder, source = Embedder.from_checkpoint(checkpoint, **embedder_options), os.fspath(checkpoint)
    table = resolve_inputs(inputs)
    attrs = {
        "checkpoint": source or "",
        "pooling": embedder.pooling,
        "layers": json.dumps(embedder.layers),
        "layer_mean": int(embedder.layer_mean),
        "window_frames": embedder.window_frames,
        "hop_frames": embedder.hop_frames,
        "step_ms": embedder.step_ms,
        "sample_rate": embedder.sample_rate,
        "fbank_config": json.dumps(embedder.fbank_config.to_dict()),
        "normalizer": json.dumps(embedder.normalizer.to_dict() if embedder.normalizer else None),
        "audiossl_version": audiossl.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer = _Writer(partial, fmt, attrs)
    skipped: List[Tuple[int, str, str, str]] = []
    min_samples = embedder.fbank_config.window_size
    layer_shape = () if embedder.num_layers is None else (embedder.num_layers,)

    def skip(row: Any, reason: str) -> None:
        logger.warning("skipping %s: %s", row.path, reason)
        skipped.append((int(row.manifest_index), str(row.id), str(row.path), reason))

    try:
        with tqdm(total=len(table), unit="clip", desc="embed", disable=not progress) as bar:
            for lo in range(0, len(table), batch_size):
                batch = table.iloc[lo : lo + batch_size]
                waves, kept = [], []
                for row in batch.itertuples(index=False):
                    try:
                        wave = load(row.path, embedder.sample_rate)
                        if wave.numel() < min_samples:
                            raise AudioError(row.path, f"shorter than one fbank frame ({wave.numel()} samples)")
                    except AudioError as exc:
                        skip(row, exc.reason)
                        continue
                    waves.append(wave)
                    kept.append(row)
                # A non-finite log-mel never reaches the encoder, so its batch-mates are the same
                # batch as without it; a non-finite result of a finite one is caught after.
                feats = embedder.fbanks(waves)
                finite = [bool(torch.isfinite(f).all()) for f in feats]
                for row, wave, ok in zip(kept, waves, finite):
                    if not ok:
                        skip(row, f"fbank is not finite (max |sample| {float(wave.abs().max()):.3g})")
                good = [(row, wave) for row, wave, ok in zip(kept, waves, finite) if ok]
                try:
                    embs = embedder.embed_fbank([f for f, ok in zip(feats, finite) if ok], frames=frames)
                except ValueError as exc:  # a clip the model cannot take: a mismatch, not a bad clip
                    names = ", ".join(str(row.path) for row, _ in good)
                    raise ValueError(f"{source or 'embedder'}: cannot embed {names}: {exc}") from exc
                for (row, wave), emb in zip(good, embs):
                    if not _is_finite(emb):
                        skip(row, "embedding is not finite")
                        continue
                    writer.add(str(row.id), int(row.manifest_index), wave.numel() / embedder.sample_rate, emb)
                bar.update(len(batch))
                if skipped:
                    bar.set_postfix(skipped=len(skipped), refresh=False)
        empty = not writer.ids and not allow_empty
        if empty:
            writer.abort()
        else:
            writer.close(embedder.output_dim, layer_shape)
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, Exception) and is_no_space(exc):
            raise no_space_error(out, exc) from exc
        raise

    skipped.sort(key=lambda s: s[0])  # clips skipped after their batch was embedded come last
    sidecar = out.with_name(out.name + ".skipped.tsv")
    if skipped:
        _write_skipped(sidecar, skipped)
        logger.warning("%d clips skipped, listed in %s", len(skipped), sidecar)
    elif sidecar.exists():
        sidecar.unlink()
    if empty:
        raise _nothing_embedded(inputs, table, skipped, sidecar)
    os.replace(partial, out)
    return {"path": str(out), "clips": len(table) - len(skipped), "skipped": len(skipped),
            "skipped_list": str(sidecar) if skipped else None}


def _write_skipped(sidecar: Path, skipped: Sequence[Tuple[int, str, str, str]]) -> None:
    """The skipped list, atomically: tab-separated, a field holding a tab, newline or quote
    quoted (``csv`` with ``delimiter="\t"``, which reads it back), so any file name survives."""
    with atomic_path(sidecar) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(["manifest_index", "id", "path", "reason"])
        writer.writerows(skipped)


def _nothing_embedded(inputs: PathLike, table: "pd.DataFrame", skipped: Sequence[Tuple[int, str, str, str]],
                      sidecar: Path) -> Exception:
    from audiossl.audio import AudioError

    if not len(table):
        return AudioError(inputs, "nothing embedded: it names no clip")
    if len(skipped) == 1:
        _, _, path, reason = skipped[0]
        return AudioError(path, f"nothing embedded: {reason} (listed in {sidecar})")
    _, _, path, reason = skipped[0]
    return AudioError(
        inputs,
        f"nothing embedded: all {len(skipped)} clips were skipped (listed in {sidecar}; the first, {path}: {reason})",
    )


def read_embeddings(path: PathLike) -> Dict[str, Any]:
    """Every dataset of an :func:`embed_files` output as numpy arrays (``ids`` as ``str``), plus
    ``attrs`` as a dict, whichever the format (told by the file's first bytes)."""
    path = Path(path)
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"  # NPZ is a zip; --format may disagree with the suffix
    if is_zip:
        with np.load(path, allow_pickle=False) as data:
            out: Dict[str, Any] = {k: data[k] for k in data.files if k != "attrs"}
            out["attrs"] = json.loads(str(data["attrs"]))
        out["ids"] = out["ids"].astype(str)
        return out
    import h5py

    with h5py.File(path, "r") as fh:
        out = {k: fh[k][()] for k in fh.keys()}
        out["ids"] = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in out["ids"]], dtype=str)
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in fh.attrs.items()}
    return out
