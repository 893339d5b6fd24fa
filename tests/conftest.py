"""Shared fixtures: real speech rendered with espeak-ng.

Synthetic noise and sines miss what real audio has (silences, voicing, a spectral tilt), so
front-end and data tests use a few seconds of speech made on the fly. Tests that use these
fixtures skip with a message where espeak-ng is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import soundfile as sf

SpeechFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def make_speech(tmp_path_factory: pytest.TempPathFactory) -> SpeechFactory:
    """Factory ``make_speech(text, sample_rate=16000, channels=1, subtype="PCM_16") -> Path``.

    Renders ``text`` with espeak-ng (deterministic for a given espeak-ng version), resamples it
    with soxr, and writes a WAV. Extra channels are the speech at decreasing gain with a small
    delay, so averaging them is not the identity. Files are cached for the session.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); real-speech tests skipped")
    root = tmp_path_factory.mktemp("speech")
    cache: Dict[Tuple[str, int, int, str], Path] = {}

    def make(text: str = "The quick brown fox jumps over the lazy dog.", sample_rate: int = 16000,
             channels: int = 1, subtype: str = "PCM_16") -> Path:
        key = (text, sample_rate, channels, subtype)
        if key in cache:
            return cache[key]
        raw = root / f"raw_{len(cache)}.wav"
        subprocess.run([exe, "-w", str(raw), text], check=True, capture_output=True)
        speech, rate = sf.read(str(raw), dtype="float32")
        if speech.ndim == 2:
            speech = speech.mean(axis=1)
        if rate != sample_rate:
            import librosa

            speech = librosa.resample(speech, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
        delay = max(1, sample_rate // 1000)
        tracks = [np.roll(speech, c * delay) * (1.0 - 0.15 * c) for c in range(channels)]
        out = root / f"speech_{len(cache)}_{sample_rate}hz_{channels}ch.wav"
        sf.write(str(out), np.stack(tracks, axis=1).clip(-1, 1), sample_rate, subtype=subtype)
        cache[key] = out
        return out

    return make


@pytest.fixture(scope="session")
def speech_wav(make_speech: SpeechFactory) -> Path:
    """About 2.5 s of English speech, 16 kHz mono 16-bit WAV."""
    return make_speech()


@pytest.fixture(scope="session")
def speech_fbank_batch(make_speech: SpeechFactory) -> Callable[..., "torch.Tensor"]:
    """Factory ``speech_fbank_batch(frames, starts, preset="ast", norm="audioset") -> (4, 1, frames, 128)``:
    crops at ``starts`` of the fbanks of two spoken sentences, for the models' "loss falls on real
    speech" tests. ``norm=None`` leaves raw log-mel (MAE-AST normalises inside the model)."""
    from audiossl.audio import load
    from audiossl.features import FbankConfig, Normalizer, fbank

    def build(frames: int, starts, preset: str = "ast", norm: "str | None" = "audioset"):
        import torch

        feats = []
        for text in ("The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore."):
            f = fbank(load(make_speech(text)), FbankConfig.preset(preset))[0][0]
            feats.append(Normalizer.preset(norm)(f) if norm else f)
        return torch.stack([f[s : s + frames] for f in feats for s in starts]).unsqueeze(1)

    return build


SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A stitch in time saves nine, they said at the mill.",
    "Peter Piper picked a peck of pickled peppers.",
    "How much wood would a woodchuck chuck?",
    "Red lorry, yellow lorry, red lorry, yellow lorry.",
    "Unique New York, you know you need unique New York.",
    "The rain in Spain stays mainly in the plain.",
)


@pytest.fixture(scope="session")
def speech_store(make_speech: SpeechFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fbank store (ast front end, its own mean/std as normalizer) of eight spoken sentences,
    1.5-3 s each: real data for the training-engine tests."""
    from audiossl.data.manifest import read_manifest
    from audiossl.data.store import compute_stats, precompute, write_normalizer

    root = tmp_path_factory.mktemp("speech_store")
    wavs = root / "wavs"
    wavs.mkdir()
    for i, text in enumerate(SENTENCES):
        shutil.copy(make_speech(text), wavs / f"s{i}.wav")
    out = root / "speech.h5"
    precompute(read_manifest(wavs), out, workers=1, progress=False)
    write_normalizer(out, compute_stats(out, progress=False).to_normalizer())
    return out


@pytest.fixture
def small_disk(tmp_path: Path):
    """Factory ``small_disk(kib) -> Path``: an empty folder on a tmpfs of ``kib`` KiB, for tests
    of what a full disk does to a writer. Mounting needs root (CI and the dev machines run as
    root); elsewhere the test is skipped with a message."""
    import os

    mounts = []

    def make(kib: int = 512) -> Path:
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small tmpfs needs root: disk-full test skipped")
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(kib)}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): disk-full test skipped")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
