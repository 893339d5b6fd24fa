"""audiossl/data/formats/esc50.py: ESC-50's meta file and audio folder, its folds and forks."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiossl.data.formats.esc50 import read_esc50
from audiossl.data.manifest import read_manifest
from audiossl.data.table import ManifestError

from test_manifest import make_wav


ESC_ROWS = [  # filename, fold, target, category, esc10, src_file, take (not in target order)
    ("1-100032-A-0.wav", 1, 0, "dog", True, 100032, "A"),
    ("1-100038-A-14.wav", 1, 2, "chirping_birds", False, 100038, "A"),
    ("2-100210-A-36.wav", 2, 1, "vacuum_cleaner", False, 100210, "A"),
    ("2-100210-B-36.wav", 2, 1, "vacuum_cleaner", False, 100210, "B"),
    ("3-110389-A-0.wav", 3, 0, "dog", True, 110389, "A"),
]


def _esc50(root: Path, rows=ESC_ROWS, prefix: bool = False) -> Path:
    (root / "meta").mkdir(parents=True, exist_ok=True)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for name, fold, target, category, esc10, src, take in rows:
        lines.append(f"{name},{fold},{target},{category},{esc10},{src},{take}")
        make_wav(root / "audio" / (f"{category}_{name}" if prefix else name))
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def test_read_esc50(tmp_path):
    root = _esc50(tmp_path / "ESC-50-master")
    m = read_esc50(root)
    assert m.table["id"].tolist() == ["1-100032-A-0", "1-100038-A-14", "2-100210-A-36", "2-100210-B-36", "3-110389-A-0"]
    assert m.table["path"].iat[1] == str(root / "audio" / "1-100038-A-14.wav")
    assert m.label_map["mid"].tolist() == ["/m/07rwj00", "/m/07rwj01", "/m/07rwj02"]
    assert m.label_map["display_name"].tolist() == ["dog", "vacuum_cleaner", "chirping_birds"]
    assert m.table["labels"].tolist() == [("/m/07rwj00",), ("/m/07rwj02",), ("/m/07rwj01",), ("/m/07rwj01",), ("/m/07rwj00",)]
    assert m.table["fold"].tolist() == [1, 1, 2, 2, 3]
    assert (m.table["duration"] == 5.0).all()
    assert m.table["esc10"].tolist() == [True, False, False, False, True]
    assert m.labels_multi_hot().argmax(1).tolist() == [0, 2, 1, 1, 0]
    assert read_manifest(root / "meta" / "esc50.csv").table["id"].tolist() == m.table["id"].tolist()


def test_read_esc50_category_prefixed_fork(tmp_path):
    m = read_esc50(_esc50(tmp_path, prefix=True))
    assert m.table["id"].iat[0] == "1-100032-A-0"
    assert m.table["path"].iat[0] == str(tmp_path / "audio" / "dog_1-100032-A-0.wav")


def test_read_esc50_missing_files_listed(tmp_path):
    root = _esc50(tmp_path)
    (root / "audio" / "2-100210-B-36.wav").unlink()
    (root / "audio" / "1-100032-A-0.wav").unlink()
    with pytest.raises(ManifestError) as e:
        read_esc50(root)
    assert e.value.path == str(root / "meta" / "esc50.csv")
    assert "2 of 5 audio files" in e.value.reason
    assert "1-100032-A-0.wav" in e.value.reason and "2-100210-B-36.wav" in e.value.reason


def test_read_esc50_inconsistent_target_names_both_lines(tmp_path):
    rows = list(ESC_ROWS)
    rows[3] = ("2-100210-B-36.wav", 2, 1, "vacuum", False, 100210, "B")
    root = _esc50(tmp_path, rows)
    with pytest.raises(ManifestError) as e:
        read_esc50(root)
    assert e.value.line == 5 and "target 1 is 'vacuum' here but 'vacuum_cleaner' on line 4" in e.value.reason
