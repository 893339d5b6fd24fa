"""The HEAR 2021 API over an audiossl checkpoint, for hear-eval-kit and the HEAR validator.

.. code-block:: python

    from audiossl import hear
    model = hear.load_model("eat.pt")                       # any native checkpoint
    scene = hear.get_scene_embeddings(audio, model)          # (n_sounds, scene_embedding_size)
    emb, ts = hear.get_timestamp_embeddings(audio, model)    # (n_sounds, n_ts, size), (n_sounds, n_ts) ms

heareval passes ``--model-options`` JSON as keyword arguments to :func:`load_model`; the options
are those of :meth:`audiossl.embed.Embedder.from_checkpoint` (``pooling``, ``layers``, ``which``,
``window_frames``, ``hop_ms``) plus ``upsample``. With ``layers`` the layers are concatenated, so
the embedding sizes are ``L × D``.

The HEAR rules (hear-validator) and how they are met:

* float32 embeddings, on the device of the input; timestamps in milliseconds;
* timestamps are the centres of the token time steps (:meth:`Embedder.step_timestamps`), evenly
  spaced, the same for every sound of a call (all sounds of a call have the same length);
* no timestamp past the end of the audio: a last token step that the patch grid completed with
  padding is dropped when its centre falls after the audio's end (a sound shorter than the first
  centre keeps one step, stamped at its midpoint);
* hop: a 16-frame patch gives one step per 160 ms, more than the 50 ms HEAR suggests (the
  validator warns). ``upsample=k`` repeats each step's embedding ``k`` times at ``160/k`` ms
  spacing, centred on the step (``upsample=4``: 40 ms), for event tasks scored at finer tolerance;
  it adds no information, only resolution of the labels the probe sees;
* any length up to HEAR's 20 min: long sounds go through the embedder's sliding windows;
* finite embeddings: the API cannot skip a sound as ``audiossl embed`` skips a clip, so a sound
  whose embedding is not finite (NaN/inf samples, or samples so large that the float32 fbank
  overflows) is a ``ValueError`` naming it rather than a NaN row handed to the probe.

Scene embeddings are the embedder's clip embeddings (CLS for EAT, mean of patch tokens otherwise,
see :mod:`audiossl.embed`).
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from audiossl.embed import Embedder

logger = logging.getLogger(__name__)

__all__ = ["HearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]

# Sample rates hear-validator accepts (its ValidateModel.ACCEPTABLE_SAMPLE_RATE): 32 kHz, which
# HEAR's task audio also comes in, is refused by the validator, so a 32 kHz front end is refused here.
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)


class HearModel(nn.Module):
    """A ``torch.nn.Module`` with the attributes HEAR reads, around an :class:`Embedder`."""

    def __init__(self, embedder: Embedder, upsample: int = 1) -> None:
        super().__init__()
        if upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {upsample}")
        if embedder.sample_rate not in HEAR_SAMPLE_RATES:
            raise ValueError(f"HEAR allows sample rates {HEAR_SAMPLE_RATES}; the front end uses {embedder.sample_rate}")
        self.embedder = embedder
        self.upsample = int(upsample)
        self.sample_rate = embedder.sample_rate
        size = embedder.output_dim * (embedder.num_layers or 1)
        self.scene_embedding_size = size
        self.timestamp_embedding_size = size

    @property
    def timestamp_hop_ms(self) -> float:
        return self.embedder.step_ms / self.upsample


def load_model(model_file_path: str = "", *, upsample: int = 1, preset: Optional[str] = None, **options: Any) -> HearModel:
    """A HEAR model from a native checkpoint (``options`` as for
    :meth:`Embedder.from_checkpoint`). Without a path, a randomly initialised ``preset``
    (default ``eat_base``) with the ``ast`` fbank and AudioSet normalisation: HEAR's
    random-weights baseline, useful for checking a pipeline."""
    if model_file_path:
        if preset is not None:
            raise ValueError("pass either a checkpoint path or a preset, not both")
        embedder = Embedder.from_checkpoint(model_file_path, **options)
        try:
            return HearModel(embedder, upsample=upsample)
        except ValueError as exc:
            raise ValueError(f"{model_file_path}: {exc}") from exc
    else:
        from audiossl.features import FbankConfig, Normalizer
        from audiossl.models.registry import build_model, family_of
        from audiossl.checkpoint import native_payload

        preset = preset or "eat_base"
        logger.warning("no checkpoint given: HEAR model with random %s weights", preset)
        payload = native_payload(
            build_model(preset),
            family=family_of(preset),
            fbank=FbankConfig.preset("ast").to_dict(),
            normalizer=Normalizer.preset("audioset").to_dict(),
            target_length=1024,
        )
        embedder = Embedder.from_checkpoint(payload, **options)
    return HearModel(embedder, upsample=upsample)


def _check_audio(audio: Tensor, model: HearModel) -> Tensor:
    if not isinstance(model, HearModel):
        raise TypeError(f"model must come from load_model(), got {type(model).__name__}")
    if audio.dim() != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    return audio


def _embed(audio: Tensor, model: HearModel, frames: bool) -> list:
    """The embedder's output for each sound; a non-finite one is an error, since the HEAR API
    has no way to skip a sound and a NaN row would reach the probe silently."""
    out = model.embedder.embed(list(audio.to(torch.float32).unbind(0)), frames=frames)
    bad = [i for i, e in enumerate(out) if not bool(torch.isfinite(e.clip).all())
           or (e.frames is not None and not bool(torch.isfinite(e.frames).all()))]
    if bad:
        peak = float(audio[bad].abs().max())
        raise ValueError(
            f"sound(s) {bad[:10]}{' ...' if len(bad) > 10 else ''} give non-finite embeddings: their samples are "
            f"not finite or too large (max |sample| {peak:.3g}; the float32 fbank overflows from about 1e16)"
        )
    return out


@torch.no_grad()
def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """``(n_sounds, scene_embedding_size)`` float32 for ``audio`` ``(n_sounds, n_samples)``."""
    audio = _check_audio(audio, model)
    if audio.shape[0] == 0:
        return audio.new_zeros(0, model.scene_embedding_size)
    out = _embed(audio, model, frames=False)
    clips = torch.stack([e.clip for e in out])  # (n, D) or (n, L, D)
    return clips.reshape(len(out), -1).to(device=audio.device, dtype=torch.float32)


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> Tuple[Tensor, Tensor]:
    """``(n_sounds, n_timestamps, timestamp_embedding_size)`` float32 and ``(n_sounds,
    n_timestamps)`` ms timestamps for ``audio`` ``(n_sounds, n_samples)``."""
    audio = _check_audio(audio, model)
    n, num_samples = audio.shape
    embedder = model.embedder
    length_ms = num_samples * 1000.0 / model.sample_rate
    if n == 0:
        return audio.new_zeros(0, 0, model.timestamp_embedding_size), audio.new_zeros(0, 0)
    out = _embed(audio, model, frames=True)
    emb = torch.stack([e.frames for e in out]).reshape(n, out[0].frames.shape[0], -1)  # (n, G, size)
    ts = out[0].timestamps  # every sound has the same length, hence the same steps
    k = model.upsample
    if k > 1:
        emb = emb.repeat_interleave(k, dim=1)
        sub = (torch.arange(k, dtype=torch.float64) - (k - 1) / 2.0) * (embedder.step_ms / k)
        ts = (ts[:, None] + sub[None, :]).reshape(-1)
    keep = ts <= length_ms
    if not bool(keep.any()):
        # Shorter than the first centre: one step, stamped inside the sound.
        emb, ts = emb[:, :1], torch.full((1,), length_ms / 2.0, dtype=torch.float64)
    else:
        emb, ts = emb[:, keep], ts[keep]
    timestamps = ts.to(device=audio.device, dtype=torch.float32)[None].expand(n, -1).contiguous()
    return emb.to(device=audio.device, dtype=torch.float32).contiguous(), timestamps
