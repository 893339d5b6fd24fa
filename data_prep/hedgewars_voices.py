#!/usr/bin/env python3
"""Voice-pack ID from Hedgewars' character voices, split by phrase -> audiossl manifest.

    python data_prep/hedgewars_voices.py OUT_DIR [--root /] [--min-packs N] [--min-clips N]

Reads ``usr/share/games/hedgewars/Data/Sounds/voices/<Pack>/<Phrase>.ogg`` (package
``hedgewars-data``) under ROOT. The label is the **voice pack** (British, Pirate, Robot,
Default_ru, ...), not the speaker: one actor may voice several packs, Robot and Singer are
processed, and some packs reuse other packs' recordings.

* Byte-identical recordings filed under several packs (27, mostly shared by Classic, Default
  and Default_uk) have no single right label and are dropped; a recording repeated within one pack under
  several phrases is kept once (its first phrase).
* Phrases said in fewer than ``--min-packs`` packs (default 8) are dropped, then packs left
  with fewer than ``--min-clips`` clips (default 30).
* Split by phrase *family* (the name without its trailing number: Firepunch1..6, Ow1..4,
  Jump1..3 stay together), so no phrase is heard in two splits: families ranked by a stable
  hash, 25 % of them to test, 15 % to valid, the rest to train (exact shares, because there
  are only ~50 families).
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

if __package__:
    from . import tasklib
else:  # run as a script: data_prep/ is on sys.path
    import tasklib

TASK = "hedgewars_voices"
PACKAGE = "hedgewars-data"
VOICES_DIR = "usr/share/games/hedgewars/Data/Sounds/voices"
MIN_PACKS, MIN_CLIPS = 8, 30
TEST_FRACTION, VALID_FRACTION = 0.25, 0.15


def phrase_family(phrase: str) -> str:
    """``Firepunch3`` -> ``firepunch``: numbered takes of one phrase share a split."""
    return re.sub(r"\d+$", "", phrase).lower() or phrase.lower()


def find_clips(base: Path) -> List[Tuple[str, str, str]]:
    """``(pack, phrase, path)`` for every ``<Pack>/<Phrase>.ogg``, sorted."""
    clips = []
    for pack_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(pack_dir.glob("*.ogg")):
            clips.append((pack_dir.name, f.stem, str(f)))
    return clips


def dedupe(clips: List[Tuple[str, str, str]]) -> List[Tuple[str, str, str]]:
    """Drop recordings found in several packs; keep a recording repeated inside one pack once."""
    by_digest: Dict[str, List[Tuple[str, str, str]]] = defaultdict(list)
    for clip in clips:
        by_digest[tasklib.file_digest(clip[2])].append(clip)
    kept = []
    for copies in by_digest.values():
        if len({pack for pack, _, _ in copies}) == 1:
            kept.append(min(copies))
    return sorted(kept)


def select(clips: List[Tuple[str, str, str]], min_packs: int, min_clips: int) -> List[Tuple[str, str, str]]:
    """Phrases in >= ``min_packs`` packs, then packs with >= ``min_clips`` of those phrases."""
    packs_of: Dict[str, set] = defaultdict(set)
    for pack, phrase, _ in clips:
        packs_of[phrase].add(pack)
    clips = [c for c in clips if len(packs_of[c[1]]) >= min_packs]
    per_pack: Dict[str, int] = defaultdict(int)
    for pack, _, _ in clips:
        per_pack[pack] += 1
    return [c for c in clips if per_pack[c[0]] >= min_clips]


def build(
    out_dir: os.PathLike,
    root: os.PathLike = "/",
    min_packs: int = MIN_PACKS,
    min_clips: int = MIN_CLIPS,
    progress: bool = False,
):
    """Write the Hedgewars voice-pack manifest under ``out_dir``; return the Manifest."""
    base = tasklib.require_dir(TASK, PACKAGE, Path(root) / VOICES_DIR)
    clips = select(dedupe(find_clips(base)), min_packs, min_clips)
    if not clips:
        raise ValueError(f"no voice pack under {base} keeps {min_clips} clips of phrases in {min_packs} packs")
    split_of = tasklib.rank_split((phrase_family(c[1]) for c in clips), TEST_FRACTION, VALID_FRACTION, salt=TASK)
    rows = []
    for pack, phrase, path in clips:
        family = phrase_family(phrase)
        rows.append({
            "id": f"{pack}/{phrase}",
            "path": path,
            "label": pack,
            "split": split_of[family],
            "phrase": phrase,
            "phrase_family": family,
        })
    classes = sorted({r["label"] for r in rows})
    return tasklib.finish(rows, out_dir, classes, {c: f"{c} voice pack" for c in classes}, progress=progress)


def build_parser():
    parser = tasklib.base_parser("data_prep/hedgewars_voices.py", __doc__)
    parser.add_argument("--min-packs", type=int, default=MIN_PACKS, metavar="N",
                        help=f"keep phrases said in at least N packs (default {MIN_PACKS})")
    parser.add_argument("--min-clips", type=int, default=MIN_CLIPS, metavar="N",
                        help=f"keep packs with at least N clips (default {MIN_CLIPS})")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return tasklib.run_cli(TASK, build, args, root=args.root, min_packs=args.min_packs, min_clips=args.min_clips)


if __name__ == "__main__":
    sys.exit(main())
