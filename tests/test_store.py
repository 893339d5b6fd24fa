"""Tests for audiossl/data/store.py: the precompute writer, the layout, shards and the reader."""

from __future__ import annotations

import math
import os
import pickle
import shutil
from pathlib import Path
from typing import List, Tuple

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from audiossl import audio
from audiossl.data import store as S
from audiossl.data.manifest import Manifest
from audiossl.data.store import FbankStore, StoreError
from audiossl.features import FbankConfig, Normalizer, fbank

LABEL_MAP = pd.DataFrame({"index": [0, 1, 2], "mid": ["/m/dog", "/m/rain", "/m/bell"], "display_name": ["Dog", "Rain", "Bell"]})

# id, file name, sample rate, channels, seconds, labels; None rate = a broken file (see below)
CLIPS: List[Tuple[str, str, int, int, float, Tuple[str, ...]]] = [
    ("c00", "c00.wav", 16000, 1, 1.0, ("/m/dog",)),
    ("c01", "c01.wav", 8000, 1, 0.75, ("/m/rain",)),
    ("c02", "c02.flac", 22050, 2, 1.3, ("/m/dog", "/m/bell")),
    ("c03", "c03.wav", 44100, 2, 0.5, ()),
    ("c04", "c04.ogg", 48000, 1, 1.1, ("/m/bell",)),
    ("short", "short.wav", 16000, 1, 0.02, ("/m/dog",)),  # 320 samples: no 25 ms frame
    ("empty", "empty.wav", 0, 0, 0.0, ("/m/rain",)),  # a zero-byte file
    ("c05", "c05.flac", 16000, 2, 2.0, ("/m/rain",)),
    ("text", "text.wav", 0, 0, 0.0, ()),  # not audio at all
    ("trunc", "trunc.wav", 0, 0, 0.0, ("/m/bell",)),  # a WAV cut short of what its header promises
    ("c06", "c06.flac", 44100, 1, 0.9, ("/m/dog", "/m/rain")),
    ("c07", "c07.wav", 22050, 1, 1.6, ()),
    ("c08", "c08.wav", 48000, 2, 0.6, ("/m/bell",)),
]
BAD = {"short", "empty", "text", "trunc"}


def _signal(seed: int, rate: int, channels: int, seconds: float) -> np.ndarray:
    """Noise plus a few tones (distinct per clip), (N, C) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        f0 = 150.0 * (seed + 1) + 37.0 * c
        x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3.1 * f0 * t)
        out[:, c] = x + 0.05 * rng.standard_normal(n)
    return out


def make_corpus(root: Path, clips=CLIPS, label_map=LABEL_MAP) -> Manifest:
    """Real small audio files of mixed rates/channels/formats plus broken ones, and their manifest."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed, (cid, name, rate, channels, seconds, labels) in enumerate(clips):
        path = root / name
        if cid == "empty":
            path.write_bytes(b"")
        elif cid == "text":
            path.write_text("this is not audio\n" * 20)
        elif cid == "trunc":
            audio.save_wav(path, torch.from_numpy(_signal(seed, 16000, 1, 1.0)[:, 0]), 16000)
            path.write_bytes(path.read_bytes()[:20000])
        else:
            x = _signal(seed, rate, channels, seconds)
            if name.endswith(".wav") and channels == 1 and rate == 16000:
                audio.save_wav(path, torch.from_numpy(x[:, 0]), rate)
            else:
                sf.write(path, x, rate, subtype="PCM_16" if name.endswith(".wav") else None)
        rows.append({"id": cid, "path": str(path), "labels": labels})
    return Manifest(pd.DataFrame(rows), label_map)


