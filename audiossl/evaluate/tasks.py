"""Benchmark tasks: a manifest with a ``split`` column (train / valid / test) and one label per clip.

A task is read once and checked before any embedding is computed, so a bad manifest fails in a
second rather than after an hour of encoder passes: every clip has exactly one label, the
``train``, ``valid`` and ``test`` splits are all present, and every class seen in valid or test
is also in train (a probe cannot predict a class it never saw). Splits named ``test_*`` (e.g.
``test_unseen_speaker``) are scored too, with the probe chosen on valid. Rows of any other split
are ignored with a logged note.

``max_per_split`` keeps at most that many clips per split, spread over the classes (a seeded
round robin, so the subset is the same on every run and keeps every class of a split).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

REQUIRED_SPLITS = ("train", "valid", "test")
# Names users write for the validation split.
_VALID_ALIASES = ("valid", "val", "validation", "dev")
_SUBSET_SEED = 0


class EvaluateError(Exception):
    """A task, representation or cache the benchmark cannot use: ``path: reason``."""

    def __init__(self, path: Optional[PathLike], reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


@dataclass
class Split:
    """One split's clips: ``ids``, ``paths`` and class indices ``y`` (int64), in manifest order."""

    ids: List[str]
    paths: List[str]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Task:
    """A single-label classification task with fixed splits (see the module doc)."""

    name: str
    source: str
    classes: List[str]
    splits: Dict[str, Split] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def eval_splits(self) -> List[str]:
        """Splits scored with the probe chosen on valid: ``test`` first, then ``test_*``."""
        return ["test"] + sorted(s for s in self.splits if s.startswith("test_"))

    def sizes(self) -> Dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def chance(self, split: str = "test") -> float:
        """Accuracy of always answering train's most frequent class (1/K on balanced data)."""
        counts = np.bincount(self.splits["train"].y, minlength=self.num_classes)
        y = self.splits[split].y
        return float((y == int(np.argmax(counts))).mean()) if len(y) else float("nan")


def _normalise_split(value: str) -> str:
    value = value.strip().lower()
    return "valid" if value in _VALID_ALIASES else value


def _single_labels(table: pd.DataFrame, source: str) -> List[str]:
    out = []
    for clip_id, labels in zip(table["id"], table["labels"]):
        if len(labels) != 1:
            what = "no label" if not labels else f"{len(labels)} labels {list(labels)}"
            raise EvaluateError(source, f"clip {clip_id!r} has {what}; a benchmark task needs exactly one per clip")
        out.append(labels[0])
    return out


def _balanced_subset(y: np.ndarray, limit: int) -> np.ndarray:
    """Indices (sorted) of at most ``limit`` rows, taken round robin over the classes."""
    if len(y) <= limit:
        return np.arange(len(y))
    order = np.random.default_rng(_SUBSET_SEED).permutation(len(y))
    rank = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = order[y[order] == c]
        rank[members] = np.arange(len(members))
    keep = np.lexsort((order.argsort(), rank))[:limit]
    return np.sort(keep)


def task_from_manifest(manifest, name: str, max_per_split: Optional[int] = None) -> "Task":
    """A :class:`Task` from a :class:`~audiossl.data.manifest.Manifest` (see the module doc)."""
    source = manifest.source or f"<manifest {name}>"
    table = manifest.table
    if not len(table):
        raise EvaluateError(source, "the manifest has no rows")
    splits = np.array([_normalise_split(s) for s in table["split"]], dtype=object)
    present = set(splits.tolist())
    missing = [s for s in REQUIRED_SPLITS if s not in present]
    if missing:
        found = ", ".join(sorted(repr(s) for s in present)) or "none"
        raise EvaluateError(
            source, f"no {'/'.join(missing)} split (splits found: {found}); a task needs train, valid and test rows"
        )
    labels = np.array(_single_labels(table, source), dtype=object)
    train_classes = set(labels[splits == "train"].tolist())
    if manifest.label_map is not None:
        known = [m for m in manifest.label_map["mid"].tolist() if m in set(labels.tolist())]
    else:
        known = sorted(set(labels.tolist()))
    for split in sorted(present):
        if split == "train" or not (split == "valid" or split == "test" or split.startswith("test_")):
            continue
        unseen = sorted(set(labels[splits == split].tolist()) - train_classes)
        if unseen:
            raise EvaluateError(source, f"class(es) {unseen} appear in the {split!r} split but not in train")
    classes = [c for c in known if c in train_classes]
    index = {c: i for i, c in enumerate(classes)}
    task = Task(name=name, source=source, classes=classes)
    ignored = sorted(s for s in present if s not in ("train", "valid", "test") and not s.startswith("test_"))
    if ignored:
        logger.info("%s: ignoring rows of split(s) %s (only train, valid, test and test_* are used)", source, ignored)
    for split in list(REQUIRED_SPLITS) + sorted(s for s in present if s.startswith("test_")):
        rows = np.flatnonzero(splits == split)
        y = np.array([index[c] for c in labels[rows]], dtype=np.int64)
        if max_per_split is not None:
            keep = _balanced_subset(y, int(max_per_split))
            rows, y = rows[keep], y[keep]
        task.splits[split] = Split(
            ids=[str(v) for v in table["id"].to_numpy()[rows]],
            paths=[str(v) for v in table["path"].to_numpy()[rows]],
            y=y,
        )
    if task.num_classes < 2:
        raise EvaluateError(source, f"train holds {task.num_classes} class(es); classification needs at least 2")
    return task


def load_task(path: PathLike, name: Optional[str] = None, max_per_split: Optional[int] = None) -> Task:
    """Read a manifest (any format :func:`~audiossl.data.manifest.read_manifest` knows) as a task.
    ``name`` defaults to the manifest's folder name (``tasks/lid/manifest.csv`` → ``lid``)."""
    from audiossl.data.manifest import read_manifest

    path = Path(path)
    if max_per_split is not None and max_per_split < 1:
        raise ValueError(f"max_per_split must be >= 1, got {max_per_split}")
    manifest = read_manifest(path)
    manifest.source = manifest.source or str(path)
    return task_from_manifest(manifest, name or path.parent.name or path.stem, max_per_split)


__all__: Sequence[str] = ["EvaluateError", "REQUIRED_SPLITS", "Split", "Task", "load_task", "task_from_manifest"]
