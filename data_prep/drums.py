#!/usr/bin/env python3
"""Drum-hit type from Debian's hydrogen-drumkits, leave-kits-out -> audiossl manifest.

    python data_prep/drums.py OUT_DIR [--root /] [--test-kits KIT ...] [--valid-kits KIT ...]

Reads every ``usr/share/hydrogen/data/drumkits/<Kit>/drumkit.xml`` (package
``hydrogen-drumkits``) under ROOT and labels each sample by its instrument's ``<name>``:
kick, snare (with rimshot, side stick, rim click), hihat, tom, cymbal (crash, ride, splash,
china, bell). Dropped: claps (22 hits in all, too few for a class), hand percussion (cowbell,
conga, bongo, cajon, clave, woodblock, maraca, tambourine, agogo, djembe, dunun...), zaps, FX,
whistles, clicks, and unnamed or ``Sample: ...`` instruments. An instrument whose name says
nothing falls back to its sample's file name ("redo super opaco" -> snare-opaque-....flac).

Each sample file counts once per kit (several kits point two instruments, e.g. Tom Mid and
Tom Hi, at the same files); a file under two different labels, a byte-identical file in
another kit, and empty placeholder samples are dropped. Velocity layers of one instrument stay
on one side because the split is by kit:

* test: The Black Pearl 1.0, Millo_MultiLayered2 (acoustic), HardElectro1 (electronic);
* valid: ColomboAcousticDrumkit (acoustic, every class) and VariBreaks (electronic), held out
  of training so a probe can choose its hyper-parameters without touching test;
* train: every other kit.
"""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

if __package__:
    from . import tasklib
else:  # run as a script: data_prep/ is on sys.path
    import tasklib

TASK = "drums"
PACKAGE = "hydrogen-drumkits"
DRUMKITS_DIR = "usr/share/hydrogen/data/drumkits"
CLASSES = ("kick", "snare", "hihat", "tom", "cymbal")
TEST_KITS = ("The Black Pearl 1.0", "Millo_MultiLayered2", "HardElectro1")
VALID_KITS = ("ColomboAcousticDrumkit", "VariBreaks")

# First match wins; None drops the instrument. Drops come first: "Dununba1 Bell" is no cymbal.
_RULES: Tuple[Tuple[Optional[str], "re.Pattern[str]"], ...] = tuple(
    (label, re.compile(pattern))
    for label, pattern in (
        ("snare", r"rim ?click|rim ?shot|side ?stick"),
        (None, r"clap|snap|cowbell|conga|bongo|cajon|clave|wood ?block|maraca|tambourine|agogo|djembe|dunun|"
               r"sangban|kenkeni|whistle|zap|\bfx\b|click|glass|shake|^sample:|(?<!bass )\bdrum ?\d"),
        ("kick", r"kick|bass ?drum|\bbd\b"),
        ("snare", r"snare|\bstick\b"),
        ("hihat", r"hi-?hat|\bhh\b|\bohh\b|\bchh\b|\bhat\b"),
        ("tom", r"\btom"),
        ("cymbal", r"crash|ride|cymbal|splash|china|bell"),
    )
)


def classify(name: str) -> Tuple[bool, Optional[str]]:
    """``(matched, label)`` for an instrument name; ``label`` None means dropped on purpose."""
    text = " ".join(name.lower().replace("_", " ").split())
    for label, rx in _RULES:
        if rx.search(text):
            return True, label
    return False, None


def label_of(instrument: str, sample: str) -> Optional[str]:
    """The instrument's class from its name, else from its sample's file name, else None."""
    matched, label = classify(instrument)
    if matched:
        return label
    stem = os.path.splitext(os.path.basename(sample))[0]
    return classify(stem.replace("-", " "))[1]


