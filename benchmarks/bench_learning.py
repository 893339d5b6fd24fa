#!/usr/bin/env python3
"""Does pretraining make representations better than no pretraining? The learning benchmark.

Runs ``recipes/probe/run.sh`` (real-audio tasks from Debian packages → pooled training audio →
each tiny family pretrained on it → frozen embeddings probed with C chosen on valid, next to the
same encoder randomly initialised and pooled fbank statistics, in the same run) or reads a
finished run, then prints per task and family the test accuracy (mean ± std over probe seeds,
or over pretraining runs where a family has several), the margins over both baselines, the
pretraining minutes, and the issue's targets:

* EAT's linear probe, with the ``embed`` defaults a user gets, beats its random init by ≥ 10
  points and is at least as good as pooled fbank statistics on every task;
* every other family beats its random init by ≥ 5 points on at least two tasks.

A task where fbank statistics reach ≥ 95 % is flagged: it rewards recording identity (one
speaker or microphone per class), not what the label names. So is a task where the random-init
encoder already scores above 90 %: a 10-point margin over it cannot exist there.

    python benchmarks/bench_learning.py --out exp/probe                 # run (or continue) the recipe
    python benchmarks/bench_learning.py --out exp/probe --no-run        # only read and print
    python benchmarks/bench_learning.py --out /tmp/q --steps 40 --seeds 2 --max-per-split 60  # smoke
    python benchmarks/bench_learning.py --out exp/probe --pretrain-runs 2   # two pretraining seeds
        # per family: every number becomes the mean over runs, its ± the std over runs
    python benchmarks/bench_learning.py --out exp/probe --no-run --curves eat maeast_patch
        # the evidence over training: loss parts, prediction/target variance and every block's probe
        # accuracy at each saved checkpoint (exp/probe/curves/<family>.png and .json)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from audiossl.evaluate.results import mean_std  # noqa: E402  (the evaluation's own mean ± sample std)

EAT_MARGIN, OTHER_MARGIN, OTHER_TASKS, SHORTCUT = 0.10, 0.05, 2, 0.95


def pct(x: Optional[float], std: Optional[float] = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    s = f"{100 * x:5.1f}"
    if std is not None and not math.isnan(std):
        s += f" ± {100 * std:.1f}"
    return s


def default_rows(task: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """checkpoint name → {pretrained, random, fbank row dicts, margins} for the default-variant rows."""
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


_RUN = re.compile(r"^(.+)-run(\d+)$")


def family_of(name: str) -> str:
    """``eat-run2`` → ``eat``: the recipe's ``--pretrain-runs`` names run k of a family so."""
    m = _RUN.match(name)
    return m.group(1) if m else name


