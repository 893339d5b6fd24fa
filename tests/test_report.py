"""`audiossl report`: one CSV row per run, mean ± std per group, optimistic runs kept apart."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest

from audiossl.train.report import load_results, summarize, result_row, write_report


def _result(path, fold, acc, *, init="pretrained", task="finetune", selected_on="val", extra_acc=None):
    res = {
        "task": task, "init": init, "checkpoint": None, "model": "eat_tiny", "source": "eat_tiny",
        "split": {"column": "fold", "test_values": [fold], "train_values": [], "val_fraction": 0.1, "split_seed": 0},
        "selected_on": selected_on, "selected_epoch": 3, "select_metric": "acc", "loss": "ce",
        "metrics": {"val": {"acc": 0.5, "mAP": 0.4, "mAUC": 0.7, "d_prime": 0.7},
                    "test": {"acc": acc, "mAP": 0.6, "mAUC": 0.8, "d_prime": 1.19}},
        "extra": [] if extra_acc is None else [
            {"name": "ensemble", "epochs": [1, 3], "metrics": {"val": None, "test": {"acc": extra_acc}}}],
        "num_train_clips": 1440, "num_val_clips": 160, "num_test_clips": 400, "test_clips": "test_clips.txt",
        "epochs": 3, "steps": 90,
    }
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(res))
    return path / "results.json"


def test_mean_and_sample_std_over_folds(tmp_path):
    accs = [0.95, 0.9775, 0.9475, 0.97, 0.9425]  # AST's ESC-50 folds: mean .9575
    paths = [_result(tmp_path / f"f{k}", k, a, extra_acc=a + 0.01) for k, a in enumerate(accs, 1)]
    csv_path, md_path, groups = write_report(paths, tmp_path / "summary")
    assert len(groups) == 1
    g = groups[0]
    mean = sum(accs) / 5
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 4)
    assert g["n"] == 5 and g["mean"] == pytest.approx(0.9575) and g["std"] == pytest.approx(std)
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["split"] for r in rows] == [f"fold={k}" for k in range(1, 6)]
    assert float(rows[1]["test_acc"]) == pytest.approx(0.9775)
    assert float(rows[1]["ensemble_test_acc"]) == pytest.approx(0.9875)
    md = md_path.read_text()
    assert f"eat_tiny pretrained — finetune: {100 * mean:.1f} ± {100 * std:.1f}" in md and "± 1.5" in md
    assert "| fold=2 | val | 3 | 400 | 97.8 | 50.0 | 98.8 |" in md


def test_groups_and_optimistic_runs_are_separate(tmp_path):
    paths = [
        _result(tmp_path / "a1", 1, 0.6, task="linprobe"),
        _result(tmp_path / "a2", 2, 0.7, task="linprobe"),
        _result(tmp_path / "r1", 1, 0.3, init="random", task="linprobe"),
        _result(tmp_path / "o1", 1, 0.9, task="linprobe", selected_on="test (optimistic)"),
    ]
    groups = {g["label"]: g for g in summarize([result_row(r) for r in load_results(paths)], ["model", "init", "task"])}
    assert set(groups) == {"eat_tiny pretrained — linprobe", "eat_tiny random — linprobe",
                           "eat_tiny pretrained — linprobe [test-selected (optimistic)]"}
    assert groups["eat_tiny pretrained — linprobe"]["mean"] == pytest.approx(0.65)
    assert groups["eat_tiny random — linprobe"]["std"] == 0.0
    by_init = summarize([result_row(r) for r in load_results(paths)], ["init"])
    assert sorted(g["n"] for g in by_init) == [1, 1, 2]
    with pytest.raises(ValueError, match="cannot group"):
        summarize([], ["colour"])


def test_command(tmp_path, capsys):
    from audiossl.commands import report

    paths = [_result(tmp_path / f"f{k}", k, 0.5 + 0.1 * k) for k in (1, 2)]
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "f1"), str(paths[1]), "-o", str(tmp_path / "out" / "esc50"),
                              "--group-by", "init,task"])
    assert report.run(args) == 0
    assert "pretrained — finetune: 65.0 ± 7.1" in capsys.readouterr().out
    assert (tmp_path / "out" / "esc50.csv").is_file() and (tmp_path / "out" / "esc50.md").is_file()
