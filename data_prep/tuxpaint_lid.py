#!/usr/bin/env python3
"""Spoken-language ID from Tux Paint's recorded stamp descriptions -> audiossl manifest.

    python data_prep/tuxpaint_lid.py OUT_DIR [--root /] [--langs fr ru ...] [--max-per-class N]

Reads ``usr/share/tuxpaint/stamps/**/<stamp>_desc_<lang>.ogg`` (Debian package
``tuxpaint-stamps-default``) under ROOT. Classes: fr ru ro ca bg es be el (the languages with
>= 680 recordings; da, nl, lt are smaller and can be added with --langs).

Split (train/valid/test ~ 70/10/20) by a stable hash of the stamp's *group*, so the same text
never crosses splits: stamps are grouped when they share their English description (the first
line of ``<stamp>.txt``: "The letter P." belongs to four alphabet stamps) or a byte-identical
recording in any language (the star of ``symbols/shapes`` and of ``seasonal/christmas``).

--max-per-class N keeps at most N clips per language, shared among the splits in proportion to
their sizes, chosen by a hash of the stamp so every language keeps the same stamps.

Caveat: each language is mostly one volunteer with one microphone, so a classifier can score
well by recognising the recording set-up (pooled fbank statistics reach ~99 %); espeak_lid.py
is the language-ID task without that shortcut.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__:
    from . import tasklib
else:  # run as a script: data_prep/ is on sys.path
    import tasklib

TASK = "tuxpaint_lid"
PACKAGE = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
LANGS = ("fr", "ru", "ro", "ca", "bg", "es", "be", "el")
LANGUAGE_NAMES = {
    "be": "Belarusian", "bg": "Bulgarian", "ca": "Catalan", "da": "Danish", "el": "Greek", "es": "Spanish",
    "fr": "French", "lt": "Lithuanian", "nl": "Dutch", "ro": "Romanian", "ru": "Russian",
}
TEST_FRACTION, VALID_FRACTION = 0.2, 0.1
_DESC = re.compile(r"^(?P<stamp>.+)_desc_(?P<lang>[a-z]{2})\.ogg$")


def _english_text(stamp_path: Path) -> Optional[str]:
    """The stamp's English description (first line of ``<stamp>.txt``), normalised for matching."""
    txt = stamp_path.with_name(stamp_path.name + ".txt")
    if not txt.is_file():
        return None
    with open(txt, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    text = " ".join(first.lower().split()).rstrip(".!")
    return text or None


def find_clips(base: Path, langs: Sequence[str]) -> List[dict]:
    """One dict per description recording in ``langs``: path, stamp (relative, no suffix), lang."""
    wanted = set(langs)
    clips = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            m = _DESC.match(name)
            if m and m["lang"] in wanted:
                stamp = Path(os.path.relpath(os.path.join(dirpath, m["stamp"]), base)).as_posix()
                clips.append({"path": os.path.join(dirpath, name), "stamp": stamp, "lang": m["lang"]})
    return clips


def stamp_groups(base: Path, clips: Sequence[dict]) -> Dict[str, str]:
    """stamp -> its group's name (the group's first stamp): shared text or identical bytes link."""
    groups = tasklib.Groups()
    for clip in clips:
        node = "stamp:" + clip["stamp"]
        groups.find(node)
        groups.union(node, "md5:" + tasklib.file_digest(clip["path"]))
    for stamp in sorted({c["stamp"] for c in clips}):
        text = _english_text(base / stamp)
        if text is not None:
            groups.union("stamp:" + stamp, "text:" + text)
    first: Dict[str, str] = {}
    for stamp in sorted({c["stamp"] for c in clips}):
        first.setdefault(groups.find("stamp:" + stamp), stamp)
    return {s: first[groups.find("stamp:" + s)] for s in {c["stamp"] for c in clips}}


def _quotas(sizes: Dict[str, int], cap: int) -> Dict[str, int]:
    """Split ``cap`` over the splits in proportion to ``sizes`` (largest remainder, exact total)."""
    total = sum(sizes.values())
    if total <= cap:
        return dict(sizes)
    exact = {s: cap * n / total for s, n in sizes.items()}
    out = {s: int(v) for s, v in exact.items()}
    for s in sorted(exact, key=lambda s: (out[s] - exact[s], tasklib.SPLITS.index(s)))[: cap - sum(out.values())]:
        out[s] += 1
    return out


def _stamp_rank(row: dict) -> tuple:
    return tasklib.unit_hash(row["stamp"], "subsample"), row["stamp"]


def subsample(rows: List[dict], max_per_class: int) -> List[dict]:
    """At most ``max_per_class`` rows per class, split-proportional, the same stamps in every class."""
    by: Dict[tuple, List[dict]] = {}
    for row in rows:
        by.setdefault((row["label"], row["split"]), []).append(row)
    kept = []
    for label in sorted({r["label"] for r in rows}):
        sizes = {s: len(by.get((label, s), [])) for s in tasklib.SPLITS}
        for split, n in _quotas(sizes, max_per_class).items():
            ranked = sorted(by.get((label, split), []), key=_stamp_rank)
            kept.extend(ranked[:n])
    return kept


def build(
    out_dir: os.PathLike,
    root: os.PathLike = "/",
    langs: Sequence[str] = LANGS,
    max_per_class: Optional[int] = None,
    progress: bool = False,
):
    """Write the Tux Paint language-ID manifest under ``out_dir``; return the Manifest."""
    base = tasklib.require_dir(TASK, PACKAGE, Path(root) / STAMPS_DIR)
    clips = find_clips(base, langs)
    if not clips:
        raise ValueError(f"no *_desc_<lang>.ogg for {' '.join(langs)} under {base}")
    group_of = stamp_groups(base, clips)
    rows = []
    for clip in clips:
        group = group_of[clip["stamp"]]
        rows.append({
            "id": f"{clip['stamp']}_desc_{clip['lang']}",
            "path": clip["path"],
            "label": clip["lang"],
            "split": tasklib.hash_split(group, TEST_FRACTION, VALID_FRACTION, salt=TASK),
            "stamp": clip["stamp"],
            "group": group,
        })
    if max_per_class is not None:
        rows = subsample(rows, max_per_class)
    classes = sorted({r["label"] for r in rows})
    return tasklib.finish(rows, out_dir, classes, LANGUAGE_NAMES, progress=progress)


def build_parser():
    parser = tasklib.base_parser("data_prep/tuxpaint_lid.py", __doc__)
    parser.add_argument("--langs", nargs="+", default=list(LANGS), help=f"languages (default: {' '.join(LANGS)})")
    parser.add_argument("--max-per-class", type=int, default=None, metavar="N",
                        help="keep at most N clips per language, split-proportional (CPU budgets)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_per_class is not None and args.max_per_class < 1:
        build_parser().error("--max-per-class must be >= 1")
    return tasklib.run_cli(TASK, build, args, root=args.root, langs=args.langs,
                           max_per_class=args.max_per_class, progress=True)


if __name__ == "__main__":
    sys.exit(main())
