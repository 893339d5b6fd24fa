"""Embeddings of audio of any length from a checkpoint: clip level, frame level, any layer.

:class:`Embedder` is one class past ~250 lines: its window geometry, front end and pooling are read
together by every forward, and splitting them would put each window rule in two places.

:class:`Embedder` turns waveforms into embeddings with the front end stored in the checkpoint
(Kaldi fbank → pad → normalise, as the model was trained) and its encoder in eval mode:

* **Clip embedding.** ``pooling="cls"`` takes the first prefix token, ``"mean"`` the mean of the
  patch tokens that hold audio, ``"bands"`` the mean over time of each frequency band's tokens,
  the bands concatenated low to high (``F'·D`` wide: 8·D for 16×16 patches on 128 mels), as
  Niizumi et al.'s MSM-MAE/M2D evaluate patch models. A mean over every patch adds up the
  bands' vectors, so a linear probe cannot tell a low band's energy from a high one's; keeping
  the bands apart is what lets a patch model's frozen features see the spectral envelope that
  pooled fbank statistics see (on frame tokens, one band wide, ``"bands"`` equals ``"mean"``).
  ``"auto"`` on a checkpoint that records no representation follows upstream's recommendation
  per family: EAT (family ``eat``, or an imported ``encoder`` with one prefix token whose
  ``meta.source`` is an EAT source) uses its CLS token, as EAT's ``feature_extract.py`` and
  fine-tuning do; every other family (MAE/AudioMAE global pool, SSAST, MAE-AST, I-JEPA) uses
  the mean of patch tokens.
* **Frame embeddings.** The token grid is reshaped to ``(T', F')`` and averaged over the
  frequency patches (concatenated with ``pooling="bands"``), one vector per token time step
  (160 ms for 16×16 patches at a 10 ms frame shift). Each step's timestamp is the centre, in
  ms, of the audio its frames cover: the midpoint between the centres of the step's first and
  last fbank frame. A last step that was completed
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

"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from audiossl.features import FbankConfig, Normalizer, fbank
from audiossl.models.encoder import Encoder

logger = logging.getLogger(__name__)

__all__ = ["AUTO", "POOLINGS", "ClipEmbedding", "Embedder", "auto_pooling", "embedding_defaults"]

PathLike = Union[str, "os.PathLike[str]"]
LayersArg = Union[None, str, int, Sequence[int]]

POOLINGS = ("auto", "cls", "mean", "bands")
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
        if pooling not in POOLINGS[1:]:
            raise ValueError(f"pooling must be one of {POOLINGS[1:]} here (resolve 'auto' first), got {pooling!r}")
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
        from audiossl.models.registry import encoder_from_checkpoint

        path = None if isinstance(checkpoint, Mapping) else os.fspath(checkpoint)
        encoder, ckpt = encoder_from_checkpoint(checkpoint, which=which)
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
    def num_bands(self) -> int:
        """Frequency bands (token columns) of the grid: ``F'`` for ``pooling="bands"``."""
        return self.encoder.grid_shape(self.patch_height, self.encoder.config.n_mels)[1]

    @property
    def output_dim(self) -> int:
        """Width of one clip or frame vector: :attr:`embed_dim`, times :attr:`num_bands` when the
        bands are concatenated."""
        return self.embed_dim * (self.num_bands if self.pooling == "bands" else 1)

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
        valid = (~out.padding_mask[:, P:]).to(tokens.dtype)  # (R, N)
        gh, gw = out.grid
        grid = tokens.reshape(tokens.shape[0], len(rows), gh, gw, -1)  # (L, R, T', F', D)
        if self.pooling == "cls":
            clip = reps[:, :, 0]
        elif self.pooling == "mean":
            clip = (tokens * valid[None, :, :, None]).sum(2) / valid.sum(1)[None, :, None]
        else:  # bands: padding fills whole token steps, so one column of the mask says which steps hold audio
            step_valid = valid.reshape(len(rows), gh, gw)[:, :, 0]  # (R, T')
            clip = (grid * step_valid[None, :, :, None, None]).sum(2) / step_valid.sum(1)[None, :, None, None]
            clip = clip.flatten(2)
        steps = grid.flatten(3) if self.pooling == "bands" else grid.mean(3)
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
