"""Embeddings of audio of any length from a checkpoint: clip level, frame level, any layer.

:class:`Embedder` turns waveforms into embeddings with the front end stored in the checkpoint
(Kaldi fbank → pad → normalise, as the model was trained) and its encoder in eval mode:

* **Clip embedding.** ``pooling="cls"`` takes the first prefix token, ``"mean"`` the mean of the
  patch tokens that hold audio. ``"auto"`` follows upstream's recommendation per family: EAT
  (family ``eat``, or an imported ``encoder`` with one prefix token whose ``meta.source`` is an
  EAT source) uses its CLS token, as EAT's ``feature_extract.py`` and fine-tuning do; every other
  family (MAE/AudioMAE global pool, SSAST, MAE-AST, I-JEPA) uses the mean of patch tokens.
* **Frame embeddings.** The token grid is reshaped to ``(T', F')`` and averaged over the
  frequency patches, one vector per token time step (160 ms for 16×16 patches at a 10 ms frame
  shift). Each step's timestamp is the centre, in ms, of the audio its frames cover: the midpoint
  between the centres of the step's first and last fbank frame. A last step that was completed
  with padding keeps the regular spacing, so its timestamp can lie a little past the audio.
* **Layers.** ``layers=None`` gives the encoder's output (after its final norm, what upstream
  extracts). ``layers="all"`` or a list of block indices (negative counts from the end) gives
  those blocks' outputs, stacked on a layer axis; they are taken before the final norm, so for
  pre-LN families (MAE, SSAST, I-JEPA) the last block's entry differs from ``layers=None`` by that
  norm. ``layer_mean=True`` averages the chosen blocks instead of stacking them (data2vec/EAT
  build their targets from the mean of the top blocks, and that mean is often the better
  feature), giving one vector as with ``layers=None``.
* **Defaults a checkpoint records.** ``pooling="auto"`` and ``layers="auto"`` take the
  representation the checkpoint names in ``meta.embed`` (``{"pooling", "layers", "layer_mean"}``):
  ``audiossl pretrain`` writes there what its objective recommends
  (:data:`audiossl.models.registry.EMBEDDINGS`, chosen by the learning benchmark). A checkpoint
  without it (imported official weights, older files) keeps upstream's choice below.

**Any length.** A batch is padded to its longest clip and the true lengths go to the encoder as a
key-padding mask, so padding changes a clip's result only to float rounding: batched output
equals one-clip-at-a-time output to ~1e-6 (measured 2-5e-7 on CPU float32: the fbank is exact,
the encoder's kernels sum a batch padded to another length in another order; same-length clips
batch exactly). Exactness would mean one padded length per encoder call, i.e. batch size 1 for
clips of varied lengths, so it is not bought. Upstream EAT/AST instead zero-pad every
clip to ``target_length`` frames and let attention see the padding; masking it is the deliberate
difference here. Padded frames hold a raw log-mel 0 before normalisation, as upstream's padding
does, and every clip is padded up to whole patches, so a short clip's last patch is the same in
and out of a batch. Models with learned positions (SSAST) are always fed full windows, since
their position table fixes the grid.

Clips longer than the window (the checkpoint's ``target_length``, the length the model was
trained on) are cut into windows of that length every ``hop`` frames (default half a window,
rounded down to whole token steps so every window's tokens sit on the clip's token grid; the last
window is shorter and masked). Clip embeddings of the windows are averaged, weighted by the
frames each window holds. Frame embeddings are stitched without duplicates: each token step is
taken from the window in whose central ``hop``-wide stretch it lies (the first and last window
also own the clip's edges), i.e. from the window that gives it the most context on both sides.

:func:`embed_files` runs an :class:`Embedder` over a wav file, a folder or a manifest and writes
one HDF5 or NPZ file (layout in its docstring) atomically, listing unreadable clips beside it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

import audiossl
from audiossl.features import FbankConfig, Normalizer, fbank
from audiossl.models.encoder import Encoder

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["ClipEmbedding", "Embedder", "embed_files", "embedding_defaults", "read_embeddings", "resolve_inputs"]

PathLike = Union[str, "os.PathLike[str]"]
LayersArg = Union[None, str, int, Sequence[int]]

POOLINGS = ("auto", "cls", "mean")
AUTO = "auto"
# Window length when a checkpoint records no target_length: AST/EAT's 10 s AudioSet input.
DEFAULT_WINDOW_FRAMES = 1024
# nn.BatchNorm2d's default eps, which MAE-AST's input norm uses.
_BATCH_NORM_EPS = 1e-5
# Rows (windows) per encoder call: bounds memory on hour-long inputs.
DEFAULT_MAX_ROWS = 16


@dataclass
class ClipEmbedding:
    """One clip's embeddings. Shapes with ``layers=None`` / with ``L`` layers:
    ``clip`` ``(D,)`` / ``(L, D)``; ``frames`` ``(T', D)`` / ``(T', L, D)``; ``timestamps`` ``(T',)``
    float64 ms. ``frames`` and ``timestamps`` are None when frames were not asked for."""

    clip: Tensor
    frames: Optional[Tensor] = None
    timestamps: Optional[Tensor] = None


class Embedder(nn.Module):
    """Encoder + front end + pooling, for embedding waveforms or raw log-mels (see module doc).

    ``window_frames``: frames per encoder window (default: the checkpoint's ``target_length``).
    ``hop_frames``: window hop for longer clips (default half a window); rounded down to whole
    token steps. ``max_rows``: windows per encoder call.
    """

    def __init__(
        self,
        encoder: Encoder,
        fbank_config: Optional[FbankConfig] = None,
        normalizer: Optional[Normalizer] = None,
        *,
        pooling: str = "mean",
        layers: LayersArg = None,
        layer_mean: bool = False,
        window_frames: Optional[int] = None,
        hop_frames: Optional[int] = None,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean' here (resolve 'auto' first), got {pooling!r}")
        if pooling == "cls" and encoder.num_prefix == 0:
            raise ValueError("pooling='cls' needs a prefix (CLS) token; this encoder has none: use 'mean'")
        self.encoder = encoder.eval()
        self.fbank_config = fbank_config if fbank_config is not None else FbankConfig()
        self.normalizer = normalizer
        self.pooling = pooling
        cfg = encoder.config
        if self.fbank_config.num_features != cfg.n_mels:
            raise ValueError(
                f"the front end gives {self.fbank_config.num_features} mel bins, the encoder expects {cfg.n_mels}"
            )
        self.layers = _resolve_layers(layers, cfg.depth)
        if layer_mean and self.layers is None:
            raise ValueError("layer_mean averages the blocks given by layers: pass layers too")
        self.layer_mean = bool(layer_mean)
        self.patch_height = cfg.patch_size[0]
        self.step_frames = cfg.stride[0]  # frames between token time steps
        self.overlapping = self.step_frames != self.patch_height
        self.fixed_grid = cfg.pos_embed == "learned"
        table_window = self._table_window()
        if window_frames is None:
            window_frames = self._learned_window() if self.fixed_grid else DEFAULT_WINDOW_FRAMES
            window_frames = min(window_frames, table_window or window_frames)
        elif self.fixed_grid and window_frames != self._learned_window():
            raise ValueError(
                f"learned positions fix the window at {self._learned_window()} frames, got window_frames={window_frames}"
            )
        elif table_window is not None and window_frames > table_window:
            # Refused here, not on the first long clip deep in a run.
            raise ValueError(
                f"window_frames={window_frames} does not fit the stored position table "
                f"({cfg.pos_table_rows // cfg.pos_table_width} token steps, {table_window} frames)"
            )
        if window_frames < self.patch_height:
            raise ValueError(f"window_frames {window_frames} is shorter than one patch ({self.patch_height} frames)")
        self.window_frames = int(window_frames)
        # Token steps lying entirely inside a full window.
        self.window_steps = (self.window_frames - self.patch_height) // self.step_frames + 1
        if hop_frames is None:
            hop_frames = self.window_frames // 2
        hop_steps = min(max(1, int(hop_frames) // self.step_frames), self.window_steps)
        self.hop_frames = hop_steps * self.step_frames
        if self.hop_frames != hop_frames:
            logger.info("window hop %d frames rounded to %d (whole token steps)", hop_frames, self.hop_frames)
        self.max_rows = int(max_rows)

    def _learned_window(self) -> int:
        gh = self.encoder.config.pos_grid[0]
        return (gh - 1) * self.step_frames + self.patch_height

    def _table_window(self) -> Optional[int]:
        """Longest window a stored position table (imported EAT) has positions for, or None."""
        cfg = self.encoder.config
        if not cfg.pos_table_rows:
            return None
        return (cfg.pos_table_rows // cfg.pos_table_width - 1) * self.step_frames + self.patch_height

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Union[PathLike, Mapping[str, Any]],
        *,
        pooling: str = AUTO,
        layers: LayersArg = AUTO,
        layer_mean: Optional[bool] = None,
        which: Optional[str] = None,
        window_frames: Optional[int] = None,
        hop_ms: Optional[float] = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        device: Union[str, torch.device] = "cpu",
    ) -> "Embedder":
        """An embedder for a native checkpoint (an objective or a bare ``encoder``, e.g. an
        imported EAT), with the front end, normaliser and ``target_length`` it stores.
        ``"auto"`` pooling and layers (and ``layer_mean=None``) are what the checkpoint records
        (:func:`embedding_defaults`); an explicit ``layers`` without ``layer_mean`` stacks them."""
        from audiossl.checkpoint import CheckpointError
        from audiossl.models.registry import encoder_from_checkpoint

        path = None if isinstance(checkpoint, Mapping) else os.fspath(checkpoint)
        try:
            encoder, ckpt = encoder_from_checkpoint(checkpoint, which=which)
        except CheckpointError as exc:
            if exc.path is not None or path is None:
                raise
            # The registry rebuilds from the loaded dict, so its errors lack the file.
            raise CheckpointError(path, exc.reason) from exc
        try:
            embedder = cls._from_loaded(encoder, ckpt, pooling=pooling, layers=layers, layer_mean=layer_mean,
                                        window_frames=window_frames, hop_ms=hop_ms, max_rows=max_rows)
        except ValueError as exc:  # the checkpoint's front end, or an option, does not fit its encoder
            if path is None:
                raise
            raise ValueError(f"{path}: {exc}") from exc
        return embedder.to(device)

    @classmethod
    def _from_loaded(cls, encoder: Encoder, ckpt: Mapping[str, Any], *, pooling: str, layers: LayersArg,
                     layer_mean: Optional[bool], window_frames: Optional[int], hop_ms: Optional[float],
                     max_rows: int) -> "Embedder":
        if ckpt.get("fbank") is not None:
            fbank_config = FbankConfig.from_dict(ckpt["fbank"])
        else:
            logger.warning("checkpoint records no front end; using the 'ast' fbank preset")
            fbank_config = FbankConfig.preset("ast")
        normalizer = _input_normalizer(ckpt)
        if window_frames is None and ckpt.get("target_length") and encoder.config.pos_embed != "learned":
            window_frames = int(ckpt["target_length"])
        hop_frames = None if hop_ms is None else int(round(hop_ms / fbank_config.frame_shift))
        defaults = embedding_defaults(ckpt, encoder)
        if layers == AUTO:
            layers = defaults["layers"]
            layer_mean = defaults["layer_mean"] if layer_mean is None else layer_mean
        return cls(
            encoder,
            fbank_config,
            normalizer,
            pooling=defaults["pooling"] if pooling == AUTO else pooling,
            layers=layers,
            layer_mean=bool(layer_mean) and layers is not None,
            window_frames=window_frames,
            hop_frames=hop_frames,
            max_rows=max_rows,
        )

    def train(self, mode: bool = True) -> "Embedder":
        """An embedder never trains: the encoder stays in eval mode (no dropout, no drop-path)
        whatever ``.train()`` a wrapping module passes down."""
        super().train(mode)
        self.encoder.eval()
        return self

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def sample_rate(self) -> int:
        return int(self.fbank_config.sample_frequency)

    @property
    def embed_dim(self) -> int:
        return self.encoder.config.embed_dim

    @property
    def num_layers(self) -> Optional[int]:
        """Entries on the layer axis, or None when there is none (``layers`` None, or averaged)."""
        return None if self.layers is None or self.layer_mean else len(self.layers)

    @property
    def step_ms(self) -> float:
        """Time between frame embeddings."""
        return self.step_frames * self.fbank_config.window_shift * 1000.0 / self.fbank_config.sample_frequency

    def step_timestamps(self, num_steps: int) -> Tensor:
        """``(num_steps,)`` float64 ms: centre of the audio under each token time step."""
        cfg = self.fbank_config
        shift, size = cfg.window_shift, cfg.window_size
        # Centre (in samples) of fbank frame i: snip_edges frames start at i*shift; otherwise
        # Kaldi centres frame i at i*shift + shift//2.
        offset = size / 2.0 if cfg.snip_edges else float(shift // 2)
        first = torch.arange(num_steps, dtype=torch.float64) * self.step_frames
        centre = (first + (self.patch_height - 1) / 2.0) * shift + offset
        return centre * 1000.0 / cfg.sample_frequency

    # ---------------------------------------------------------------- embedding
    @torch.no_grad()
    def embed(self, waveforms: Sequence[Tensor], frames: bool = True) -> List[ClipEmbedding]:
        """Embed mono waveforms ``(N_i,)`` at :attr:`sample_rate`, of any lengths, in one batch."""
        return self.embed_fbank(self.fbanks(waveforms), frames=frames)

    @torch.no_grad()
    def fbanks(self, waveforms: Sequence[Tensor]) -> List[Tensor]:
        """Raw (un-normalised) log-mels ``(T_i, F)`` of mono waveforms, computed in one batch:
        what :meth:`embed` feeds :meth:`embed_fbank`."""
        if not len(waveforms):
            return []
        device = self.device
        lengths = [int(w.numel()) for w in waveforms]
        batch = torch.zeros(len(waveforms), max(lengths), device=device)
        for i, w in enumerate(waveforms):
            if w.dim() != 1:
                raise ValueError(f"waveform {i} must be 1-D (mono samples), got shape {tuple(w.shape)}")
            batch[i, : lengths[i]] = w.to(device=device, dtype=torch.float32)
        feats, frame_lengths = fbank(batch, self.fbank_config, lengths)
        return [feats[i, :n] for i, n in enumerate(frame_lengths.tolist())]

    @torch.no_grad()
    def embed_fbank(self, feats: Sequence[Tensor], frames: bool = True) -> List[ClipEmbedding]:
        """Embed raw (un-normalised) log-mels ``(T_i, F)``; normalisation is applied here."""
        windows: List[Tuple[int, int, int]] = []  # (clip, first frame, frames)
        for i, f in enumerate(feats):
            if f.dim() != 2 or f.shape[1] != self.encoder.config.n_mels:
                raise ValueError(f"log-mel {i} must be (T, {self.encoder.config.n_mels}), got shape {tuple(f.shape)}")
            if f.shape[0] == 0:
                raise ValueError(f"clip {i} is shorter than one fbank frame ({self.fbank_config.frame_length} ms)")
            windows += [(i, start, n) for start, n in self.window_spans(f.shape[0])]
        clip_parts: List[Tensor] = []
        step_parts: List[Tensor] = []
        for lo in range(0, len(windows), self.max_rows):
            chunk = windows[lo : lo + self.max_rows]
            clip_vec, step_vec, num_steps = self._forward_rows(feats, chunk)
            clip_parts += list(clip_vec.unbind(1))
            step_parts += [step_vec[:, r, :n] for r, n in enumerate(num_steps)]

        out: List[ClipEmbedding] = []
        row = 0
        for i, f in enumerate(feats):
            spans = self.window_spans(f.shape[0])
            rows = range(row, row + len(spans))
            row += len(spans)
            weights = torch.tensor([n for _, n in spans], dtype=torch.float32, device=self.device)
            weights = weights / weights.sum()
            clip = sum(w * clip_parts[r] for w, r in zip(weights, rows)) if len(spans) > 1 else clip_parts[rows[0]]
            emb = ClipEmbedding(self._squeeze(clip))
            if frames:
                steps = self._stitch([step_parts[r] for r in rows])  # (L, G, D)
                emb.frames = self._squeeze(steps.transpose(0, 1))
                emb.timestamps = self.step_timestamps(steps.shape[1])
            out.append(emb)
        return out

    def window_spans(self, num_frames: int) -> List[Tuple[int, int]]:
        """``(first frame, frames)`` of each window of a clip of ``num_frames`` frames."""
        W, H = self.window_frames, self.hop_frames
        if num_frames <= W:
            return [(0, num_frames)]
        count = 1 + -(-(num_frames - W) // H)
        return [(k * H, min(W, num_frames - k * H)) for k in range(count)]

    def _own_height(self, n: int) -> int:
        """Frames a window of ``n`` frames fills on its own: whole patches (non-overlapping
        tokens pad their last patch), and at least one patch."""
        if self.overlapping:
            return max(n, self.patch_height)
        return -(-n // self.patch_height) * self.patch_height

    def _num_steps(self, n: int) -> int:
        """Token time steps that hold audio for a window of ``n`` frames."""
        return (self._own_height(n) - self.patch_height) // self.step_frames + 1

    def _forward_rows(self, feats: Sequence[Tensor], rows: Sequence[Tuple[int, int, int]]) -> Tuple[Tensor, Tensor, List[int]]:
        """Encode windows; returns clip vectors ``(L, R, D)``, per-step vectors ``(L, R, T', D)``
        and each row's number of real steps."""
        device = self.device
        # Learned position tables fix the grid: every row is a full window.
        height = self.window_frames if self.fixed_grid else max(self._own_height(n) for _, _, n in rows)
        x = torch.zeros(len(rows), height, self.encoder.config.n_mels, device=device)
        for r, (i, start, n) in enumerate(rows):
            x[r, :n] = feats[i][start : start + n].to(device=device, dtype=torch.float32)
        if self.normalizer is not None:
            x = self.normalizer(x)
        x = x.to(next(self.encoder.parameters()).dtype)
        num_steps = [self._num_steps(n) for _, _, n in rows]
        # A token is padding when its first frame is at or past the length given: this length
        # keeps exactly the row's own tokens (for overlapping strides too, where a token that
        # runs past the row's end would not exist for the row alone).
        lengths = torch.tensor([(s - 1) * self.step_frames + 1 for s in num_steps], device=device)
        out = self.encoder(x.unsqueeze(1), lengths=lengths, return_hidden=self.layers is not None)
        reps = out.x[None] if self.layers is None else torch.stack([out.hidden[j] for j in self.layers])
        if self.layer_mean:
            reps = reps.mean(0, keepdim=True)
        P = out.num_prefix
        tokens = reps[:, :, P:]  # (L, R, N, D)
        if self.pooling == "cls":
            clip = reps[:, :, 0]
        else:
            valid = (~out.padding_mask[:, P:]).to(tokens.dtype)  # (R, N)
            clip = (tokens * valid[None, :, :, None]).sum(2) / valid.sum(1)[None, :, None]
        gh, gw = out.grid
        steps = tokens.reshape(tokens.shape[0], len(rows), gh, gw, -1).mean(3)
        return clip, steps, num_steps

    def _stitch(self, parts: Sequence[Tensor]) -> Tensor:
        """Join the ``(L, n_k, D)`` steps of consecutive windows into ``(L, G, D)``, each step
        from the window in whose central hop-wide stretch it lies."""
        if len(parts) == 1:
            return parts[0]
        hop = self.hop_frames // self.step_frames
        margin = (self.window_steps - hop) // 2
        total = (len(parts) - 1) * hop + parts[-1].shape[1]
        g = torch.arange(total, device=parts[0].device)
        k = torch.div(g - margin, hop, rounding_mode="floor").clamp(0, len(parts) - 1)
        local = g - k * hop
        width = max(p.shape[1] for p in parts)
        padded = torch.stack([nn.functional.pad(p, (0, 0, 0, width - p.shape[1])) for p in parts], 1)  # (L, K, w, D)
        return padded[:, k, local]

    def _squeeze(self, x: Tensor) -> Tensor:
        """Drop the layer axis when there is none to give (it is the axis of size 1 in front for
        clips, second for frames)."""
        if self.num_layers is not None:
            return x
        return x[0] if x.dim() == 2 else x[:, 0]


def _resolve_layers(layers: LayersArg, depth: int) -> Optional[List[int]]:
    if layers is None:
        return None
    if isinstance(layers, str):
        if layers == "all":
            return list(range(depth))
        try:
            layers = [int(p) for p in layers.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all' or comma-separated block indices, got {layers!r}") from None
    if isinstance(layers, int):
        layers = [layers]
    resolved = []
    for j in layers:
        if not -depth <= int(j) < depth:
            raise ValueError(f"layer {j} is out of range for an encoder of {depth} blocks")
        resolved.append(int(j) % depth)
    if not resolved:
        raise ValueError("layers is empty")
    return resolved


def _input_normalizer(ckpt: Mapping[str, Any]) -> Optional[Normalizer]:
    """The checkpoint's normaliser, composed with MAE-AST's input BatchNorm when the objective
    has one: that norm lives outside the encoder (``(x - running_mean) / sqrt(running_var + eps)
    · input_scale`` in eval mode), and is an affine map a :class:`Normalizer` expresses exactly."""
    norm = Normalizer.from_dict(ckpt["normalizer"]) if ckpt.get("normalizer") else None
    state = ckpt.get("model", {})
    if ckpt.get("family") != "maeast" or "batch_norm.running_mean" not in state:
        return norm
    mean = float(state["batch_norm.running_mean"].reshape(-1)[0])
    std = float((state["batch_norm.running_var"].reshape(-1)[0] + _BATCH_NORM_EPS).sqrt())
    scale = float(ckpt.get("config", {}).get("input_scale", 0.5))
    if norm is None:
        # (x - m) * scale / s == (x - m) / (2 * s / (2 * scale))
        return Normalizer(mean, std / (2.0 * scale))
    # ((x - m1) / (2 s1) - m2) * scale / s2 == (x - (m1 + 2 s1 m2)) / (2 * s1 * s2 / scale)
    return Normalizer(norm.mean + 2.0 * norm.std * mean, norm.std * std / scale)


def embedding_defaults(ckpt: Mapping[str, Any], encoder: Encoder) -> Dict[str, Any]:
    """``{"pooling", "layers", "layer_mean"}`` that ``"auto"`` means for ``ckpt``: its
    ``meta.embed`` when it records one (``audiossl pretrain`` does), else upstream's choice: the
    encoder's output, pooled by :func:`auto_pooling`."""
    recorded = (ckpt.get("meta") or {}).get("embed") or {}
    pooling = recorded.get("pooling", AUTO)
    if pooling == AUTO or (pooling == "cls" and encoder.num_prefix == 0):
        pooling = auto_pooling(ckpt, encoder)
    layers = recorded.get("layers")
    if layers is not None:
        depth = encoder.config.depth
        layers = [j for j in layers if -depth <= int(j) < depth] or None  # a recorded block the encoder lacks
    return {"pooling": pooling, "layers": layers, "layer_mean": bool(recorded.get("layer_mean", False)) and layers is not None}


def auto_pooling(ckpt: Mapping[str, Any], encoder: Encoder) -> str:
    """``"cls"`` for EAT (objective or imported encoder with one prefix token), else ``"mean"``."""
    family = ckpt.get("family")
    source = str((ckpt.get("meta") or {}).get("source", ""))
    if family == "eat" or (family == "encoder" and encoder.num_prefix == 1 and source.startswith("eat")):
        return "cls"
    return "mean"


# ------------------------------------------------------------------------------------ files
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
            writer.close(embedder.embed_dim, layer_shape)
    except BaseException:
        writer.abort()
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
    tmp = sidecar.with_name(sidecar.name + ".partial")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(["manifest_index", "id", "path", "reason"])
        writer.writerows(skipped)
    os.replace(tmp, sidecar)


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
