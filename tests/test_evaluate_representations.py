"""audiossl/evaluate/representations.py: fbank statistics, layer specs, random-init encoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiossl.evaluate.representations import (
    PassKey,
    RepresentationSpec,
    WaveCache,
    compute_pass,
    fbank_stats,
    parse_layers,
    random_payload,
    row_features,
    spec_rows,
)
from audiossl.evaluate.tasks import Split, Task
from audiossl.features import FbankConfig, Normalizer, fbank, mel_banks
from audiossl.models.registry import build_model
from audiossl.checkpoint import native_payload, save_checkpoint

SR = 16000


def _sine(freq: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float32) / SR
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def test_fbank_stats_of_a_known_signal():
    cfg, norm = FbankConfig.preset("ast"), Normalizer.preset("audioset")
    wave = _sine(1000.0)
    stats = fbank_stats(wave, cfg, norm)
    assert stats.shape == (256,)
    x = norm(fbank(wave, cfg)[0][0]).double()
    np.testing.assert_allclose(stats[:128], x.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[128:], x.std(0, unbiased=False).numpy(), rtol=1e-5, atol=1e-6)
    # The loudest bin is the one whose triangle is centred nearest 1 kHz; a steady tone barely
    # varies there.
    banks = mel_banks(cfg)
    centres = (banks * torch.linspace(0, SR / 2, banks.shape[1])).sum(1) / banks.sum(1)
    peak = int(np.argmax(stats[:128]))
    assert abs(float(centres[peak]) - 1000.0) < 60.0
    assert stats[128 + peak] < 0.05
    # Half 500 Hz, half 2 kHz: each tone's bin is loud half of the time, so it varies.
    s2 = fbank_stats(torch.cat([_sine(500.0, 0.5), _sine(2000.0, 0.5)]), cfg, norm)
    for f in (500.0, 2000.0):
        b = int(np.nanargmin(np.abs(centres.numpy() - f)))  # empty low banks have no centre
        assert s2[128 + b] > 0.5, (f, s2[128 + b])


def test_parse_layers_forms():
    assert parse_layers(None) is None
    assert parse_layers("all") == "all"
    assert parse_layers("Top2-mean") == "top2-mean"
    assert parse_layers("0,2,-1") == [0, 2, -1]
    assert parse_layers(3) == [3]
    with pytest.raises(ValueError, match="topK-mean"):
        parse_layers("best")


def test_spec_rows_and_row_features():
    spec = RepresentationSpec("eat", "checkpoint", "x.pt", pooling="cls", layers="all")
    assert spec_rows(spec, 3) == [("cls/L0", ("layer", 0)), ("cls/L1", ("layer", 1)), ("cls/L2", ("layer", 2))]
    assert spec_rows(RepresentationSpec("eat", "checkpoint", "x.pt", layers=-1), 3) == [("L2", ("layer", 2))]
    assert spec_rows(RepresentationSpec("eat", "checkpoint", "x.pt"), 3) == [("", None)]
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(row_features(x, ("layer", 1)), x[:, 1])
    np.testing.assert_array_equal(row_features(x, ("top", 2)), x[:, 1:].mean(1))
    np.testing.assert_array_equal(row_features(x, None), x.reshape(2, 12))
    with pytest.raises(Exception, match="only 3 blocks"):
        spec_rows(RepresentationSpec("eat", "checkpoint", "x.pt", layers="top4-mean"), 3)
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        RepresentationSpec("r", "random")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        model = build_model("eat_tiny")
    payload = native_payload(model, family="eat", fbank=FbankConfig.preset("ast").to_dict(),
                             normalizer=Normalizer.preset("audioset").to_dict(), target_length=128)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "eat_tiny.pt", payload)


@pytest.fixture(scope="module")
def sine_task(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("sines")
    splits = {}
    for split, freqs in (("train", (300, 600, 900, 1200)), ("valid", (450, 1050)), ("test", (350, 950))):
        paths = []
        for f in freqs:
            p = root / f"{split}_{f}.wav"
            sf.write(str(p), _sine(float(f), 0.6).numpy(), SR)
            paths.append(str(p))
        splits[split] = Split([f"{split}{i}" for i in range(len(paths))], paths, np.arange(len(paths)) % 2)
    return Task("sines", str(root), ["low", "high"], splits)


def test_random_init_is_reproducible_per_seed_and_differs_from_pretrained(checkpoint, sine_task):
    from audiossl.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    rng_before = torch.get_rng_state()
    a, b, c = random_payload(ckpt, 0), random_payload(ckpt, 0), random_payload(ckpt, 1)
    assert torch.equal(torch.get_rng_state(), rng_before)  # no global RNG moved
    name = "encoder.blocks.0.attn.qkv.weight"
    assert name in a["model"]
    assert torch.equal(a["model"][name], b["model"][name])
    assert not torch.equal(a["model"][name], c["model"][name])
    assert not torch.equal(a["model"][name], ckpt["model"][name])
    assert (a["fbank"], a["normalizer"], a["target_length"]) == (ckpt["fbank"], ckpt["normalizer"], 128)

    waves = WaveCache()
    pre, pre_meta = compute_pass(PassKey("checkpoint", str(checkpoint)), sine_task, waves, progress=False)
    r0, r0_meta = compute_pass(PassKey("random", str(checkpoint), seed=0), sine_task, waves, progress=False)
    r0b, _ = compute_pass(PassKey("random", str(checkpoint), seed=0), sine_task, waves, progress=False)
    r1, _ = compute_pass(PassKey("random", str(checkpoint), seed=1), sine_task, waves, progress=False)
    assert pre["train"].shape == r0["train"].shape == (4, 64)
    np.testing.assert_array_equal(r0["train"], r0b["train"])
    assert not np.allclose(r0["train"], r1["train"])
    assert not np.allclose(r0["train"], pre["train"])
    assert r0_meta["pooling"] == pre_meta["pooling"] == "cls"  # embedded like the checkpoint (EAT default)


def test_all_layers_pass_gives_every_block(checkpoint, sine_task):
    feats, meta = compute_pass(PassKey("checkpoint", str(checkpoint), all_layers=True), sine_task, WaveCache(),
                               progress=False)
    assert feats["test"].shape == (2, 2, 64) and meta["depth"] == 2 and meta["layers"] == [0, 1]


def test_fbank_pass_uses_the_checkpoint_front_end(checkpoint, sine_task):
    feats, meta = compute_pass(PassKey("fbank", str(checkpoint)), sine_task, WaveCache(), progress=False)
    assert feats["train"].shape == (4, 256)
    assert meta["normalizer"] == Normalizer.preset("audioset").to_dict()


def test_pass_equals_embedding_the_waveforms(checkpoint, sine_task):
    # The pass embeds cached log-mels; a user embeds waveforms: the same numbers.
    from audiossl.audio import load
    from audiossl.embed import Embedder

    feats, _ = compute_pass(PassKey("checkpoint", str(checkpoint)), sine_task, WaveCache(), progress=False)
    embedder = Embedder.from_checkpoint(checkpoint)
    direct = embedder.embed([load(p, SR) for p in sine_task.splits["train"].paths], frames=False)
    np.testing.assert_allclose(feats["train"], torch.stack([e.clip for e in direct]).numpy(), atol=1e-5)


def test_default_follows_the_checkpoints_recorded_embedding(tmp_path, sine_task):
    # A checkpoint that records "mean of the last two blocks, mean-pooled" as its default: the
    # default row is that, the random init is embedded the same way, and the top2-mean row
    # derived from the all-layers pass gives the same numbers (pooling is linear).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = build_model("eat_tiny")
    payload = native_payload(model, family="eat", fbank=FbankConfig.preset("ast").to_dict(),
                             normalizer=Normalizer.preset("audioset").to_dict(), target_length=128,
                             meta={"embed": {"pooling": "mean", "layers": [-2, -1], "layer_mean": True}})
    path = str(save_checkpoint(tmp_path / "recorded.pt", payload))
    waves = WaveCache()
    default, meta = compute_pass(PassKey("checkpoint", path), sine_task, waves, progress=False)
    _, rmeta = compute_pass(PassKey("random", path, seed=0), sine_task, waves, progress=False)
    assert meta["pooling"] == rmeta["pooling"] == "mean" and meta["layer_mean"] and rmeta["layer_mean"]
    stacked, smeta = compute_pass(PassKey("checkpoint", path, pooling="mean", all_layers=True), sine_task, waves,
                                  progress=False)
    assert not smeta["layer_mean"] and stacked["train"].shape == (4, 2, 64)
    np.testing.assert_allclose(row_features(stacked["train"], ("top", 2)), default["train"], atol=1e-5)


def test_hear_module_matches_the_checkpoint_default(checkpoint, sine_task):
    # audiossl.hear over the same checkpoint: scene embeddings are the embed defaults.
    waves = WaveCache()
    hear, meta = compute_pass(PassKey("hear", str(checkpoint), module="audiossl.hear"), sine_task, waves,
                              progress=False)
    pre, _ = compute_pass(PassKey("checkpoint", str(checkpoint)), sine_task, waves, progress=False)
    assert meta["sample_rate"] == SR and meta["scene_embedding_size"] == 64
    for split in ("train", "valid", "test"):
        np.testing.assert_allclose(hear[split], pre[split], atol=1e-5)


def test_hear_module_that_does_not_import_is_named(sine_task):
    from audiossl.evaluate.tasks import EvaluateError

    with pytest.raises(EvaluateError, match="'no_such_hear_module' cannot be imported"):
        compute_pass(PassKey("hear", "model.pt", module="no_such_hear_module"), sine_task, WaveCache(), progress=False)


def test_a_clip_with_non_finite_features_is_named(checkpoint, sine_task, tmp_path):
    import soundfile as sf

    from audiossl.evaluate.tasks import EvaluateError

    loud = tmp_path / "loud.wav"
    sf.write(str(loud), (_sine(500.0, 0.6) * 1e30).numpy(), SR, subtype="FLOAT")
    test = Split(["t0", "loud"], [sine_task.splits["test"].paths[0], str(loud)], np.array([0, 1]))
    task = Task("sines", sine_task.source, sine_task.classes, {**sine_task.splits, "test": test})
    for key in (PassKey("fbank", str(checkpoint)), PassKey("checkpoint", str(checkpoint))):
        with pytest.raises(EvaluateError, match=r"is not finite for sines/test clip\(s\) loud \(.*loud\.wav\)"):
            compute_pass(key, task, WaveCache(), progress=False)
