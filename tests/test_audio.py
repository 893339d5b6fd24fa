"""audiossl.audio: decoding, errors that name the file, resampling, PANNs HDF5 rows."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiossl.audio import AudioError, AudioInfo, info, load, save_wav


def _wav_bytes(samples: bytes, channels: int, rate: int, bits: int, data_size: int | None = None) -> bytes:
    """A PCM WAV built by hand (independent of libsndfile's writer)."""
    block = channels * bits // 8
    size = len(samples) if data_size is None else data_size
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + (
        b"data" + struct.pack("<I", size) + samples
    )


def _expect_error(path, *fragments: str, fn=load) -> AudioError:
    with pytest.raises(AudioError) as exc:
        fn(path)
    message = str(exc.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert exc.value.path == str(path)
    return exc.value


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [load, info])
def test_missing_directory_and_empty_file(tmp_path, fn):
    _expect_error(tmp_path / "nope.wav", "no such file", fn=fn)
    _expect_error(tmp_path, "directory", fn=fn)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _expect_error(empty, "0 bytes", fn=fn)


@pytest.mark.parametrize("fn", [load, info])
def test_zero_length_audio(tmp_path, fn):
    path = tmp_path / "zero.wav"
    path.write_bytes(_wav_bytes(b"", 1, 16000, 16))
    _expect_error(path, "zero-length", fn=fn)


@pytest.mark.parametrize("fn", [load, info])
def test_wav_cut_in_its_header(tmp_path, fn):
    full = _wav_bytes(np.arange(100, dtype="<i2").tobytes(), 1, 16000, 16)
    path = tmp_path / "cut_header.wav"
    path.write_bytes(full[:30])
    _expect_error(path, "corrupt", fn=fn)


@pytest.mark.parametrize("fn", [load, info])
def test_wav_data_cut_short_is_an_error(tmp_path, fn):
    # libsndfile alone would return the 5000 frames that exist; we refuse the clip.
    full = _wav_bytes(np.zeros(16000, dtype="<i2").tobytes(), 1, 16000, 16)
    path = tmp_path / "cut_data.wav"
    path.write_bytes(full[: 44 + 2 * 5000])
    assert sf.info(str(path)).frames == 5000
    _expect_error(path, "truncated", "16000", "5000", fn=fn)


def test_streaming_placeholder_size_is_accepted(tmp_path):
    samples = np.array([0, 16384, -32768, 32767], dtype="<i2")
    path = tmp_path / "stream.wav"
    path.write_bytes(_wav_bytes(samples.tobytes(), 1, 16000, 16, data_size=0xFFFFFFFF))
    np.testing.assert_array_equal(load(path, None).numpy(), [0.0, 0.5, -1.0, 32767 / 32768])


@pytest.mark.parametrize("fn", [load, info])
def test_garbage_and_unsupported_formats(tmp_path, fn):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    _expect_error(text, "unsupported or corrupt", fn=fn)
    noise = tmp_path / "noise.flac"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _expect_error(noise, "unsupported or corrupt", fn=fn)


def test_truncated_flac(tmp_path):
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    path = tmp_path / "cut.flac"
    sf.write(str(path), x, 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_samples(tmp_path, bad):
    x = np.zeros(1000, dtype=np.float32)
    x[10] = bad
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    _expect_error(path, "NaN or Inf")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def test_8bit_unsigned_from_hand_built_header(tmp_path):
    path = tmp_path / "u8.wav"
    path.write_bytes(_wav_bytes(bytes([128, 255, 0, 192, 64]), 1, 8000, 8))
    y = load(path, None)
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), [0.0, 127 / 128, -1.0, 0.5, -0.5])
    assert info(path) == AudioInfo(sample_rate=8000, num_frames=5, channels=1)


