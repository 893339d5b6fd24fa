"""audiossl.features against torchaudio.compliance.kaldi.fbank and hand-computed numbers."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from hypothesis import given, settings
from hypothesis import strategies as st

from audiossl.audio import load
from audiossl.features import (
    FBANK_PRESETS,
    NORM_PRESETS,
    FbankConfig,
    KaldiFbank,
    Normalizer,
    RunningStats,
    fbank,
    mel_banks,
    pad_or_crop,
)

TOL = 1e-4

# The upstream front ends, written out literally (not through our config), one per preset.
UPSTREAM = {
    # AST / SSAST / AudioMAE / EAT dataloaders.
    "ast": lambda w, sr=16000: kaldi.fbank(
        (w - w.mean())[None], htk_compat=True, sample_frequency=sr, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10,
    ),
    # MAE-AST dataset.
    "mae_ast": lambda w, sr=16000: kaldi.fbank(w[None], sample_frequency=sr, use_energy=False, num_mel_bins=128),
    # BEATs.preprocess.
    "beats": lambda w, sr=16000: kaldi.fbank(
        w[None] * 2**15, num_mel_bins=128, sample_frequency=sr, frame_length=25, frame_shift=10
    ),
}


def _pad(clips):
    return torch.nn.utils.rnn.pad_sequence(clips, batch_first=True), torch.tensor([len(c) for c in clips])


def _assert_batch_matches(feats, frame_lengths, clips, reference):
    """Row b equals reference(clips[b]) on its real frames and is zero after them."""
    assert feats.shape[0] == len(clips)
    for b, clip in enumerate(clips):
        n = int(frame_lengths[b])
        if len(clip) < 400:
            assert n == 0
        else:
            expected = reference(clip)
            assert n == expected.shape[0]
            torch.testing.assert_close(feats[b, :n], expected, rtol=0, atol=TOL)
        assert not feats[b, n:].any()


@pytest.fixture(scope="module")
def speech(speech_wav) -> torch.Tensor:
    return load(speech_wav, 16000)


def _noise(n: int, seed: int, scale: float = 0.1) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(UPSTREAM))
def test_parity_random_noise_batched_mixed_lengths(preset):
    lengths = [480, 401, 399, 1600, 16000, 163840, 7919, 30000]  # 0.03 s ... 10.24 s, one under a frame
    # A DC offset makes the clip mean large enough that summing it in any other order than
    # upstream's moves the lowest mel bins by ~5e-4: this catches a "vectorised" mean.
    clips = [_noise(n, seed=i) + 0.05 for i, n in enumerate(lengths)]
    x, lens = _pad(clips)
    feats, frame_lengths = fbank(x, FbankConfig.preset(preset), lens)
    assert feats.shape == (8, 1022, 128) and feats.dtype == torch.float32
    assert frame_lengths.tolist() == [1, 1, 0, 8, 98, 1022, 47, 186]
    _assert_batch_matches(feats, frame_lengths, clips, UPSTREAM[preset])


@pytest.mark.parametrize("preset", sorted(UPSTREAM))
def test_parity_real_speech_and_near_silence(preset, speech):
    clips = [
        speech,
        torch.cat([speech, torch.zeros(16000)]),  # digital silence after speech
        torch.zeros(8000),  # all digital silence
        speech * 1e-4 + 0.01,  # near-silent with a DC offset
        _noise(12000, seed=3, scale=1e-6),  # at the float32 noise floor
        speech[:480],
    ]
    x, lens = _pad(clips)
    feats, frame_lengths = fbank(x, FbankConfig.preset(preset), lens)
    _assert_batch_matches(feats, frame_lengths, clips, UPSTREAM[preset])


def test_parity_sixty_seconds_of_speech(speech):
    reps = math.ceil(60 * 16000 / (len(speech) + 4000))
    long = torch.cat([torch.cat([speech, torch.zeros(4000)])] * reps)[: 60 * 16000]
    clips = [long, speech]
    x, lens = _pad(clips)
    feats, frame_lengths = fbank(x, FbankConfig.preset("ast"), lens)
    assert frame_lengths[0] == 5998
    _assert_batch_matches(feats, frame_lengths, clips, UPSTREAM["ast"])


def test_batched_equals_one_at_a_time(speech):
    config = FbankConfig.preset("ast")
    clips = [speech, speech[:7000], _noise(20000, 1), speech[3:11111]]
    x, lens = _pad(clips)
    batch, frame_lengths = fbank(x, config, lens)
    for b, clip in enumerate(clips):
        single, n = fbank(clip, config)
        assert single.shape == (1, int(n), 128) and n == frame_lengths[b]
        torch.testing.assert_close(batch[b, : int(n)], single[0], rtol=0, atol=1e-6)


def test_garbage_after_a_row_is_never_read():
    clip = _noise(5000, 0)
    x = torch.full((2, 9000), 7.0)
    x[0, :5000] = clip
    x[1] = _noise(9000, 1)
    feats, frame_lengths = fbank(x, FbankConfig(), [5000, 9000])
    torch.testing.assert_close(feats[0, : frame_lengths[0]], UPSTREAM["ast"](clip), rtol=0, atol=TOL)


def test_float64_input(speech):
    clips = [speech.double(), _noise(3000, 2).double()]
    x, lens = _pad(clips)
    feats, _ = fbank(x, FbankConfig(), lens)
    assert feats.dtype == torch.float64
    for b, clip in enumerate(clips):
        expected = UPSTREAM["ast"](clip)
        assert expected.dtype == torch.float64
        torch.testing.assert_close(feats[b, : expected.shape[0]], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "changes",
    [
        dict(use_energy=True, htk_compat=False, raw_energy=False, energy_floor=0.0),
        dict(use_energy=True, htk_compat=True, window_type="hamming", preemphasis_coefficient=0.0),
        dict(window_type="blackman", subtract_mean=True, use_power=False, remove_dc_offset=False),
        dict(window_type="rectangular", use_log_fbank=False, low_freq=100.0, high_freq=-1000.0, num_mel_bins=40),
        dict(vtln_warp=0.87, num_mel_bins=80),
        dict(round_to_power_of_two=False, frame_length=32.0, frame_shift=12.5),
        dict(snip_edges=False),
    ],
)
def test_parity_other_options(changes, speech):
    config = FbankConfig(**changes)
    clips = [speech, _noise(4321, 5), speech[:1000]]
    x, lens = _pad(clips)
    feats, frame_lengths = fbank(x, config, lens)
    kwargs = config.to_kaldi_kwargs()

    def reference(w):
        return kaldi.fbank((w - w.mean())[None], **kwargs)

    assert feats.shape[-1] == config.num_features
    _assert_batch_matches(feats, frame_lengths, clips, reference)


@settings(max_examples=12, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 22050, 32000, 44100, 48000]),
    lengths=st.lists(st.integers(0, 30000), min_size=1, max_size=3),
    preset=st.sampled_from(sorted(UPSTREAM)),
    seed=st.integers(0, 1000),
)
def test_parity_any_rate_and_length(rate, lengths, preset, seed):
    config = FbankConfig.preset(preset).replace(sample_frequency=float(rate))
    clips = [_noise(n, seed + i) for i, n in enumerate(lengths)]
    x, lens = _pad(clips)
    feats, frame_lengths = fbank(x, config, lens)
    window = int(rate * 0.025)
    for b, clip in enumerate(clips):
        n = int(frame_lengths[b])
        assert n == (0 if len(clip) < window else 1 + (len(clip) - window) // int(rate * 0.01))
        if n:
            torch.testing.assert_close(feats[b, :n], UPSTREAM[preset](clip, rate), rtol=0, atol=TOL)
        assert not feats[b, n:].any()


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_clips_shorter_than_a_frame_give_zero_frames():
    feats, frame_lengths = fbank(torch.zeros(399))
    assert feats.shape == (1, 0, 128) and frame_lengths.tolist() == [0]
    feats, frame_lengths = fbank(torch.zeros(2, 0))
    assert feats.shape == (2, 0, 128) and frame_lengths.tolist() == [0, 0]
    with pytest.raises(AssertionError):  # torchaudio refuses what we map to zero frames
        kaldi.fbank(torch.zeros(1, 399))


def test_no_snip_edges_reflects_short_clips_like_kaldi():
    # 200 samples, snip_edges=False: one frame centred at sample 80, i.e. covering -120..279.
    # Kaldi mirrors without repeating the edge sample: -1 -> 0, 200 -> 199.
    clip = _noise(200, 9)
    idx = np.arange(-120, 280)
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= 200, 2 * 200 - 1 - idx, idx)
    frame = clip[torch.from_numpy(idx)]
    config = FbankConfig(snip_edges=False)
    feats, frame_lengths = fbank(clip, config)
    assert frame_lengths.tolist() == [1]
    expected = kaldi.fbank((frame - clip.mean())[None], **config.replace(snip_edges=True).to_kaldi_kwargs())
    torch.testing.assert_close(feats[0], expected, rtol=0, atol=TOL)


def test_num_frames_formula():
    ast = FbankConfig.preset("ast")
    assert [ast.num_frames(n) for n in (160000, 80000, 16000, 400, 399, 0)] == [998, 498, 98, 1, 0, 0]
    no_snip = ast.replace(snip_edges=False)
    assert [no_snip.num_frames(n) for n in (160000, 16000, 79, 80, 0)] == [1000, 100, 0, 1, 0]
    lengths = torch.tensor([160000, 399, 400, 561])
    assert ast.num_frames(lengths).tolist() == [998, 0, 1, 2]
    assert (ast.window_size, ast.window_shift, ast.padded_window_size) == (400, 160, 512)


def test_dither_needs_a_generator_and_matches_torchaudio_seeded():
    clip = torch.zeros(4000)  # digital silence: everything comes from the dither
    config = FbankConfig(dither=1.0, remove_waveform_mean=False)
    with pytest.raises(ValueError, match="Generator"):
        fbank(clip, config)
    ours, _ = fbank(clip, config, generator=torch.Generator().manual_seed(123))
    torch.manual_seed(123)
    expected = kaldi.fbank(clip[None], **config.to_kaldi_kwargs())
    torch.testing.assert_close(ours[0], expected, rtol=0, atol=TOL)
    a, _ = KaldiFbank(config, seed=5)(clip)
    b, _ = KaldiFbank(config, seed=5)(clip)
    assert torch.equal(a, b) and not torch.equal(a, ours)


def test_module_is_the_function_and_has_no_state(speech):
    module = KaldiFbank(FbankConfig.preset("mae_ast"))
    assert module.state_dict() == {}
    a, na = module(speech)
    b, nb = fbank(speech, FbankConfig.preset("mae_ast"))
    assert torch.equal(a, b) and torch.equal(na, nb)
    assert "povey" in repr(module)


def test_bad_inputs():
    with pytest.raises(ValueError, match="float32 or float64"):
        fbank(torch.zeros(1000, dtype=torch.int16))
    with pytest.raises(ValueError, match="shape"):
        fbank(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="lengths"):
        fbank(torch.zeros(2, 1000), lengths=[1000, 1001])
    with pytest.raises(ValueError, match="entries"):
        fbank(torch.zeros(2, 1000), lengths=[1000])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parity_on_cuda(speech):
    clips = [speech, torch.cat([speech, torch.zeros(8000)]), _noise(30000, 4)]
    x, lens = _pad(clips)
    for name, reference in UPSTREAM.items():
        feats, frame_lengths = fbank(x.cuda(), FbankConfig.preset(name), lens)
        assert feats.device.type == "cuda"
        _assert_batch_matches(feats.cpu(), frame_lengths.cpu(), [c.cuda() for c in clips],
                              lambda w: reference(w).cpu())


# ---------------------------------------------------------------------------------------------
# Mel filters and config
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        FbankConfig(),
        FbankConfig(sample_frequency=44100.0, num_mel_bins=64, low_freq=50.0, high_freq=-400.0),
        FbankConfig(vtln_warp=1.1, num_mel_bins=23),
        FbankConfig(vtln_warp=0.9, num_mel_bins=40, frame_length=20.0),
    ],
)
def test_mel_banks_equal_torchaudio_bitwise(config):
    ours = mel_banks(config)
    expected, _ = kaldi.get_mel_banks(
        config.num_mel_bins, config.padded_window_size, config.sample_frequency, config.low_freq,
        config.high_freq, config.vtln_low, config.vtln_high, config.vtln_warp,
    )
    assert ours.shape == (config.num_mel_bins, config.padded_window_size // 2 + 1)
    assert torch.equal(ours[:, :-1], expected) and not ours[:, -1].any()


def test_mel_banks_match_the_kaldi_formula_in_float64():
    # Independent float64 evaluation of the triangles: 128 bins, 20 Hz .. 8 kHz, 512-point FFT.
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f) / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(8000.0), 130)
    bins = mel(np.arange(256) * 16000 / 512)
    up = (bins[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    down = (edges[2:, None] - bins[None]) / (edges[2:, None] - edges[1:-1, None])
    expected = np.maximum(0.0, np.minimum(up, down))
    ours = mel_banks(FbankConfig()).double().numpy()[:, :256]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=5e-5)  # float32 rounding, as upstream
    assert ours.max() <= 1.0 and (ours > 0).sum(0).max() <= 2  # each FFT bin feeds <= 2 filters


def test_presets_match_upstream_calls():
    assert FbankConfig() == FbankConfig.preset("ast")
    ast, mae, beats = (FBANK_PRESETS[k] for k in ("ast", "mae_ast", "beats"))
    assert (ast.window_type, ast.htk_compat, ast.remove_waveform_mean, ast.dither) == ("hanning", True, True, 0.0)
    assert (mae.window_type, mae.htk_compat, mae.remove_waveform_mean) == ("povey", False, False)
    assert (beats.window_type, beats.waveform_scale, beats.remove_waveform_mean) == ("povey", 32768.0, False)
    for c in (ast, mae, beats):
        assert (c.sample_frequency, c.num_mel_bins, c.frame_length, c.frame_shift) == (16000.0, 128, 25.0, 10.0)
        assert c.snip_edges and not c.use_energy
    with pytest.raises(ValueError, match="unknown fbank preset"):
        FbankConfig.preset("nope")


def test_config_dict_roundtrip_json_and_hdf5_attrs(tmp_path):
    config = FbankConfig.preset("beats").replace(num_mel_bins=64, use_energy=True)
    assert FbankConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5.attrs.update(config.to_dict())
    with h5py.File(tmp_path / "a.h5", "r") as h5:
        back = FbankConfig.from_dict(dict(h5.attrs))
    assert back == config and isinstance(back.num_mel_bins, int) and back.use_energy is True
    assert FbankConfig.preset("ast").diff(config)["window_type"] == ("hanning", "povey")


def test_config_unknown_keys_and_invalid_values():
    data = FbankConfig().to_dict()
    data.update(n_fft=512, hop=160)
    with pytest.raises(ValueError, match=r"\['hop', 'n_fft'\]"):
        FbankConfig.from_dict(data)
    with pytest.raises(ValueError, match="window_type"):
        FbankConfig(window_type="hann")
    with pytest.raises(ValueError, match="Nyquist"):
        FbankConfig(high_freq=9000.0)
    with pytest.raises(ValueError, match="odd"):
        FbankConfig(round_to_power_of_two=False, frame_length=25.0625)
    with pytest.raises(ValueError, match="num_mel_bins"):
        FbankConfig(num_mel_bins=3)


# ---------------------------------------------------------------------------------------------
# Normalizer, pad_or_crop, RunningStats
# ---------------------------------------------------------------------------------------------


def test_normalizer_presets_and_roundtrip():
    assert NORM_PRESETS["audioset"] == Normalizer(-4.2677393, 4.5689974)
    assert Normalizer.preset("esc50") == Normalizer(-6.6268077, 5.358466)
    assert Normalizer.preset("speechcommands") == Normalizer(-6.845978, 5.5654526)
    norm = Normalizer.preset("audioset")
    x = torch.tensor([-4.2677393, 0.0, 4.8702555])
    y = norm(x)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.46703, 1.0]), rtol=0, atol=1e-5)
    torch.testing.assert_close(norm.inverse(y), x, rtol=0, atol=1e-6)
    assert Normalizer.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    with pytest.raises(ValueError, match="unknown"):
        Normalizer.from_dict({"mean": 0.0, "std": 1.0, "scale": 2.0})
    with pytest.raises(ValueError):
        Normalizer(0.0, 0.0)
    with pytest.raises(ValueError, match="unknown normalisation preset"):
        Normalizer.preset("librispeech")


def test_pad_or_crop_pads_in_log_space():
    feats = torch.arange(12, dtype=torch.float32).reshape(3, 4) - 20.0
    padded = pad_or_crop(feats, 5)
    assert padded.shape == (5, 4) and torch.equal(padded[:3], feats) and not padded[3:].any()
    assert torch.equal(pad_or_crop(feats, 2), feats[:2])
    assert pad_or_crop(feats, 3) is feats
    batch = pad_or_crop(feats.expand(2, 3, 4), 4)
    assert batch.shape == (2, 4, 4) and not batch[:, 3].any()
    norm = Normalizer.preset("audioset")
    pad_value = (0 - (-4.2677393)) / (2 * 4.5689974)
    assert norm(padded)[3:].unique().item() == pytest.approx(pad_value, abs=1e-6)
    assert norm.pad_value == pytest.approx(0.46703, abs=1e-5)


def test_running_stats_match_numpy_on_true_frames():
    rng = np.random.default_rng(0)
    batches = [rng.normal(-5.0, 4.0, (3, 50, 8)) for _ in range(4)]
    lengths = [[50, 10, 0], [25, 50, 1], [7, 7, 7], [50, 50, 50]]
    stats = RunningStats()
    kept = []
    for x, lens in zip(batches, lengths):
        stats.update(torch.from_numpy(x).float(), torch.tensor(lens))
        kept += [x.astype(np.float32)[b, :n] for b, n in enumerate(lens)]
    values = np.concatenate([k.reshape(-1) for k in kept]).astype(np.float64)
    assert stats.count == values.size
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(), rel=1e-12)
    assert stats.to_normalizer() == Normalizer(stats.mean, stats.std)


def test_running_stats_merge_is_exact():
    rng = np.random.default_rng(1)
    chunks = [torch.from_numpy(rng.normal(rng.uniform(-8, 8), rng.uniform(0.1, 9), (rng.integers(1, 40), 16)))
              for _ in range(9)]
    whole = RunningStats().update(torch.cat(chunks))
    workers = [RunningStats() for _ in range(3)]
    for i, chunk in enumerate(chunks):
        workers[i % 3].update(chunk)
    merged = RunningStats()
    for w in reversed(workers):
        merged.merge(RunningStats.from_dict(json.loads(json.dumps(w.to_dict()))))
    assert merged.count == whole.count
    assert merged.mean == pytest.approx(whole.mean, rel=1e-13)
    assert merged.std == pytest.approx(whole.std, rel=1e-13)
    with pytest.raises(ValueError, match="NaN"):
        RunningStats().update(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="no values"):
        RunningStats().mean
