"""Files of a benchmark run, all written atomically (``name.partial`` → rename)::

    OUT/<task>/results.md   table: representation, kind, dim, test acc (mean ± std over seeds),
                            valid acc, the chosen hyper-parameter per seed, extra test splits,
                            k-NN, chance, n train/valid/test; then the margins
    OUT/<task>/results.csv  the same numbers, one row per representation, fractions in [0, 1]
    OUT/<task>/results.json every seed's probe result, grids included
    OUT/<task>/chart.png    bars: each checkpoint's default row, its random init, fbank, HEAR
                            entries, with std error bars and the chance line (needs matplotlib;
                            skipped with a log line without it)
    OUT/summary.md|csv|json every task side by side, and the margins per task

Percentages in Markdown, fractions in CSV/JSON.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

from audiossl.evaluate.cache import atomic_write_text, slug
from audiossl.evaluate.results import Results, RowResult, TaskResult, fmt_pct

logger = logging.getLogger(__name__)

__all__ = ["task_table", "write_summary", "write_task_report"]

_PARAM_LABEL = {"C": "C", "weight_decay": "wd", "k": "k"}
_COLOURS = {"checkpoint": "#1f77b4", "random": "#9e9e9e", "fbank": "#2ca02c", "hear": "#ff7f0e"}


def _chosen(row: RowResult, probe: str = "main") -> str:
    runs = row.runs if probe == "main" else row.knn
    parts = []
    for r in runs:
        text = f"{r.value:.3g}" + (f"@{r.epoch}" if r.epoch is not None else "")
        parts.append(text)
    if len(set(parts)) == 1:
        return parts[0] if parts else ""
    return ", ".join(parts)


def task_table(task: TaskResult) -> List[Dict[str, Any]]:
    """One dict per row, numbers as fractions (the CSV's rows)."""
    out = []
    for row in task.rows:
        d: Dict[str, Any] = {"representation": row.name, "kind": row.kind, "group": row.group, "variant": row.variant,
                             "dim": row.dim, "probe": row.runs[0].probe if row.runs else "",
                             "test_mean": row.test_mean, "test_std": row.test_std,
                             "valid_mean": row.valid_mean, "valid_std": row.stat("valid")[1],
                             "param": row.runs[0].param if row.runs else "", "chosen": _chosen(row)}
        for split in task.eval_splits[1:]:
            d[f"{split}_mean"], d[f"{split}_std"] = row.stat(split)
        if row.knn:
            d["knn_test_mean"], d["knn_test_std"] = row.stat("test", "knn")
            d["knn_k"] = _chosen(row, "knn")
        d["chance"] = task.chance
        for split in ("train", "valid", "test"):
            d[f"n_{split}"] = task.sizes.get(split, 0)
        d["pooling"] = row.info.get("pooling")
        d["layers"] = json.dumps(row.info.get("layers"))
        d["seeds"] = len(row.runs)
        out.append(d)
    return out


def _markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    text = "| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|\n"
    return text + "".join("| " + " | ".join(str(c) for c in line) + " |\n" for line in lines)


def _margin_lines(task: TaskResult) -> List[str]:
    lines = []
    for m in task.margins:
        sign = "+" if m["mean"] >= 0 else "−"
        std = "" if math.isnan(m["std"]) else f" ± {100 * m['std']:.1f}"
        lines.append(f"- {m['pretrained']} − {m['baseline']} ({m['kind']}): {sign}{abs(100 * m['mean']):.1f}{std} points")
    return lines


def task_markdown(task: TaskResult, probe: str, seeds: int) -> str:
    has_knn = any(r.knn for r in task.rows)
    param = _PARAM_LABEL.get(task.rows[0].runs[0].param, "param") if task.rows and task.rows[0].runs else "param"
    header = ["representation", "kind", "dim", "test acc %", "valid acc %", f"chosen {param}"]
    header += [f"{s} acc %" for s in task.eval_splits[1:]]
    header += ["k-NN test %", "k"] if has_knn else []
    header += ["chance %", "n train", "n valid", "n test"]
    lines = []
    for row in task.rows:
        line = [row.name, row.kind, row.dim, fmt_pct(*row.stat("test")), fmt_pct(row.valid_mean), _chosen(row)]
        line += [fmt_pct(*row.stat(s)) for s in task.eval_splits[1:]]
        if has_knn:
            line += [fmt_pct(*row.stat("test", "knn")), _chosen(row, "knn")] if row.knn else ["", ""]
        line += [fmt_pct(task.chance)] + [task.sizes.get(s, 0) for s in ("train", "valid", "test")]
        lines.append(line)
    sizes = " · ".join(f"{k} {v}" for k, v in task.sizes.items())
    text = (f"# {task.name}: {probe} probe, {seeds} seed(s)\n\n"
            f"Manifest `{task.source}`; {len(task.classes)} classes; clips: {sizes}. Test accuracy is mean ± "
            f"sample std over seeds of the probe chosen on valid; chance = always answering train's most "
            f"frequent class.\n\n")
    text += _markdown_table(header, lines)
    margins = _margin_lines(task)
    if margins:
        text += "\nMargins on test (accuracy points, mean ± std of the seed-paired differences):\n\n"
        text += "\n".join(margins) + "\n"
    return text


def _csv_text(rows: Sequence[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _json_text(obj: Any) -> str:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), indent=1) + "\n"


def chart_rows(task: TaskResult) -> List[RowResult]:
    """Bars of the chart: default rows (no variant) and HEAR entries."""
    return [r for r in task.rows if not r.variant]


def write_chart(task: TaskResult, path: Path, probe: str) -> bool:
    """The PNG bar chart; False (and a log line) when matplotlib is missing."""
    from audiossl.viz import new_figure, save_png

    rows = chart_rows(task)
    try:
        fig = new_figure("the benchmark chart", figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6), dpi=110)
    except ImportError:
        logger.info("matplotlib is not installed: no chart for %s (pip install matplotlib)", task.name)
        return False
    ax = fig.add_subplot(1, 1, 1)
    means = [100 * r.test_mean for r in rows]
    stds = [0.0 if math.isnan(r.test_std) else 100 * r.test_std for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=[_COLOURS.get(r.kind, "#555555") for r in rows])
    ax.axhline(100 * task.chance, color="black", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name for r in rows], rotation=20, ha="right")
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 100)
    ax.set_title(f"{task.name} ({probe} probe)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    return True


def write_task_report(task: TaskResult, folder: Path, probe: str, seeds: int, chart: bool = True) -> Dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"md": folder / "results.md", "csv": folder / "results.csv", "json": folder / "results.json"}
    atomic_write_text(paths["md"], task_markdown(task, probe, seeds))
    atomic_write_text(paths["csv"], _csv_text(task_table(task)))
    atomic_write_text(paths["json"], _json_text({"probe": probe, "seeds": seeds, **task.to_dict()}))
    if chart and write_chart(task, folder / "chart.png", probe):
        paths["png"] = folder / "chart.png"
    return paths