@pytest.mark.parametrize(
    "subtype, bits",
    [("PCM_U8", 8), ("PCM_16", 16), ("PCM_24", 24), ("PCM_32", 32), ("FLOAT", 24), ("DOUBLE", 24)],
)
def test_bit_depths_are_exact_on_their_grid(tmp_path, subtype, bits):
    rng = np.random.default_rng(bits)
    scale = 2.0 ** (bits - 1)
    # Values exactly representable in the format and in float32 (24 significant bits).
    grid = min(scale, 2.0**23)
    x = rng.integers(-grid, grid, 3000) / grid
    x[:3] = [-1.0, 0.0, (grid - 1) / grid]
    path = tmp_path / f"{subtype}.wav"
    sf.write(str(path), x, 22050, subtype=subtype)
    y = load(path, None)
    assert y.dtype == torch.float32 and y.shape == (3000,)
    np.testing.assert_array_equal(y.numpy(), x.astype(np.float32))


def test_stereo_is_averaged(tmp_path):
    left = np.array([0.5, -0.25, 1.0, 0.0])
    right = np.array([0.25, 0.25, -1.0, -0.5])
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load(path, None).numpy(), [0.375, 0.0, 0.0, -0.25])
    assert info(path).channels == 2


@pytest.mark.parametrize("orig, target", [(44100, 16000), (8000, 16000), (48000, 32000)])
def test_resampling_keeps_duration_and_frequency(tmp_path, orig, target):
    t = np.arange(orig) / orig  # 1 s
    x = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    path = tmp_path / "sine.wav"
    sf.write(str(path), x, orig, subtype="FLOAT")
    y = load(path, target).numpy()
    assert y.shape == (target,)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * target / len(y) == pytest.approx(1000.0, abs=1.0)
    # Away from the edges the resampled sine is the analytic sine at the new rate.
    ref = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(target) / target)
    mid = slice(target // 10, -target // 10)
    np.testing.assert_allclose(y[mid], ref[mid], atol=2e-3)


def test_resampled_length_is_the_exact_ceiling(tmp_path):
    # librosa's float ceil gives 16001 here; 47999 samples at 47999 Hz are 1 s exactly.
    path = tmp_path / "odd_rate.wav"
    sf.write(str(path), np.zeros(47999), 47999)
    assert load(path, 16000).shape == (16000,)


def test_native_rate_is_kept_with_none(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(str(path), np.zeros(2205), 22050)
    assert load(path, None).shape == (2205,)
    assert load(path).shape == (1600,)
    assert info(path).duration == pytest.approx(0.1)


def test_flac_roundtrip_is_lossless(tmp_path):
    x = np.random.default_rng(1).integers(-32768, 32768, 5000) / 32768
    path = tmp_path / "a.flac"
    sf.write(str(path), x, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load(path, None).numpy(), x.astype(np.float32))


def test_ogg_vorbis_roundtrip(tmp_path, speech_wav):
    x = load(speech_wav, None).numpy()
    path = tmp_path / "a.ogg"
    sf.write(str(path), x, 16000, format="OGG", subtype="VORBIS")
    y = load(path, None).numpy()
    assert abs(len(y) - len(x)) <= 16
    n = min(len(x), len(y))
    snr = 10 * np.log10(np.sum(x[:n] ** 2) / np.sum((x[:n] - y[:n]) ** 2))
    assert snr > 15.0, snr


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile built without MP3")
def test_mp3(tmp_path):
    t = np.arange(16000) / 16000
    x = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    path = tmp_path / "a.mp3"
    sf.write(str(path), x, 16000, format="MP3")
    y = load(path, None).numpy()
    assert info(path).sample_rate == 16000
    assert abs(len(y) - len(x)) < 2000  # encoder delay / padding frames
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(440.0, abs=2.0)


def test_speech_fixture_channels_average(make_speech):
    mono = load(make_speech(channels=1), None).numpy()
    stereo_path = make_speech(channels=2)
    assert info(stereo_path).channels == 2
    raw = sf.read(str(stereo_path), dtype="float64")[0]
    np.testing.assert_allclose(load(stereo_path, None).numpy(), raw.mean(axis=1), atol=1e-7)
    assert len(mono) == len(raw)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate=st.integers(8000, 48000),
    channels=st.integers(1, 6),
    frames=st.integers(1, 3000),
    seed=st.integers(0, 2**16),
)
def test_any_rate_channels_length(tmp_path, rate, channels, frames, seed):
    pcm = np.random.default_rng(seed).integers(-32768, 32768, (frames, channels)).astype(np.int16)
    path = tmp_path / "h.wav"
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    assert info(path) == AudioInfo(sample_rate=rate, num_frames=frames, channels=channels)
    y = load(path, None)
    np.testing.assert_allclose(y.numpy(), (pcm / 32768.0).mean(axis=1), rtol=0, atol=1e-7)
    assert load(path, 16000).shape == (-(-frames * 16000 // rate),)


# ---------------------------------------------------------------------------------------------
# PANNs HDF5 rows and save_wav
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def panns_pack(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    wave = rng.integers(-32767, 32768, (3, 3200)).astype(np.int16)
    wave[1] = 0  # failed download: zero row with an empty name
    path = tmp_path / "balanced_train.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("audio_name", data=np.array([b"Y--PJHxphWEs.wav", b"", b"Y--ZhevVpy1s.wav"], dtype="S20"))
        h5.create_dataset("waveform", data=wave)
        h5.create_dataset("target", data=np.zeros((3, 527), dtype=bool))
        h5.attrs.create("sample_rate", 32000, dtype=np.int32)
    return path, wave


def test_panns_row(panns_pack):
    path, wave = panns_pack
    y = load(f"{path}#2", None)
    np.testing.assert_array_equal(y.numpy(), (wave[2] / np.float32(32767.0)).astype(np.float32))
    assert load(f"{path}#0").shape == (1600,)  # 32 kHz -> 16 kHz
    assert info(f"{path}#0") == AudioInfo(sample_rate=32000, num_frames=3200, channels=1)


def test_panns_errors(panns_pack, tmp_path):
    path, _ = panns_pack
    for fn in (load, info):
        _expect_error(f"{path}#1", "empty audio_name", fn=fn)
        _expect_error(f"{path}#3", "out of range", fn=fn)
        _expect_error(f"{tmp_path / 'missing.h5'}#0", "no such file", fn=fn)
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as h5:
        h5.create_dataset("fbank", data=np.zeros((2, 4)))
    _expect_error(f"{other}#0", "no 'waveform'")
    fake = tmp_path / "fake.h5"
    fake.write_text("not hdf5")
    _expect_error(f"{fake}#0", "HDF5")


def test_panns_default_rate_and_hdf5_suffix(tmp_path):
    path = tmp_path / "pack.hdf5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("waveform", data=np.full((1, 640), 16384, dtype=np.int16))
    assert info(f"{path}#0").sample_rate == 32000
    np.testing.assert_array_equal(load(f"{path}#0", None).numpy(), np.full(640, np.float32(16384 / 32767)))


def test_save_wav_is_atomic_and_roundtrips(tmp_path):
    x = torch.tensor([[0.5, -0.5, 0.25], [0.0, 1.0, -1.0]])  # (channels, N)
    out = save_wav(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    assert out == tmp_path / "s.wav" and not (tmp_path / "s.wav.partial").exists()
    np.testing.assert_array_equal(load(out, None).numpy(), [0.25, 0.25, -0.375])
    save_wav(tmp_path / "m.wav", np.array([0.5, -1.0]), 8000)
    np.testing.assert_array_equal(load(tmp_path / "m.wav", None).numpy(), [0.5, -1.0])
    with pytest.raises(ValueError):
        save_wav(tmp_path / "bad.wav", np.zeros((1, 2, 3)), 8000)
    with pytest.raises(Exception):
        save_wav(tmp_path / "bad.wav", np.zeros(10), 8000, subtype="NOT_A_SUBTYPE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wav", "s.wav"]


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_channel_mean_equals_numpy_mean(channels):
    from audiossl.audio import _channel_mean

    data = np.random.default_rng(channels).standard_normal((4001, channels)).astype(np.float32)
    assert np.array_equal(_channel_mean(data), data.mean(axis=1, dtype=np.float32))
