"""``evaluate()``: tasks × representations → cached embedding passes → probes per seed → report.

Per task, each representation's pass is read from ``OUT/cache/<task>/`` or computed and saved
there at once, so a killed run resumes at the first missing pass; probe results are cached too
(``probes.json``), so a complete re-run fits nothing. Seeds: ``seeds=3`` means seeds 0, 1, 2. A
random-init representation draws its encoder with each seed; the ``linear`` probe uses the seed
for its initial weights and batch order; ``logreg`` and ``knn`` have no randomness, so on a fixed
representation (checkpoint, fbank, HEAR) they are fitted once and every seed reports that result
(std 0: the spread there can only come from the representation).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from audiossl.evaluate.cache import PassCache, ProbeCache, slug
from audiossl.evaluate.probes import PROBES, SEEDLESS_PROBES, ProbeResult, probe_accuracy
from audiossl.evaluate.report import task_folder, write_summary, write_task_report
from audiossl.evaluate.representations import (
    DEFAULT_BATCH,
    PassKey,
    RepresentationSpec,
    WaveCache,
    compute_pass,
    row_features,
    row_name,
    spec_rows,
)
from audiossl.evaluate.results import Results, RowResult, TaskResult, compute_margins
from audiossl.evaluate.tasks import EvaluateError, Task, load_task, task_from_manifest

logger = logging.getLogger(__name__)

__all__ = ["evaluate", "standard_representations"]

PathLike = Union[str, "os.PathLike[str]"]


def standard_representations(
    checkpoints: Mapping[str, PathLike],
    *,
    baselines: Sequence[str] = ("random", "fbank"),
    layers: Sequence[Any] = (),
    poolings: Sequence[str] = (),
    hear: Mapping[str, Tuple[str, Optional[str]]] = (),
) -> List[RepresentationSpec]:
    """The CLI's line-up: per checkpoint its default row, the explicit ``poolings`` × ``layers``
    variants, and (``"random"`` in ``baselines``) the same rows from a random-init encoder; one
    ``fbank`` row on the first checkpoint's front end (presets without a checkpoint); then each
    ``hear`` entry ``name: (module, model path or None)``."""
    unknown = sorted(set(baselines) - {"random", "fbank"})
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from random, fbank")
    variants = [(p, l) for p in (list(poolings) or [None]) for l in (list(layers) or [None]) if (p, l) != (None, None)]
    specs: List[RepresentationSpec] = []
    for name, path in checkpoints.items():
        path = os.fspath(path)
        specs.append(RepresentationSpec(name, "checkpoint", path))
        specs += [RepresentationSpec(name, "checkpoint", path, pooling=p, layers=l) for p, l in variants]
        if "random" in baselines:
            specs.append(RepresentationSpec(f"{name}-random", "random", path, reference=name))
            specs += [RepresentationSpec(f"{name}-random", "random", path, pooling=p, layers=l, reference=name)
                      for p, l in variants]
    if "random" in baselines and not checkpoints:
        logger.info("no checkpoint given: the random-init baseline is skipped (it mirrors a checkpoint)")
    if "fbank" in baselines:
        first = next(iter(checkpoints.items()), None)
        specs.append(RepresentationSpec("fbank", "fbank", os.fspath(first[1]) if first else None,
                                        reference=first[0] if first else None))
    for name, (module, path) in dict(hear).items():
        specs.append(RepresentationSpec(name, "hear", os.fspath(path) if path else None, module=module))
    return specs


def _as_tasks(tasks: Mapping[str, Any], max_per_split: Optional[int]) -> Dict[str, Task]:
    from audiossl.data.manifest import Manifest

    out: Dict[str, Task] = {}
    for name, value in tasks.items():
        if isinstance(value, Task):
            out[name] = value
        elif isinstance(value, Manifest):
            out[name] = task_from_manifest(value, name, max_per_split)
        else:
            out[name] = load_task(value, name=name, max_per_split=max_per_split)
    if not out:
        raise ValueError("no task given")
    return out


def _clips_hash(task: Task) -> str:
    h = hashlib.sha1()
    for split, s in sorted(task.splits.items()):
        h.update(split.encode())
        for clip_id, path in zip(s.ids, s.paths):
            h.update(f"\0{clip_id}\0{path}".encode())
    return h.hexdigest()[:16]


class _TaskRun:
    """One task's passes and probes, with their caches."""

    def __init__(self, task: Task, out: Path, stats: Dict[str, int], waves: WaveCache, device: str,
                 batch_size: int, progress: bool) -> None:
        self.task = task
        root = Path(out) / "cache" / slug(task.name)
        self.passes = PassCache(root)
        self.probes = ProbeCache(root)
        self.memo: Dict[PassKey, Tuple[Dict[str, np.ndarray], Dict[str, Any], str]] = {}
        self.stats, self.waves = stats, waves
        self.device, self.batch_size, self.progress = device, batch_size, progress
        self.clips = _clips_hash(task)
        self.ids = {s: task.splits[s].ids for s in task.splits}

    def features(self, key: PassKey):
        if key in self.memo:
            return self.memo[key]
        path = self.passes.path(key.label, {**key.cache_key(), "clips": self.clips})
        loaded = self.passes.load(path, self.ids)
        if loaded is None:
            feats, meta = compute_pass(key, self.task, self.waves, device=self.device, batch_size=self.batch_size,
                                       progress=self.progress)
            self.passes.save(path, feats, self.ids, meta)
            self.stats["passes_computed"] += 1
        else:
            feats, meta = loaded
            self.stats["passes_cached"] += 1
        self.memo[key] = (feats, meta, path.name)
        return self.memo[key]

    def probe(self, probe: str, feats: Dict[str, np.ndarray], fid: str, seed: int,
              options: Mapping[str, Any]) -> ProbeResult:
        seedless = probe in SEEDLESS_PROBES
        key = {"features": fid, "probe": probe, "seed": None if seedless else seed, "options": dict(options)}
        hit = self.probes.get(key)
        if hit is not None:
            self.stats["probes_cached"] += 1
            result = ProbeResult.from_dict(hit)
        else:
            splits = self.task.splits
            extra = {s: (feats[s], splits[s].y) for s in self.task.eval_splits[1:]}
            result = probe_accuracy(feats["train"], splits["train"].y, feats["valid"], splits["valid"].y,
                                    feats["test"], splits["test"].y, probe=probe, seed=seed, extra_tests=extra,
                                    num_classes=self.task.num_classes, **options)
            self.probes.put(key, result.to_dict())
            self.stats["probes_fitted"] += 1
        result.seed = int(seed)
        return result

    def rows(self, spec: RepresentationSpec, seeds: Sequence[int], probe: str, knn: bool,
             options: Mapping[str, Any]) -> List[RowResult]:
        if spec.pooling == "cls" and spec.path and not _has_cls(spec.path):
            logger.info("%s: %s has no CLS token: no cls rows", self.task.name, spec.name)
            return []
        per_seed = {s: self.features(PassKey.of(spec, s)) for s in (seeds if spec.seeded else seeds[:1])}
        _, meta, _ = per_seed[seeds[0]]
        out = []
        for variant, selector in spec_rows(spec, meta.get("depth")):
            runs, knn_runs, dim = [], [], 0
            for seed in seeds:
                feats, _, fid = per_seed[seed if spec.seeded else seeds[0]]
                x = {split: row_features(a, selector) for split, a in feats.items()}
                dim = x["train"].shape[1]
                fid_row = f"{fid}:{variant}"
                runs.append(self.probe(probe, x, fid_row, seed, options))
                if knn:
                    knn_runs.append(self.probe("knn", x, fid_row, seed, {}))
            info = {"source": spec.path or spec.module, "pooling": meta.get("pooling"), "layers": meta.get("layers"),
                    "layer_mean": meta.get("layer_mean") or None,
                    "selector": list(selector) if selector else None, "family": meta.get("family")}
            out.append(RowResult(row_name(spec, variant), spec.kind, spec.group, variant, dim, runs, knn_runs,
                                 {k: v for k, v in info.items() if v is not None}))
        return out


