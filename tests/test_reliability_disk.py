"""A full disk (a small tmpfs) gives a clear error naming the file, removes partial files and
leaves the previous outputs intact (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiossl.audio import save_wav
from audiossl.checkpoint import load_checkpoint, native_payload, save_checkpoint
from audiossl.files import OutputError
from audiossl.models.registry import build_model


def test_a_checkpoint_write_on_a_full_disk_keeps_the_previous_checkpoint(small_disk) -> None:
    disk = small_disk(1024)
    small = native_payload(build_model("maeast_patch_tiny"), family="maeast")
    small["model"] = {k: v for k, v in list(small["model"].items())[:2]}
    path = save_checkpoint(disk / "ckpt.pt", small)
    before = path.read_bytes()
    big = dict(small, model={"w": torch.randn(512 * 1024)})  # 2 MiB
    with pytest.raises(OutputError, match=r"ckpt\.pt: cannot be written: no space left on device"):
        save_checkpoint(path, big)
    assert path.read_bytes() == before and load_checkpoint(path)["family"] == "maeast"
    assert sorted(p.name for p in disk.iterdir()) == ["ckpt.pt"]


def test_a_wav_write_on_a_full_disk_names_the_file(small_disk) -> None:
    disk = small_disk(64)
    with pytest.raises(OutputError, match=r"big\.wav: cannot be written: no space left on device"):
        save_wav(disk / "big.wav", np.zeros(160_000, dtype=np.float32), 16000)
    assert list(disk.iterdir()) == []


def test_embed_on_a_full_disk_exits_1_naming_the_output(small_disk, tmp_path, make_speech) -> None:
    import subprocess
    import sys

    from audiossl.checkpoint import native_payload, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pt", native_payload(build_model("maeast_patch_tiny"), family="maeast",
                                                             fbank={"num_mel_bins": 128}, target_length=128))
    disk = small_disk(16)
    speech = make_speech()
    done = subprocess.run([sys.executable, "-m", "audiossl", "embed", str(ckpt), str(speech), "-o", str(disk / "e.h5"), "--frames"],
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "e.h5: cannot be written: no space left on device" in done.stderr
    assert "Traceback" not in done.stderr and list(disk.iterdir()) == []


def test_a_manifest_write_on_a_full_disk_names_the_file(small_disk) -> None:
    import pandas as pd

    from audiossl.data.manifest import Manifest, write_manifest

    disk = small_disk(16)
    rows = [{"id": f"clip{i:05d}", "path": f"/data/{'x' * 200}/{i}.wav", "labels": ("dog",)} for i in range(400)]
    with pytest.raises(OutputError, match=r"m\.csv: cannot be written: no space left on device"):
        write_manifest(Manifest(pd.DataFrame(rows)), disk / "m.csv")
    assert list(disk.iterdir()) == []
