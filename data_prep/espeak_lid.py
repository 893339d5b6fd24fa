#!/usr/bin/env python3
"""Spoken-language ID without a recording-identity shortcut: espeak-ng, split by voice variant.

    python data_prep/espeak_lid.py OUT_DIR [--root /] [--langs L ...] [--texts N]
                                   [--variants V ...] [--rates R ...] [--espeak espeak-ng]

Tux Paint's language ID (tuxpaint_lid.py) has mostly one volunteer and one microphone per
language, so pooled fbank statistics reach ~99 % by recognising the recording set-up rather
than the language. Here every language comes out of one synthesiser, and the voice (the
espeak-ng variant: formants, pitch range, breathiness, Klatt or not) is the split: test and
valid variants are never heard in training, so the set-up carries no label.

Languages: es fr it de ru pt nl pl (8). Texts, the same 20 in every language: the digits 0-9,
written as digits so espeak-ng reads them in the language's own words, and 10 common words
(hello, thank you, please, good morning, good night, water, house, friend, today, tomorrow)
in each language. Each is rendered with 13 variants x 2 rates (140, 200 words/min), pitch
35/50/65 picked by a hash of the clip: 8 x 20 x 13 x 2 = 4 160 WAVs (22.05 kHz mono) under
``OUT_DIR/audio/<lang>/``, atomic and resumable.

Split by variant: test m7, f5, klatt2; valid m5, f3; train m1 m2 m3 m4 f1 f2 f4 klatt.
--texts N renders the first N texts of each language, --langs/--variants/--rates a subset.
--root is accepted for a uniform CLI; espeak-ng is looked up on PATH (or --espeak).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

if __package__:
    from . import tasklib
else:  # run as a script: data_prep/ is on sys.path
    import tasklib

TASK = "espeak_lid"
#: label -> espeak-ng voice
VOICES = {"es": "es", "fr": "fr", "it": "it", "de": "de", "ru": "ru", "pt": "pt", "nl": "nl", "pl": "pl"}
LANGUAGE_NAMES = {"de": "German", "es": "Spanish", "fr": "French", "it": "Italian", "nl": "Dutch",
                  "pl": "Polish", "pt": "Portuguese", "ru": "Russian"}
DIGITS = tuple(str(d) for d in range(10))
CONCEPTS = ("hello", "thanks", "please", "good_morning", "good_night", "water", "house", "friend", "today", "tomorrow")
WORDS: Dict[str, Tuple[str, ...]] = {
    "es": ("hola", "gracias", "por favor", "buenos días", "buenas noches", "agua", "casa", "amigo", "hoy", "mañana"),
    "fr": ("salut", "merci", "s'il vous plaît", "bonjour", "bonne nuit",
           "eau", "maison", "ami", "aujourd'hui", "demain"),
    "it": ("ciao", "grazie", "per favore", "buongiorno", "buona notte", "acqua", "casa", "amico", "oggi", "domani"),
    "de": ("hallo", "danke", "bitte", "guten Morgen", "gute Nacht", "Wasser", "Haus", "Freund", "heute", "morgen"),
    "ru": ("привет", "спасибо", "пожалуйста", "доброе утро", "спокойной ночи",
           "вода", "дом", "друг", "сегодня", "завтра"),
    "pt": ("olá", "obrigado", "por favor", "bom dia", "boa noite", "água", "casa", "amigo", "hoje", "amanhã"),
    "nl": ("hallo", "dank je", "alsjeblieft", "goedemorgen", "goedenacht",
           "water", "huis", "vriend", "vandaag", "morgen"),
    "pl": ("cześć", "dziękuję", "proszę", "dzień dobry", "dobranoc", "woda", "dom", "przyjaciel", "dzisiaj", "jutro"),
}
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f4", "klatt")
VALID_VARIANTS = ("m5", "f3")
TEST_VARIANTS = ("m7", "f5", "klatt2")
VARIANTS = TRAIN_VARIANTS + VALID_VARIANTS + TEST_VARIANTS
RATES = (140, 200)
PITCHES = (35, 50, 65)


def texts(lang: str) -> Tuple[Tuple[str, str], ...]:
    """``(text id, text)`` pairs for ``lang``: the same ids (d0..d9, then the concepts) everywhere."""
    return tuple((f"d{d}", d) for d in DIGITS) + tuple(zip(CONCEPTS, WORDS[lang]))


def build(
    out_dir: os.PathLike,
    root: os.PathLike = "/",
    langs: Sequence[str] = tuple(VOICES),
    num_texts: Optional[int] = None,
    variants: Sequence[str] = VARIANTS,
    rates: Sequence[int] = RATES,
    test_variants: Sequence[str] = TEST_VARIANTS,
    valid_variants: Sequence[str] = VALID_VARIANTS,
    espeak: str = "espeak-ng",
    progress: bool = False,
):
    """Render the missing WAVs and write the language-ID manifest under ``out_dir``; return it."""
    unknown = [lang for lang in langs if lang not in VOICES]
    if unknown:
        raise ValueError(f"no texts for {', '.join(unknown)} (known: {' '.join(VOICES)})")
    exe = tasklib.find_espeak(TASK, espeak)
    audio = Path(out_dir) / "audio"
    rows, jobs = [], []
    for lang in langs:
        for text_id, text in texts(lang)[:num_texts]:
            for variant in variants:
                split = "test" if variant in test_variants else "valid" if variant in valid_variants else "train"
                for rate in rates:
                    stem = f"{lang}_{text_id}__{tasklib.safe_name(variant)}__s{rate}"
                    pitch = PITCHES[int(tasklib.unit_hash(stem, TASK) * len(PITCHES))]
                    path = audio / lang / f"{stem}_p{pitch}.wav"
                    jobs.append((f"{VOICES[lang]}+{variant}", text, path, rate, pitch))
                    rows.append({"id": f"{lang}/{stem}_p{pitch}", "path": str(path.resolve()), "label": lang,
                                 "split": split, "text_id": text_id, "text": text, "variant": variant,
                                 "rate": rate, "pitch": pitch})
    rendered = tasklib.render_all(exe, jobs, progress=progress)
    print(f"{TASK}: rendered {rendered} new WAV(s), {len(jobs) - rendered} already there")
    return tasklib.finish(rows, out_dir, sorted(set(langs)), LANGUAGE_NAMES, progress=progress)


def build_parser():
    parser = tasklib.base_parser("data_prep/espeak_lid.py", __doc__, tasklib.ESPEAK_ROOT_HELP)
    parser.add_argument("--langs", nargs="+", default=list(VOICES), choices=list(VOICES))
    parser.add_argument("--texts", type=int, default=None, metavar="N", help="only the first N texts per language")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--rates", nargs="+", type=int, default=list(RATES), help="words per minute")
    parser.add_argument("--test-variants", nargs="+", default=list(TEST_VARIANTS))
    parser.add_argument("--valid-variants", nargs="*", default=list(VALID_VARIANTS))
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable (default: espeak-ng on PATH)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return tasklib.run_cli(TASK, build, args, root=args.root, langs=args.langs, num_texts=args.texts,
                           variants=args.variants, rates=args.rates, test_variants=args.test_variants,
                           valid_variants=args.valid_variants, espeak=args.espeak, progress=True)


if __name__ == "__main__":
    sys.exit(main())
