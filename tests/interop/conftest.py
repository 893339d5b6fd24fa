"""Shared pieces of the interop group: a figure log that every comparison writes to (printed
with the test under ``-rA`` and again as one table at the end of the run), varied real speech
from espeak-ng, and native checkpoints of the tiny presets.

The group runs in its own environment (``bash scripts/test.sh --interop``); in the default one
each module skips at import with the name of the package it lacks.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest

_FIGURES: List[Tuple[str, str]] = []


def pytest_configure(config: pytest.Config) -> None:
    # One thread per process: the machines this runs on are shared and small.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


@pytest.fixture
def figure(request: pytest.FixtureRequest, record_property) -> Callable[[str, object], None]:
    """``figure("max abs diff logits", 3e-7)``: print it, attach it to the test's report and to
    the end-of-run table."""

    def log(name: str, value: object) -> None:
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        print(f"[interop] {request.node.name}: {name} = {text}")
        record_property(name, text)
        _FIGURES.append((f"{request.node.name}: {name}", text))

    return log


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("interop figures")
    width = max(len(k) for k, _ in _FIGURES)
    for key, text in _FIGURES:
        terminalreporter.write_line(f"{key:<{width}}  {text}")


@pytest.fixture(scope="session")
def espeak() -> Callable[..., np.ndarray]:
    """``espeak(text, sample_rate=16000, pitch=50, speed=175, voice="en") -> float32 (N,)``:
    real speech with a voice that can be varied, so a task has more than one take per class."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); real-speech tests skipped")
    import librosa
    import soundfile as sf

    cache: Dict[tuple, np.ndarray] = {}

    def render(text: str, sample_rate: int = 16000, pitch: int = 50, speed: int = 175, voice: str = "en") -> np.ndarray:
        key = (text, sample_rate, pitch, speed, voice)
        if key not in cache:
            out = subprocess.run([exe, "--stdout", "-v", voice, "-p", str(pitch), "-s", str(speed), text],
                                 check=True, capture_output=True).stdout
            speech, rate = sf.read(io.BytesIO(out), dtype="float32")
            if speech.ndim == 2:
                speech = speech.mean(axis=1)
            if rate != sample_rate:
                speech = librosa.resample(speech, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
            cache[key] = np.ascontiguousarray(speech, dtype=np.float32)
        return cache[key]

    return render


# The tiny preset of every family that takes a spectrogram (mae_tiny and ijepa_tiny are the
# image presets, 3-channel 32/64 px: no audio front end feeds them; their families are covered
# by audiomae_tiny and ijepa_audio_tiny).
AUDIO_TINY_PRESETS = (
    "eat_tiny", "maeast_patch_tiny", "maeast_frame_tiny", "ssast_tiny_patch", "ssast_tiny_frame",
    "audiomae_tiny", "ijepa_audio_tiny",
)


@pytest.fixture(scope="session")
def native_checkpoint() -> Callable[..., Path]:
    return _native_checkpoint


@pytest.fixture(scope="session")
def run_client() -> Callable[..., str]:
    return _run_client


def _native_checkpoint(path: Path, preset: str, sample_rate: int = 16000, target_length: int = 128,
                       meta: Optional[Dict[str, Any]] = None) -> Path:
    """A randomly initialised ``preset`` saved as a native checkpoint with the ``ast`` front end
    at ``sample_rate`` and AudioSet normalisation, as ``audiossl.hear``'s random-weights path
    builds it; ``meta`` as ``audiossl pretrain`` writes it (e.g. the recorded ``embed``)."""
    import torch

    from audiossl.features import FbankConfig, Normalizer
    from audiossl.models.registry import build_model, family_of
    from audiossl.checkpoint import native_payload, save_checkpoint

    torch.manual_seed(0)
    fb = FbankConfig.preset("ast").to_dict()
    fb["sample_frequency"] = float(sample_rate)
    payload = native_payload(build_model(preset), family=family_of(preset), fbank=fb,
                             normalizer=Normalizer.preset("audioset").to_dict(), target_length=target_length,
                             meta=meta)
    return save_checkpoint(path, payload)


def _run_client(args: List[str], cwd: Path, env: Dict[str, str] = None, timeout: float = 600) -> str:
    """Run a client's command line in a fresh interpreter (tensorflow, which the HEAR kits import,
    and the triton that torch.compile/timm pull in must not share one: triton loaded after
    tensorflow 2.21 crashes), returning its output; fail the test with the tail of it."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:3])} exited {proc.returncode}:\n{out[-4000:]}")
    return out
