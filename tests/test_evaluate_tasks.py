"""audiossl/evaluate/tasks.py: a manifest becomes a task, and bad ones fail naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiossl.evaluate.tasks import EvaluateError, load_task


def _manifest(tmp_path: Path, rows, name="manifest.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["id", "path", "labels", "split"]).to_csv(path, index=False)
    return path


def _rows(splits=("train", "train", "valid", "valid", "test", "test"), labels=("a", "b") * 3):
    return [(f"c{i}", f"c{i}.wav", lab, s) for i, (lab, s) in enumerate(zip(labels, splits))]


def test_load_task_reads_splits_and_classes(tmp_path):
    path = _manifest(tmp_path, _rows() + [("u0", "u0.wav", "a", "test_unseen"), ("x", "x.wav", "b", "unused")])
    task = load_task(path, name="toy")
    assert task.name == "toy" and task.classes == ["a", "b"]
    assert list(task.splits) == ["train", "valid", "test", "test_unseen"]
    assert task.eval_splits == ["test", "test_unseen"]
    assert task.sizes() == {"train": 2, "valid": 2, "test": 2, "test_unseen": 1}
    np.testing.assert_array_equal(task.splits["train"].y, [0, 1])
    assert task.splits["test"].paths[0] == str(tmp_path / "c4.wav")  # relative to the manifest
    assert task.chance() == 0.5


def test_val_is_an_alias_of_valid(tmp_path):
    task = load_task(_manifest(tmp_path, _rows(splits=("train", "train", "val", "dev", "test", "test"))))
    assert task.sizes()["valid"] == 2


def test_missing_valid_split_names_the_file(tmp_path):
    path = _manifest(tmp_path, _rows(splits=("train", "train", "train", "train", "test", "test")))
    with pytest.raises(EvaluateError, match="no valid split") as exc:
        load_task(path)
    assert exc.value.path == str(path)


def test_class_missing_from_train_is_an_error(tmp_path):
    path = _manifest(tmp_path, _rows(labels=("a", "a", "a", "b", "a", "a")))
    with pytest.raises(EvaluateError, match=r"\['b'\] appear in the 'valid' split but not in train") as exc:
        load_task(path)
    assert str(path) in str(exc.value)


def test_multi_label_clip_is_an_error(tmp_path):
    rows = _rows()
    rows[0] = ("c0", "c0.wav", "a,b", "train")
    with pytest.raises(EvaluateError, match="'c0' has 2 labels"):
        load_task(_manifest(tmp_path, rows))


def test_max_per_split_keeps_every_class_and_is_stable(tmp_path):
    labels = ["a"] * 30 + ["b"] * 10 + ["c"] * 5
    rows = [(f"t{i}", f"t{i}.wav", lab, "train") for i, lab in enumerate(labels)]
    rows += [(f"v{i}", f"v{i}.wav", lab, "valid") for i, lab in enumerate("abc")]
    rows += [(f"e{i}", f"e{i}.wav", lab, "test") for i, lab in enumerate("abc")]
    path = _manifest(tmp_path, rows)
    a, b = load_task(path, max_per_split=9), load_task(path, max_per_split=9)
    assert a.splits["train"].ids == b.splits["train"].ids
    assert np.bincount(a.splits["train"].y).tolist() == [3, 3, 3]
    assert a.sizes()["valid"] == 3
