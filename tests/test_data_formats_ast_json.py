"""audiossl/data/formats/ast_json.py: AST/SSAST/AudioMAE datafiles, read and written, every
error's file and line."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from audiossl.data.formats.ast_json import read_ast_json, write_ast_json
from audiossl.data.formats.label_map import write_label_map
from audiossl.data.table import COLUMNS, ManifestError

from test_manifest import make_label_map, make_manifest


def test_ast_json_comment_line_optional_labels_extra_keys_relative_wav(tmp_path, caplog):
    write_label_map(make_label_map("/m/a", "/m/b"), tmp_path / "labels.csv")
    path = tmp_path / "sub" / "data.json"
    path.parent.mkdir()
    path.write_text(
        "# sample file from AST\n"
        '{"data": [\n'
        ' {"wav": "audio/x_0.000.flac", "labels": "/m/a,/m/b", "video_id": "x"},\n'
        ' {"wav": "/abs/y.wav"},\n'
        ' {"wav": "z.wav", "labels": "", "fold": 3, "duration": 5.0, "split": "eval", "id": "zz"}\n'
        "]}\n"
    )
    with caplog.at_level(logging.WARNING):
        m = read_ast_json(path, tmp_path / "labels.csv")
    assert "ignored 1 leading '#' line" in caplog.text
    assert m.table["id"].tolist() == ["x_0.000", "y", "zz"]
    assert m.table["path"].tolist() == [str(path.parent / "audio/x_0.000.flac"), "/abs/y.wav", str(path.parent / "z.wav")]
    assert m.table["labels"].tolist() == [("/m/a", "/m/b"), (), ()]
    assert m.table["fold"].tolist()[2] == 3 and m.table["split"].tolist() == ["", "", "eval"]
    assert list(m.table.columns) == list(COLUMNS)  # video_id ignored


def test_ast_json_round_trip(tmp_path):
    m = make_manifest(tmp_path)
    out = write_ast_json(m, tmp_path / "train.json")
    doc = json.loads(out.read_text())  # valid JSON that AST's loader reads
    assert doc["data"][1] == {"wav": str(tmp_path / "b.wav"), "labels": "x,z", "id": "b", "fold": 2,
                              "duration": 2.5, "split": "train"}
    assert doc["data"][2]["labels"] == ""
    back = read_ast_json(out, m.label_map)
    pd.testing.assert_frame_equal(back.table, m.table.drop(columns=["ytid", "esc10"]))
    write_ast_json(m, tmp_path / "rel.json", relative_paths=True)
    assert json.loads((tmp_path / "rel.json").read_text())["data"][0]["wav"] == "a.wav"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ('# c\n# c\n{"data": [\n {"wav": "a.wav"},\n {"wav": "b.wav",}\n]}\n', 5, "not valid JSON"),
        ('{"data": [\n {"wav": "a.wav"},\n\n {"labels": "x"}\n]}\n', 4, "data[1]: missing or empty 'wav'"),
        ('{"data": [{"wav": "a.wav"}, {"wav": "a.wav"}]}', 1, "duplicate id 'a' (also on line 1)"),
        ('{"items": []}', 1, "expected {\"data\": [...]}"),
        ('{"data": [\n {"wav": "a.wav", "labels": 5}\n]}', 2, "'labels' must be"),
    ],
)
def test_ast_json_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_ast_json(path, label_csv=False)
    assert (e.value.path, e.value.line) == (str(path), line)
    assert message in e.value.reason
