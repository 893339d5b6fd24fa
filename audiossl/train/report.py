"""Tables of fine-tuning / linear-probe results: one CSV row per run, Markdown per group.

``write_report(["exp/ft/fold1/results.json", ...], "exp/esc50_eat")`` writes

* ``exp/esc50_eat.csv``: one row per run — path, task, init, model, split (``fold=1``), how
  the epoch was selected, the number of test clips, then every test and val metric and the
  extra rows (``weight_average_test_acc``, ``ensemble_test_mAP``, ...);
* ``exp/esc50_eat.md``: per group (by default model, init and task) a table of the runs and
  ``mean ± std`` of the headline metric (accuracy for single-label runs, mAP for multi-label),
  in percent. The std is the sample standard deviation (``ddof=1``) over the runs, e.g. the 5
  ESC-50 folds; 0 for a single run.

Runs selected on the test split (upstream's optimistic protocol) always form groups of their
own, labelled "test-selected (optimistic)", so they are never averaged with honest ones.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from audiossl.files import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["GROUP_KEYS", "load_results", "result_row", "summarize", "write_report"]

GROUP_KEYS = ("model", "init", "task", "selected_on", "split", "source", "loss")
_METRICS = ("acc", "mAP", "mAUC", "d_prime")
OPTIMISTIC = "test (optimistic)"


def load_results(paths: Sequence[PathLike]) -> List[Dict[str, Any]]:
    """Each ``results.json`` (or a folder holding one), with its path under ``"path"``."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            p = p / "results.json"
        with open(p) as f:
            r = json.load(f)
        if not isinstance(r, dict) or "metrics" not in r:
            raise ValueError(f"{p}: not a results.json written by audiossl finetune/linprobe")
        r["path"] = str(p)
        out.append(r)
    return out


def split_label(split: Mapping[str, Any]) -> str:
    if "column" in split:
        return f"{split['column']}=" + ",".join(str(v) for v in split.get("test_values", []))
    if "test" in split:
        return Path(str(split["test"])).stem
    return ""


def headline(result: Mapping[str, Any]) -> str:
    """The metric a group reports: what the run selected on (acc single-label, mAP multi-label)."""
    return str(result.get("select_metric") or ("acc" if result.get("loss") == "ce" else "mAP"))


def result_row(result: Mapping[str, Any]) -> Dict[str, Any]:
    """One flat CSV row of a run."""
    row: Dict[str, Any] = {
        "path": result.get("path", ""),
        "task": result.get("task"),
        "init": result.get("init"),
        "model": result.get("model"),
        "source": result.get("source"),
        "split": split_label(result.get("split") or {}),
        "selected_on": result.get("selected_on"),
        "selected_epoch": result.get("selected_epoch"),
        "loss": result.get("loss"),
        "metric": headline(result),
        "num_test_clips": result.get("num_test_clips"),
    }
    for part in ("test", "val"):
        m = (result.get("metrics") or {}).get(part) or {}
        for k in _METRICS:
            row[f"{part}_{k}"] = m.get(k)
    for extra in result.get("extra") or []:
        for part in ("test", "val"):
            m = (extra.get("metrics") or {}).get(part) or {}
            for k in _METRICS:
                row[f"{extra['name']}_{part}_{k}"] = m.get(k)
    return row


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _group_label(key: Mapping[str, Any]) -> str:
    parts = [str(key[k]) for k in ("model", "init") if k in key]
    label = " ".join(parts)
    if "task" in key:
        label += f" — {key['task']}"
    others = [f"{k} {key[k]}" for k in key if k not in ("model", "init", "task", "selected_on")]
    if others:
        label += " (" + ", ".join(others) + ")"
    if key.get("selected_on") == OPTIMISTIC:
        label += " [test-selected (optimistic)]"
    return label.strip()


def summarize(rows: Sequence[Mapping[str, Any]], group_by: Sequence[str] = ("model", "init", "task")) -> List[Dict[str, Any]]:
    """Groups of rows with the mean ± std of their headline test metric (as fractions)."""
    bad = [k for k in group_by if k not in GROUP_KEYS]
    if bad:
        raise ValueError(f"cannot group by {bad}; choose from {list(GROUP_KEYS)}")
    keys = list(group_by) + (["selected_on"] if "selected_on" not in group_by else [])
    groups: Dict[Tuple[Any, ...], List[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for values, members in groups.items():
        key = dict(zip(keys, values))
        metrics = sorted({m["metric"] for m in members})
        metric = metrics[0] if len(metrics) == 1 else "mixed"
        scores = [float(m[f"test_{metric}"]) for m in members if metric != "mixed" and m.get(f"test_{metric}") is not None]
        mean, std = _mean_std(scores)
        out.append({"key": key, "label": _group_label(key), "metric": metric, "n": len(scores),
                    "mean": mean, "std": std, "rows": list(members)})
    return out


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100.0 * float(x):.1f}"


def _markdown(groups: Sequence[Mapping[str, Any]]) -> str:
    lines = ["# Results", ""]
    lines.append("| group | metric | runs | mean ± std (%) |")
    lines.append("|---|---|---|---|")
    for g in groups:
        lines.append(f"| {g['label']} | {g['metric']} | {g['n']} | {_pct(g['mean'])} ± {_pct(g['std'])} |")
    for g in groups:
        lines += ["", f"## {g['label']}", ""]
        extras = sorted({k[: -len('_test_' + g['metric'])] for r in g["rows"] for k in r
                         if k.endswith("_test_" + g["metric"]) and not k.startswith("test_") and r.get(k) is not None})
        head = ["split", "selected on", "epoch", "test clips", f"test {g['metric']}", f"val {g['metric']}"] + \
               [f"{e} test {g['metric']}" for e in extras]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in g["rows"]:
            m = g["metric"]
            cells = [str(r["split"]), str(r["selected_on"]), str(r["selected_epoch"]), str(r["num_test_clips"]),
                     _pct(r.get(f"test_{m}")), _pct(r.get(f"val_{m}"))] + [_pct(r.get(f"{e}_test_{m}")) for e in extras]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append(f"| **mean ± std** | | | | **{_pct(g['mean'])} ± {_pct(g['std'])}** | |" + " |" * len(extras))
        lines += ["", f"{g['label']}: {_pct(g['mean'])} ± {_pct(g['std'])} ({g['metric']}, {g['n']} runs, sample std)"]
    return "\n".join(lines) + "\n"


def write_report(paths: Sequence[PathLike], out_prefix: PathLike,
                 group_by: Sequence[str] = ("model", "init", "task")) -> Tuple[Path, Path, List[Dict[str, Any]]]:
    """Write ``OUT_PREFIX.csv`` and ``OUT_PREFIX.md``; returns both paths and the groups."""
    rows = [result_row(r) for r in load_results(paths)]
    rows.sort(key=lambda r: (str(r["model"]), str(r["init"]), str(r["task"]), str(r["split"])))
    columns: List[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    prefix = Path(out_prefix)
    csv_path = prefix.with_name(prefix.name + ".csv")
    md_path = prefix.with_name(prefix.name + ".md")
    groups = summarize(rows, group_by)
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(md_path, _markdown(groups))
    return csv_path, md_path, groups
