"""kaldi-native-fbank (k2-fsa's C++ re-implementation of Kaldi's compute-fbank-feats, the front end
of sherpa/icefall) against ``audiossl.features.fbank`` for each preset whose options it can
express: ``ast``, ``mae_ast`` and ``beats`` (all of them; the two waveform steps, mean removal and
the int16 scale of ``beats``, come before any Kaldi option, so they are applied to the samples
kaldi-native-fbank gets). Real speech; max abs diff of the log-mel ≤ 1e-3, and torchaudio's own
``compliance.kaldi.fbank``, which ours is built to equal, against the same reference.

Kaldi refuses the presets exactly as they stand: 128 mel bands over a 512-point FFT at 16 kHz
leave the lowest bands with no FFT bin between their edges (Kaldi's MelBanks stops with "num_mel_bins
too large" from 127 bands up; torchaudio and we give those bands log(eps)). So each preset is
compared with only that changed: at 48 kHz with its 128 bands (a 2048-point FFT, a HEAR rate), and
at 16 kHz with 80 bands (Kaldi/icefall's usual count).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is not installed: run bash scripts/test.sh --interop")

from audiossl.audio import load  # noqa: E402
from audiossl.features import FbankConfig, fbank  # noqa: E402

pytestmark = pytest.mark.interop


def knf_options(cfg: FbankConfig) -> "knf.FbankOptions":
    opts = knf.FbankOptions()
    f = opts.frame_opts
    f.samp_freq = cfg.sample_frequency
    f.frame_shift_ms, f.frame_length_ms = cfg.frame_shift, cfg.frame_length
    f.dither = cfg.dither  # kaldi-native-fbank's default is 3e-5; every preset here has 0
    f.preemph_coeff, f.remove_dc_offset = cfg.preemphasis_coefficient, cfg.remove_dc_offset
    f.window_type, f.blackman_coeff = cfg.window_type, cfg.blackman_coeff
    f.round_to_power_of_two, f.snip_edges = cfg.round_to_power_of_two, cfg.snip_edges
    m = opts.mel_opts
    m.num_bins, m.low_freq, m.high_freq = cfg.num_mel_bins, cfg.low_freq, cfg.high_freq
    m.vtln_low, m.vtln_high = cfg.vtln_low, cfg.vtln_high
    opts.use_energy, opts.raw_energy, opts.energy_floor = cfg.use_energy, cfg.raw_energy, cfg.energy_floor
    opts.htk_compat, opts.use_log_fbank, opts.use_power = cfg.htk_compat, cfg.use_log_fbank, cfg.use_power
    return opts


def expressible(cfg: FbankConfig) -> bool:
    # No VTLN warping and no per-utterance mean subtraction in kaldi-native-fbank's options.
    return cfg.vtln_warp == 1.0 and not cfg.subtract_mean


def kaldi_native(wav: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    x = wav.astype(np.float64)
    if cfg.remove_waveform_mean:
        x = x - x.mean()
    x = (x * cfg.waveform_scale).astype(np.float32)
    online = knf.OnlineFbank(knf_options(cfg))
    online.accept_waveform(cfg.sample_frequency, x.tolist())
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])


@pytest.mark.parametrize("sample_rate,num_mel_bins", [(48000, 128), (16000, 80)])
@pytest.mark.parametrize("preset", ["ast", "mae_ast", "beats"])
def test_fbank_equals_kaldi_native_fbank(preset, sample_rate, num_mel_bins, make_speech, figure):
    cfg = dataclasses.replace(FbankConfig.preset(preset), sample_frequency=float(sample_rate), num_mel_bins=num_mel_bins)
    assert expressible(cfg)
    wav = load(make_speech("The quick brown fox jumps over the lazy dog.", sample_rate=sample_rate), sample_rate=sample_rate).numpy()
    ref = kaldi_native(wav, cfg)
    ours = fbank(torch.from_numpy(wav), cfg)[0][0].numpy()
    assert ours.shape == ref.shape and ref.shape[1] == cfg.num_mel_bins
    ours_diff = float(np.abs(ours - ref).max())

    import torchaudio

    x = torch.from_numpy(wav).double()
    x = (x - x.mean() if cfg.remove_waveform_mean else x) * cfg.waveform_scale
    ta = torchaudio.compliance.kaldi.fbank(
        x.float()[None], sample_frequency=cfg.sample_frequency, frame_length=cfg.frame_length,
        frame_shift=cfg.frame_shift, num_mel_bins=cfg.num_mel_bins, window_type=cfg.window_type,
        htk_compat=cfg.htk_compat, dither=0.0, preemphasis_coefficient=cfg.preemphasis_coefficient,
        remove_dc_offset=cfg.remove_dc_offset, round_to_power_of_two=cfg.round_to_power_of_two,
        low_freq=cfg.low_freq, high_freq=cfg.high_freq, use_energy=cfg.use_energy,
        energy_floor=cfg.energy_floor, snip_edges=cfg.snip_edges,
    ).numpy()
    ta_diff = float(np.abs(ta - ref).max())
    figure(f"{preset} {sample_rate} Hz {num_mel_bins} bins: max abs diff audiossl vs kaldi-native-fbank ({ref.shape[0]} frames, log-mel range "
           f"{ref.min():.1f}..{ref.max():.1f})", ours_diff)
    figure(f"{preset} {sample_rate} Hz {num_mel_bins} bins: max abs diff torchaudio vs kaldi-native-fbank", ta_diff)
    assert ours_diff <= 1e-3
