"""audiossl.hear: the HEAR 2021 API's shapes and timestamp rules, on the validator's own probes
(2 sounds of 1.07 s, 1.98 s and 4.0 s for timestamps; 4 sounds of 2.74 s for scenes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiossl import hear
from audiossl.features import FbankConfig, Normalizer
from audiossl.models.registry import build_model
from audiossl.checkpoint import native_payload, save_checkpoint

SR = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    payload = native_payload(
        build_model("eat_tiny"),
        family="eat",
        fbank=FbankConfig.preset("ast").to_dict(),
        normalizer=Normalizer.preset("audioset").to_dict(),
        target_length=128,  # 1.28 s windows: the 4 s probe runs through sliding windows
    )
    return save_checkpoint(tmp_path_factory.mktemp("hear") / "eat_tiny.pt", payload)


@pytest.fixture(scope="module")
def model(checkpoint):
    return hear.load_model(str(checkpoint))


def _noise(n_sounds: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_sounds, int(round(seconds * SR)), generator=g) * 2 - 1).float()


def _check_hear_timestamps(ts: torch.Tensor, n_sounds: int, num_samples: int, hop_ms: float) -> None:
    """hear-validator's rules: (n_sounds, n_ts), identical rows here, regular spacing (no gap more
    than 1 ms off the mean), inside the audio, first within one hop of 0, last within one hop
    of the end."""
    assert ts.shape[0] == n_sounds and ts.dim() == 2 and ts.shape[1] >= 1
    length_ms = num_samples * 1000.0 / SR
    t = ts.double()
    assert torch.equal(t, t[:1].expand_as(t))
    gaps = torch.diff(t[0])
    assert gaps.numel() and (gaps - gaps.mean()).abs().max() <= 1.0
    assert gaps.mean().item() == pytest.approx(hop_ms)
    assert t.max() <= length_ms and t.min() >= 0
    assert t[0, 0] <= hop_ms and t[0, -1] >= length_ms - hop_ms


def test_model_attributes(model, checkpoint):
    assert isinstance(model, torch.nn.Module)
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64
    layered = hear.load_model(str(checkpoint), layers="all")  # heareval --model-options
    assert layered.scene_embedding_size == layered.timestamp_embedding_size == 2 * 64


@pytest.mark.parametrize("seconds,expected", [(1.07, 7), (1.98, 12), (4.0, 25)])
def test_timestamp_embeddings_follow_the_rules(model, seconds, expected):
    # Steps are centred at 87.5 + 160 k ms; a last step padded past the audio is dropped:
    # 1.07 s -> 7 (last 1047.5), 1.98 s -> 13 steps but 2007.5 > 1980, so 12, 4.0 s -> 25.
    audio = _noise(2, seconds)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32
    assert emb.shape == (2, expected, model.timestamp_embedding_size) and ts.shape == (2, expected)
    _check_hear_timestamps(ts, 2, audio.shape[1], hop_ms=160.0)
    np.testing.assert_allclose(ts[0].numpy(), 87.5 + 160.0 * np.arange(expected))
    # Each sound's embeddings are its own: the first row alone gives the same.
    alone, _ = hear.get_timestamp_embeddings(audio[:1], model)
    torch.testing.assert_close(emb[:1], alone, atol=1e-5, rtol=0)
    assert (emb[0] - emb[1]).abs().max() > 1e-3


def test_upsampled_timestamps(checkpoint):
    model = hear.load_model(str(checkpoint), upsample=4)
    assert model.timestamp_hop_ms == 40.0
    audio = _noise(2, 1.07, seed=1)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    _check_hear_timestamps(ts, 2, audio.shape[1], hop_ms=40.0)
    # Step k's 4 copies sit at its centre -60, -20, +20, +60 ms: 27.5, 67.5, ...; the last step
    # (1047.5) gives 987.5, 1027.5, 1067.5 and 1107.5, which is past 1070 ms: 7 * 4 - 1 = 27.
    assert ts.shape == (2, 27) and ts[0, 0].item() == pytest.approx(27.5)
    assert ts[0, -1].item() == pytest.approx(1067.5)
    base, _ = hear.get_timestamp_embeddings(audio, hear.load_model(str(checkpoint)))
    torch.testing.assert_close(emb[:, :4], base[:, :1].expand(-1, 4, -1))


def test_scene_embeddings(model):
    audio = _noise(4, 2.74, seed=2)
    audio[1] *= torch.linspace(0, 1, audio.shape[1])  # a fade-in, so the sounds differ in kind
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (4, model.scene_embedding_size) and scene.dtype == torch.float32
    ref = model.embedder.embed([audio[1]], frames=False)[0].clip
    torch.testing.assert_close(scene[1], ref, atol=1e-5, rtol=0)
    assert (scene[1] - scene[0]).abs().max() > 1e-3


def test_sound_shorter_than_the_first_centre(model):
    # 60 ms: one step, centred at 87.5 ms in the grid, stamped at the sound's midpoint instead.
    emb, ts = hear.get_timestamp_embeddings(_noise(3, 0.06), model)
    assert emb.shape == (3, 1, 64) and ts.tolist() == [[30.0]] * 3


def test_random_weights_without_a_path():
    model = hear.load_model("", preset="eat_tiny")
    assert model.scene_embedding_size == 64
    assert hear.get_scene_embeddings(_noise(2, 0.5), model).shape == (2, 64)


@pytest.mark.parametrize("rate", [22050, 48000, 32000])
def test_sample_rates_are_hear_validators(rate, tmp_path):
    # hear-validator accepts 16, 22.05, 44.1 and 48 kHz only (tests/interop runs it at each).
    fb = FbankConfig.preset("ast").to_dict()
    fb["sample_frequency"] = float(rate)
    payload = native_payload(build_model("eat_tiny"), family="eat", fbank=fb, normalizer=None, target_length=128)
    path = save_checkpoint(tmp_path / "m.pt", payload)
    if rate == 32000:
        with pytest.raises(ValueError, match="HEAR allows sample rates"):
            hear.load_model(str(path))
    else:
        assert hear.load_model(str(path)).sample_rate == rate


def test_wrong_inputs_are_refused(model):
    with pytest.raises(ValueError, match="n_sounds, n_samples"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(TypeError):
        hear.get_scene_embeddings(torch.zeros(1, 16000), torch.nn.Linear(2, 2))
