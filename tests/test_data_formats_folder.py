"""audiossl/data/formats/folder.py: every audio file under a folder, ids from relative paths."""

from __future__ import annotations

import pytest

from audiossl.data.formats.folder import scan_folder
from audiossl.data.table import ManifestError


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
