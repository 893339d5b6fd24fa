"""Kaldi log-mel filterbanks, batched, equal to ``torchaudio.compliance.kaldi.fbank``.

Every model family audiossl reproduces was trained on ``torchaudio.compliance.kaldi.fbank``
features, so the front end must reproduce that function, quirks included: the float32 epsilon
floor on the mel energies (also for float64 input), the per-frame DC removal, pre-emphasis
with the frame's first sample replicated, the power spectrum of the zero-padded frame and the
mel matrix with an all-zero Nyquist column. Upstream calls it one clip at a time; here a padded
batch ``(B, N)`` goes through one strided framing, one ``rfft`` and one matmul per block of
frames, on whatever device and dtype the waveform has.

Exactness. The lowest mel bins of a 128-bin, 16 kHz bank catch at most a sliver of one FFT
bin, and after the per-frame DC removal and pre-emphasis their energy sits a few ulps above
the 1.19e-7 floor. There the result is float32 rounding noise: torchaudio itself moves by up to
5e-4 in those bins when only the thread count changes (its ``w.mean()`` is summed in another
order). So everything before the FFT is done with the same tensor operations, in the same
order, as torchaudio, and the clip mean is taken per row with the same ``Tensor.mean`` call
upstream uses, which makes the framed signal bit-identical on CPU. After the FFT, where every
step is well conditioned, the code is free to be faster (``re² + im²`` instead of ``|z|``
squared, one matmul per block of frames); that moves results by ~1e-6 at most.

Deviation: torchaudio asserts on a clip shorter than one frame; here such a clip yields zero
frames (``frame_lengths == 0``), which is what its own framing would produce, so one short clip
does not abort a whole batch. Options left out: ``channel`` (input is mono) and
``min_duration`` (use ``frame_lengths``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "FBANK_PRESETS",
    "NORM_PRESETS",
    "FbankConfig",
    "KaldiFbank",
    "Normalizer",
    "RunningStats",
    "fbank",
    "mel_banks",
    "pad_or_crop",
]

# Kaldi floors every mel energy at numeric_limits<float>::epsilon(), whatever the dtype.
_EPSILON = torch.finfo(torch.float32).eps
_WINDOWS = ("hamming", "hanning", "povey", "rectangular", "blackman")

# Frames per block of work: small enough on CPU that a block's temporaries stay in cache
# (measured: ~4x faster than one pass over a whole 32 x 10 s batch), large on GPUs where
# launch overhead dominates.
_CPU_BLOCK_FRAMES = 1024
_GPU_BLOCK_FRAMES = 1 << 17


def _ms_to_samples(sample_frequency: float, ms: float) -> int:
    # The exact expression torchaudio uses, so rounding of e.g. 22050 Hz x 25 ms agrees.
    return int(sample_frequency * ms * 0.001)


def _next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


@dataclass(frozen=True)
class FbankConfig:
    """Every ``torchaudio.compliance.kaldi.fbank`` option that changes the output.

    Defaults are the ``ast`` preset (AST, SSAST, AudioMAE, EAT), the front end most of the
    models here were trained on; options not set by that preset keep torchaudio's defaults
    (which are not always Kaldi's: ``energy_floor`` is 1.0, ``dither`` 0.0). Two options act on
    the waveform before the fbank: ``waveform_scale`` (BEATs feeds int16-range audio) and
    ``remove_waveform_mean`` (the AST family subtracts the clip's mean, over its true samples).
    Frozen so a config can key caches and travel inside checkpoints unchanged.
    """

    sample_frequency: float = 16000.0
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    num_mel_bins: int = 128
    window_type: str = "hanning"
    blackman_coeff: float = 0.42
    htk_compat: bool = True
    dither: float = 0.0
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    round_to_power_of_two: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    use_energy: bool = False
    raw_energy: bool = True
    energy_floor: float = 1.0
    use_log_fbank: bool = True
    use_power: bool = True
    snip_edges: bool = True
    subtract_mean: bool = False
    vtln_low: float = 100.0
    vtln_high: float = -500.0
    vtln_warp: float = 1.0
    remove_waveform_mean: bool = True
    waveform_scale: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.sample_frequency <= 0:
            problems.append(f"sample_frequency must be > 0, got {self.sample_frequency}")
        elif self.frame_shift <= 0 or self.window_shift <= 0:
            problems.append(f"frame_shift {self.frame_shift} ms gives no samples at {self.sample_frequency} Hz")
        if self.sample_frequency > 0 and self.window_size < 2:
            problems.append(f"frame_length {self.frame_length} ms gives fewer than 2 samples")
        elif self.sample_frequency > 0 and self.padded_window_size % 2:
            problems.append(
                f"the FFT size {self.padded_window_size} is odd: use round_to_power_of_two or change frame_length"
            )
        if self.window_type not in _WINDOWS:
            problems.append(f"window_type must be one of {_WINDOWS}, got {self.window_type!r}")
        if not 0.0 <= self.preemphasis_coefficient <= 1.0:
            problems.append(f"preemphasis_coefficient must be in [0, 1], got {self.preemphasis_coefficient}")
        if self.num_mel_bins <= 3:
            problems.append(f"num_mel_bins must be > 3, got {self.num_mel_bins}")
        if self.dither < 0:
            problems.append(f"dither must be >= 0, got {self.dither}")
        if self.energy_floor < 0:
            problems.append(f"energy_floor must be >= 0, got {self.energy_floor}")
        if self.sample_frequency > 0:
            nyquist = 0.5 * self.sample_frequency
            high = self.high_freq if self.high_freq > 0 else self.high_freq + nyquist
            if not (0.0 <= self.low_freq < nyquist and 0.0 < high <= nyquist and self.low_freq < high):
                problems.append(
                    f"low_freq {self.low_freq} / high_freq {self.high_freq} do not fit the Nyquist {nyquist}"
                )
            elif self.vtln_warp != 1.0:
                vhigh = self.vtln_high + nyquist if self.vtln_high < 0 else self.vtln_high
                if not (self.low_freq < self.vtln_low < high and 0.0 < vhigh < high and self.vtln_low < vhigh):
                    problems.append(
                        f"vtln_low {self.vtln_low} / vtln_high {self.vtln_high} do not fit "
                        f"low_freq {self.low_freq} / high_freq {high}"
                    )
        if problems:
            raise ValueError("invalid FbankConfig: " + "; ".join(problems))

    # -- derived sizes -------------------------------------------------------------------
    @property
    def window_size(self) -> int:
        """Samples per frame (400 at 16 kHz, 25 ms)."""
        return _ms_to_samples(self.sample_frequency, self.frame_length)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz, 10 ms)."""
        return _ms_to_samples(self.sample_frequency, self.frame_shift)

    @property
    def padded_window_size(self) -> int:
        """FFT size (512 at 16 kHz, 25 ms)."""
        w = self.window_size
        return _next_power_of_2(w) if self.round_to_power_of_two else w

    @property
    def num_features(self) -> int:
        """Feature dimension: mel bins plus the energy column when ``use_energy``."""
        return self.num_mel_bins + int(self.use_energy)

    def num_frames(self, num_samples: Union[int, Tensor]) -> Union[int, Tensor]:
        """Frames a clip of ``num_samples`` gives: ``1 + (N - W) // S`` (0 if ``N < W``) with
        ``snip_edges``, else ``(N + S // 2) // S``. Works on ints and integer tensors."""
        w, s = self.window_size, self.window_shift
        if isinstance(num_samples, Tensor):
            n = num_samples.long()
            if self.snip_edges:
                return torch.where(n >= w, 1 + torch.div(n - w, s, rounding_mode="floor"), torch.zeros_like(n))
            return torch.div(n + s // 2, s, rounding_mode="floor")
        n = int(num_samples)
        if n < 0:
            raise ValueError(f"num_samples must be >= 0, got {n}")
        if self.snip_edges:
            return 0 if n < w else 1 + (n - w) // s
        return (n + s // 2) // s

    # -- presets and serialisation -------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "FbankConfig":
        """A named front end (see ``FBANK_PRESETS``)."""
        try:
            return FBANK_PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown fbank preset {name!r}; known: {sorted(FBANK_PRESETS)}") from None

    def replace(self, **changes: Any) -> "FbankConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict with every field (for HDF5 attributes and checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FbankConfig":
        """Inverse of ``to_dict``. Values read back from HDF5 attributes (numpy scalars, bytes)
        are coerced to the field types; unknown keys are an error, since a config written by a
        newer version that we silently half-read would give different features."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown FbankConfig keys: {unknown}")
        return cls(**{k: _coerce(v, fields[k].type, k) for k, v in data.items()})

    def diff(self, other: "FbankConfig") -> Dict[str, Tuple[Any, Any]]:
        """Fields that differ, as ``{name: (self_value, other_value)}``: for error messages
        such as "store was written with window_type='povey', model expects 'hanning'"."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

    def to_kaldi_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``torchaudio.compliance.kaldi.fbank`` giving the same features
        (after ``waveform_scale`` and ``remove_waveform_mean``, which torchaudio lacks)."""
        d = self.to_dict()
        d.pop("remove_waveform_mean")
        d.pop("waveform_scale")
        return d


_TYPE_CASTS = {"float": float, "int": int, "str": str, "bool": bool}


def _coerce(value: Any, type_name: Any, key: str) -> Any:
    name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalar from an HDF5 attribute
    if isinstance(value, bytes):
        value = value.decode()
    if name == "bool":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"FbankConfig key {key!r}: {value!r} is not a boolean")
            return value.lower() in ("true", "1")
        return bool(value)
    try:
        return _TYPE_CASTS[name](value)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"FbankConfig key {key!r}: cannot read {value!r} as {name}") from exc


FBANK_PRESETS: Dict[str, FbankConfig] = {
    # AST / SSAST / AudioMAE / EAT: fbank(w - w.mean(), htk_compat=True, window_type='hanning',
    # num_mel_bins=128, dither=0.0, frame_shift=10, use_energy=False) at 16 kHz.
    "ast": FbankConfig(),
    # MAE-AST: fbank(wav, sample_frequency=16000, use_energy=False, num_mel_bins=128), all else default.
    "mae_ast": FbankConfig(window_type="povey", htk_compat=False, remove_waveform_mean=False),
    # BEATs preprocess: fbank(wav * 2**15, num_mel_bins=128, sample_frequency=16000,
    # frame_length=25, frame_shift=10).
    "beats": FbankConfig(
        window_type="povey", htk_compat=False, remove_waveform_mean=False, waveform_scale=float(2**15)
    ),
}


# ---------------------------------------------------------------------------------------------
# Window and mel matrix (cached per device, dtype and the options they depend on)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _window(window_type: str, size: int, blackman_coeff: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Built in the target dtype with the same formulas as torchaudio, so the windowed frames
    # (which feed the ill-conditioned low bins) are bit-identical.
    if window_type == "hanning":
        return torch.hann_window(size, periodic=False, device=device, dtype=dtype)
    if window_type == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, device=device, dtype=dtype)
    if window_type == "povey":
        return torch.hann_window(size, periodic=False, device=device, dtype=dtype).pow(0.85)
    if window_type == "rectangular":
        return torch.ones(size, device=device, dtype=dtype)
    a = 2 * math.pi / (size - 1)
    n = torch.arange(size, device=device, dtype=dtype)
    return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)


def _mel(hz: Tensor) -> Tensor:
    return 1127.0 * (1.0 + hz / 700.0).log()


def _inverse_mel(mel: Tensor) -> Tensor:
    return 700.0 * ((mel / 1127.0).exp() - 1.0)


def _vtln_warp(hz: Tensor, low: float, high: float, vtln_low: float, vtln_high: float, warp: float) -> Tensor:
    """Kaldi's piecewise-linear VTLN warp of frequencies in Hz (identity outside [low, high])."""
    lo = vtln_low * max(1.0, warp)
    hi = vtln_high * min(1.0, warp)
    scale = 1.0 / warp
    scale_left = (scale * lo - low) / (lo - low)
    scale_right = (high - scale * hi) / (high - hi)
    out = torch.where(hz < hi, scale * hz, high + scale_right * (hz - high))
    out = torch.where(hz < lo, low + scale_left * (hz - low), out)
    return torch.where((hz < low) | (hz > high), hz, out)


def mel_banks(config: FbankConfig) -> Tensor:
    """Kaldi triangular mel filters, ``(num_mel_bins, padded_window_size // 2 + 1)``, float32.

    Triangles are equally spaced on the mel scale ``1127 ln(1 + f/700)`` between ``low_freq``
    and ``high_freq`` (optionally VTLN-warped), evaluated at the FFT bin frequencies on the mel
    axis; the Nyquist column is zero, as in Kaldi. Computed in float32 with torchaudio's
    arithmetic on purpose: its rounding (up to ~2e-5 on a weight, a large relative error on the
    tail weights the lowest bins consist of) is part of the features every checkpoint was
    trained on, and float64 filters move those bins by ~1e-4. Our own code rather than
    ``torchaudio.compliance`` so the feature path does not depend on it at run time.
    """
    n_fft = config.padded_window_size
    nyquist = 0.5 * config.sample_frequency
    low = config.low_freq
    high = config.high_freq + nyquist if config.high_freq <= 0 else config.high_freq
    mel_low = 1127.0 * math.log(1.0 + low / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (config.num_mel_bins + 1)
    index = torch.arange(config.num_mel_bins, dtype=torch.float32)[:, None]
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    if config.vtln_warp != 1.0:
        vtln_high = config.vtln_high + nyquist if config.vtln_high < 0 else config.vtln_high
        warp = functools.partial(
            _vtln_warp, low=low, high=high, vtln_low=config.vtln_low, vtln_high=vtln_high, warp=config.vtln_warp
        )
        left, center, right = (_mel(warp(_inverse_mel(m))) for m in (left, center, right))
    bin_mel = _mel(config.sample_frequency / n_fft * torch.arange(n_fft // 2, dtype=torch.float32))[None, :]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    if config.vtln_warp == 1.0:
        banks = torch.minimum(up, down).clamp_min(0.0)
    else:
        # A warp can reorder the triangle's corners; Kaldi then keeps only the in-range slopes.
        banks = torch.where((bin_mel > left) & (bin_mel <= center), up, torch.zeros_like(up))
        banks = torch.where((bin_mel > center) & (bin_mel < right), down, banks)
    return F.pad(banks, (0, 1))


@functools.lru_cache(maxsize=64)
def _mel_matrix(config: FbankConfig, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(n_fft // 2 + 1, num_mel_bins)``, ready to right-multiply a power spectrum."""
    return mel_banks(config).T.contiguous().to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# The fbank
# ---------------------------------------------------------------------------------------------


def _as_lengths(lengths: Union[Tensor, Sequence[int], None], batch: int, num_samples: int) -> Optional[Tensor]:
    if lengths is None:
        return None
    lens = torch.as_tensor(lengths).reshape(-1).long().cpu()
    if lens.numel() != batch:
        raise ValueError(f"lengths has {lens.numel()} entries for a batch of {batch}")
    if batch and (int(lens.min()) < 0 or int(lens.max()) > num_samples):
        raise ValueError(f"lengths must be within [0, {num_samples}], got {lens.tolist()}")
    return lens


def _remove_mean(x: Tensor, lens: Tensor) -> Tensor:
    # One Tensor.mean per row, on exactly the row's samples: the call upstream makes on each
    # clip, so the result is bit-identical to it. A masked batched sum is rounded differently,
    # and that rounding reaches the lowest mel bins (see the module docstring). B tiny
    # reductions cost nothing next to the fbank itself.
    means = torch.stack([x[b, :n].mean() if n else x.new_zeros(()) for b, n in enumerate(lens.tolist())])
    return x - means[:, None]


def _reflect_frames(x: Tensor, lens: Tensor, config: FbankConfig, num_frames: int) -> Tensor:
    """Frames for ``snip_edges=False``: frame ``i`` is centred at ``i * S + S // 2`` and the
    signal is mirrored at both ends of each row (Kaldi's symmetric reflection, repeated for
    clips shorter than a frame, where torchaudio would fail)."""
    w, s = config.window_size, config.window_shift
    span = (num_frames - 1) * s + w
    start = s // 2 - w // 2
    n = lens.to(x.device).clamp_min(1)[:, None]
    pos = torch.arange(start, start + span, device=x.device)[None, :].remainder(2 * n)
    idx = torch.where(pos < n, pos, 2 * n - 1 - pos)
    signal = torch.gather(x, 1, idx)
    return signal.as_strided((x.shape[0], num_frames, w), (span, s, 1))


def _log_energy(frames: Tensor, energy_floor: float) -> Tensor:
    energy = frames.pow(2).sum(-1).clamp_min(_EPSILON).log()
    if energy_floor != 0.0:
        energy = energy.clamp_min(math.log(energy_floor))
    return energy


def _block_features(
    frames: Tensor, config: FbankConfig, window: Tensor, mel: Tensor, generator: Optional[torch.Generator]
) -> Tensor:
    """Features of a ``(B, t, W)`` block of frames. Up to the FFT, the operations and their
    order are torchaudio's, so the result is bit-identical to it (see module docstring)."""
    if config.dither != 0.0:
        noise_device = generator.device if generator is not None else frames.device
        noise = torch.randn(frames.shape, generator=generator, device=noise_device, dtype=frames.dtype)
        frames = frames + noise.to(frames.device) * config.dither
    if config.remove_dc_offset:
        frames = frames - frames.mean(-1, keepdim=True)
    energy = None
    if config.use_energy and config.raw_energy:
        energy = _log_energy(frames, config.energy_floor)
    if config.preemphasis_coefficient != 0.0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - config.preemphasis_coefficient * previous
    frames = frames * window
    if config.use_energy and not config.raw_energy:
        energy = _log_energy(frames, config.energy_floor)
    spectrum = torch.fft.rfft(frames, n=config.padded_window_size)
    power = spectrum.real.square() + spectrum.imag.square()  # |z|^2 without |z|'s hypot
    if not config.use_power:
        power = power.sqrt()
    feats = torch.matmul(power, mel)
    if config.use_log_fbank:
        feats = feats.clamp_min(_EPSILON).log()
    if energy is not None:
        parts = (feats, energy[..., None]) if config.htk_compat else (energy[..., None], feats)
        feats = torch.cat(parts, dim=-1)
    return feats


def fbank(
    waveform: Tensor,
    config: Optional[FbankConfig] = None,
    lengths: Union[Tensor, Sequence[int], None] = None,
    *,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor]:
    """Kaldi log-mel fbank of a clip ``(N,)`` or a zero-padded batch ``(B, N)``.

    Returns ``feats (B, T, num_features)`` and ``frame_lengths (B,)`` (int64): row ``b`` has
    ``config.num_frames(lengths[b])`` real frames and zeros after them, ``T`` being the
    largest count (a 1-D input is a batch of one). Samples past a row's length are never read
    into its real frames, and the ``remove_waveform_mean`` mean is over the true samples only.
    A clip shorter than one frame gives 0 frames (torchaudio raises instead).

    Runs on the waveform's device and dtype (float32 or float64). ``generator`` drives the
    dither noise and is required when ``config.dither > 0``; noise is drawn block by block,
    so for a given seed it depends on the batch shape as well as on the clip.
    """
    config = config if config is not None else FbankConfig()
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be (N,) or (B, N), got shape {tuple(waveform.shape)}")
    if waveform.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"waveform must be float32 or float64, got {waveform.dtype}")
    if config.dither != 0.0 and generator is None:
        raise ValueError("config.dither > 0 draws noise: pass a torch.Generator (no global RNG is used)")
    batch, num_samples = waveform.shape
    lens = _as_lengths(lengths, batch, num_samples)
    full_rows = lens is None or bool((lens == num_samples).all())
    if lens is None:
        lens = torch.full((batch,), num_samples, dtype=torch.long)
    device, dtype = waveform.device, waveform.dtype
    frame_lengths = config.num_frames(lens)
    num_frames = int(frame_lengths.max()) if batch else 0
    if num_frames == 0:
        return waveform.new_zeros(batch, 0, config.num_features), frame_lengths.to(device)

    x = waveform
    if config.waveform_scale != 1.0:
        x = x * config.waveform_scale
    if config.remove_waveform_mean:
        x = _remove_mean(x, lens)
    x = x.contiguous()
    if config.snip_edges:
        frames = x.as_strided((batch, num_frames, config.window_size), (x.stride(0), config.window_shift, 1))
    else:
        frames = _reflect_frames(x, lens, config, num_frames)

    window = _window(config.window_type, config.window_size, config.blackman_coeff, device, dtype)
    mel = _mel_matrix(config, device, dtype)
    block_frames = _CPU_BLOCK_FRAMES if device.type == "cpu" else _GPU_BLOCK_FRAMES
    step = max(1, block_frames // max(batch, 1))
    feats = torch.cat(
        [
            _block_features(frames[:, t : t + step], config, window, mel, generator)
            for t in range(0, num_frames, step)
        ],
        dim=1,
    )

    valid = None
    if not full_rows:
        valid = torch.arange(num_frames, device=device)[None, :] < frame_lengths.to(device)[:, None]
    if config.subtract_mean:
        if valid is None:
            feats = feats - feats.mean(1, keepdim=True)
        else:
            counts = frame_lengths.to(device).clamp_min(1)[:, None, None].to(dtype)
            feats = feats - (feats * valid[..., None]).sum(1, keepdim=True) / counts
    if valid is not None:
        feats = feats.masked_fill(~valid[..., None], 0.0)
    return feats, frame_lengths.to(device)


class KaldiFbank(nn.Module):
    """``nn.Module`` over :func:`fbank` (the torchaudio functional/transforms split).

    Holds no tensors, so its ``state_dict`` is empty: the config is the whole state and is
    stored by checkpoints as ``config.to_dict()``. With dither, ``seed`` seeds one generator
    per device, so the same inputs give the same noise on a given device.
    """

    def __init__(self, config: Optional[FbankConfig] = None, seed: int = 0) -> None:
        super().__init__()
        self.config = config if config is not None else FbankConfig()
        self.seed = seed
        self._generators: Dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.config.dither == 0.0:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def forward(self, waveform: Tensor, lengths: Union[Tensor, Sequence[int], None] = None) -> Tuple[Tensor, Tensor]:
        return fbank(waveform, self.config, lengths, generator=self._generator(waveform.device))

    def extra_repr(self) -> str:
        changed = FbankConfig().diff(self.config)
        return ", ".join(f"{k}={v[1]!r}" for k, v in changed.items()) or "ast preset"


# ---------------------------------------------------------------------------------------------
# Normalisation, padding and dataset statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalizer:
    """AST-style normalisation ``(x - mean) / (2 * std)``: the factor 2 is upstream's, so
    normalised log-mels have std 0.5, which the released checkpoints expect."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"Normalizer needs a finite mean and a positive std, got {self.mean}, {self.std}")

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / (2 * self.std)

    def inverse(self, x: Tensor) -> Tensor:
        return x * (2 * self.std) + self.mean

    @property
    def pad_value(self) -> float:
        """Where a zero (padded) log-mel frame lands after normalisation."""
        return (0.0 - self.mean) / (2 * self.std)

    @classmethod
    def preset(cls, name: str) -> "Normalizer":
        try:
            return NORM_PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown normalisation preset {name!r}; known: {sorted(NORM_PRESETS)}") from None

    def to_dict(self) -> Dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Normalizer":
        unknown = sorted(set(data) - {"mean", "std"})
        if unknown:
            raise ValueError(f"unknown Normalizer keys: {unknown}")
        return cls(mean=float(data["mean"]), std=float(data["std"]))


NORM_PRESETS: Dict[str, Normalizer] = {
    # AST src/get_norm_stats.py values, used verbatim by AST, SSAST, AudioMAE and EAT.
    "audioset": Normalizer(-4.2677393, 4.5689974),
    "esc50": Normalizer(-6.6268077, 5.358466),
    "speechcommands": Normalizer(-6.845978, 5.5654526),
    # BEATs preprocess() defaults, for its int16-scaled povey fbank (FBANK_PRESETS["beats"]).
    "beats": Normalizer(15.41663, 6.55582),
}


def pad_or_crop(feats: Tensor, target_length: int) -> Tensor:
    """Cut or zero-pad a log-mel ``(T, F)`` or ``(B, T, F)`` to ``target_length`` frames, at the end.

    Call it on the raw log-mel, *before* ``Normalizer``, as AST/SSAST/AudioMAE/EAT do: a padded
    frame is 0 in log space and becomes ``(0 - mean) / (2 std)`` after normalising, about
    +0.467 with the AudioSet stats (-4.2677393, 4.5689974), not 0. Models trained upstream
    saw that value in their padding, so padding after normalising would feed them something
    new. Returns ``feats`` itself when it already has ``target_length`` frames.
    """
    if feats.dim() not in (2, 3):
        raise ValueError(f"feats must be (T, F) or (B, T, F), got shape {tuple(feats.shape)}")
    if target_length < 0:
        raise ValueError(f"target_length must be >= 0, got {target_length}")
    t = feats.shape[-2]
    if t > target_length:
        return feats[..., :target_length, :]
    if t < target_length:
        return F.pad(feats, (0, 0, 0, target_length - t))
    return feats


class RunningStats:
    """Streaming mean and standard deviation of every log-mel value over true frames.

    float64 accumulators and Chan et al.'s pairwise update: each batch contributes its exact
    count, mean and sum of squared deviations, and ``merge`` combines per-worker partial stats
    into the stats of the union (up to float64 rounding), whatever the split. ``std`` is the
    population std (ddof 0); over millions of values the choice does not matter. This is what
    AST's ``get_norm_stats.py`` approximates by averaging per-batch stds.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, feats: Tensor, lengths: Union[Tensor, Sequence[int], None] = None) -> "RunningStats":
        """Add ``(T, F)`` or ``(B, T, F)`` log-mels; with ``lengths`` (B,), frames past each row's
        length are padding and ignored. Non-finite values are an error (they would poison
        every later number)."""
        if feats.dim() == 2:
            feats = feats[None]
        if feats.dim() != 3:
            raise ValueError(f"feats must be (T, F) or (B, T, F), got shape {tuple(feats.shape)}")
        x = feats.detach().to(torch.float64)
        if lengths is not None:
            lens = torch.as_tensor(lengths, device=x.device).reshape(-1).long()
            if lens.numel() != x.shape[0]:
                raise ValueError(f"lengths has {lens.numel()} entries for a batch of {x.shape[0]}")
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
            x = x[valid]
        x = x.reshape(-1)
        if x.numel() == 0:
            return self
        if not bool(torch.isfinite(x).all()):
            raise ValueError("RunningStats.update got NaN or Inf values")
        mean = float(x.mean())
        m2 = float((x - mean).pow(2).sum())
        self._combine(x.numel(), mean, m2)
        return self

    def _combine(self, count: int, mean: float, m2: float) -> None:
        total = self.count + count
        delta = mean - self._mean
        self._mean += delta * count / total
        self._m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def merge(self, other: "RunningStats") -> "RunningStats":
        """Fold another (e.g. a worker's) partial stats into these; returns self."""
        if other.count:
            self._combine(other.count, other._mean, other._m2)
        return self

    @property
    def mean(self) -> float:
        if not self.count:
            raise ValueError("RunningStats has seen no values")
        return self._mean

    @property
    def std(self) -> float:
        if not self.count:
            raise ValueError("RunningStats has seen no values")
        return math.sqrt(self._m2 / self.count)

    def to_normalizer(self) -> Normalizer:
        return Normalizer(self.mean, self.std)

    def to_dict(self) -> Dict[str, float]:
        """Exact state (count, mean, m2), so partial stats can travel between processes as JSON."""
        return {"count": self.count, "mean": self._mean, "m2": self._m2}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunningStats":
        unknown = sorted(set(data) - {"count", "mean", "m2"})
        if unknown:
            raise ValueError(f"unknown RunningStats keys: {unknown}")
        stats = cls()
        stats.count, stats._mean, stats._m2 = int(data["count"]), float(data["mean"]), float(data["m2"])
        return stats

    def __repr__(self) -> str:
        if not self.count:
            return "RunningStats(count=0)"
        return f"RunningStats(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g})"
