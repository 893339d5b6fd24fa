#!/usr/bin/env python3
"""Does pretraining make representations better than no pretraining? The learning benchmark.

Runs ``recipes/probe/run.sh`` (real-audio tasks from Debian packages → pooled training audio →
each tiny family pretrained on it → frozen embeddings probed with C chosen on valid, next to the
same encoder randomly initialised and pooled fbank statistics, in the same run) or reads a
finished run, then prints per task and family the test accuracy (mean ± std over probe seeds),
the margins over both baselines, the pretraining minutes, and the issue's targets:

* EAT's linear probe, with the ``embed`` defaults a user gets, beats its random init by ≥ 10
  points and is at least as good as pooled fbank statistics on every task;
* every other family beats its random init by ≥ 5 points on at least two tasks.

A task where fbank statistics reach ≥ 95 % is flagged: it rewards recording identity (one
speaker or microphone per class), not what the label names.

    python benchmarks/bench_learning.py --out exp/probe                 # run (or continue) the recipe
    python benchmarks/bench_learning.py --out exp/probe --no-run        # only read and print
    python benchmarks/bench_learning.py --out /tmp/q --steps 40 --seeds 2 --max-per-class 40  # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
EAT_MARGIN, OTHER_MARGIN, OTHER_TASKS, SHORTCUT = 0.10, 0.05, 2, 0.95


def pct(x: Optional[float], std: Optional[float] = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    s = f"{100 * x:5.1f}"
    if std is not None and not math.isnan(std):
        s += f" ± {100 * std:.1f}"
    return s


def default_rows(task: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """family → {pretrained, random, fbank row dicts, margins} for the default-variant rows."""
    rows = task["rows"]
    fbank = next((r for r in rows if r["kind"] == "fbank"), None)
    out: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        if r["kind"] != "checkpoint" or r["variant"] not in ("", "default"):
            continue
        rand = next((o for o in rows if o["kind"] == "random" and o["group"] == r["group"] and o["variant"] == r["variant"]), None)
        margins = {m["kind"]: m for m in task.get("margins", []) if m["pretrained"] == r["name"]}
        out[r["group"]] = {"pretrained": r, "random": rand, "fbank": fbank, "margins": margins}
    return out


def report(out: Path) -> int:
    summary = out / "eval" / "summary.json"
    if not summary.exists():
        print(f"{summary}: no results (run without --no-run)", file=sys.stderr)
        return 1
    results = json.loads(summary.read_text())
    minutes = {}
    mfile = out / "pretrain" / "minutes.txt"
    if mfile.exists():
        for line in mfile.read_text().splitlines():
            name, _, secs = line.strip().partition(":")
            if secs.strip().endswith("s"):
                minutes[name.strip()] = float(secs.strip()[:-1]) / 60
    tasks = results["tasks"]
    print(f"probe: {results['probe']}, seeds: {results['seeds']}; test accuracy %, mean ± std over seeds\n")
    header = f"{'task':18s} {'family':14s} {'pretrained':>13s} {'random init':>13s} {'fbank stats':>13s} {'Δ random':>14s} {'Δ fbank':>14s}"
    print(header)
    print("-" * len(header))
    wins: Dict[str, List[str]] = {}
    eat_ok: Dict[str, bool] = {}
    shortcut: List[str] = []
    for name, task in tasks.items():
        fams = default_rows(task)
        for fam, d in fams.items():
            p, r, f, m = d["pretrained"], d["random"], d["fbank"], d["margins"]
            dr, df = m.get("random", {}), m.get("fbank", {})
            print(f"{name:18s} {fam:14s} {pct(p['test_mean'], p['test_std']):>13s} "
                  f"{pct(r['test_mean'], r['test_std']) if r else '—':>13s} {pct(f['test_mean']) if f else '—':>13s} "
                  f"{pct(dr.get('mean'), dr.get('std')):>14s} {pct(df.get('mean'), df.get('std')):>14s}")
            margin = dr.get("mean", float("nan"))
            if fam.startswith("eat"):
                eat_ok[name] = margin >= EAT_MARGIN and df.get("mean", -1) >= 0
            elif margin >= OTHER_MARGIN:
                wins.setdefault(fam, []).append(name)
        fb = next((r for r in task["rows"] if r["kind"] == "fbank"), None)
        if fb and fb["test_mean"] >= SHORTCUT:
            shortcut.append(f"{name} (fbank {pct(fb['test_mean']).strip()} %)")
        print()
    if minutes:
        print("pretraining wall time: " + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items()))
    if shortcut:
        print("recording-identity shortcut (fbank statistics ≥ 95 %): " + "; ".join(shortcut))
    print("\ntargets")
    if eat_ok:
        bad = [t for t, ok in eat_ok.items() if not ok]
        print(f"  EAT ≥ random + {100 * EAT_MARGIN:.0f} and ≥ fbank on every task: "
              + ("met" if not bad else f"NOT met on {', '.join(bad)}"))
    families = {fam for t in tasks.values() for fam in default_rows(t) if not fam.startswith("eat")}
    for fam in sorted(families):
        got = wins.get(fam, [])
        ok = len(got) >= OTHER_TASKS
        print(f"  {fam} ≥ random + {100 * OTHER_MARGIN:.0f} on ≥ {OTHER_TASKS} tasks: "
              f"{'met' if ok else 'NOT met'} ({', '.join(got) or 'none'})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "exp" / "probe", help="the recipe's output folder")
    parser.add_argument("--no-run", action="store_true", help="only read a finished run")
    args, recipe_args = parser.parse_known_args(argv)
    if not args.no_run:
        cmd = ["bash", str(ROOT / "recipes" / "probe" / "run.sh"), "--out", str(args.out), *recipe_args]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return report(args.out)


if __name__ == "__main__":
    sys.exit(main())
