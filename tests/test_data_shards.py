"""Tests for audiossl/data/shards.py: shard row blocks and merging shard stores into one."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import List

import h5py
import pytest

from audiossl.data import shards as SH
from audiossl.data.manifest import Manifest
from audiossl.data.store import FbankStore, StoreError, compute_stats, manifest_sha256, precompute
from audiossl.features import FbankConfig, Normalizer

from test_store import BAD, CLIPS, assert_same_store, build_store, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Manifest:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    return build_store(corpus, tmp_path_factory.mktemp("store") / "train.h5")


# ---------------------------------------------------------------------------------------------
# shards


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> List[Path]:
    root = tmp_path_factory.mktemp("shards")
    paths = []
    for i in range(3):
        path = root / f"train.shard-{i}-of-3.h5"
        precompute(corpus, path, normalizer=Normalizer.preset("esc50"), workers=1, shard=(i, 3), progress=False)
        paths.append(path)
    return paths


def test_shard_blocks(shards, corpus):
    n = len(CLIPS)
    for i, path in enumerate(shards):
        store = FbankStore(path)
        lo, hi = SH.shard_rows(n, i, 3)
        assert (store.attrs["row_start"], store.attrs["row_stop"]) == (lo, hi) == (i * n // 3, (i + 1) * n // 3)
        assert store.attrs["shard_index"] == i and store.attrs["num_shards"] == 3
        assert store.attrs["manifest_sha256"] == manifest_sha256(corpus)
        assert all(lo <= r < hi for r in store.manifest_index)


def test_merge_equals_unsharded(shards, built, tmp_path):
    root = shards[0].parent
    merged = root / "train.h5"
    SH.merge_shards(merged, list(reversed(shards)))  # any order
    store = FbankStore(merged)
    assert store.is_virtual
    assert_same_store(store, FbankStore(built))
    assert store.attrs["num_skipped"] == 4 and store.normalizer == Normalizer.preset("esc50")
    assert store.attrs["manifest_sha256"] == FbankStore(built).attrs["manifest_sha256"]
    sidecar = Path(str(merged) + ".skipped.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in sidecar[1:]) == sorted(BAD)
    stats, ref = compute_stats(store, progress=False), compute_stats(FbankStore(built), progress=False)
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
        SH.merge_shards(tmp_path / "m.h5", [shards[0], shards[2]])
    with pytest.raises(StoreError, match="given twice"):
        SH.merge_shards(tmp_path / "m.h5", [shards[0], shards[0], shards[1], shards[2]])
    other = tmp_path / "other.shard-1-of-3.h5"
    precompute(corpus, other, FbankConfig.preset("mae_ast"), workers=1, shard=(1, 3), progress=False)
    with pytest.raises(StoreError, match="fbank_config differs"):
        SH.merge_shards(tmp_path / "m.h5", [shards[0], other, shards[2]])
    assert not (tmp_path / "m.h5").exists()


def test_parse_shard():
    assert SH.parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            SH.parse_shard(bad)
