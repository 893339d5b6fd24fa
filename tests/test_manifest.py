"""audiossl/data/manifest.py: the canonical table, every reader/writer, every error's file and line."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiossl.data.manifest import (
    COLUMNS,
    LABEL_MAP_NAME,
    Manifest,
    ManifestError,
    audioset_split_name,
    join_audioset_clips,
    label_map_from_labels,
    probe_audio,
    probe_durations,
    read_ast_json,
    read_audioset_segments,
    read_csv_labels,
    read_esc50,
    read_fairseq_tsv,
    read_label_map,
    read_manifest,
    read_panns_hdf5,
    scan_audioset_clips,
    scan_folder,
    write_ast_json,
    write_fairseq_tsv,
    write_label_map,
    write_manifest,
)


def _wav(path: Path, frames: int = 160, sample_rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros((frames, channels), dtype=np.float32), sample_rate, subtype="PCM_16")
    return path


def _label_map(*mids: str) -> pd.DataFrame:
    return pd.DataFrame({"index": range(len(mids)), "mid": list(mids), "display_name": [m.upper() for m in mids]})


def _small(tmp_path: Path) -> Manifest:
    table = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "path": [str(tmp_path / f"{x}.wav") for x in "abcd"],
            "labels": [("x",), ("x", "z"), (), ("y",)],
            "duration": [1.0, 2.5, np.nan, 4.0],
            "split": ["train", "train", "", "eval"],
            "fold": [1, 2, None, 1],
            "ytid": ["-0123456789", "a_b", "007", "x"],
            "esc10": [True, False, True, False],
        }
    )
    return Manifest(table, _label_map("x", "y", "z"))


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def test_manifest_canonical_columns_defaults_and_extras():
    raw = pd.DataFrame({"extra": [7, 8], "path": [Path("/d/a.wav"), "/d/b.wav"], "id": ["a", "b"]}, index=[10, 20])
    m = Manifest(raw)
    assert list(m.table.columns) == list(COLUMNS) + ["extra"]
    assert m.table["path"].tolist() == ["/d/a.wav", "/d/b.wav"]
    assert m.table["labels"].tolist() == [(), ()]
    assert np.isnan(m.table["duration"]).all()
    assert m.table["split"].tolist() == ["", ""]
    assert str(m.table["fold"].dtype) == "Int64" and m.table["fold"].isna().all()
    assert m.table["extra"].tolist() == [7, 8]
    assert list(raw.columns) == ["extra", "path", "id"]  # the input is not modified
    assert len(m) == 2 and m.label_map is None and m.num_classes == 0


def test_manifest_parses_label_strings_and_lists():
    m = Manifest(pd.DataFrame({"id": ["a", "b", "c"], "path": ["p", "q", "r"], "labels": ["x, y", ["z"], None]}))
    assert m.table["labels"].tolist() == [("x", "y"), ("z",), ()]


@pytest.mark.parametrize(
    "table, message",
    [
        (pd.DataFrame({"path": ["p"]}), "missing column 'id'"),
        (pd.DataFrame({"id": ["a", ""], "path": ["p", "q"]}), "row 2: empty id"),
        (pd.DataFrame({"id": ["a", "b", "a"], "path": ["p", "q", "r"]}), "row 3: duplicate id 'a' (also row 1)"),
        (pd.DataFrame({"id": ["a", "b"], "path": ["p", None]}), "row 2: empty path"),
        (pd.DataFrame({"id": ["a"], "path": ["p"], "duration": ["long"]}), "row 1: duration 'long' is not a number"),
        (pd.DataFrame({"id": ["a", "b"], "path": ["p", "q"], "duration": [1.0, -2.0]}), "row 2: duration -2.0"),
        (pd.DataFrame({"id": ["a"], "path": ["p"], "fold": [1.5]}), "row 1: fold 1.5 is not an integer"),
        (pd.DataFrame({"id": ["a"], "path": ["p"], "labels": [3]}), "row 1: labels must be a sequence"),
    ],
)
def test_manifest_rejects_bad_tables(table, message):
    with pytest.raises(ManifestError) as e:
        Manifest(table)
    assert message in str(e.value)


def test_manifest_label_not_in_map_names_row_id_and_label():
    table = pd.DataFrame({"id": ["a", "b"], "path": ["p", "q"], "labels": [("x",), ("x", "nope")]})
    with pytest.raises(ManifestError, match=r"row 2 \(id 'b'\): label 'nope' is not in the label map"):
        Manifest(table, _label_map("x"))


def test_labels_multi_hot_and_csr_against_hand_computed(tmp_path):
    m = _small(tmp_path)
    expected = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(m.labels_multi_hot(), expected)
    index, offsets = m.labels_csr()
    assert index.tolist() == [0, 0, 2, 1] and offsets.tolist() == [0, 1, 3, 3, 4]


def test_labels_multi_hot_unknown_label_and_no_map(tmp_path):
    m = _small(tmp_path)
    m.table.at[2, "labels"] = ("w",)  # edited after validation
    with pytest.raises(ManifestError, match=r"id 'c': label 'w' is not in the label map"):
        m.labels_multi_hot()
    with pytest.raises(ManifestError, match="no label map"):
        Manifest(m.table[["id", "path"]]).labels_multi_hot()


def test_subset_by_fold_concat(tmp_path):
    m = _small(tmp_path)
    assert m.subset(m.table["split"] == "train").table["id"].tolist() == ["a", "b"]
    assert m.subset([3, 0]).table["id"].tolist() == ["d", "a"]
    assert m.subset([3, 0]).label_map is m.label_map
    train, test = m.by_fold(1)
    assert train.table["id"].tolist() == ["b"]  # "c" has no fold: in neither side
    assert test.table["id"].tolist() == ["a", "d"]
    with pytest.raises(ManifestError, match=r"no clip in fold 3 \(folds: \[1, 2\]\)"):
        m.by_fold(3)
    both = Manifest.concat([m.subset([0, 1]), m.subset([2, 3])])
    assert both.table["id"].tolist() == ["a", "b", "c", "d"]
    with pytest.raises(ManifestError, match="duplicate id 'a'"):
        Manifest.concat([m, m.subset([0])])


def test_label_map_from_labels_orders_and_names():
    lm = label_map_from_labels([("b", "a"), "c,a", ()], display_names={"a": "Alpha"})
    assert lm["mid"].tolist() == ["a", "b", "c"] and lm["index"].tolist() == [0, 1, 2]
    assert lm["display_name"].tolist() == ["Alpha", "b", "c"]
    assert label_map_from_labels([("10",), ("2",), ("1",)])["mid"].tolist() == ["1", "2", "10"]


def test_manifest_error_pickles_with_its_fields():
    e = pickle.loads(pickle.dumps(ManifestError("/x/m.csv", "bad thing", line=7)))
    assert (e.path, e.line, e.reason, str(e)) == ("/x/m.csv", 7, "bad thing", "/x/m.csv:7: bad thing")


# ---------------------------------------------------------------------------------------------
# Label maps
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Our CSV
# ---------------------------------------------------------------------------------------------


def test_csv_round_trip_keeps_values_types_and_label_map(tmp_path):
    m = _small(tmp_path)
    out = write_manifest(m, tmp_path / "data" / "manifest.csv")
    assert not list((tmp_path / "data").glob("*.partial"))
    assert (tmp_path / "data" / LABEL_MAP_NAME).is_file()
    assert '"x,z"' in out.read_text()
    back = read_manifest(out)
    pd.testing.assert_frame_equal(back.table, m.table)
    pd.testing.assert_frame_equal(back.label_map, m.label_map)
    assert back.source == str(out)
    assert read_manifest(out, label_map=False).label_map is None


def test_csv_rewrite_of_same_content_leaves_file_untouched(tmp_path):
    m = _small(tmp_path)
    out = write_manifest(m, tmp_path / "manifest.csv")
    before = (out.stat().st_ino, out.stat().st_mtime_ns)  # a rename would bring a new inode
    write_manifest(m, out)
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == before
    write_manifest(m.subset([0, 1]), out)
    assert len(read_manifest(out)) == 2


def test_csv_relative_paths_resolve_against_manifest_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "m.csv").write_text("id,path\na,audio/a.wav\nb,../b.wav\nc,/abs/c.wav\n")
    monkeypatch.chdir(tmp_path.parent)
    m = read_manifest(data / "m.csv")
    assert m.table["path"].tolist() == [str(data / "audio" / "a.wav"), str(tmp_path / "b.wav"), "/abs/c.wav"]
    write_manifest(m, data / "rel.csv", relative_paths=True)
    assert "audio/a.wav" in (data / "rel.csv").read_text()
    assert read_manifest(data / "rel.csv").table["path"].tolist() == m.table["path"].tolist()


def test_write_refuses_to_replace_a_different_sibling_label_map(tmp_path):
    m = _small(tmp_path)
    write_label_map(_label_map("q"), tmp_path / LABEL_MAP_NAME)
    with pytest.raises(ManifestError, match="different label map"):
        write_manifest(m, tmp_path / "manifest.csv")
    write_manifest(m, tmp_path / "manifest.csv", label_map_path=tmp_path / "other.csv")
    assert read_manifest(tmp_path / "manifest.csv", label_map=tmp_path / "other.csv").num_classes == 3


def test_write_rejects_label_with_comma(tmp_path):
    m = Manifest(pd.DataFrame({"id": ["a"], "path": ["p"], "labels": [("x",)]}))
    m.table.at[0, "labels"] = ("x,y",)  # a tuple can hold what a ','-joined field cannot
    with pytest.raises(ManifestError, match=r"id 'a': label 'x,y' cannot be written"):
        write_manifest(m, tmp_path / "m.csv")


@pytest.mark.parametrize(
    "body, line, message",
    [
        # blank line and a quoted newline before the bad row shift the editor line
        ('a,/a.wav,"x",1\n\nb,"/b\nc.wav",,2\na,/c.wav,,3\n', 6, "duplicate id 'a' (also on line 2)"),
        ("a,/a.wav,,1\nb,/b.wav,,ten\n", 3, "duration 'ten' is not a number"),
        ("a,/a.wav,,1\nb,,,2\n", 3, "empty path"),
        ("a,/a.wav,,1\nb,/b.wav,,2,oops\n", 3, "malformed CSV"),
        ("a,/a.wav,,1\nb,/b.wav,unknown,2\n", 3, "label 'unknown' is not in the label map (1 classes)"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "m.csv"
    path.write_text("id,path,labels,duration\n" + body)
    write_label_map(_label_map("x"), tmp_path / LABEL_MAP_NAME)
    with pytest.raises(ManifestError) as e:
        read_manifest(path)
    assert (e.value.path, e.value.line) == (str(path), line)
    assert message in e.value.reason


def test_csv_missing_column_and_empty_file(tmp_path):
    (tmp_path / "a.csv").write_text("name,labels\nx,y\n")
    with pytest.raises(ManifestError, match=r"a\.csv:1: no file column"):
        read_manifest(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("")
    with pytest.raises(ManifestError, match="empty file"):
        read_manifest(tmp_path / "b.csv")
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path / "nope.csv")


def test_read_manifest_explains_files_that_are_not_manifests(tmp_path):
    (tmp_path / "seg.csv").write_text("# Segments csv\n# YTID, start_seconds, end_seconds, positive_labels\n")
    with pytest.raises(ManifestError, match="AudioSet segment list"):
        read_manifest(tmp_path / "seg.csv")
    (tmp_path / "seg2.csv").write_text('--PJHxphWEs, 30.000, 40.000, "/m/09x0r"\n')
    with pytest.raises(ManifestError, match="AudioSet segment list"):
        read_manifest(tmp_path / "seg2.csv")
    (tmp_path / "own.csv").write_text("audio_files,labels\na.wav,x\n")  # an 11-character header is not a YTID
    with pytest.raises(ManifestError, match="no file column"):
        read_manifest(tmp_path / "own.csv")
    write_label_map(_label_map("x"), tmp_path / "labels.csv")
    with pytest.raises(ManifestError, match="label map"):
        read_manifest(tmp_path / "labels.csv")


# ---------------------------------------------------------------------------------------------
# Plain CSVs and folders
# ---------------------------------------------------------------------------------------------


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


def test_scan_folder_ids_order_and_filters(tmp_path):
    root = tmp_path / "corpus"
    for rel in ("b/2.flac", "a/1.wav", "a/sub/1.WAV", "c.mp3", "a/._1.wav", "notes.txt", ".hidden/x.wav"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    m = scan_folder(root)
    assert m.table["id"].tolist() == ["a/1", "a/sub/1", "b/2", "c"]
    assert m.table["path"].tolist() == [str(root / r) for r in ("a/1.wav", "a/sub/1.WAV", "b/2.flac", "c.mp3")]
    assert m.table["labels"].tolist() == [()] * 4
    (root / "c.wav").write_bytes(b"")
    with pytest.raises(ManifestError, match="same id 'c'"):
        scan_folder(root)


def test_probe_durations_reads_headers_and_survives_bad_files(tmp_path):
    _wav(tmp_path / "a.wav", frames=8000, sample_rate=16000)
    _wav(tmp_path / "b.wav", frames=44100, sample_rate=44100, channels=2)
    (tmp_path / "c.wav").write_bytes(b"not audio")
    m = scan_folder(tmp_path)
    info = probe_audio(m)
    assert info["sample_rate"].tolist()[:2] == [16000, 44100]
    assert info["channels"].tolist()[:2] == [1, 2]
    assert info["error"].iat[2] != "" and info["error"].iat[0] == ""
    d = probe_durations(m).table["duration"].to_numpy()
    np.testing.assert_allclose(d[:2], [0.5, 1.0])
    assert np.isnan(d[2])


# ---------------------------------------------------------------------------------------------
# AST json
# ---------------------------------------------------------------------------------------------


def test_ast_json_comment_line_optional_labels_extra_keys_relative_wav(tmp_path, caplog):
    write_label_map(_label_map("/m/a", "/m/b"), tmp_path / "labels.csv")
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
    m = _small(tmp_path)
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


# ---------------------------------------------------------------------------------------------
# fairseq tsv + lbl
# ---------------------------------------------------------------------------------------------


def _tsv(tmp_path: Path, rows: str, root: str = "/data/as") -> Path:
    path = tmp_path / "train.tsv"
    path.write_text(f"{root}\n{rows}")
    return path


def test_fairseq_tsv_with_eat_lbl(tmp_path):
    lm = _label_map("/m/a", "/m/b")
    path = _tsv(tmp_path, "bal/--PJHxphWEs.wav\t160000\nbal/a_b-c_d_e_f.flac\t80000\n")
    (tmp_path / "train.lbl").write_text("--PJHxphWEs\t/m/a,/m/b\na_b-c_d_e_f\t/m/b\n")
    m = read_fairseq_tsv(path, label_map=lm)
    assert m.table["id"].tolist() == ["--PJHxphWEs", "a_b-c_d_e_f"]
    assert m.table["path"].tolist() == ["/data/as/bal/--PJHxphWEs.wav", "/data/as/bal/a_b-c_d_e_f.flac"]
    assert m.table["labels"].tolist() == [("/m/a", "/m/b"), ("/m/b",)]
    np.testing.assert_allclose(m.table["duration"], [10.0, 5.0])
    assert m.table["num_samples"].tolist() == [160000, 80000] and m.table["split"].tolist() == ["train"] * 2


def test_fairseq_tsv_data2vec_lbl_indices_and_relative_root(tmp_path):
    write_label_map(_label_map("/m/a", "/m/b", "/m/c"), tmp_path / "label_descriptors.csv", header=False)
    path = _tsv(tmp_path, "x.wav\t16000\ny.wav\t16000\n", root=".")
    (tmp_path / "train.lbl").write_text("30.000\t40.000\t2,0\n0.000\t9.000\t1\n")
    m = read_fairseq_tsv(path)  # label descriptors found beside the tsv
    assert m.table["labels"].tolist() == [("/m/c", "/m/a"), ("/m/b",)]
    assert m.table["path"].tolist() == [str(tmp_path / "x.wav"), str(tmp_path / "y.wav")]


def test_fairseq_tsv_errors(tmp_path):
    path = _tsv(tmp_path, "a.wav\t10\nb.wav\t1.5e3\n")
    with pytest.raises(ManifestError) as e:
        read_fairseq_tsv(path)
    assert (e.value.line, e.value.path) == (3, str(path)) and "num_samples '1.5e3'" in e.value.reason
    path = _tsv(tmp_path, "a.wav\t10\nb.wav\t20\n")
    (tmp_path / "train.lbl").write_text("a\t/m/a\n")
    with pytest.raises(ManifestError, match=r"train\.lbl: 1 label lines for 2 rows"):
        read_fairseq_tsv(path)
    (tmp_path / "train.lbl").write_text("a\t/m/a\nb\t/m/zzz\n")
    with pytest.raises(ManifestError) as e:
        read_fairseq_tsv(path, label_map=_label_map("/m/a"))
    assert e.value.path == str(tmp_path / "train.lbl") and e.value.line == 2
    (tmp_path / "bad.tsv").write_text("a.wav\t10\n")
    with pytest.raises(ManifestError, match=r"bad\.tsv:1: line 1 must be the root"):
        read_fairseq_tsv(tmp_path / "bad.tsv")


def test_fairseq_tsv_round_trip(tmp_path):
    m = _small(tmp_path).subset([0, 1, 3])
    out = write_fairseq_tsv(m, tmp_path / "out" / "valid.tsv")
    lines = out.read_text().splitlines()
    assert lines == [str(tmp_path), "a.wav\t16000", "b.wav\t40000", "d.wav\t64000"]
    assert (tmp_path / "out" / "valid.lbl").read_text().splitlines() == ["a\tx", "b\tx,z", "d\ty"]
    back = read_fairseq_tsv(out)  # label_descriptors.csv written beside it, found again
    assert back.table["labels"].tolist() == m.table["labels"].tolist()
    assert back.table["path"].tolist() == m.table["path"].tolist()
    np.testing.assert_allclose(back.table["duration"], m.table["duration"])
    with pytest.raises(ManifestError, match="duration unknown"):
        write_fairseq_tsv(_small(tmp_path), tmp_path / "x.tsv")


# ---------------------------------------------------------------------------------------------
# PANNs HDF5
# ---------------------------------------------------------------------------------------------


def _panns_h5(path: Path, names, target) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array(names, dtype="S20"))
        f.create_dataset("waveform", data=np.zeros((len(names), 640), dtype=np.int16))
        f.create_dataset("target", data=np.array(target, dtype=bool))
        f.attrs.create("sample_rate", data=32000, dtype=np.int32)
    return path


def test_panns_waveform_file(tmp_path):
    lm = _label_map("/m/a", "/m/b", "/m/c")
    path = _panns_h5(
        tmp_path / "balanced_train.h5",
        [b"Y--PJHxphWEs.wav", b"", b"Ya_b-c_d_e_f.wav"],
        [[1, 0, 1], [0, 0, 0], [0, 1, 0]],
    )
    m = read_panns_hdf5(path, lm)
    assert m.table["id"].tolist() == ["--PJHxphWEs", "a_b-c_d_e_f"]
    assert m.table["path"].tolist() == [f"{path}#0", f"{path}#2"]
    assert m.table["labels"].tolist() == [("/m/a", "/m/c"), ("/m/b",)]
    np.testing.assert_allclose(m.table["duration"], [0.02, 0.02])
    assert m.table["split"].tolist() == ["balanced_train"] * 2 and m.table["row"].tolist() == [0, 2]
    assert read_manifest(path, lm).table["id"].tolist() == m.table["id"].tolist()
    with pytest.raises(ManifestError, match="has 3 classes but the label map has 2"):
        read_panns_hdf5(path, _label_map("/m/a", "/m/b"))
    with pytest.raises(ManifestError, match="pass label_map="):
        read_panns_hdf5(path)


def test_panns_duplicate_clip_names_the_rows(tmp_path):
    path = _panns_h5(tmp_path / "eval.h5", [b"Y--PJHxphWEs.wav", b"", b"Y--PJHxphWEs.wav"], [[1], [0], [1]])
    with pytest.raises(ManifestError, match=r"eval\.h5: audio_name row 2: duplicate id '--PJHxphWEs' \(also row 0\)"):
        read_panns_hdf5(path, _label_map("/m/a"))


def test_panns_index_file(tmp_path):
    with h5py.File(tmp_path / "eval_index.h5", "w") as f:
        f.create_dataset("audio_name", data=np.array([b"Y00000000000.wav", b"Y11111111111.wav"], dtype="S20"))
        f.create_dataset("target", data=np.array([[0, 1], [1, 0]], dtype=bool))
        f.create_dataset("hdf5_path", data=np.array([b"waveforms/eval.h5", b"/abs/eval.h5"], dtype="S200"))
        f.create_dataset("index_in_hdf5", data=np.array([5, 9], dtype=np.int32))
    m = read_panns_hdf5(tmp_path / "eval_index.h5", _label_map("p", "q"))
    assert m.table["path"].tolist() == [f"{tmp_path}/waveforms/eval.h5#5", "/abs/eval.h5#9"]
    assert m.table["id"].tolist() == ["00000000000", "11111111111"]
    assert m.table["labels"].tolist() == [("q",), ("p",)]


# ---------------------------------------------------------------------------------------------
# ESC-50
# ---------------------------------------------------------------------------------------------

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
        _wav(root / "audio" / (f"{category}_{name}" if prefix else name))
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


# ---------------------------------------------------------------------------------------------
# AudioSet
# ---------------------------------------------------------------------------------------------

AS_LABELS = _label_map("/m/09x0r", "/t/dd00088", "/m/012xff", "/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk")
SEGMENTS = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=6, num_segs=6, num_unique_labels=7, num_positive_labels=11\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
    '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
    '--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
    '--4gqARaEJE,0.000,10.000,"""/m/068hy",/m/07q6cd_,/m/0bt9lr,"/m/0jbk""",,,,,,,\n'
    '--i-y1v8Hy8, 0.000, 9.000, "/m/09x0r"\n'
    'abc_defghi_, 120.500, 130.500, "/m/0jbk"\n'
    '\n'
    'Zz9_-Aa0_b1, 10.000, 20.000, "/m/09x0r,/m/0jbk"\n'
)


def test_read_audioset_segments_tolerates_real_variants(tmp_path):
    path = tmp_path / "balanced_train_segments.csv"
    path.write_text(SEGMENTS)
    seg = read_audioset_segments(path, label_map=AS_LABELS)
    assert seg["ytid"].tolist() == ["--PJHxphWEs", "--ZhevVpy1s", "--4gqARaEJE", "--i-y1v8Hy8", "abc_defghi_", "Zz9_-Aa0_b1"]
    assert seg["start"].tolist() == [30.0, 50.0, 0.0, 0.0, 120.5, 10.0]
    assert seg["end"].tolist() == [40.0, 60.0, 10.0, 9.0, 130.5, 20.0]
    assert seg["labels"].iat[0] == ("/m/09x0r", "/t/dd00088")
    assert seg["labels"].iat[2] == ("/m/068hy", "/m/07q6cd_", "/m/0bt9lr", "/m/0jbk")
    assert seg["line"].tolist() == [4, 5, 6, 7, 8, 10]
    assert audioset_split_name(path) == "balanced_train"


@pytest.mark.parametrize(
    "row, message",
    [
        ('--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/nope"', "label '/m/nope' is not in the label table (7 classes)"),
        ('--PJHxphWE, 30.000, 40.000, "/m/09x0r"', "'--PJHxphWE' is not a YouTube id"),
        ('--PJHxphWEs, thirty, 40.000, "/m/09x0r"', "are not numbers"),
        ('--PJHxphWEs, 40.000, 40.000, "/m/09x0r"', "is empty or negative"),
        ("--PJHxphWEs", "expected 'YTID, start, end"),
    ],
)
def test_read_audioset_segments_errors_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "eval_segments.csv"
    path.write_text('# header\n--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n' + row + "\n")
    with pytest.raises(ManifestError) as e:
        read_audioset_segments(path, label_map=AS_LABELS)
    assert (e.value.path, e.value.line) == (str(path), 3)
    assert message in e.value.reason


def test_join_audioset_clips_every_naming_scheme_and_missing_report(tmp_path):
    seg_path = tmp_path / "balanced_train_segments.csv"
    seg_path.write_text(SEGMENTS)
    seg = read_audioset_segments(seg_path)
    audio = tmp_path / "audio"
    _wav(audio / "part00" / "Y--PJHxphWEs.wav")  # PANNs
    _wav(audio / "_" / "_" / "--ZhevVpy1s_50.000.flac")  # AST, seconds with decimals
    _wav(audio / "--ZhevVpy1s.wav")  # a second copy of the same clip: the one with a start wins
    _wav(audio / "strong" / "abc_defghi__120500.wav")  # milliseconds; YTID ending in "_"
    _wav(audio / "Zz9_-Aa0_b1.flac")  # HF, bare id
    _wav(audio / "--i-y1v8Hy8_3.000.wav")  # right id, wrong start: not this segment
    _wav(audio / "dcase" / "Y--i-y1v8Hy8_0.000_9.000.wav")  # DCASE
    _wav(audio / "unrelated.wav")
    m, missing = join_audioset_clips(seg, audio, AS_LABELS)
    t = m.table
    assert t["id"].tolist() == ["--PJHxphWEs", "--ZhevVpy1s", "--i-y1v8Hy8", "abc_defghi_", "Zz9_-Aa0_b1"]
    assert t["path"].tolist() == [
        str(audio / "part00" / "Y--PJHxphWEs.wav"),
        str(audio / "_" / "_" / "--ZhevVpy1s_50.000.flac"),
        str(audio / "dcase" / "Y--i-y1v8Hy8_0.000_9.000.wav"),
        str(audio / "strong" / "abc_defghi__120500.wav"),
        str(audio / "Zz9_-Aa0_b1.flac"),
    ]
    np.testing.assert_allclose(t["duration"], [10.0, 10.0, 9.0, 10.0, 10.0])
    assert t["split"].tolist() == ["balanced_train"] * 5
    assert t["start"].tolist() == [30.0, 50.0, 0.0, 120.5, 10.0]
    assert t["labels"].iat[0] == ("/m/09x0r", "/t/dd00088")
    np.testing.assert_array_equal(m.labels_multi_hot()[0], [1, 1, 0, 0, 0, 0, 0])
    assert missing.to_dict("records") == [
        {"ytid": "--4gqARaEJE", "start": 0.0, "end": 10.0, "labels": "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk",
         "source": str(seg_path), "line": 6}
    ]
    # the extension preference decides between two bare copies
    files = scan_audioset_clips(audio, extensions=(".wav", ".flac"))
    assert len(files) == 7  # unrelated.wav has no clip name
    m2, _ = join_audioset_clips(seg, files, AS_LABELS, split="x")
    assert m2.table["split"].tolist() == ["x"] * 5


def test_join_audioset_clips_with_no_audio_reports_every_segment_missing(tmp_path):
    seg_path = tmp_path / "eval_segments.csv"
    seg_path.write_text(SEGMENTS)
    (tmp_path / "audio").mkdir()
    m, missing = join_audioset_clips(read_audioset_segments(seg_path), tmp_path / "audio", AS_LABELS)
    assert len(m) == 0 and list(m.table.columns) == list(COLUMNS) + ["start", "end"]
    assert missing["line"].tolist() == [4, 5, 6, 7, 8, 10]


def test_join_audioset_clips_rejects_duplicate_ytids_and_unknown_mids(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text('--PJHxphWEs, 30.000, 40.000, "/m/09x0r"\n')
    b.write_text('# c\n--PJHxphWEs, 0.000, 10.000, "/m/09x0r"\n')
    seg = pd.concat([read_audioset_segments(a), read_audioset_segments(b)], ignore_index=True)
    (tmp_path / "audio").mkdir()
    with pytest.raises(ManifestError) as e:
        join_audioset_clips(seg, tmp_path / "audio", AS_LABELS)
    assert (e.value.path, e.value.line) == (str(b), 2) and f"also {a}:1" in e.value.reason
    b.write_text('--ZhevVpy1s, 0.000, 10.000, "/m/zzz"\n')
    with pytest.raises(ManifestError) as e:
        join_audioset_clips(read_audioset_segments(b), tmp_path / "audio", AS_LABELS)
    assert (e.value.path, e.value.line) == (str(b), 1)
