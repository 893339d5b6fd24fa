"""Pretraining must make representations better than no pretraining: a short MAE-AST-tiny run on
real (synthesised) speech, probed layer by layer against the same encoder randomly initialised.

The reduced version of ``benchmarks/bench_learning.py``: keyword spotting rendered with espeak-ng
(data_prep/espeak_kws.py), split by accent so the test voices are never heard; pretraining sees
only the train split's audio. Skipped with a message where espeak-ng is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from audiossl.data.store import FbankStore, compute_stats, precompute, write_normalizer
from audiossl.embed import Embedder
from audiossl.evaluate import probe_accuracy, random_payload
from audiossl.checkpoint import load_checkpoint
from audiossl.train.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parent.parent
STEPS = 400


def _kws_builder():
    spec = importlib.util.spec_from_file_location("espeak_kws", ROOT / "data_prep" / "espeak_kws.py")
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(ROOT / "data_prep"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "data_prep"))
    return module


@pytest.fixture(scope="module")
def kws(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): the learning test needs real speech")
    out = tmp_path_factory.mktemp("kws")
    manifest = _kws_builder().build(out / "task", variants=("default", "f1", "m3"), rates=(120, 230))
    table = manifest.table
    precompute(manifest, out / "all.h5", workers=1, progress=False)
    train = type(manifest)(table[table["split"] == "train"].reset_index(drop=True))
    precompute(train, out / "train.h5", workers=1, progress=False)
    write_normalizer(out / "train.h5", compute_stats(out / "train.h5", progress=False).to_normalizer())
    return {"table": table, "store": out / "all.h5", "train": out / "train.h5"}


def _label(v):
    return v[0] if isinstance(v, (list, tuple)) else v


def _per_layer_probe(ckpt, kws) -> list:
    """Test accuracy of a logistic-regression probe (C on valid) on every block's token mean."""
    emb = Embedder.from_checkpoint(ckpt, pooling="mean", layers="all")
    store = FbankStore(kws["store"])
    row = {i: k for k, i in enumerate(store.ids)}
    feats, labels = {}, {}
    classes = {c: k for k, c in enumerate(sorted({str(v) for v in kws["table"]["labels"].map(_label)}))}
    for split in ("train", "valid", "test"):
        part = kws["table"][kws["table"]["split"] == split]
        x = [torch.from_numpy(store.read(row[i])).float() for i in part["id"]]
        feats[split] = np.stack([e.clip.numpy() for e in emb.embed_fbank(x, frames=False)])  # (N, L, D)
        labels[split] = np.array([classes[str(_label(v))] for v in part["labels"]], dtype=np.int64)
    accs = []
    for layer in range(feats["train"].shape[1]):
        r = probe_accuracy(feats["train"][:, layer], labels["train"], feats["valid"][:, layer], labels["valid"],
                           feats["test"][:, layer], labels["test"], probe="logreg")
        accs.append(r.test_acc)
    return accs


def test_short_pretraining_beats_random_init_layer_by_layer(kws, tmp_path):
    torch.set_num_threads(1)
    cfg = PretrainConfig.from_dict({
        "model": "maeast_patch_tiny", "steps": STEPS, "out": str(tmp_path / "run"), "save_every": STEPS,
        "log_every": 50, "progress": False, "seed": 1,
        "data": {"train": str(kws["train"]), "target_length": 128, "batch_size": 16, "num_workers": 0},
        "optim": {"lr": 1e-3, "warmup": 0.1},
    })
    ckpt = load_checkpoint(pretrain(cfg))
    trained = _per_layer_probe(ckpt, kws)
    random = _per_layer_probe(random_payload(ckpt, seed=0), kws)
    print(f"\nper-layer test accuracy, {STEPS} steps: pretrained {np.round(trained, 3).tolist()}, "
          f"random init {np.round(random, 3).tolist()}")
    assert max(trained) >= max(random) + 0.05, (trained, random)