def _instruments(xml_path: Path) -> Iterator[Tuple[str, List[str]]]:
    root = ET.parse(xml_path).getroot()
    ns = re.match(r"\{.*\}", root.tag)
    ns = ns.group(0) if ns else ""
    for ins in root.iter(f"{ns}instrument"):
        files = [fn.text.strip() for fn in ins.iter(f"{ns}filename") if fn.text and fn.text.strip()]
        yield (ins.findtext(f"{ns}name") or "").strip(), files


def find_hits(base: Path) -> List[dict]:
    """Every labelled sample of every kit, each file once: kit, instrument, path, label."""
    hits: dict = {}
    conflicts = set()
    for xml_path in sorted(base.glob("*/drumkit.xml")):
        kit = xml_path.parent.name
        for instrument, files in _instruments(xml_path):
            for sample in files:
                label = label_of(instrument, sample)
                path = xml_path.parent / sample
                if label is None or "emptysample" in sample.lower() or not path.is_file():
                    continue
                key = os.path.normpath(path)
                if key in hits and hits[key]["label"] != label:
                    conflicts.add(key)
                hits.setdefault(key, {"kit": kit, "instrument": instrument, "path": key, "label": label})
    return [hit for key, hit in sorted(hits.items()) if key not in conflicts]


def _drop_cross_kit_copies(hits: List[dict]) -> List[dict]:
    """A file whose bytes also sit in another kit would leak across the kit split: drop all copies."""
    kits_of: dict = {}
    digest = {}
    for hit in hits:
        digest[hit["path"]] = d = tasklib.file_digest(hit["path"])
        kits_of.setdefault(d, set()).add(hit["kit"])
    return [h for h in hits if len(kits_of[digest[h["path"]]]) == 1]


def _row_id(kit: str, path: str, kit_dir: Path) -> str:
    rel = os.path.splitext(os.path.relpath(path, kit_dir))[0]
    return f"{kit}/{rel}".replace(" ", "_").replace(os.sep, "/")


def build(
    out_dir: os.PathLike,
    root: os.PathLike = "/",
    test_kits: Sequence[str] = TEST_KITS,
    valid_kits: Sequence[str] = VALID_KITS,
    progress: bool = False,
):
    """Write the drum-hit manifest under ``out_dir``; return the Manifest."""
    base = tasklib.require_dir(TASK, PACKAGE, Path(root) / DRUMKITS_DIR)
    overlap = set(test_kits) & set(valid_kits)
    if overlap:
        raise ValueError(f"kits both in test and valid: {', '.join(sorted(overlap))}")
    hits = _drop_cross_kit_copies(find_hits(base))
    if not hits:
        raise ValueError(f"no labelled drum samples under {base}")
    kits = {h["kit"] for h in hits}
    for kit in [*test_kits, *valid_kits]:
        if kit not in kits:
            print(f"{TASK}: warning: kit {kit!r} has no labelled samples here", file=sys.stderr)
    rows = []
    for hit in hits:
        split = "test" if hit["kit"] in test_kits else "valid" if hit["kit"] in valid_kits else "train"
        rows.append({
            "id": _row_id(hit["kit"], hit["path"], base / hit["kit"]),
            "path": hit["path"],
            "label": hit["label"],
            "split": split,
            "kit": hit["kit"],
            "instrument": hit["instrument"],
        })
    classes = [c for c in CLASSES if any(r["label"] == c for r in rows)]
    return tasklib.finish(rows, out_dir, classes, progress=progress)


def build_parser():
    parser = tasklib.base_parser("data_prep/drums.py", __doc__)
    parser.add_argument("--test-kits", nargs="+", default=list(TEST_KITS), metavar="KIT",
                        help="kit folders held out for test")
    parser.add_argument("--valid-kits", nargs="*", default=list(VALID_KITS), metavar="KIT",
                        help="kit folders held out for validation")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return tasklib.run_cli(TASK, build, args, root=args.root, test_kits=args.test_kits,
                           valid_kits=args.valid_kits, progress=False)


if __name__ == "__main__":
    sys.exit(main())
