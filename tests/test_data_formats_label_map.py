"""audiossl/data/formats/label_map.py: AudioSet's class_labels_indices.csv and EAT's
label_descriptors.csv, read and written, every error's file and line."""

from __future__ import annotations

import pytest

from audiossl.data.formats.label_map import read_label_map, write_label_map
from audiossl.data.table import ManifestError


def test_label_map_audioset_layout_round_trip(tmp_path):
    src = tmp_path / "class_labels_indices.csv"
    src.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
                   '2,/m/02zsn,"Female ""quoted"" speech"\n')
    lm = read_label_map(src)
    assert lm["display_name"].tolist() == ["Speech", "Male speech, man speaking", 'Female "quoted" speech']
    write_label_map(lm, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == src.read_text()
    write_label_map(lm, tmp_path / "desc.csv", header=False)
    assert (tmp_path / "desc.csv").read_text().splitlines()[0] == '0,/m/09x0r,"Speech"'
    assert read_label_map(tmp_path / "desc.csv").equals(lm)


def test_label_map_unsorted_indices_are_sorted(tmp_path):
    (tmp_path / "l.csv").write_text("index,mid,display_name\n1,/m/b,B\n0,/m/a,A\n")
    assert read_label_map(tmp_path / "l.csv")["mid"].tolist() == ["/m/a", "/m/b"]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("index,mid,display_name\n0,/m/a,A\n\n1,/m/a,B\n", 4, "duplicate mid '/m/a' (also on line 2)"),
        ("index,mid,display_name\n0,/m/a,A\n2,/m/b,B\n", 3, "index 2 out of range"),
        ("index,mid,display_name\n0,/m/a,A\n0,/m/b,B\n", 3, "duplicate index 0 (also on line 2)"),
        ("index,mid,display_name\nzero,/m/a,A\n", 2, "index 'zero' is not a number"),
        ("index,mid,display_name\n0.5,/m/a,A\n", 2, "index '0.5' is not an integer"),
        ("index,mid,display_name\n0\n", 2, "expected index,mid,display_name"),
    ],
)
def test_label_map_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_label_map(path)
    assert e.value.path == str(path) and e.value.line == line and message in e.value.reason