def reference_fbank(path: str, config: FbankConfig) -> np.ndarray:
    """What the store must hold for a clip: features.fbank of audio.load, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wav = audio.load(path, sample_rate=int(config.sample_frequency))
        feats, frames = fbank(wav, config)
    finally:
        torch.set_num_threads(threads)
    return feats[0, : int(frames[0])].numpy()


def assert_same_store(a: FbankStore, b: FbankStore) -> None:
    assert len(a) == len(b)
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.num_frames, b.num_frames)
    np.testing.assert_array_equal(a.manifest_index, b.manifest_index)
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.read(i), b.read(i))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Manifest:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "train.h5"
    summary = S.precompute(
        corpus, out, FbankConfig.preset("ast"), normalizer=Normalizer.preset("esc50"), workers=2,
        segment_clips=3, progress=False,
    )
    assert summary.num_clips == len(CLIPS) - len(BAD) and summary.num_skipped == len(BAD)
    return out


# ---------------------------------------------------------------------------------------------
# content


def test_content_equals_direct_fbank_of_load(built, corpus):
    store = FbankStore(built)
    config = FbankConfig.preset("ast")
    good = [i for i, c in enumerate(CLIPS) if c[0] not in BAD]
    np.testing.assert_array_equal(store.manifest_index, good)
    for i, row in enumerate(good):
        expected = reference_fbank(corpus.table["path"].iat[row], config)
        got = store.read(i)
        assert got.dtype == np.float32 and got.shape == expected.shape
        # float16 storage: the stored value is the float32 feature rounded once to half
        np.testing.assert_array_equal(got, expected.astype(np.float16).astype(np.float32))
        assert np.abs(got - expected).max() <= 2.0**-11 * np.abs(expected).max() + 1e-7


def test_content_against_torchaudio_kaldi(built, corpus):
    # Independent reference for the 16 kHz mono clip: soundfile + torchaudio's own kaldi.fbank.
    x, rate = sf.read(corpus.table["path"].iat[0], dtype="float32")
    w = torch.from_numpy(x)[None]
    ref = torchaudio.compliance.kaldi.fbank(
        w - w.mean(), htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    ).numpy()
    got = FbankStore(built).read(0)
    assert got.shape == (98, 128)
    # half precision (2^-11 relative) plus torchaudio's own thread-dependent noise in the floor bins
    np.testing.assert_allclose(got, ref, rtol=2.0**-10, atol=1e-3)


def test_true_frame_counts(built, corpus):
    store = FbankStore(built)
    by_id = {c[0]: c for c in CLIPS}
    for i, cid in enumerate(store.ids):
        rate, seconds = by_id[cid][2], by_id[cid][4]
        n16 = len(audio.load(corpus.table["path"].iat[store.manifest_index[i]], sample_rate=16000))
        assert abs(n16 - 16000 * seconds) <= 2  # resampled length
        assert store.num_frames[i] == 1 + (n16 - 400) // 160  # snip_edges, 25 ms / 10 ms
    assert store.num_frames[0] == 98  # 1 s at 16 kHz, the AST number


def test_chunk_layout_one_chunk_per_clip(built):
    store = FbankStore(built)
    c = int(store.attrs["chunk_frames"])
    assert c == S.choose_chunk_frames(store.num_frames, 128, 2)
    with h5py.File(built, "r") as fh:
        dset = fh["fbank"]
        assert dset.chunks == (c, 128)
        assert dset.dtype == np.float16 and dset.compression is None
        assert dset.shape[0] == store.offsets[-1] + store.num_frames[-1]
        assert (store.offsets % c == 0).all()
        spans = -(-store.num_frames.astype(np.int64) // c)
        np.testing.assert_array_equal(np.diff(store.offsets), c * spans[:-1])
        # a clip <= C frames is exactly one allocated chunk, a longer one consecutive chunks
        assert dset.id.get_num_chunks() == int(spans.sum())
        assert 0 < (spans == 1).sum() < len(store)
        for off, span in zip(store.offsets, spans):
            for k in range(span):
                info = dset.id.get_chunk_info_by_coord((int(off) + k * c, 0))
                assert info.chunk_offset == (int(off) + k * c, 0) and info.size == c * 128 * 2


def test_uniform_lengths_one_chunk_each(tmp_path):
    clips = [(f"u{i}", f"u{i}.wav", 16000, 1, 1.0, ()) for i in range(3)] + [("l", "l.wav", 16000, 1, 0.9, ())]
    store_path = tmp_path / "u.h5"
    S.precompute(make_corpus(tmp_path, clips, label_map=None), store_path, workers=1, progress=False)
    store = FbankStore(store_path)
    assert int(store.attrs["chunk_frames"]) == 98  # ESC-50-like: C = the longest clip
    np.testing.assert_array_equal(store.offsets, [0, 98, 196, 294])


def test_long_clips_span_consecutive_chunks(tmp_path):
    clips = [("a", "a.wav", 16000, 1, 1.0, ()), ("b", "b.wav", 16000, 1, 3.2, ()), ("c", "c.wav", 16000, 1, 1.0, ())]
    manifest = make_corpus(tmp_path, clips, label_map=None)
    out = tmp_path / "s.h5"
    S.precompute(manifest, out, workers=1, progress=False)
    store = FbankStore(out)
    c = int(store.attrs["chunk_frames"])
    assert store.num_frames.tolist() == [98, 318, 98]
    assert c < 318
    np.testing.assert_array_equal(store.offsets, [0, c, c + -(-318 // c) * c])
    assert store.labels is None and store.label_map is None
    np.testing.assert_array_equal(store.read(1), reference_fbank(manifest.table["path"].iat[1], FbankConfig()).astype(np.float16))


def test_choose_chunk_frames():
    f16 = 2
    assert S.choose_chunk_frames([498] * 2000, 128, f16) == 498  # ESC-50
    audioset = [998] * 980 + list(range(300, 998, 35))  # a few short clips
    assert S.choose_chunk_frames(audioset, 128, f16) == 998
    assert S.choose_chunk_frames([20000] * 10, 128, f16) == 4096  # 1 MiB cap
    assert S.choose_chunk_frames([20000] * 10, 128, 4) == 2048
    spread = np.random.default_rng(0).integers(100, 3500, 1000)  # LibriSpeech-like
    c = S.choose_chunk_frames(spread, 128, f16)
    padded = (-(-spread // c) * c).sum()
    assert 128 <= c < spread.max()  # 128 frames x 128 bins x 2 bytes = the 32 KiB floor
    assert padded - spread.sum() <= 0.10 * spread.sum()
    # ...and C is not smaller than needed: the candidate 15% longer pads more than 10%, and the
    # padding of spread lengths grows about linearly with C (C/2 per clip)
    assert padded - spread.sum() > 0.07 * spread.sum()
    assert S.choose_chunk_frames([5] * 10, 128, f16) == 5  # never longer than the longest clip
    assert S.choose_chunk_frames([], 128, f16) == 1


def test_ragged_index():
    idx = S._ragged_index(np.array([5, 0, 20]), np.array([2, 3, 0]))
    np.testing.assert_array_equal(idx, [5, 6, 0, 1, 2])


# ---------------------------------------------------------------------------------------------
# metadata, sidecar, windows


def test_attrs_labels_and_ids_round_trip(built, corpus):
    store = FbankStore(built)
    a = store.attrs
    assert a["format_version"] == S.FORMAT_VERSION and a["audiossl_version"]
    assert a["dtype"] == "float16" and a["num_clips"] == len(store) == 9 and a["num_skipped"] == 4
    assert a["manifest_sha256"] == S.manifest_sha256(corpus)
    assert a["shard_index"] == 0 and a["num_shards"] == 1 and a["manifest_rows"] == len(CLIPS)
    assert store.fbank_config == FbankConfig.preset("ast")
    assert store.normalizer == Normalizer.preset("esc50")
    assert list(store.ids) == [c[0] for c in CLIPS if c[0] not in BAD]
    assert store.ids.dtype.kind == "U"
    assert store.num_frames.dtype == np.int32
    np.testing.assert_array_equal(store.labels, corpus.labels_multi_hot()[store.manifest_index])
    assert store.labels[2].tolist() == [True, False, True]  # c02: dog + bell
    assert store.label_map["mid"].tolist() == LABEL_MAP["mid"].tolist()
    assert store.label_map["display_name"].tolist() == ["Dog", "Rain", "Bell"]
    store.check_config(FbankConfig.preset("ast"))
    with pytest.raises(StoreError, match="window_type"):
        store.check_config(FbankConfig.preset("mae_ast"))
    with pytest.raises(StoreError, match="remove_waveform_mean"):
        FbankStore(built, expect_config=FbankConfig.preset("mae_ast"))


def test_skipped_sidecar(built, corpus):
    lines = Path(str(built) + ".skipped.tsv").read_text().splitlines()
    assert lines[0] == "manifest_index\tid\tpath\treason"
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[1] for r in rows] == [c[0] for c in CLIPS if c[0] in BAD]
    assert all(int(r[0]) == [c[0] for c in CLIPS].index(r[1]) for r in rows)
    reasons = {r[1]: r[3] for r in rows}
    assert reasons["short"].startswith("too short: 320 samples")
    assert reasons["empty"] == "unreadable audio: empty file (0 bytes)"
    assert reasons["text"].startswith("unreadable audio: unsupported or corrupt audio")
    assert reasons["trunc"].startswith("unreadable audio: truncated")
    assert [r[2] for r in rows] == [corpus.table["path"].iat[int(r[0])] for r in rows]
    assert not Path(str(built) + ".partial.d").exists() and not Path(str(built) + ".partial").exists()


def test_read_windows(built):
    store = FbankStore(built)
    whole = store.read(1)
    np.testing.assert_array_equal(store.read(1, 10, 20), whole[10:30])
    np.testing.assert_array_equal(store.read(1, 50), whole[50:])
    np.testing.assert_array_equal(store.read(1, len(whole) - 5, 100), whole[-5:])  # cut at the clip end
    assert store.read(1, len(whole)).shape == (0, 128)
    np.testing.assert_array_equal(store.read(-1), store[len(store) - 1])
    with pytest.raises(IndexError):
        store.read(len(store))
    with pytest.raises(ValueError):
        store.read(1, len(whole) + 1)
    with pytest.raises(ValueError):
        store.read(1, 0, -1)


def test_read_raw_is_the_stored_bytes_of_the_window(built):
    """read_raw returns the stored float16 rows h5py's high-level slicing gives (an independent
    read path), into a caller's buffer without touching the rows past the window."""
    store = FbankStore(built)
    assert store.dtype == np.float16
    with h5py.File(built, "r") as fh:
        first, count = int(fh["offsets"][1]), int(fh["num_frames"][1])
        stored = fh["fbank"][first : first + count]
    raw = store.read_raw(1)
    assert raw.dtype == np.float16 and raw.shape == (count, 128)
    np.testing.assert_array_equal(raw, stored)
    np.testing.assert_array_equal(store.read(1), stored.astype(np.float32))  # read = read_raw, widened
    np.testing.assert_array_equal(store.read_raw(1, 10, 20), stored[10:30])
    np.testing.assert_array_equal(store.read_raw(1, count - 5, 100), stored[-5:])  # cut at the clip end
    buf = np.full((count + 7, 128), 7.0, dtype=np.float16)
    got = store.read_raw(1, 3, None, out=buf)
    assert got.shape == (count - 3, 128) and np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf[: count - 3], stored[3:])
    assert np.all(buf[count - 3 :] == 7.0)
    assert store.read_raw(1, count, out=buf).shape == (0, 128)


