#!/usr/bin/env python3
"""Training curves of recipe runs as one PNG: a panel per run directory, plotting the losses and
accuracies found in its metrics.jsonl (nested ones such as a fine-tuning run's ``val.acc`` too)
against the optimiser step, on a log scale when the curves span more than a decade.

    python recipes/common/plot_curves.py OUT.png RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

CURVE_WORDS = ("loss", "acc", "map")


def flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = v
    return out


def read(path: Path) -> list:
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:  # a line torn by an interrupted write: the engines drop it on resume too
            print(f"{path}:{number}: not a JSON record, skipped", file=sys.stderr)
            continue
        if isinstance(record, dict):
            records.append(flatten(record))
    return records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("runs", nargs="+")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(Path(r), Path(r) / "metrics.jsonl") for r in args.runs]
    runs = [(r, m) for r, m in runs if m.is_file()]
    if not runs:
        print(f"no metrics.jsonl in {args.runs}", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, (run, metrics) in zip(axes[0], runs):
        records = read(metrics)
        x_key = "step" if "step" in records[0] else "epoch"
        keys = sorted({k for r in records for k in r
                       if any(w in k.split(".")[-1].lower() for w in CURVE_WORDS) and "classes" not in k})
        lows, highs = [], []
        for key in keys:
            pts = [(r[x_key], r[key]) for r in records if key in r and math.isfinite(r[key])]
            if pts:
                ax.plot(*zip(*pts), label=key, marker="." if len(pts) < 40 else None)
                ys = [y for _, y in pts if y > 0]
                if ys:
                    lows.append(min(ys))
                    highs.append(max(ys))
        if lows and max(highs) / min(lows) > 20:
            ax.set_yscale("log")
        ax.set_title(" / ".join(run.parts[-3:]), fontsize=9)
        ax.set_xlabel(x_key)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = args.out + ".partial.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
