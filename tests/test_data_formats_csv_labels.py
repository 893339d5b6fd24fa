"""audiossl/data/formats/csv_labels.py: plain CSVs naming audio files (HF AudioFolder metadata.csv
and the like). Our own CSV's round trip is in tests/test_manifest.py, beside write_manifest."""

from __future__ import annotations

import logging

import numpy as np

from audiossl.data.formats.csv_labels import read_csv_labels
from audiossl.data.manifest import read_manifest


def test_read_csv_labels_audiofolder_metadata(tmp_path, caplog):
    (tmp_path / "metadata.csv").write_text("file_name,label,speaker\nclips/a.wav,dog,s1\nclips/b.wav,cat,s2\nc.wav,dog,s1\n")
    with caplog.at_level(logging.WARNING):
        m = read_csv_labels(tmp_path / "metadata.csv")
    assert "derived 2 classes" in caplog.text
    assert m.table["id"].tolist() == ["a", "b", "c"]
    assert m.table["path"].tolist() == [str(tmp_path / "clips/a.wav"), str(tmp_path / "clips/b.wav"), str(tmp_path / "c.wav")]
    assert m.label_map["mid"].tolist() == ["cat", "dog"]
    np.testing.assert_array_equal(m.labels_multi_hot(), [[0, 1], [1, 0], [0, 1]])
    assert m.table["speaker"].tolist() == ["s1", "s2", "s1"]
    # through read_manifest no label map is invented
    assert read_manifest(tmp_path / "metadata.csv").label_map is None


def test_read_csv_labels_numeric_targets_and_separator(tmp_path):
    (tmp_path / "m.csv").write_text("wav,target\nx/1.wav,10\ny/1.wav,2\n")
    m = read_csv_labels(tmp_path / "m.csv")
    assert m.table["id"].tolist() == ["x/1", "y/1"]  # stems collide: relative paths instead
    assert m.label_map["mid"].tolist() == ["2", "10"]
    (tmp_path / "n.csv").write_text("path,tags\na.wav,x;y\n")
    n = read_csv_labels(tmp_path / "n.csv", label_column="tags", label_sep=";", derive_label_map=False)
    assert n.table["labels"].tolist() == [("x", "y")] and n.label_map is None