def test_read_raw_refuses_unfit_buffers(built):
    store = FbankStore(built)
    n = int(store.num_frames[0])
    with pytest.raises(ValueError, match="float16"):
        store.read_raw(0, out=np.empty((n, 128), dtype=np.float32))  # HDF5 would convert slowly
    with pytest.raises(ValueError, match="rows"):
        store.read_raw(0, out=np.empty((n - 1, 128), dtype=np.float16))
    with pytest.raises(ValueError, match="contiguous"):
        store.read_raw(0, out=np.empty((n, 256), dtype=np.float16)[:, ::2])
    with pytest.raises(IndexError):
        store.read_raw(len(store))


def test_reader_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        FbankStore(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(StoreError) as info:
        FbankStore(junk)
    assert info.value.path == str(junk) and "not a readable HDF5 file" in info.value.reason
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh.attrs["format_version"] = 99
    with pytest.raises(StoreError, match="format_version 99"):
        FbankStore(other)


def test_float32_and_gzip(corpus, built, tmp_path):
    sub = corpus.subset(np.arange(4))
    out32 = tmp_path / "f32.h5"
    S.precompute(sub, out32, dtype="float32", compression="gzip", workers=1, progress=False)
    s32, s16 = FbankStore(out32), FbankStore(built)
    with h5py.File(out32, "r") as fh:
        assert fh["fbank"].dtype == np.float32 and fh["fbank"].compression == "gzip"
    for i in range(len(s32)):
        expected = reference_fbank(sub.table["path"].iat[i], FbankConfig())
        np.testing.assert_array_equal(s32.read(i), expected)  # exact in float32
        np.testing.assert_array_equal(s32.read(i).astype(np.float16), s16.read(i).astype(np.float16))


# ---------------------------------------------------------------------------------------------
# processes


def test_pickles_after_reading(built):
    store = FbankStore(built)
    first = store.read(0)  # opens the handle
    clone = pickle.loads(pickle.dumps(store))
    assert clone._h5 is None
    np.testing.assert_array_equal(clone.read(0), first)
    store.close()
    np.testing.assert_array_equal(store.read(0), first)  # re-opens after close


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(built, context):
    store = FbankStore(built)
    expected = [store.read(i) for i in range(len(store))]  # the parent holds an open handle
    loader = torch.utils.data.DataLoader(store, batch_size=None, num_workers=2, multiprocessing_context=context)
    got = list(loader)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(g), e)


