#!/usr/bin/env python3
"""The real-audio evaluation tasks: which builder makes each, from which Debian package.

    python data_prep/tasks.py            # name, module, package, description (tab-separated)
    python data_prep/tasks.py --names    # one task name a line, for a recipe's loop
    python data_prep/tasks.py --train-pool OUT.csv data/tasks/*/manifest.csv
                                         # the train splits' audio, one manifest to pretrain on

Each builder runs as ``python data_prep/<name>.py OUT_DIR [--root /]`` and exits with status 3
and one line naming the ``apt-get install`` to run when its package is missing, so a recipe can
install what it can and skip the rest:

    for t in $(python data_prep/tasks.py --names); do
        python data_prep/$t.py data/tasks/$t || [ $? -eq 3 ] || exit 1
    done
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

try:
    import audiossl  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Task:
    name: str          #: also the module: data_prep/<name>.py
    package: str       #: the Debian package it reads (espeak-ng: the synthesiser it runs)
    label: str         #: what a class is
    split_by: str      #: what never crosses train/valid/test
    description: str

    @property
    def module(self) -> str:
        return f"data_prep/{self.name}.py"


TASKS: Tuple[Task, ...] = (
    Task("tuxpaint_lid", "tuxpaint-stamps-default", "spoken language", "stamp text",
         "8-way language ID on volunteers' recorded stamp descriptions (one voice per language: "
         "scores partly measure the recording set-up)"),
    Task("drums", "hydrogen-drumkits", "drum-hit type", "drum kit",
         "kick/snare/hihat/tom/cymbal on real and electronic kits, leave-kits-out"),
    Task("hedgewars_voices", "hedgewars-data", "voice pack", "phrase",
         "15-way Hedgewars character voice pack (not speaker: packs share actors and processing)"),
    Task("espeak_kws", "espeak-ng", "spoken digit", "accent (voice)",
         "10-way keyword spotting, zero..nine synthesised in 6 English accents"),
    Task("espeak_lid", "espeak-ng", "spoken language", "voice variant",
         "8-way language ID from one synthesiser, unseen voices in test: no recording-identity shortcut"),
)


def get(name: str) -> Task:
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(f"no task {name!r} (tasks: {', '.join(t.name for t in TASKS)})")


def write_train_pool(out: Path, manifests: Sequence[Path]) -> int:
    """One unlabelled manifest of every task's *train* clips (ids prefixed ``<task>/``, the task
    being the manifest's folder name): what self-supervised pretraining may see, with nothing of
    valid or test. Written atomically; returns the number of clips."""
    import pandas as pd

    from audiossl.data.manifest import Manifest, read_manifest, write_manifest

    parts = []
    for path in manifests:
        table = read_manifest(path).table
        train = table[table["split"].astype(str) == "train"]
        if train.empty:
            raise SystemExit(f"{path}: no train split")
        parts.append(pd.DataFrame({"id": Path(path).parent.name + "/" + train["id"].astype(str),
                                   "path": train["path"].values, "duration": train["duration"].values}))
    pool = pd.concat(parts, ignore_index=True)
    write_manifest(Manifest(pool), out)
    return len(pool)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="data_prep/tasks.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", action="store_true", help="only the task names, one a line")
    parser.add_argument("--train-pool", type=Path, metavar="OUT_CSV",
                        help="write the train splits of the given task manifests as one manifest")
    parser.add_argument("manifests", nargs="*", type=Path, help="task manifests (with --train-pool)")
    args = parser.parse_args(argv)
    if args.train_pool is not None:
        if not args.manifests:
            parser.error("--train-pool needs task manifests")
        n = write_train_pool(args.train_pool, args.manifests)
        print(f"{args.train_pool}: {n} training clips from {len(args.manifests)} tasks")
        return 0
    for task in TASKS:
        print(task.name if args.names else "\t".join((task.name, task.module, task.package, task.description)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
