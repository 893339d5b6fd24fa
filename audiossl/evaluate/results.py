"""Benchmark results: per task, one row per representation with its per-seed probe results, and
the margins of each pretrained row over its baselines.

Means are over seeds and the spread is the sample standard deviation (``ddof=1``; NaN for one
seed). A margin pairs runs by seed (seed ``s`` of the pretrained row with seed ``s`` of the random
encoder drawn with ``s``) and gives the mean and sample std of the differences, in accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from audiossl.evaluate.probes import ProbeResult

__all__ = ["Results", "RowResult", "TaskResult", "mean_std", "compute_margins"]


def mean_std(values: Sequence[float]) -> tuple:
    """``(mean, sample std)``; std NaN with fewer than two values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


@dataclass
class RowResult:
    """One table row: ``name`` = representation name (+ ``/variant``), ``group`` the checkpoint it
    belongs to or is a baseline for, ``info`` what it resolved to (pooling, layers, source)."""

    name: str
    kind: str
    group: str
    variant: str
    dim: int
    runs: List[ProbeResult]
    knn: List[ProbeResult] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)

    def accuracies(self, split: str = "test", probe: str = "main") -> List[float]:
        runs = self.runs if probe == "main" else self.knn
        return [r.valid_acc if split == "valid" else r.tests[split] for r in runs]

    def stat(self, split: str = "test", probe: str = "main") -> tuple:
        return mean_std(self.accuracies(split, probe))

    @property
    def test_mean(self) -> float:
        return self.stat("test")[0]

    @property
    def test_std(self) -> float:
        return self.stat("test")[1]

    @property
    def valid_mean(self) -> float:
        return self.stat("valid")[0]

    def to_dict(self) -> Dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "group": self.group, "variant": self.variant, "dim": self.dim,
               "info": self.info, "test_mean": self.test_mean, "test_std": self.test_std,
               "valid_mean": self.valid_mean, "valid_std": self.stat("valid")[1],
               "runs": [r.to_dict() for r in self.runs]}
        if self.knn:
            out["knn"] = [r.to_dict() for r in self.knn]
            out["knn_test_mean"], out["knn_test_std"] = self.stat("test", "knn")
        return out


@dataclass
class TaskResult:
    name: str
    source: str
    classes: List[str]
    sizes: Dict[str, int]
    chance: float
    eval_splits: List[str]
    rows: List[RowResult]
    margins: List[Dict[str, Any]] = field(default_factory=list)

    def row(self, name: str) -> RowResult:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"task {self.name!r} has no row {name!r}; rows: {[r.name for r in self.rows]}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "source": self.source, "classes": self.classes, "sizes": self.sizes,
                "chance": self.chance, "eval_splits": self.eval_splits, "rows": [r.to_dict() for r in self.rows],
                "margins": self.margins}


@dataclass
class Results:
    """Everything a run measured; ``stats`` counts passes and probes computed vs read from cache."""

    tasks: Dict[str, TaskResult]
    probe: str
    seeds: List[int]
    out: Optional[Path] = None
    stats: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"probe": self.probe, "seeds": self.seeds, "out": str(self.out) if self.out else None,
                "stats": self.stats, "tasks": {k: v.to_dict() for k, v in self.tasks.items()}}


def _paired(a: RowResult, b: RowResult) -> Dict[str, float]:
    diffs = [x - y for x, y in zip(a.accuracies(), b.accuracies())]
    mean, std = mean_std(diffs)
    return {"mean": mean, "std": std}


def compute_margins(rows: Sequence[RowResult]) -> List[Dict[str, Any]]:
    """For every checkpoint row: minus the random-init row of its group and variant, and minus
    the fbank row of its group (else the only or first fbank row)."""
    out: List[Dict[str, Any]] = []
    fbanks = [r for r in rows if r.kind == "fbank"]
    for r in rows:
        if r.kind != "checkpoint":
            continue
        rand = next((o for o in rows if o.kind == "random" and o.group == r.group and o.variant == r.variant), None)
        if rand is not None:
            out.append({"pretrained": r.name, "baseline": rand.name, "kind": "random", **_paired(r, rand)})
        fb = next((o for o in fbanks if o.group == r.group), fbanks[0] if fbanks else None)
        if fb is not None:
            out.append({"pretrained": r.name, "baseline": fb.name, "kind": "fbank", **_paired(r, fb)})
    return out


def fmt_pct(x: float, std: Optional[float] = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    text = f"{100 * x:.1f}"
    if std is not None:
        text += " ± —" if math.isnan(std) else f" ± {100 * std:.1f}"
    return text