# ---------------------------------------------------------------------------------------------
# statistics


def test_stats_against_numpy(built, tmp_path):
    out = tmp_path / "copy.h5"
    shutil.copy(built, out)
    store = FbankStore(out)
    values = np.concatenate([store.read(i) for i in range(len(store))]).astype(np.float64)
    stats = S.compute_stats(store, progress=False)
    assert stats.count == values.size == int(store.num_frames.sum()) * 128
    assert math.isclose(stats.mean, values.mean(), rel_tol=1e-10)
    assert math.isclose(stats.std, values.std(), rel_tol=1e-10)
    # blocks of a few clips give the same numbers as one pass
    small = FbankStore(out)
    blocks = list(small.iter_frames(max_rows=150))
    assert len(blocks) > 3
    np.testing.assert_array_equal(np.concatenate(blocks), values.astype(np.float32))

    size, before = out.stat().st_size, dict(store.attrs)
    store.close(), small.close()  # HDF5 will not open a file for writing that this process reads
    S.write_normalizer(out, stats.to_normalizer())
    after = FbankStore(out)
    assert after.normalizer == Normalizer(values.mean(), values.std()) or (
        math.isclose(after.normalizer.mean, values.mean(), rel_tol=1e-10)
        and math.isclose(after.normalizer.std, values.std(), rel_tol=1e-10)
    )
    assert out.stat().st_size == size  # rewritten in place, nothing allocated
    assert {k: v for k, v in after.attrs.items() if k != "normalizer"} == {
        k: v for k, v in before.items() if k != "normalizer"
    }
    np.testing.assert_array_equal(after.read(3), store.read(3))