def summary_markdown(results: Results) -> str:
    names: List[str] = []
    for task in results.tasks.values():
        names += [r.name for r in task.rows if r.name not in names]
    header = ["representation"] + list(results.tasks)
    lines = []
    for name in names:
        line = [name]
        for task in results.tasks.values():
            row = next((r for r in task.rows if r.name == name), None)
            line.append(fmt_pct(*row.stat("test")) if row else "")
        lines.append(line)
    line = ["chance"] + [fmt_pct(t.chance) for t in results.tasks.values()]
    text = (f"# Representation benchmark: {results.probe} probe, seeds {results.seeds}\n\n"
            "Test accuracy %, mean ± sample std over seeds; hyper-parameters chosen on valid.\n\n")
    text += _markdown_table(header, lines + [line])
    for task in results.tasks.values():
        margins = _margin_lines(task)
        if margins:
            text += f"\n## {task.name}: margins (test accuracy points)\n\n" + "\n".join(margins) + "\n"
    return text


def write_summary(results: Results, out: Path, chart: bool = True) -> Dict[str, Path]:
    out = Path(out)
    paths = {"md": out / "summary.md", "csv": out / "summary.csv", "json": out / "summary.json"}
    rows = []
    for task in results.tasks.values():
        for d in task_table(task):
            rows.append({"task": task.name, **d})
    atomic_write_text(paths["md"], summary_markdown(results))
    atomic_write_text(paths["csv"], _csv_text(rows))
    atomic_write_text(paths["json"], _json_text(results.to_dict()))
    return paths


def task_folder(out: Path, name: str) -> Path:
    return Path(out) / slug(name)
