"""audiossl/data/formats/probe.py: audio headers and durations, bad files reported per row."""

from __future__ import annotations

import numpy as np

from audiossl.data.formats.folder import scan_folder
from audiossl.data.formats.probe import probe_audio, probe_durations

from test_manifest import make_wav


def test_probe_durations_reads_headers_and_survives_bad_files(tmp_path):
    make_wav(tmp_path / "a.wav", frames=8000, sample_rate=16000)
    make_wav(tmp_path / "b.wav", frames=44100, sample_rate=44100, channels=2)
    (tmp_path / "c.wav").write_bytes(b"not audio")
    m = scan_folder(tmp_path)
    info = probe_audio(m)
    assert info["sample_rate"].tolist()[:2] == [16000, 44100]
    assert info["channels"].tolist()[:2] == [1, 2]
    assert info["error"].iat[2] != "" and info["error"].iat[0] == ""
    d = probe_durations(m).table["duration"].to_numpy()
    np.testing.assert_allclose(d[:2], [0.5, 1.0])
    assert np.isnan(d[2])
