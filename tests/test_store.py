"""Tests for audiossl/data/store_format.py (through audiossl.data.store): the layout, attrs and the reader.

The corpus and the store built from it (``make_corpus``, ``build_store``) are shared by
test_data_precompute.py, test_data_shards.py and test_store_cli.py.
"""

from __future__ import annotations

import math
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

from audiossl import audio
from audiossl.data import store as S
from audiossl.data import store_format
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


def build_store(corpus: Manifest, out: Path) -> Path:
    """The store every test of the store modules reads: two workers, several segments."""
    summary = S.precompute(
        corpus, out, FbankConfig.preset("ast"), normalizer=Normalizer.preset("esc50"), workers=2,
        segment_clips=3, progress=False,
    )
    assert summary.num_clips == len(CLIPS) - len(BAD) and summary.num_skipped == len(BAD)
    return out


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    return build_store(corpus, tmp_path_factory.mktemp("store") / "train.h5")


# ---------------------------------------------------------------------------------------------
# the module's public face


def test_names_stay_importable_from_store_and_no_module_imports_it_back():
    """Commands, training and benchmarks import these from audiossl.data.store; the modules they
    live in stay below it (an import of store from one of them, even inside a function, is a cycle)."""
    import ast
    import importlib

    assert sorted(S.__all__) == sorted([
        "CLIPS_PER_TASK", "COMPRESSIONS", "DTYPES", "FORMAT_VERSION", "MAX_CHUNK_BYTES", "MAX_PAD_FRACTION",
        "MIN_CHUNK_BYTES", "NORMALIZER_ATTR_BYTES", "SEGMENT_BYTES", "SEGMENT_CLIPS", "SEGMENT_SECONDS",
        "FbankStore", "PathLike", "PrecomputeSummary", "StoreError", "choose_chunk_frames", "chunk_aligned_offsets",
        "compute_stats", "default_workers", "manifest_sha256", "merge_shards", "parse_shard", "precompute",
        "shard_rows", "write_normalizer",
    ])
    for home in ("store_format", "shards", "precompute"):
        module = importlib.import_module(f"audiossl.data.{home}")
        imported = set()
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported |= {node.module} if node.module else set()
                if node.module in (None, "audiossl.data"):
                    imported |= {a.name for a in node.names}
        assert not imported & {"store", "audiossl.data.store"}, home
        for name in S.__all__:
            if hasattr(module, name) and not name.isupper() and name != "PathLike":
                assert getattr(module, name) is getattr(S, name), name


# ---------------------------------------------------------------------------------------------
# layout


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
    idx = store_format._ragged_index(np.array([5, 0, 20]), np.array([2, 3, 0]))
    np.testing.assert_array_equal(idx, [5, 6, 0, 1, 2])


# ---------------------------------------------------------------------------------------------
# metadata and windows


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
