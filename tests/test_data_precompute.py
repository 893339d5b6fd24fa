"""Tests for audiossl/data/precompute.py: what the writer stores, the clips it skips, its
options, and resuming an interrupted run (kill -9 from outside is in test_store_cli.py)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from audiossl import audio
from audiossl.data import precompute as P
from audiossl.data.manifest import Manifest
from audiossl.data.store import FbankStore, StoreError
from audiossl.features import FbankConfig, Normalizer

from test_store import BAD, CLIPS, assert_same_store, build_store, make_corpus, reference_fbank


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Manifest:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    return build_store(corpus, tmp_path_factory.mktemp("store") / "train.h5")


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


# ---------------------------------------------------------------------------------------------
# skipped clips and options


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


def test_float32_and_gzip(corpus, built, tmp_path):
    sub = corpus.subset(np.arange(4))
    out32 = tmp_path / "f32.h5"
    P.precompute(sub, out32, dtype="float32", compression="gzip", workers=1, progress=False)
    s32, s16 = FbankStore(out32), FbankStore(built)
    with h5py.File(out32, "r") as fh:
        assert fh["fbank"].dtype == np.float32 and fh["fbank"].compression == "gzip"
    for i in range(len(s32)):
        expected = reference_fbank(sub.table["path"].iat[i], FbankConfig())
        np.testing.assert_array_equal(s32.read(i), expected)  # exact in float32
        np.testing.assert_array_equal(s32.read(i).astype(np.float16), s16.read(i).astype(np.float16))


# ---------------------------------------------------------------------------------------------
# resume (in process) and refusal of foreign segments


class _Interrupted(Exception):
    pass


def test_resume_after_interruption_and_foreign_segments(corpus, built, tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    real_assemble = P._assemble

    def interrupted(*args, **kwargs):
        raise _Interrupted

    monkeypatch.setattr(P, "_assemble", interrupted)
    with pytest.raises(_Interrupted):
        P.precompute(corpus, out, normalizer=Normalizer.preset("esc50"), workers=1, segment_clips=4, progress=False)
    seg_dir = Path(str(out) + ".partial.d")
    assert len(list(seg_dir.glob("seg-*.h5"))) == 4 and not out.exists()
    monkeypatch.setattr(P, "_assemble", real_assemble)

    with pytest.raises(StoreError, match="different run.*dtype.*delete this folder"):
        P.precompute(corpus, out, dtype="float32", workers=1, progress=False)
    calls = []
    monkeypatch.setattr(P, "_compute_clips", lambda task: calls.append(task) or [])
    summary = P.precompute(corpus, out, normalizer=Normalizer.preset("esc50"), workers=1, progress=False)
    assert calls == [] and summary.resumed == len(CLIPS) and summary.processed == 0
    assert not seg_dir.exists()
    assert_same_store(FbankStore(out), FbankStore(built))
    assert FbankStore(out).attrs == FbankStore(built).attrs

    # the finished store is not rebuilt, and another manifest's output is refused
    assert P.precompute(corpus, out, normalizer=Normalizer.preset("esc50"), workers=1, progress=False).processed == 0
    with pytest.raises(StoreError, match="another manifest/config"):
        P.precompute(corpus.subset(np.arange(3)), out, workers=1, progress=False)