def _has_cls(path: str) -> bool:
    """Whether the checkpoint's encoder has a prefix token (``--pooling cls`` rows of a CLS-less
    family, MAE-AST or I-JEPA, are left out instead of stopping a multi-family run)."""
    from audiossl.models.registry import encoder_from_checkpoint

    return encoder_from_checkpoint(path)[0].num_prefix > 0


def evaluate(
    tasks: Mapping[str, Any],
    representations: Sequence[RepresentationSpec],
    *,
    probe: str = "logreg",
    seeds: Union[int, Sequence[int]] = 3,
    out: PathLike,
    knn: bool = False,
    max_per_split: Optional[int] = None,
    probe_options: Optional[Mapping[str, Any]] = None,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    progress: bool = True,
    chart: bool = True,
) -> Results:
    """Probe every representation on every task and write the report (see the package doc).

    ``tasks``: ``{name: manifest path | Manifest | Task}``. ``seeds``: a count (0..n-1) or the
    seeds themselves. ``probe_options`` go to :func:`probe_accuracy` (``grid``, ``epochs``, ...)."""
    if probe not in PROBES or probe == "knn":
        raise ValueError(f"probe must be 'logreg' or 'linear' (knn is added with knn=True), got {probe!r}")
    seed_list = list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be a positive count or distinct seeds, got {seeds!r}")
    if len(seed_list) < 3:
        logger.warning("%d seed(s): the protocol reports mean ± std over at least 3", len(seed_list))
    if not representations:
        raise ValueError("no representation given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task_objs = _as_tasks(tasks, max_per_split)
    stats = {"passes_computed": 0, "passes_cached": 0, "probes_fitted": 0, "probes_cached": 0}
    waves = WaveCache()
    options = dict(probe_options or {})
    results = Results({}, probe, seed_list, out, stats)
    for name, task in task_objs.items():
        run = _TaskRun(task, out, stats, waves, device, batch_size, progress)
        rows: List[RowResult] = []
        for spec in representations:
            for row in run.rows(spec, seed_list, probe, knn, options):
                if any(r.name == row.name for r in rows):
                    raise EvaluateError(None, f"two representations give the row {row.name!r}; rename one")
                rows.append(row)
            logger.info("%s: %s done", name, spec.name)
        result = TaskResult(task.name, task.source, task.classes, task.sizes(), task.chance("test"),
                            task.eval_splits, rows, compute_margins(rows))
        results.tasks[name] = result
        write_task_report(result, task_folder(out, name), probe, len(seed_list), chart=chart)
        waves = WaveCache()  # the next task's clips are other files
    write_summary(results, out)
    logger.info("passes: %d computed, %d from cache; probes: %d fitted, %d from cache", stats["passes_computed"],
                stats["passes_cached"], stats["probes_fitted"], stats["probes_cached"])
    return results
