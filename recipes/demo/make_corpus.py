#!/usr/bin/env python3
"""Build a small labelled sound corpus in the ESC-50 layout, with no network.

    python recipes/demo/make_corpus.py OUT_DIR [--clips-per-fold 2] [--seed 0]

writes ``OUT_DIR/audio/{fold}-{clip}-{take}-{target}.wav`` (44.1 kHz mono 16-bit, 5 s, like ESC-50)
and ``OUT_DIR/meta/esc50.csv``, so the real ESC-50 data_prep and recipe run on it unchanged.

Each class is a procedural sound family with real variation (pitch, rate, timbre, onset, length,
level, background noise), so that telling the classes apart takes a learned representation
rather than one threshold. When ``espeak-ng`` is installed, one class is synthetic speech (random
words, voices and speeds); otherwise that class is a two-tone siren. The corpus is a
deterministic function of the seed and the espeak-ng version, and files are written atomically,
so a re-run over a finished corpus only verifies it.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import soundfile as sf

SR = 44100
DURATION = 5.0
NUM_FOLDS = 5

Synth = Callable[[np.random.Generator, int], np.ndarray]


def _envelope(rng: np.random.Generator, n: int, attack: float, release: float) -> np.ndarray:
    t = np.arange(n) / SR
    env = np.minimum(1.0, t / max(attack, 1e-3)) * np.exp(-t / max(release, 1e-3))
    return env


def _event_span(rng: np.random.Generator, n: int, min_s: float = 1.0) -> slice:
    """A random sub-span of the clip: sounds start late or stop early, as real recordings do."""
    length = int(rng.uniform(min_s, DURATION) * SR)
    start = int(rng.integers(0, max(1, n - length)))
    return slice(start, start + length)


def harmonic_tone(rng: np.random.Generator, n: int) -> np.ndarray:
    f0 = rng.uniform(150, 700)
    t = np.arange(n) / SR
    vibrato = 1 + 0.01 * rng.uniform(0, 1) * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / SR
    k = np.arange(1, int(rng.integers(3, 8)) + 1)[:, None]
    tone = (np.sin(k * phase) / k ** rng.uniform(0.8, 2.0)).sum(0)
    return tone * _envelope(rng, n, rng.uniform(0.01, 0.3), rng.uniform(1.0, 6.0))


def _sweep(rng: np.random.Generator, n: int, up: bool) -> np.ndarray:
    period = rng.uniform(0.2, 1.2)
    lo, hi = rng.uniform(200, 800), rng.uniform(1500, 6000)
    t = np.arange(n) / SR
    frac = (t % period) / period
    freq = lo + (hi - lo) * (frac if up else 1 - frac)
    return np.sin(2 * np.pi * np.cumsum(freq) / SR)


def chirp_up(rng: np.random.Generator, n: int) -> np.ndarray:
    return _sweep(rng, n, up=True)


def chirp_down(rng: np.random.Generator, n: int) -> np.ndarray:
    return _sweep(rng, n, up=False)


def _bandpass(rng: np.random.Generator, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    spec[(freqs < lo) | (freqs > hi)] = 0
    return np.fft.irfft(spec, len(x))


def noise_bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    centre = rng.uniform(500, 8000)
    noise = _bandpass(rng, rng.standard_normal(n), centre / 1.5, centre * 1.5)
    gate = np.zeros(n)
    for _ in range(int(rng.integers(2, 8))):
        start, length = int(rng.integers(0, n)), int(rng.uniform(0.05, 0.5) * SR)
        gate[start : start + length] = 1.0
    return noise * np.convolve(gate, np.hanning(441), mode="same") / 220


def click_train(rng: np.random.Generator, n: int) -> np.ndarray:
    rate = rng.uniform(3, 30)
    clicks = np.zeros(n)
    times = np.arange(0, n, SR / rate).astype(int)
    clicks[times] = rng.uniform(0.5, 1.0, size=len(times))
    ring = np.sin(2 * np.pi * rng.uniform(1000, 5000) * np.arange(441) / SR) * np.exp(-np.arange(441) / 40)
    return np.convolve(clicks, ring, mode="same")


def engine_hum(rng: np.random.Generator, n: int) -> np.ndarray:
    f0 = rng.uniform(30, 120)
    t = np.arange(n) / SR
    k = np.arange(1, 12)[:, None]
    hum = (np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi, size=(11, 1))) / k).sum(0)
    am = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 12) * t)
    return hum * am + 0.3 * _bandpass(rng, rng.standard_normal(n), 50, 400)


def droplets(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    drop_len = int(0.03 * SR)
    tt = np.arange(drop_len) / SR
    for _ in range(int(rng.integers(20, 120))):
        start = int(rng.integers(0, n - drop_len))
        f = rng.uniform(1500, 9000)
        out[start : start + drop_len] += rng.uniform(0.2, 1) * np.sin(2 * np.pi * f * tt * (1 + 20 * tt)) * np.exp(-tt / 0.006)
    return out


def siren(rng: np.random.Generator, n: int) -> np.ndarray:
    f1, f2 = rng.uniform(500, 900), rng.uniform(1000, 1600)
    period = rng.uniform(0.3, 1.0)
    t = np.arange(n) / SR
    freq = np.where((t % period) < period / 2, f1, f2)
    return np.sign(np.sin(2 * np.pi * np.cumsum(freq) / SR)) * 0.5


WORDS = (
    "audio spectrogram transformer masked model teacher student patch token frequency time "
    "signal learning sound speech music noise clip label fold dog rain bell engine"
).split()


def make_speech_synth(espeak: str) -> Synth:
    def speech(rng: np.random.Generator, n: int) -> np.ndarray:
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
        voice = str(rng.choice(["en", "en-us", "en+f3", "en+m3", "de", "fr"]))
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(
                [espeak, "-v", voice, "-s", str(int(rng.integers(120, 220))), "-p", str(int(rng.integers(20, 80))), "-w", str(wav), text],
                check=True,
                capture_output=True,
            )
            x, sr = sf.read(wav, dtype="float64", always_2d=True)
        x = x.mean(1)
        # espeak-ng renders at 22.05 kHz: resample by linear interpolation (a demo corpus, not a front end).
        x = np.interp(np.arange(int(len(x) * SR / sr)) * sr / SR, np.arange(len(x)), x)
        return np.pad(x, (0, max(0, n - len(x))))[:n]

    return speech


def class_table() -> Dict[str, Synth]:
    classes: Dict[str, Synth] = {
        "harmonic_tone": harmonic_tone,
        "chirp_up": chirp_up,
        "chirp_down": chirp_down,
        "noise_bursts": noise_bursts,
        "click_train": click_train,
        "engine_hum": engine_hum,
        "droplets": droplets,
    }
    espeak = shutil.which("espeak-ng")
    if espeak:
        classes["speech"] = make_speech_synth(espeak)
    else:
        print("espeak-ng not found: class 7 is a two-tone siren instead of speech", file=sys.stderr)
        classes["siren"] = siren
    return classes


def render_clip(synth: Synth, rng: np.random.Generator) -> np.ndarray:
    n = int(SR * DURATION)
    clip = np.zeros(n)
    span = _event_span(rng, n)
    event = synth(rng, span.stop - span.start)
    clip[span] = event / (np.abs(event).max() + 1e-9)
    clip *= 10 ** (rng.uniform(-24, -3) / 20)
    clip += 10 ** (rng.uniform(-60, -35) / 20) * rng.standard_normal(n)
    return np.clip(clip, -1, 1).astype(np.float32)


def _write_atomic_wav(path: Path, x: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".partial")
    sf.write(tmp, x, SR, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def build(out: Path, clips_per_fold: int, seed: int) -> List[dict]:
    classes = class_table()
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    rows = []
    clip_id = 100000
    for target, (name, synth) in enumerate(classes.items()):
        for fold in range(1, NUM_FOLDS + 1):
            for take in range(clips_per_fold):
                clip_id += 1
                filename = f"{fold}-{clip_id}-{'ABCDEFGHIJ'[take % 10]}-{target}.wav"
                path = out / "audio" / filename
                if not path.exists():
                    rng = np.random.default_rng([seed, target, fold, take])
                    _write_atomic_wav(path, render_clip(synth, rng))
                rows.append(
                    {"filename": filename, "fold": fold, "target": target, "category": name,
                     "esc10": "False", "src_file": clip_id, "take": "ABCDEFGHIJ"[take % 10]}
                )
    meta = out / "meta" / "esc50.csv"
    tmp = meta.with_name(meta.name + ".partial")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, meta)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="corpus root (ESC-50 layout)")
    parser.add_argument("--clips-per-fold", type=int, default=2, help="clips per class and fold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = build(args.out, args.clips_per_fold, args.seed)
    classes = sorted({r["category"] for r in rows})
    print(f"{len(rows)} clips, {len(classes)} classes, {NUM_FOLDS} folds in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
