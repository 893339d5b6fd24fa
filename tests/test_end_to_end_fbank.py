"""The foundation end to end, as a user runs it: `audiossl fbank` over a folder of real speech in
mixed rates, channels and formats with broken files among them, then FbankDataset in a DataLoader
with worker processes."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiossl.audio import load
from audiossl.data.dataset import FbankDataset, collate
from audiossl.data.store import FbankStore
from audiossl.features import FbankConfig, Normalizer, fbank, pad_or_crop


def test_fbank_over_a_mixed_folder_then_dataloader(tmp_path, make_speech):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    good = {
        "a_16k_mono": (make_speech("one two three", 16000, 1), "wav"),
        "b_44k_stereo": (make_speech("audio self supervised learning", 44100, 2), "flac"),
        "sub/c_48k_4ch": (make_speech("masked spectrogram model", 48000, 4), "ogg"),
        "d_8k_24bit": (make_speech("the teacher and the student", 8000, 1, "PCM_24"), "wav"),
    }
    for name, (src, fmt) in good.items():
        data, rate = sf.read(src, always_2d=True)
        sf.write(folder / f"{name}.{fmt}", data, rate, format=fmt.upper())
    (folder / "empty.wav").write_bytes(b"")
    (folder / "not_audio.flac").write_text("this is text, not FLAC")
    cut = (folder / "a_16k_mono.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(cut[: len(cut) // 2])

    store_path = tmp_path / "store.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "audiossl", "fbank", "--manifest", str(folder), "--out", str(store_path),
         "--workers", "2", "--quiet"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert store_path.exists() and not (tmp_path / "store.h5.partial").exists()

    with open(tmp_path / "store.h5.skipped.tsv") as f:
        skipped = {row["id"]: row["reason"] for row in csv.DictReader(f, delimiter="\t")}
    assert set(skipped) == {"empty", "not_audio", "truncated"}
    assert "truncated" in skipped["truncated"]

    store = FbankStore(store_path)
    assert sorted(store.ids) == sorted(good)
    cfg = FbankConfig.preset("ast")
    for i, clip_id in enumerate(store.ids):
        path = next(folder.glob(f"{clip_id}.*"))
        expected, frames = fbank(load(path, 16000), cfg)
        assert store.num_frames[i] == frames[0]
        np.testing.assert_allclose(store.read(i), expected[0].numpy(), atol=0.02, rtol=1e-3)  # float16 storage

    norm = Normalizer.preset("audioset")
    ds = FbankDataset(store_path, target_length=256, normalizer=norm, return_ids=True)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=ds.collate_fn)
    seen = {}
    for batch in loader:
        assert batch["fbank"].shape[1:] == (256, 128)
        for clip_id, x in zip(batch["ids"], batch["fbank"]):
            seen[clip_id] = x
    assert sorted(seen) == sorted(good)
    i = list(store.ids).index("b_44k_stereo")
    direct = norm(pad_or_crop(torch.from_numpy(store.read(i)), 256))
    torch.testing.assert_close(seen["b_44k_stereo"], direct)
    shutil.rmtree(folder)  # the store is self-contained: no audio needed to train from it
    assert FbankStore(store_path).read(0).shape[1] == 128
