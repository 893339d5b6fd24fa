"""Tests for audiossl/data/dataset.py: datasets and collate (augmentations, samplers and the per-item
generators are in test_data_augment.py, test_data_samplers.py and test_data_rng.py)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torchaudio

from audiossl.data.dataset import collate


# ---------------------------------------------------------------------------------------------
# The module's public face


def test_moved_names_stay_importable_from_dataset_and_no_module_imports_it_back():
    """Callers import all of these from audiossl.data.dataset; the modules they moved to stay
    below it (an import of dataset from one of them, even inside a function, is a cycle)."""
    import importlib
    from pathlib import Path

    from audiossl.data import dataset

    assert sorted(dataset.__all__) == sorted([
        "DatasetError", "FbankDataset", "WavDataset", "collate", "item_generator", "Mixup", "MixupResult",
        "mixup", "SpecAugment", "spec_augment", "NoiseAugment", "noise_augment", "RollAugment", "random_roll",
        "GainAugment", "random_gain", "roll_rows", "sample_beta", "balanced_sample_weights", "write_weights_csv",
        "read_weights_csv", "make_weighted_sampler",
    ])
    for name in dataset.__all__:
        obj = getattr(dataset, name)
        assert getattr(importlib.import_module(obj.__module__), name) is obj, name
    for home in ("augment", "items", "rng", "samplers"):
        module = importlib.import_module(f"audiossl.data.{home}")
        assert not _imports(Path(module.__file__)) & {"dataset", "audiossl.data.dataset"}, home


def _imports(path) -> set:
    """Every module a source file imports, at any depth (``from . import x`` counts as ``x``)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                out.add(node.module)
            if node.module in (None, "audiossl.data"):
                out |= {a.name for a in node.names}
    return out


# ---------------------------------------------------------------------------------------------
# Collate


def test_collate_pads_at_end_with_pad_value_and_returns_lengths():
    items = [
        {"fbank": torch.full((3, 2), 1.0), "length": 3, "labels": torch.tensor([1.0, 0.0]), "index": 0, "id": "a"},
        {"fbank": torch.full((5, 2), 2.0), "length": 5, "labels": torch.tensor([0.0, 1.0]), "index": 7, "id": "b", "lam": 0.25},
        {"fbank": torch.full((1, 2), 3.0), "length": 1, "labels": torch.tensor([1.0, 1.0]), "index": 2, "id": "c"},
    ]
    out = collate(items, pad_value=0.467)
    assert out["fbank"].shape == (3, 5, 2)
    assert out["lengths"].tolist() == [3, 5, 1]
    assert out["indices"].tolist() == [0, 7, 2]
    assert out["ids"] == ["a", "b", "c"]
    assert out["lam"].tolist() == [1.0, 0.25, 1.0]
    assert torch.equal(out["labels"], torch.tensor([[1.0, 0], [0, 1], [1, 1]]))
    assert torch.all(out["fbank"][0, :3] == 1.0) and torch.allclose(out["fbank"][0, 3:], torch.tensor(0.467))
    assert torch.all(out["fbank"][1] == 2.0)
    assert torch.all(out["fbank"][2, 0] == 3.0) and torch.allclose(out["fbank"][2, 1:], torch.tensor(0.467))
    # per-bin pad value
    out = collate(items, pad_value=torch.tensor([-1.0, -2.0]))
    assert out["fbank"][2, 4].tolist() == [-1.0, -2.0]
    # a batch without ids has no "ids"
    assert "ids" not in collate([{k: v for k, v in it.items() if k != "id"} for it in items])


# ---------------------------------------------------------------------------------------------
# Datasets on a real store built by the real writer

SR = 16000
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974
PAD_AUDIOSET = (0.0 - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)  # = 0.46703...
# seconds → frames 1 + (N - 400) // 160: 118, 68, 198, 148, 88, 308
CLIP_SECONDS = (1.2, 0.7, 2.0, 1.5, 0.9, 3.1)
CLIP_LABELS = (("/m/a",), ("/m/b",), ("/m/a", "/m/c"), ("/m/c",), ("/m/b", "/m/c"), ("/m/a",))


