"""audiossl/data/manifest.py and audiossl/data/table.py: the canonical table, our CSV, what
read_manifest says of files that are not manifests, every error's file and line; and that the
format readers (tests/test_data_formats_*.py) sit below this front door without an import cycle.

The helpers ``make_wav``, ``make_label_map`` and ``make_manifest`` are shared by those files."""

from __future__ import annotations

import ast
import graphlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import audiossl.data
from audiossl.data.manifest import (
    COLUMNS,
    LABEL_MAP_NAME,
    Manifest,
    ManifestError,
    label_map_from_labels,
    read_manifest,
    write_label_map,
    write_manifest,
)


def make_wav(path: Path, frames: int = 160, sample_rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros((frames, channels), dtype=np.float32), sample_rate, subtype="PCM_16")
    return path


def make_label_map(*mids: str) -> pd.DataFrame:
    return pd.DataFrame({"index": range(len(mids)), "mid": list(mids), "display_name": [m.upper() for m in mids]})


def make_manifest(tmp_path: Path) -> Manifest:
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
    return Manifest(table, make_label_map("x", "y", "z"))


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
        Manifest(table, make_label_map("x"))


def test_labels_multi_hot_and_csr_against_hand_computed(tmp_path):
    m = make_manifest(tmp_path)
    expected = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(m.labels_multi_hot(), expected)
    index, offsets = m.labels_csr()
    assert index.tolist() == [0, 0, 2, 1] and offsets.tolist() == [0, 1, 3, 3, 4]


def test_labels_multi_hot_unknown_label_and_no_map(tmp_path):
    m = make_manifest(tmp_path)
    m.table.at[2, "labels"] = ("w",)  # edited after validation
    with pytest.raises(ManifestError, match=r"id 'c': label 'w' is not in the label map"):
        m.labels_multi_hot()
    with pytest.raises(ManifestError, match="no label map"):
        Manifest(m.table[["id", "path"]]).labels_multi_hot()


def test_subset_by_fold_concat(tmp_path):
    m = make_manifest(tmp_path)
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
# Our CSV
# ---------------------------------------------------------------------------------------------


def test_csv_round_trip_keeps_values_types_and_label_map(tmp_path):
    m = make_manifest(tmp_path)
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
    m = make_manifest(tmp_path)
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
    m = make_manifest(tmp_path)
    write_label_map(make_label_map("q"), tmp_path / LABEL_MAP_NAME)
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
        ("a,/a.wav,,1\nb,/b.wav,,2,oops\n", 3, "a record has 5 fields, the header has 4"),
        ("a,/a.wav,,1\nb,/b.wav,unknown,2\n", 3, "label 'unknown' is not in the label map (1 classes)"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "m.csv"
    path.write_text("id,path,labels,duration\n" + body)
    write_label_map(make_label_map("x"), tmp_path / LABEL_MAP_NAME)
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
    write_label_map(make_label_map("x"), tmp_path / "labels.csv")
    with pytest.raises(ManifestError, match="label map"):
        read_manifest(tmp_path / "labels.csv")


# ---------------------------------------------------------------------------------------------
# Layout: the front door above its formats
# ---------------------------------------------------------------------------------------------

DATA = Path(audiossl.data.__file__).parent


def _audiossl_imports(path: Path, module: str) -> set:
    """Every ``audiossl`` module that a file imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {name for name in found if name == "audiossl" or name.startswith("audiossl.")}


def test_format_readers_sit_below_the_front_door_without_an_import_cycle():
    files = {"audiossl.data.manifest": DATA / "manifest.py", "audiossl.data.table": DATA / "table.py"}
    for path in (DATA / "formats").glob("*.py"):
        files["audiossl.data.formats" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    imports = {name: _audiossl_imports(path, name) for name, path in files.items()}
    for name, found in imports.items():
        if name != "audiossl.data.manifest":
            assert "audiossl.data.manifest" not in found, f"{name} imports the front door"
        # the layer rule across the package is tests/test_package_layers.py's
    assert not imports["audiossl.data.table"] & set(files), "the table must know no format"
    graph = {name: found & set(files) for name, found in imports.items()}
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


def test_front_door_still_exports_every_name_it_had_before_the_formats_moved_out():
    import audiossl.data.manifest as front

    # data_prep/, recipes, commands, evaluate and benchmarks import these from here
    names = """AUDIO_EXTENSIONS COLUMNS ESC50_NUM_FRAMES ESC50_SAMPLE_RATE LABEL_MAP_COLUMNS LABEL_MAP_NAME
    LabelMapArg LineOf Manifest ManifestError PathLike audioset_split_name esc50_mid join_audioset_clips
    label_map_from_labels probe_audio probe_durations read_ast_json read_audioset_segments read_csv_labels
    read_esc50 read_fairseq_tsv read_label_map read_manifest read_panns_hdf5 scan_audioset_clips scan_folder
    write_ast_json write_fairseq_tsv write_label_map write_manifest""".split()
    assert [n for n in names if not hasattr(front, n)] == []
    assert [n for n in front.__all__ if not hasattr(front, n)] == []
