#!/usr/bin/env python3
"""10-way spoken-digit keyword spotting rendered with espeak-ng, split by voice -> manifest.

    python data_prep/espeak_kws.py OUT_DIR [--root /] [--words W ...] [--voices V ...]
                                   [--variants V ...] [--rates R ...] [--espeak espeak-ng]

Renders "zero".."nine" x 6 English accents (en-us, en-gb, en-gb-scotland, en-029, en-us-nyc,
en-gb-x-rp) x 6 voice variants (default, f1, f3, m3, klatt2, whisper) x 3 rates (120, 175, 230
words/min) = 1 080 WAVs (22.05 kHz mono) under ``OUT_DIR/audio/<voice>/``. Each clip's pitch
(30, 50 or 70) is picked by a hash of the clip, so pitch varies independently of rate and word.
Rendering is atomic and resumable: a WAV already there is not rendered again.

Split by accent, so test voices are never heard in training: test en-029 + en-gb-x-rp, valid
en-us-nyc, train the rest. --words/--voices/--variants/--rates render a subset (tests, budgets);
"default" names the variant-less voice. --root is accepted for a uniform CLI; espeak-ng is
looked up on PATH (or --espeak).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

if __package__:
    from . import tasklib
else:  # run as a script: data_prep/ is on sys.path
    import tasklib

TASK = "espeak_kws"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp")
VARIANTS = ("default", "f1", "f3", "m3", "klatt2", "whisper")
RATES = (120, 175, 230)
PITCHES = (30, 50, 70)
TEST_VOICES = ("en-029", "en-gb-x-rp")
VALID_VOICES = ("en-us-nyc",)


def voice_spec(voice: str, variant: str) -> str:
    """espeak-ng's ``-v`` argument: ``en-us`` or ``en-us+f1``."""
    return voice if variant in ("", "default") else f"{voice}+{variant}"


def pick_pitch(key: str, salt: str) -> int:
    return PITCHES[int(tasklib.unit_hash(key, salt) * len(PITCHES))]


def build(
    out_dir: os.PathLike,
    root: os.PathLike = "/",
    words: Sequence[str] = WORDS,
    voices: Sequence[str] = VOICES,
    variants: Sequence[str] = VARIANTS,
    rates: Sequence[int] = RATES,
    test_voices: Sequence[str] = TEST_VOICES,
    valid_voices: Sequence[str] = VALID_VOICES,
    espeak: str = "espeak-ng",
    progress: bool = False,
):
    """Render the missing WAVs and write the KWS manifest under ``out_dir``; return the Manifest."""
    exe = tasklib.find_espeak(TASK, espeak)
    audio = Path(out_dir) / "audio"
    rows, jobs = [], []
    for voice in voices:
        split = "test" if voice in test_voices else "valid" if voice in valid_voices else "train"
        for word in words:
            for variant in variants:
                for rate in rates:
                    stem = f"{word}__{tasklib.safe_name(voice)}_{tasklib.safe_name(variant)}__s{rate}"
                    pitch = pick_pitch(stem, TASK)
                    path = audio / tasklib.safe_name(voice) / f"{stem}_p{pitch}.wav"
                    jobs.append((voice_spec(voice, variant), word, path, rate, pitch))
                    rows.append({"id": f"{voice}/{stem}_p{pitch}", "path": str(path.resolve()), "label": word,
                                 "split": split, "voice": voice, "variant": variant, "rate": rate, "pitch": pitch})
    rendered = tasklib.render_all(exe, jobs, progress=progress)
    print(f"{TASK}: rendered {rendered} new WAV(s), {len(jobs) - rendered} already there")
    classes = [w for w in WORDS if w in set(words)] + sorted(set(words) - set(WORDS))
    return tasklib.finish(rows, out_dir, classes, progress=progress)


def build_parser():
    parser = tasklib.base_parser("data_prep/espeak_kws.py", __doc__, tasklib.ESPEAK_ROOT_HELP)
    parser.add_argument("--words", nargs="+", default=list(WORDS))
    parser.add_argument("--voices", nargs="+", default=list(VOICES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help='voice variants; "default" for none')
    parser.add_argument("--rates", nargs="+", type=int, default=list(RATES), help="words per minute")
    parser.add_argument("--test-voices", nargs="+", default=list(TEST_VOICES))
    parser.add_argument("--valid-voices", nargs="*", default=list(VALID_VOICES))
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable (default: espeak-ng on PATH)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return tasklib.run_cli(TASK, build, args, root=args.root, words=args.words, voices=args.voices,
                           variants=args.variants, rates=args.rates, test_voices=args.test_voices,
                           valid_voices=args.valid_voices, espeak=args.espeak, progress=True)


if __name__ == "__main__":
    sys.exit(main())