def _synth(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(SR * seconds)
    t = np.arange(n) / SR
    wav = 0.05 * rng.standard_normal(n)
    for _ in range(2):
        wav += 0.2 * np.sin(2 * np.pi * rng.uniform(100, 5000) * t)
    wav[rng.integers(0, n // 2) :][: n // 4] += 0.3 * rng.standard_normal(min(n // 4, n - n // 2))
    return (wav / np.abs(wav).max() * 0.7).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import pandas as pd
    import soundfile as sf

    from audiossl.data.manifest import Manifest, label_map_from_labels
    from audiossl.data.store import precompute
    from audiossl.features import FbankConfig, Normalizer

    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(1234)
    rows = []
    for i, (sec, labels) in enumerate(zip(CLIP_SECONDS, CLIP_LABELS)):
        path = root / f"clip{i}.wav"
        sf.write(path, _synth(rng, sec), SR, subtype="PCM_16")
        rows.append({"id": f"clip{i}", "path": str(path), "labels": labels, "duration": sec})
    table = pd.DataFrame(rows)
    manifest = Manifest(table, label_map_from_labels(table["labels"]))
    store = root / "fbank.h5"
    precompute(
        manifest, store, FbankConfig.preset("ast"), normalizer=Normalizer.preset("audioset"),
        dtype="float32", workers=0, progress=False,
    )
    bare = root / "bare.h5"  # no normaliser in the attrs
    precompute(manifest, bare, FbankConfig.preset("ast"), dtype="float32", workers=0, progress=False)
    return {"root": root, "manifest": manifest, "store": store, "bare": bare}


def _reference_fbank(path) -> torch.Tensor:
    """Independent front end: soundfile + torchaudio's own Kaldi fbank, AST arguments."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32")
    w = torch.from_numpy(wav)[None]
    w = w - w.mean()
    return torchaudio.compliance.kaldi.fbank(
        w, htk_compat=True, sample_frequency=sr, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    )


def _reference_item(path, target_length) -> torch.Tensor:
    fb = _reference_fbank(path)
    p = target_length - fb.shape[0]
    fb = torch.nn.functional.pad(fb, (0, 0, 0, p)) if p > 0 else fb[:target_length]
    return (fb - AUDIOSET_MEAN) / (AUDIOSET_STD * 2)


def test_fbank_dataset_items_equal_direct_fbank_pad_normalise(corpus):
    from audiossl.data.dataset import FbankDataset

    ds = FbankDataset(corpus["store"], target_length=256, return_ids=True)  # normalizer="store"
    assert len(ds) == 6 and ds.num_classes == 3
    frames = [118, 68, 198, 148, 88, 308]
    for i, path in enumerate(corpus["manifest"].table["path"]):
        item = ds[i]
        assert item["fbank"].shape == (256, 128) and item["fbank"].dtype == torch.float32
        ref = _reference_item(path, 256)
        assert torch.allclose(item["fbank"], ref, atol=2e-4), float((item["fbank"] - ref).abs().max())
        assert item["length"] == min(frames[i], 256)
        assert item["id"] == f"clip{i}" and item["index"] == i and item["lam"] == 1.0
        # padded frames sit at the normalised log-mel 0, +0.467 for AudioSet stats
        assert torch.all(item["fbank"][frames[i]:] == torch.tensor(PAD_AUDIOSET, dtype=torch.float32))
    # label map order /m/a, /m/b, /m/c
    assert ds[2]["labels"].tolist() == [1.0, 0.0, 1.0]
    assert ds[4]["labels"].tolist() == [0.0, 1.0, 1.0]
    assert ds[-1]["index"] == 5
    assert abs(ds.pad_value - 0.4670319) < 1e-6
    assert np.array_equal(ds.label_matrix().sum(0), [3, 2, 3])


def test_wav_dataset_matches_store_and_reference(corpus):
    from audiossl.data.dataset import FbankDataset, WavDataset

    fb = FbankDataset(corpus["store"], target_length=160, normalizer="audioset")
    wv = WavDataset(corpus["manifest"], "ast", target_length=160, normalizer="audioset", return_ids=True)
    for i in range(6):
        a, b = fb[i], wv[i]
        assert torch.allclose(a["fbank"], b["fbank"], atol=1e-5)
        assert a["length"] == b["length"] and torch.equal(a["labels"], b["labels"])
        assert torch.allclose(b["fbank"], _reference_item(wv.paths[i], 160), atol=2e-4)
    assert wv[3]["id"] == "clip3"


def test_normalizer_options(corpus):
    from audiossl.data.dataset import DatasetError, FbankDataset
    from audiossl.features import Normalizer

    raw = FbankDataset(corpus["store"], target_length=128, normalizer=None)[1]
    assert torch.all(raw["fbank"][68:] == 0)  # raw log-mel pad
    custom = Normalizer(-5.0, 3.0)
    item = FbankDataset(corpus["store"], target_length=128, normalizer=custom)[1]
    assert torch.allclose(item["fbank"], (raw["fbank"] + 5.0) / 6.0, atol=1e-6)
    with pytest.raises(DatasetError, match="bare.h5"):
        FbankDataset(corpus["bare"], normalizer="store")


def test_random_crop_reproducible_per_seed_epoch_index(corpus):
    from audiossl.data.dataset import FbankDataset

    full = FbankDataset(corpus["store"])[5]["fbank"]  # 308 frames, no target: whole clip
    assert full.shape == (308, 128)
    ds = FbankDataset(corpus["store"], target_length=100, crop="random", seed=3)

    def offset(x):
        hits = [s for s in range(0, 209) if torch.equal(full[s : s + 100], x)]
        assert len(hits) == 1
        return hits[0]

    offsets = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        a = ds[5]
        assert a["length"] == 100 and torch.equal(a["fbank"], ds[5]["fbank"])
        offsets.append(offset(a["fbank"]))
    assert len(set(offsets)) >= 4  # U{0..208}: six epochs almost surely differ
    ds.set_epoch(2)
    assert offset(ds[5]["fbank"]) == offsets[2]
    other_seed = FbankDataset(corpus["store"], target_length=100, crop="random", seed=4)
    assert [offset((other_seed.set_epoch(e), other_seed[5])[1]["fbank"]) for e in range(6)] != offsets
    # a clip shorter than the target is never cropped, only padded
    assert ds[1]["length"] == 68
    center = FbankDataset(corpus["store"], target_length=100, crop="center")[5]["fbank"]
    assert torch.equal(center, full[104:204])


def _epoch_batches(ds, workers, context=None, epochs=(0,), persistent=False):
    from torch.utils.data import DataLoader

    loader = DataLoader(
        ds, batch_size=4, shuffle=False, num_workers=workers, collate_fn=ds.collate_fn,
        multiprocessing_context=context, persistent_workers=persistent,
    )
    out = []
    for e in epochs:
        ds.set_epoch(e)
        out.append([b for b in loader])
    return out


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_give_identical_items(corpus, context):
    """Random crop, mixup and a per-item SpecAugment are the same with 0 or 2 workers, and
    set_epoch reaches persistent workers (shared-memory epoch)."""
    from audiossl.data.dataset import FbankDataset, SpecAugment

    def make():
        return FbankDataset(
            corpus["store"], target_length=120, crop="random", mixup=0.5, return_ids=True,
            transform=SpecAugment(20, 30, value=PAD_AUDIOSET), seed=11,
        )

    ref = _epoch_batches(make(), 0, epochs=(0, 1))
    assert not torch.equal(ref[0][0]["fbank"], ref[1][0]["fbank"])  # the epoch matters
    got = _epoch_batches(make(), 2, context, epochs=(0, 1), persistent=True)
    _same(ref[0], got[0])
    _same(ref[1], got[1])
    assert ref[0][0]["ids"] == ["clip0", "clip1", "clip2", "clip3"]


def test_collate_variable_length_through_loader(corpus):
    from torch.utils.data import DataLoader

    from audiossl.data.dataset import FbankDataset

    ds = FbankDataset(corpus["store"])  # target_length=None: clips keep their length
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=ds.collate_fn)))
    assert batch["lengths"].tolist() == [118, 68, 198]
    assert batch["fbank"].shape == (3, 198, 128)
    for b, n in enumerate([118, 68, 198]):
        assert torch.equal(batch["fbank"][b, :n], ds[b]["fbank"])
        assert torch.all(batch["fbank"][b, n:] == torch.tensor(PAD_AUDIOSET, dtype=torch.float32))


def test_dataset_level_mixup_mixes_two_items(corpus):
    from audiossl.data.dataset import FbankDataset

    plain = FbankDataset(corpus["store"], target_length=200)
    mixed = FbankDataset(corpus["store"], target_length=200, mixup=1.0, seed=5)
    lams = []
    for i in range(6):
        item = mixed[i]
        lam = item["lam"]
        lams.append(lam)
        assert 0.0 < lam < 1.0
        matches = [
            j for j in range(6)
            if torch.allclose(item["fbank"], lam * plain[i]["fbank"] + (1 - lam) * plain[j]["fbank"], atol=1e-5)
            and torch.allclose(item["labels"], lam * plain[i]["labels"] + (1 - lam) * plain[j]["labels"])
        ]
        assert matches, i
        j = matches[0]
        assert item["length"] == max(plain[i]["length"], plain[j]["length"])
    assert len(set(lams)) == 6


def test_wav_dataset_mixup_is_ast_waveform_mix(corpus):
    import soundfile as sf

    from audiossl.data.dataset import WavDataset

    ds = WavDataset(corpus["manifest"], "ast", target_length=200, normalizer="audioset", mixup=1.0, seed=2)
    item = ds[1]  # 0.7 s clip: a longer partner is cut, a shorter one zero-padded
    lam = item["lam"]
    w1 = torch.from_numpy(sf.read(ds.paths[1], dtype="float32")[0])
    found = []
    for j in range(6):
        w2 = torch.from_numpy(sf.read(ds.paths[j], dtype="float32")[0])
        w1c, w2c = w1 - w1.mean(), w2 - w2.mean()
        w2c = torch.nn.functional.pad(w2c, (0, max(0, len(w1c) - len(w2c))))[: len(w1c)]
        mix = lam * w1c + (1 - lam) * w2c
        mix = (mix - mix.mean())[None]
        fb = torchaudio.compliance.kaldi.fbank(
            mix, htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_shift=10,
        )
        ref = (torch.nn.functional.pad(fb, (0, 0, 0, 200 - fb.shape[0])) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
        if torch.allclose(item["fbank"], ref, atol=5e-4):
            found.append(j)
    assert found
    j = found[0]
    y = torch.zeros(3)
    for k, mid in enumerate(["/m/a", "/m/b", "/m/c"]):
        y[k] = lam * (mid in CLIP_LABELS[1]) + (1 - lam) * (mid in CLIP_LABELS[j])
    assert torch.allclose(item["labels"], y)


def test_wav_dataset_roll_gain_reproducible(corpus):
    from audiossl.data.dataset import WavDataset

    plain = WavDataset(corpus["manifest"], "ast", target_length=None, normalizer=None)
    aug = WavDataset(corpus["manifest"], "ast", target_length=None, normalizer=None, roll_gain=True, seed=1)
    a, b = aug[2]["fbank"], aug[2]["fbank"]
    assert torch.equal(a, b) and a.shape == plain[2]["fbank"].shape
    # the gain shifts every log-power bin by 2 log(g), g in (0.5, 1.5); the roll permutes time
    shift = (a.mean() - plain[2]["fbank"].mean()).item()
    assert 2 * math.log(0.5) < shift < 2 * math.log(1.5) and abs(shift) > 1e-4


def test_label_smoothing_matches_cross_entropy(corpus):
    from audiossl.data.dataset import FbankDataset

    ds = FbankDataset(corpus["store"], target_length=64, label_smoothing=0.1)
    y = ds[0]["labels"]  # class 0 of 3
    assert y.tolist() == pytest.approx([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    soft = torch.nn.functional.cross_entropy(logits, y[None])
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.1)
    assert torch.allclose(soft, ref)


def test_subset_indices_and_pickle(corpus):
    from audiossl.data.dataset import DatasetError, FbankDataset

    ds = FbankDataset(corpus["store"], target_length=64, indices=[5, 2], return_ids=True)
    assert len(ds) == 2 and ds[0]["id"] == "clip5" and ds[1]["id"] == "clip2"
    ds[0]  # opens the HDF5 file in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1]["fbank"], ds[1]["fbank"])
    with pytest.raises(DatasetError, match="out of range"):
        FbankDataset(corpus["store"], indices=[6])
    with pytest.raises(IndexError):
        ds[2]


def test_wav_dataset_bad_file_names_it(corpus, tmp_path):
    import pandas as pd

    from audiossl.audio import AudioError
    from audiossl.data.dataset import WavDataset
    from audiossl.data.manifest import Manifest

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    m = Manifest(pd.DataFrame({"id": ["x"], "path": [str(bad)], "labels": [()]}))
    ds = WavDataset(m, "ast", target_length=64)
    with pytest.raises(AudioError, match="broken.wav"):
        ds[0]


# ---------------------------------------------------------------------------------------------
# Batched reads (__getitems__ + collate) and float16 transport (output_dtype + normalize_batch)


@pytest.fixture(scope="module")
def store16(corpus):
    from audiossl.data.store import precompute
    from audiossl.features import FbankConfig, Normalizer

    path = corpus["root"] / "fbank16.h5"
    precompute(
        corpus["manifest"], path, FbankConfig.preset("ast"), normalizer=Normalizer.preset("audioset"),
        dtype="float16", workers=0, progress=False,
    )
    return path


def _per_item_batch(ds, indices):
    """Today's path: every item built by __getitem__, then collated."""
    return collate([ds[i] for i in indices], ds.pad_value)


BATCH_ORDER = [5, 0, 3, 2, 4]  # 308, 118, 148, 198, 88 frames: crops and pads in one batch


@pytest.mark.parametrize("which", ["store", "store16"])
@pytest.mark.parametrize("target_length", [None, 120, 256])
@pytest.mark.parametrize("crop", ["start", "random"])
def test_batched_reads_equal_per_item_collate(corpus, store16, which, target_length, crop):
    from audiossl.data.dataset import FbankDataset

    path = store16 if which == "store16" else corpus["store"]
    ds = FbankDataset(path, target_length=target_length, crop=crop, return_ids=True, label_smoothing=0.1, seed=5)
    ds.set_epoch(2)
    pending = ds.__getitems__(BATCH_ORDER)
    got = collate(pending, ds.pad_value)
    ref = _per_item_batch(ds, BATCH_ORDER)
    _same([got], [ref])
    assert list(got) == list(ref)  # same keys in the same order
    assert got["fbank"].dtype == torch.float32 and got["lengths"].dtype == torch.long
    longest = 308 if target_length is None else target_length
    assert got["fbank"].shape == (5, longest, 128)
    # hand-checked pieces: clip 0 (118 frames) ends in the normalised log-mel 0, labels smoothed
    if target_length != 120:
        assert torch.all(got["fbank"][1, 118:] == torch.tensor(PAD_AUDIOSET, dtype=torch.float32))
    assert got["labels"][3].tolist() == pytest.approx([0.9 + 0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3])  # clip 2: a, c
    assert got["ids"] == ["clip5", "clip0", "clip3", "clip2", "clip4"]


def test_batched_collate_pads_with_the_given_pad_value(corpus):
    from audiossl.data.dataset import FbankDataset

    ds = FbankDataset(corpus["store"], normalizer=None)  # variable length, raw log-mel
    row = torch.linspace(-1, 1, 128)
    got = collate(ds.__getitems__([1, 0]), row)
    assert torch.equal(got["fbank"], collate([ds[1], ds[0]], row)["fbank"])
    assert torch.equal(got["fbank"][0, 68:], row.expand(118 - 68, 128))
    with pytest.raises(ValueError, match="pad_value"):
        collate(ds.__getitems__([1, 0]), torch.zeros(3))


def test_pending_batch_is_the_items_for_other_collate_fns(corpus):
    """A user collate_fn (or none: default_collate) gets exactly the items __getitem__ builds;
    a collate_fn returning its input hands back a plain list, pickled through workers."""
    from torch.utils.data import DataLoader, Subset, default_collate

    from audiossl.data.dataset import FbankDataset

    ds = FbankDataset(corpus["store"], target_length=100, crop="random", return_ids=True, seed=1)
    pending = ds.__getitems__([4, 1])
    assert len(pending) == 2 and not isinstance(pending, list)
    for got, want in zip(pending, [ds[4], ds[1]]):
        _same([got], [want])
    assert pending[-1]["index"] == 1 and [it["id"] for it in pending[0:2]] == ["clip4", "clip1"]
    clone = pickle.loads(pickle.dumps(pending))
    assert type(clone) is list and torch.equal(clone[0]["fbank"], ds[4]["fbank"])

    default = next(iter(DataLoader(ds, batch_size=3)))  # collate_fn=None: default_collate
    ref = default_collate([ds[0], ds[1], ds[2]])
    assert torch.equal(default["fbank"], ref["fbank"]) and default["id"] == ["clip0", "clip1", "clip2"]

    lists = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=_identity, multiprocessing_context="fork"))
    assert [type(b) for b in lists] == [list, list]
    for b, start in zip(lists, (0, 3)):
        for k, item in enumerate(b):
            _same([item], [ds[start + k]])

    sub = Subset(ds, [5, 2, 0])  # Subset forwards __getitems__ with its own indices
    batch = next(iter(DataLoader(sub, batch_size=3, collate_fn=ds.collate_fn)))
    _same([batch], [_per_item_batch(ds, [5, 2, 0])])


def _identity(batch):
    return batch


def test_per_item_features_keep_the_item_path(corpus):
    from audiossl.data.dataset import FbankDataset, SpecAugment

    with_mixup = FbankDataset(corpus["store"], target_length=100, mixup=0.5)
    with_transform = FbankDataset(corpus["store"], target_length=100, transform=SpecAugment(10, 10))
    for ds in (with_mixup, with_transform):
        got = ds.__getitems__([0, 3])
        assert type(got) is list
        _same(got, [ds[0], ds[3]])


def test_float16_output_is_raw_log_mel_and_normalize_batch_is_bit_identical(corpus, store16):
    from audiossl.data.dataset import FbankDataset
    from audiossl.data.store import FbankStore

    st = FbankStore(store16)
    for crop in ("start", "random"):
        half = FbankDataset(store16, target_length=256, crop=crop, seed=7, output_dtype=torch.float16)
        full = FbankDataset(store16, target_length=256, crop=crop, seed=7)
        item = half[0]  # per-item path: the stored rows, zero tail
        assert item["fbank"].dtype == torch.float16 and half.pad_value == 0.0
        assert torch.equal(item["fbank"][:118], torch.from_numpy(st.read_raw(0)))
        assert torch.all(item["fbank"][118:] == 0)
        for ds_epoch in (0, 3):
            half.set_epoch(ds_epoch), full.set_epoch(ds_epoch)
            batch = collate(half.__getitems__(BATCH_ORDER), half.pad_value)
            assert batch["fbank"].dtype == torch.float16
            assert torch.equal(batch["fbank"], _per_item_batch(half, BATCH_ORDER)["fbank"])
            normed = half.normalize_batch(batch)
            ref = _per_item_batch(full, BATCH_ORDER)
            _same([normed], [ref])  # bit-identical to today's float32 batch
            assert batch["fbank"].dtype == torch.float16  # the input dict is not modified
    assert torch.equal(half.normalize_batch(batch["fbank"]), ref["fbank"])  # a bare tensor too
    with pytest.raises(ValueError, match="normalised twice"):
        half.normalize_batch(ref)
    assert full.normalize_batch(ref) is not None and full.normalize_batch(ref)["fbank"] is ref["fbank"]
    # variable length: collate pads the raw log-mel with 0, normalised afterwards to the pad value
    half_var = FbankDataset(store16, output_dtype=torch.float16)
    normed = half_var.normalize_batch(collate(half_var.__getitems__([1, 5]), half_var.pad_value))
    ref = _per_item_batch(FbankDataset(store16), [1, 5])
    _same([normed], [ref])
    raw = FbankDataset(store16, target_length=128, normalizer=None, output_dtype=torch.float16)
    assert torch.equal(raw.normalize_batch(collate(raw.__getitems__([1]), 0.0))["fbank"][0], raw[1]["fbank"].float())


def test_float16_output_refuses_per_item_augmentation(corpus, store16):
    from audiossl.data.dataset import FbankDataset, SpecAugment

    with pytest.raises(ValueError, match="normalize_batch"):
        FbankDataset(store16, mixup=0.5, output_dtype=torch.float16)
    with pytest.raises(ValueError, match="normalize_batch"):
        FbankDataset(store16, transform=SpecAugment(4, 4), output_dtype=torch.float16)
    with pytest.raises(ValueError, match="output_dtype"):
        FbankDataset(store16, output_dtype=torch.bfloat16)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_batched_and_float16_paths_through_workers(corpus, store16, context):
    """0 and 2 workers, fork and spawn: the batched float32 path and the float16 path after
    normalize_batch equal today's per-item batches, across a set_epoch on persistent workers."""
    from audiossl.data.dataset import FbankDataset

    def make(dtype):
        return FbankDataset(store16, target_length=120, crop="random", return_ids=True, seed=11, output_dtype=dtype)

    ref_ds = make(torch.float32)
    ref = []
    for e in (0, 1):
        ref_ds.set_epoch(e)
        ref.append([_per_item_batch(ref_ds, list(range(k, min(k + 4, 6)))) for k in (0, 4)])
    assert not torch.equal(ref[0][0]["fbank"], ref[1][0]["fbank"])  # the epoch matters
    for workers in ((0, 2) if context == "fork" else (2,)):
        ctx, persistent = (context if workers else None), workers > 0
        got32 = _epoch_batches(make(torch.float32), workers, ctx, (0, 1), persistent=persistent)
        half = make(torch.float16)
        got16 = _epoch_batches(half, workers, ctx, (0, 1), persistent=persistent)
        for e in (0, 1):
            _same(got32[e], ref[e])
            assert all(b["fbank"].dtype == torch.float16 for b in got16[e])
            _same([half.normalize_batch(b) for b in got16[e]], ref[e])
