"""audiossl/data/formats/fairseq.py: wav2vec-style tsv + EAT/data2vec .lbl, read and written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiossl.data.formats.fairseq import read_fairseq_tsv, write_fairseq_tsv
from audiossl.data.formats.label_map import write_label_map
from audiossl.data.table import ManifestError

from test_manifest import make_label_map, make_manifest


def _tsv(tmp_path: Path, rows: str, root: str = "/data/as") -> Path:
    path = tmp_path / "train.tsv"
    path.write_text(f"{root}\n{rows}")
    return path


def test_fairseq_tsv_with_eat_lbl(tmp_path):
    lm = make_label_map("/m/a", "/m/b")
    path = _tsv(tmp_path, "bal/--PJHxphWEs.wav\t160000\nbal/a_b-c_d_e_f.flac\t80000\n")
    (tmp_path / "train.lbl").write_text("--PJHxphWEs\t/m/a,/m/b\na_b-c_d_e_f\t/m/b\n")
    m = read_fairseq_tsv(path, label_map=lm)
    assert m.table["id"].tolist() == ["--PJHxphWEs", "a_b-c_d_e_f"]
    assert m.table["path"].tolist() == ["/data/as/bal/--PJHxphWEs.wav", "/data/as/bal/a_b-c_d_e_f.flac"]
    assert m.table["labels"].tolist() == [("/m/a", "/m/b"), ("/m/b",)]
    np.testing.assert_allclose(m.table["duration"], [10.0, 5.0])
    assert m.table["num_samples"].tolist() == [160000, 80000] and m.table["split"].tolist() == ["train"] * 2


def test_fairseq_tsv_data2vec_lbl_indices_and_relative_root(tmp_path):
    write_label_map(make_label_map("/m/a", "/m/b", "/m/c"), tmp_path / "label_descriptors.csv", header=False)
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
        read_fairseq_tsv(path, label_map=make_label_map("/m/a"))
    assert e.value.path == str(tmp_path / "train.lbl") and e.value.line == 2
    (tmp_path / "bad.tsv").write_text("a.wav\t10\n")
    with pytest.raises(ManifestError, match=r"bad\.tsv:1: line 1 must be the root"):
        read_fairseq_tsv(tmp_path / "bad.tsv")


def test_fairseq_tsv_round_trip(tmp_path):
    m = make_manifest(tmp_path).subset([0, 1, 3])
    out = write_fairseq_tsv(m, tmp_path / "out" / "valid.tsv")
    lines = out.read_text().splitlines()
    assert lines == [str(tmp_path), "a.wav\t16000", "b.wav\t40000", "d.wav\t64000"]
    assert (tmp_path / "out" / "valid.lbl").read_text().splitlines() == ["a\tx", "b\tx,z", "d\ty"]
    back = read_fairseq_tsv(out)  # label_descriptors.csv written beside it, found again
    assert back.table["labels"].tolist() == m.table["labels"].tolist()
    assert back.table["path"].tolist() == m.table["path"].tolist()
    np.testing.assert_allclose(back.table["duration"], m.table["duration"])
    with pytest.raises(ManifestError, match="duration unknown"):
        write_fairseq_tsv(make_manifest(tmp_path), tmp_path / "x.tsv")