# ---------------------------------------------------------------------------------------------
# resume (in process) and refusal of foreign segments


class _Interrupted(Exception):
    pass


def test_resume_after_interruption_and_foreign_segments(corpus, built, tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    real_assemble = S._assemble

    def interrupted(*args, **kwargs):
        raise _Interrupted

    monkeypatch.setattr(S, "_assemble", interrupted)
    with pytest.raises(_Interrupted):
        S.precompute(corpus, out, normalizer=Normalizer.preset("esc50"), workers=1, segment_clips=4, progress=False)
    seg_dir = Path(str(out) + ".partial.d")
    assert len(list(seg_dir.glob("seg-*.h5"))) == 4 and not out.exists()
    monkeypatch.setattr(S, "_assemble", real_assemble)

    with pytest.raises(StoreError, match="different run.*dtype.*delete this folder"):
        S.precompute(corpus, out, dtype="float32", workers=1, progress=False)
    calls = []
    monkeypatch.setattr(S, "_compute_clips", lambda task: calls.append(task) or [])
    summary = S.precompute(corpus, out, normalizer=Normalizer.preset("esc50"), workers=1, progress=False)
    assert calls == [] and summary.resumed == len(CLIPS) and summary.processed == 0
    assert not seg_dir.exists()
    assert_same_store(FbankStore(out), FbankStore(built))
    assert FbankStore(out).attrs == FbankStore(built).attrs

    # the finished store is not rebuilt, and another manifest's output is refused
    assert S.precompute(corpus, out, normalizer=Normalizer.preset("esc50"), workers=1, progress=False).processed == 0
    with pytest.raises(StoreError, match="another manifest/config"):
        S.precompute(corpus.subset(np.arange(3)), out, workers=1, progress=False)


# ---------------------------------------------------------------------------------------------
# shards


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> List[Path]:
    root = tmp_path_factory.mktemp("shards")
    paths = []
    for i in range(3):
        path = root / f"train.shard-{i}-of-3.h5"
        S.precompute(corpus, path, normalizer=Normalizer.preset("esc50"), workers=1, shard=(i, 3), progress=False)
        paths.append(path)
    return paths


def test_shard_blocks(shards, corpus):
    n = len(CLIPS)
    for i, path in enumerate(shards):
        store = FbankStore(path)
        lo, hi = S.shard_rows(n, i, 3)
        assert (store.attrs["row_start"], store.attrs["row_stop"]) == (lo, hi) == (i * n // 3, (i + 1) * n // 3)
        assert store.attrs["shard_index"] == i and store.attrs["num_shards"] == 3
        assert store.attrs["manifest_sha256"] == S.manifest_sha256(corpus)
        assert all(lo <= r < hi for r in store.manifest_index)


def test_merge_equals_unsharded(shards, built, tmp_path):
    root = shards[0].parent
    merged = root / "train.h5"
    S.merge_shards(merged, list(reversed(shards)))  # any order
    store = FbankStore(merged)
    assert store.is_virtual
    assert_same_store(store, FbankStore(built))
    assert store.attrs["num_skipped"] == 4 and store.normalizer == Normalizer.preset("esc50")
    assert store.attrs["manifest_sha256"] == FbankStore(built).attrs["manifest_sha256"]
    sidecar = Path(str(merged) + ".skipped.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in sidecar[1:]) == sorted(BAD)
    stats, ref = S.compute_stats(store, progress=False), S.compute_stats(FbankStore(built), progress=False)
    assert (stats.count, stats.mean, stats.std) == (ref.count, ref.mean, ref.std)
    with h5py.File(merged, "r") as fh:
        names = [v.file_name for v in fh["fbank"].virtual_sources()]
    assert all(not os.path.isabs(n) for n in names)

    # the folder moves as a whole and opens from any working directory
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert_same_store(FbankStore(moved / "train.h5"), FbankStore(built))
    finally:
        os.chdir(cwd)

    # a shard replaced by another file after the merge is refused
    swapped = tmp_path / "swapped"
    shutil.copytree(root, swapped)
    shutil.copy(swapped / shards[0].name, swapped / shards[1].name)
    with pytest.raises(StoreError, match=r"train\.shard-1-of-3\.h5 has fbank \(\d+, 128\) float16, the merged store expects"):
        FbankStore(swapped / "train.h5")

    # a shard deleted after the merge is named at open, and at the re-open of a pickled reader
    reader = FbankStore(moved / "train.h5")
    (moved / shards[1].name).unlink()
    with pytest.raises(StoreError, match=r"train\.shard-1-of-3\.h5 is missing"):
        FbankStore(moved / "train.h5")
    with pytest.raises(StoreError, match=r"train\.shard-1-of-3\.h5 is missing"):
        pickle.loads(pickle.dumps(reader)).read(0)


def test_merge_refuses_missing_or_foreign_shards(shards, corpus, tmp_path):
    with pytest.raises(StoreError, match=r"missing shard\(s\) 1 of 3"):
        S.merge_shards(tmp_path / "m.h5", [shards[0], shards[2]])
    with pytest.raises(StoreError, match="given twice"):
        S.merge_shards(tmp_path / "m.h5", [shards[0], shards[0], shards[1], shards[2]])
    other = tmp_path / "other.shard-1-of-3.h5"
    S.precompute(corpus, other, FbankConfig.preset("mae_ast"), workers=1, shard=(1, 3), progress=False)
    with pytest.raises(StoreError, match="fbank_config differs"):
        S.merge_shards(tmp_path / "m.h5", [shards[0], other, shards[2]])
    assert not (tmp_path / "m.h5").exists()


def test_parse_shard():
    assert S.parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            S.parse_shard(bad)