def family_rows(task: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """family → the default rows of its pretraining runs, averaged.

    One run: its own numbers, std over probe seeds. Several runs (``eat``, ``eat-run2``, …): each
    number is the mean over runs and each std the std over runs (of the per-run probe-seed
    means), because the pretraining seed, not the probe seed, is the larger error bar; ``runs``
    keeps every run's margin over random init."""
    by_family: Dict[str, List[Dict[str, Any]]] = {}
    for name, d in default_rows(task).items():
        by_family.setdefault(family_of(name), []).append(d)
    out: Dict[str, Dict[str, Any]] = {}
    for fam, ds in by_family.items():
        def agg(get):
            values = [get(d) for d in ds]
            if len(ds) == 1:
                return values[0]
            return mean_std([v[0] for v in values])
        pre = agg(lambda d: (d["pretrained"]["test_mean"], d["pretrained"]["test_std"]))
        rnd = agg(lambda d: (d["random"]["test_mean"], d["random"]["test_std"]) if d["random"] else (float("nan"),) * 2)
        dr = agg(lambda d: (d["margins"].get("random", {}).get("mean", float("nan")),
                            d["margins"].get("random", {}).get("std", float("nan"))))
        df = agg(lambda d: (d["margins"].get("fbank", {}).get("mean", float("nan")),
                            d["margins"].get("fbank", {}).get("std", float("nan"))))
        fb = ds[0]["fbank"]
        out[fam] = {"pretrained": pre, "random": rnd if ds[0]["random"] else None,
                    "fbank": (fb["test_mean"], fb["test_std"]) if fb else None,
                    "random_margin": dr, "fbank_margin": df, "n_runs": len(ds),
                    "runs": [d["margins"].get("random", {}).get("mean", float("nan")) for d in ds]}
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
    n_runs = {fam: d["n_runs"] for t in tasks.values() for fam, d in family_rows(t).items()}
    print(f"probe: {results['probe']}, seeds: {results['seeds']}; test accuracy %, mean ± std over probe seeds")
    several = {f: n for f, n in n_runs.items() if n > 1}
    if several:
        print("pretraining runs: " + ", ".join(f"{f} {n}" for f, n in several.items())
              + " (their rows: mean ± std over pretraining runs; last column: each run's Δ random)")
    print()
    header = (f"{'task':18s} {'family':18s} {'pretrained':>13s} {'random init':>13s} {'fbank stats':>13s} "
              f"{'Δ random':>14s} {'Δ fbank':>14s}" + ("  runs' Δ random" if several else ""))
    print(header)
    print("-" * len(header))
    wins: Dict[str, List[str]] = {}
    eat_ok: Dict[str, bool] = {}
    shortcut: List[str] = []
    ceiling: List[str] = []
    for name, task in tasks.items():
        for fam, d in family_rows(task).items():
            p, r, f, dr, df = d["pretrained"], d["random"], d["fbank"], d["random_margin"], d["fbank_margin"]
            line = (f"{name:18s} {fam:18s} {pct(*p):>13s} {pct(*r) if r else '—':>13s} {pct(f[0]) if f else '—':>13s} "
                    f"{pct(*dr):>14s} {pct(*df):>14s}")
            if d["n_runs"] > 1:
                line += "  " + ", ".join(f"{100 * v:+.1f}" for v in d["runs"])
            print(line)
            margin = dr[0]
            if fam.startswith("eat"):
                eat_ok[name] = margin >= EAT_MARGIN and df[0] >= 0
                if r and r[0] + EAT_MARGIN > 1.0:
                    ceiling.append(f"{name} ({fam} random init {pct(r[0]).strip()} %)")
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
    if ceiling:
        print(f"no room for +{100 * EAT_MARGIN:.0f} over random init: " + "; ".join(ceiling))
    print("\ntargets" + (" (mean over pretraining runs)" if several else ""))
    if eat_ok:
        bad = [t for t, ok in eat_ok.items() if not ok]
        print(f"  EAT ≥ random + {100 * EAT_MARGIN:.0f} and ≥ fbank on every task: "
              + ("met" if not bad else f"NOT met on {', '.join(bad)}"))
    families = {fam for t in tasks.values() for fam in family_rows(t) if not fam.startswith("eat")}
    for fam in sorted(families):
        got = wins.get(fam, [])
        ok = len(got) >= OTHER_TASKS
        print(f"  {fam} ≥ random + {100 * OTHER_MARGIN:.0f} on ≥ {OTHER_TASKS} tasks: "
              f"{'met' if ok else 'NOT met'} ({', '.join(got) or 'none'})")
    return 0


def curves(out: Path, family: str, max_per_split: int = 400) -> Path:
    """Per-layer probe accuracy (logreg, test) of every saved checkpoint of ``family``'s run,
    with the run's loss parts and variances, as one PNG and JSON under ``out/curves``."""
    from audiossl.evaluate import RepresentationSpec, evaluate

    run = out / "pretrain" / family
    ckpts = sorted(run.glob("checkpoint-*.pt"))
    if not ckpts:
        raise SystemExit(f"{run}: no saved checkpoints (keep_last keeps the newest only)")
    tasks = {p.parent.name: p for p in sorted((out / "tasks").glob("*/manifest.csv"))}
    step_of = {c: int(re.search(r"(\d+)", c.stem).group(1)) for c in ckpts}
    specs = [RepresentationSpec(f"step{step_of[c]}", "checkpoint", str(c), layers="all") for c in ckpts]
    specs.append(RepresentationSpec("step0", "random", str(ckpts[0]), layers="all"))
    res = evaluate(tasks, specs, seeds=[0], out=out / "curves" / family / "eval", max_per_split=max_per_split,
                   progress=False, chart=False)
    probes: Dict[str, Dict[int, Dict[str, float]]] = {}
    for tname, task in res.tasks.items():
        for row in task.rows:
            if not re.fullmatch(r"L\d+", row.variant):
                continue
            step = int(row.name.split("/")[0].replace("step", ""))
            probes.setdefault(tname, {}).setdefault(step, {})[row.variant] = row.test_mean
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    folder = out / "curves"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{family}.json").write_text(json.dumps({"probes": probes, "metrics": metrics}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    steps = [m["step"] for m in metrics]
    loss_keys = [k for k in ("loss", "frame_loss", "utterance_loss", "mse", "nce") if k in metrics[0]]
    for k in loss_keys:
        axes[0].plot(steps, [m[k] for m in metrics], label=k)
    axes[0].set_yscale("log"); axes[0].set_xlabel("step"); axes[0].set_title(f"{family}: losses"); axes[0].legend()
    for k in ("pred_var", "target_var"):
        if k in metrics[0]:
            axes[1].plot(steps, [m[k] for m in metrics], label=k)
    if "ema" in metrics[0]:
        axes[1].plot(steps, [m["ema"] for m in metrics], label="ema τ", linestyle=":")
    axes[1].set_xlabel("step"); axes[1].set_title("prediction / target variance"); axes[1].legend()
    for tname, by_step in probes.items():
        xs = sorted(by_step)
        layers = sorted(by_step[xs[0]])
        for layer in layers:
            axes[2].plot(xs, [100 * by_step[x][layer] for x in xs], marker="o", label=f"{tname} {layer}")
    axes[2].set_xlabel("step (0 = random init)"); axes[2].set_ylabel("test accuracy %")
    axes[2].set_title("per-block linear probe"); axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    png = folder / f"{family}.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    for tname, by_step in probes.items():
        print(f"{family} {tname}: " + "; ".join(
            f"step {x}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in sorted(by_step[x].items())) for x in sorted(by_step)))
    return png


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "exp" / "probe", help="the recipe's output folder")
    parser.add_argument("--no-run", action="store_true", help="only read a finished run")
    parser.add_argument("--curves", nargs="+", metavar="FAMILY", default=[],
                        help="also probe every block of each saved checkpoint of these families' runs")
    args, recipe_args = parser.parse_known_args(argv)
    if not args.no_run:
        cmd = ["bash", str(ROOT / "recipes" / "probe" / "run.sh"), "--out", str(args.out), *recipe_args]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    rc = report(args.out)
    for family in args.curves:
        print(f"\n{curves(args.out, family)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
