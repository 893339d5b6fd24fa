"""audiossl/data/formats/panns.py: PANNs waveform and index HDF5 packs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from audiossl.data.formats.panns import read_panns_hdf5
from audiossl.data.manifest import read_manifest
from audiossl.data.table import ManifestError

from test_manifest import make_label_map


def _panns_h5(path: Path, names, target) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array(names, dtype="S20"))
        f.create_dataset("waveform", data=np.zeros((len(names), 640), dtype=np.int16))
        f.create_dataset("target", data=np.array(target, dtype=bool))
        f.attrs.create("sample_rate", data=32000, dtype=np.int32)
    return path


def test_panns_waveform_file(tmp_path):
    lm = make_label_map("/m/a", "/m/b", "/m/c")
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
        read_panns_hdf5(path, make_label_map("/m/a", "/m/b"))
    with pytest.raises(ManifestError, match="pass label_map="):
        read_panns_hdf5(path)


def test_panns_duplicate_clip_names_the_rows(tmp_path):
    path = _panns_h5(tmp_path / "eval.h5", [b"Y--PJHxphWEs.wav", b"", b"Y--PJHxphWEs.wav"], [[1], [0], [1]])
    with pytest.raises(ManifestError, match=r"eval\.h5: audio_name row 2: duplicate id '--PJHxphWEs' \(also row 0\)"):
        read_panns_hdf5(path, make_label_map("/m/a"))


def test_panns_index_file(tmp_path):
    with h5py.File(tmp_path / "eval_index.h5", "w") as f:
        f.create_dataset("audio_name", data=np.array([b"Y00000000000.wav", b"Y11111111111.wav"], dtype="S20"))
        f.create_dataset("target", data=np.array([[0, 1], [1, 0]], dtype=bool))
        f.create_dataset("hdf5_path", data=np.array([b"waveforms/eval.h5", b"/abs/eval.h5"], dtype="S200"))
        f.create_dataset("index_in_hdf5", data=np.array([5, 9], dtype=np.int32))
    m = read_panns_hdf5(tmp_path / "eval_index.h5", make_label_map("p", "q"))
    assert m.table["path"].tolist() == [f"{tmp_path}/waveforms/eval.h5#5", "/abs/eval.h5#9"]
    assert m.table["id"].tolist() == ["00000000000", "11111111111"]
    assert m.table["labels"].tolist() == [("q",), ("p",)]
