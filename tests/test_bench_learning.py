"""benchmarks/bench_learning.py's report: the numbers it prints and the targets it judges come
from the evaluation's summary, averaged over a family's pretraining runs where there are several
(``recipes/probe/run.sh --pretrain-runs N`` names them ``eat``, ``eat-run2``, …)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", ROOT / "benchmarks" / "bench_learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name: str, kind: str, group: str, tests: List[float]) -> Dict:
    mean = sum(tests) / len(tests)
    std = (sum((t - mean) ** 2 for t in tests) / (len(tests) - 1)) ** 0.5
    return {"name": name, "kind": kind, "group": group, "variant": "", "test_mean": mean, "test_std": std,
            "runs": [{"tests": {"test": t}} for t in tests]}


def _task(rows: List[Dict], fbank: float) -> Dict:
    rows = rows + [_row("fbank", "fbank", "fbank", [fbank, fbank])]
    by_name = {r["name"]: r for r in rows}
    margins = []
    for r in rows:
        if r["kind"] != "checkpoint":
            continue
        rand = by_name[f"{r['name']}-random"]
        margins.append({"pretrained": r["name"], "kind": "random", "mean": r["test_mean"] - rand["test_mean"], "std": 0.01})
        margins.append({"pretrained": r["name"], "kind": "fbank", "mean": r["test_mean"] - fbank, "std": 0.0})
    return {"rows": rows, "margins": margins}


def _write(out: Path, tasks: Dict[str, Dict]) -> Path:
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "summary.json").write_text(json.dumps({"probe": "logreg", "seeds": [0, 1], "tasks": tasks}))
    return out


def _pair(name: str, group_tests: List[float], random_tests: List[float]) -> List[Dict]:
    return [_row(name, "checkpoint", name, group_tests), _row(f"{name}-random", "random", name, random_tests)]


def test_runs_of_a_family_are_averaged_and_judged_on_their_mean(bench, tmp_path: Path, capsys) -> None:
    # EAT: run 1 +2 points, run 2 +16: the mean +9 misses the 10-point target that run 2 alone meets.
    drums = _task(_pair("eat", [0.70, 0.72], [0.69, 0.69]) + _pair("eat-run2", [0.84, 0.86], [0.69, 0.69])
                  + _pair("maeast_patch", [0.80, 0.80], [0.70, 0.70]), fbank=0.75)
    lid = _task(_pair("eat", [0.60, 0.60], [0.40, 0.40]) + _pair("eat-run2", [0.62, 0.62], [0.40, 0.40])
                + _pair("maeast_patch", [0.52, 0.52], [0.40, 0.40]), fbank=0.35)
    out = _write(tmp_path / "probe", {"drums": drums, "espeak_lid": lid})

    fams = bench.family_rows(drums)
    assert set(fams) == {"eat", "maeast_patch"}
    eat = fams["eat"]
    assert eat["n_runs"] == 2
    assert eat["pretrained"][0] == pytest.approx(0.78)
    assert eat["random_margin"][0] == pytest.approx(0.09)
    assert eat["random_margin"][1] == pytest.approx(((0.02 - 0.09) ** 2 + (0.16 - 0.09) ** 2) ** 0.5)  # over runs
    assert eat["runs"] == pytest.approx([0.02, 0.16])
    single = fams["maeast_patch"]
    assert single["n_runs"] == 1 and single["random_margin"] == pytest.approx((0.10, 0.01))  # probe-seed std kept

    assert bench.report(out) == 0
    text = capsys.readouterr().out
    assert "pretraining runs: eat 2" in text
    eat_drums = next(line for line in text.splitlines() if line.startswith("drums") and " eat " in line)
    assert "+2.0, +16.0" in eat_drums and "78.0 ± 9.9" in eat_drums
    assert "NOT met on drums" in text and "espeak_lid" not in text.split("NOT met on")[1].splitlines()[0]
    assert "maeast_patch ≥ random + 5 on ≥ 2 tasks: met (drums, espeak_lid)" in text


def test_one_run_per_family_prints_as_before(bench, tmp_path: Path, capsys) -> None:
    task = _task(_pair("eat", [0.90, 0.92], [0.70, 0.72]) + _pair("ijepa", [0.70, 0.70], [0.69, 0.69]), fbank=0.80)
    out = _write(tmp_path / "probe", {"drums": task, "espeak_lid": task})
    assert bench.report(out) == 0
    text = capsys.readouterr().out
    assert "pretraining runs" not in text and "runs' Δ random" not in text
    assert "EAT ≥ random + 10 and ≥ fbank on every task: met" in text
    assert "ijepa ≥ random + 5 on ≥ 2 tasks: NOT met (none)" in text


@pytest.mark.parametrize("name,family", [("eat", "eat"), ("eat-run2", "eat"), ("maeast_patch-run12", "maeast_patch"),
                                         ("my-run", "my-run"), ("ssast_patch", "ssast_patch")])
def test_family_of_strips_only_the_recipes_run_suffix(bench, name: str, family: str) -> None:
    assert bench.family_of(name) == family
