"""Batch augmentations: mixup, SpecAugment, noise, time/waveform roll and gain.

Batch augmentations (``Mixup``, ``SpecAugment``, ``NoiseAugment``, ``RollAugment``,
``GainAugment``) are tensor code on a whole ``(B, T, F)`` (or ``(B, N)`` waveform) batch, with
per-item widths, offsets and lambdas, and run where the batch is (CPU or GPU) after
``collate``; each takes a ``torch.Generator`` (the ``functional`` / ``transform`` split of
torchaudio: ``spec_augment`` is the function, ``SpecAugment`` the callable holding its
parameters and generator). Draws are made on the generator's device and moved to the batch's:
for a GPU batch pass a CUDA generator, or ``noise_augment`` ships a (B, T, F) noise tensor
over PCIe.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .rng import _as_generator, _rand, sample_beta


class _GeneratorHolder:
    """Holds a generator and pickles it as plain bytes.

    A ``torch.Generator`` sent through multiprocessing's ``ForkingPickler`` (what a ``spawn``
    DataLoader uses for the dataset and its transforms) fails to rebuild in the child
    ("unable to resize file ... Invalid argument", torch 2.x), so the state travels as bytes.
    """

    generator: torch.Generator

    def __init__(self, generator: Union[torch.Generator, int, None], owner: str) -> None:
        self.generator = _as_generator(generator, owner)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        g = state.pop("generator")
        state["_generator_state"] = (str(g.device), g.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        device, raw = state.pop("_generator_state")
        self.__dict__.update(state)
        self.generator = torch.Generator(device=device)
        self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))


class MixupResult(NamedTuple):
    fbank: Tensor  # (B, ...) mixed inputs
    labels: Tensor  # (B, C) lam * y + (1 - lam) * y.flip(0)
    lam: Tensor  # (B,) per-item lambda, 1.0 where the item was not mixed
    lengths: Optional[Tensor]  # (B,) true frames of the mix, when lengths were given


def mixup(
    x: Tensor,
    labels: Tensor,
    generator: torch.Generator,
    alpha: float = 10.0,
    prob: float = 1.0,
    mode: Literal["batch", "elem"] = "batch",
    lengths: Optional[Tensor] = None,
) -> MixupResult:
    """Mix each item with its mirror in the batch (``x.flip(0)``), as timm/EAT do.

    ``mode="batch"``: with probability ``prob`` the whole batch mixes with one
    ``lambda ~ Beta(alpha, alpha)`` (EAT fine-tuning: ``alpha=0.8, prob=0.9``). ``mode="elem"``:
    every item draws its own lambda and its own coin (the batch analogue of AST's per-sample
    ``mixup=0.5`` with Beta(10, 10)). In an odd batch the middle item mixes with itself, a no-op.
    The returned ``lam`` is what a loss needs for mixed-target bookkeeping.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    B = x.shape[0]
    if labels.shape[0] != B:
        raise ValueError(f"labels batch {labels.shape[0]} != inputs batch {B}")
    if mode == "batch":
        apply = float(_rand((), generator, torch.device("cpu"))) < prob
        lam = sample_beta(alpha, alpha, (1,), generator).expand(B) if apply else torch.ones(B)
    elif mode == "elem":
        lam_mix = sample_beta(alpha, alpha, (B,), generator)
        apply_elem = _rand((B,), generator, torch.device("cpu")) < prob
        lam = torch.where(apply_elem, lam_mix, torch.ones(B))
    else:
        raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
    lam = lam.contiguous()
    lam_x = lam.to(x.device, x.dtype).view(B, *([1] * (x.dim() - 1)))
    lam_y = lam.to(labels.device, labels.dtype).view(B, *([1] * (labels.dim() - 1)))
    mixed = x * lam_x + x.flip(0) * (1.0 - lam_x)
    targets = labels * lam_y + labels.flip(0) * (1.0 - lam_y)
    if lengths is not None:
        mixed_len = torch.maximum(lengths, lengths.flip(0))
        lengths = torch.where(lam.to(lengths.device) < 1.0, mixed_len, lengths)
    return MixupResult(mixed, targets, lam.to(x.device), lengths)


class Mixup(_GeneratorHolder):
    """Batch-level fbank mixup holding its parameters and generator; see :func:`mixup`.

    Level: this mixes *normalised fbanks in the batch* (EAT, inside the model forward). AST,
    SSAST and AudioMAE instead mix *waveforms* in the dataset before the fbank, with a
    partner drawn from the whole dataset: ``WavDataset(mixup=p)`` reproduces that, and
    ``FbankDataset(mixup=p)`` does the same dataset-level draw on stored fbanks.
    """

    def __init__(
        self,
        alpha: float = 10.0,
        prob: float = 1.0,
        mode: Literal["batch", "elem"] = "batch",
        generator: Union[torch.Generator, int, None] = 0,
    ) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        super().__init__(generator, "Mixup")
        self.alpha, self.prob, self.mode = float(alpha), float(prob), mode

    def __call__(
        self,
        x: Tensor,
        labels: Tensor,
        lengths: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> MixupResult:
        return mixup(x, labels, generator or self.generator, self.alpha, self.prob, self.mode, lengths)


def _band_mask(size: int, param: int, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """``(B, size)`` bool bands distributed exactly as torchaudio's ``mask_along_axis_iid``:
    width ``floor(u1 * param)`` (so always ``< param``), start ``floor(u2 * (size - u1 * param))``.
    """
    value = _rand((batch,), generator, device) * param
    start = (_rand((batch,), generator, device) * (size - value)).long()
    end = start + value.long()
    pos = torch.arange(size, device=device)
    return (pos >= start[:, None]) & (pos < end[:, None])


def spec_augment(
    x: Tensor,
    freqm: int,
    timem: int,
    generator: torch.Generator,
    value: Union[float, Tensor] = 0.0,
) -> Tensor:
    """One frequency band then one time band per item, each of width ``U{0..param-1}``.

    ``x`` is ``(B, T, F)`` (or ``(B, 1, T, F)``). The draws and their order are those of
    torchaudio ``FrequencyMasking(freqm, iid_masks=True)`` then ``TimeMasking(timem, ...)`` on
    ``(B, 1, F, T)``, i.e. one mask per sample as AST (after its issue #58 fix) and EAT get.

    ``value``: masked cells are set to it in the units of ``x``. EAT masks the normalised
    fbank with 0 (the default here). AST/SSAST/AudioMAE mask the *log-mel* with 0 before
    normalising, so their masked cells end at the pad value: pass ``value=dataset.pad_value``
    to reproduce that on normalised input.
    """
    if freqm < 0 or timem < 0:
        raise ValueError(f"freqm and timem must be >= 0, got {freqm}, {timem}")
    squeeze = x.dim() == 4
    if squeeze:
        if x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, T, F), got {tuple(x.shape)}")
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"expected (B, T, F) or (B, 1, T, F), got {tuple(x.shape)}")
    B, T, F = x.shape
    masked = torch.zeros(B, T, F, dtype=torch.bool, device=x.device)
    if freqm >= 1:
        masked |= _band_mask(F, freqm, B, generator, x.device)[:, None, :]
    if timem >= 1:
        masked |= _band_mask(T, timem, B, generator, x.device)[:, :, None]
    fill = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    out = torch.where(masked, fill, x)
    return out[:, None] if squeeze else out


class SpecAugment(_GeneratorHolder):
    """:func:`spec_augment` with its parameters and generator. Upstream widths:
    AST AudioSet ``freqm=48, timem=192``; ESC-50 ``24, 96``; SPC-2 ``48, 48``; EAT
    ``128 r, target_length r`` with ``r = 0.2`` (ESC-50: 0.4)."""

    def __init__(
        self,
        freqm: int,
        timem: int,
        value: Union[float, Tensor] = 0.0,
        generator: Union[torch.Generator, int, None] = 0,
    ) -> None:
        super().__init__(generator, "SpecAugment")
        self.freqm, self.timem, self.value = int(freqm), int(timem), value

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return spec_augment(x, self.freqm, self.timem, generator or self.generator, self.value)


def roll_rows(x: Tensor, shifts: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
    """Roll each row of ``x`` along dim 1 by its own shift (``torch.roll`` semantics:
    ``out[t] = x[(t - s) mod T]``). With ``lengths`` only the first ``lengths[b]`` entries
    of row ``b`` rotate, so padding stays at the end."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device)[None, :]
    shifts = shifts.to(x.device).long()[:, None]
    if lengths is None:
        idx = (t - shifts) % T
    else:
        n = lengths.to(x.device).long().clamp(min=1)[:, None]
        idx = torch.where(t < n, (t - shifts) % n, t)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def random_roll(
    x: Tensor,
    generator: torch.Generator,
    lengths: Optional[Tensor] = None,
    max_shift: Optional[int] = None,
) -> Tensor:
    """Circular roll along dim 1 by a per-item ``U{0..n-1}`` (``n`` = row length): EAT's
    waveform ``roll_aug`` on ``(B, N)``, or a time roll of a ``(B, T, F)`` fbank.
    ``max_shift`` instead draws from ``U{-max_shift..max_shift-1}`` (AST noise: 10)."""
    B, T = x.shape[:2]
    u = _rand((B,), generator, torch.device("cpu"))
    if max_shift is not None:
        shifts = (u * (2 * max_shift)).long() - max_shift
    else:
        n = torch.full((B,), T) if lengths is None else lengths.cpu().long().clamp(min=1)
        shifts = (u * n).long()
    return roll_rows(x, shifts, lengths)


def random_gain(x: Tensor, generator: torch.Generator, alpha: float = 10.0) -> Tensor:
    """Scale each item by ``Beta(alpha, alpha) + 0.5`` (EAT/AudioMAE magnitude aug; a waveform
    gain, so apply it before the fbank)."""
    g = sample_beta(alpha, alpha, (x.shape[0],), generator) + 0.5
    return x * g.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))


def noise_augment(x: Tensor, generator: torch.Generator, lengths: Optional[Tensor] = None) -> Tensor:
    """AST's "noise" augmentation on a normalised ``(B, T, F)`` batch, per item:
    ``x += U(0,1)[T, F] * U(0,1) / 10``, then roll along time by ``U{-10..9}`` frames (the
    whole padded length, as upstream, unless ``lengths`` are given)."""
    B = x.shape[0]
    noise = _rand(x.shape, generator, x.device).to(x.dtype)
    scale = _rand((B,), generator, x.device).to(x.dtype).view(B, *([1] * (x.dim() - 1)))
    return random_roll(x + noise * scale / 10.0, generator, lengths, max_shift=10)


class NoiseAugment(_GeneratorHolder):
    """:func:`noise_augment` with its generator (AST/SSAST Speech Commands, EAT SPC-2)."""

    def __init__(self, generator: Union[torch.Generator, int, None] = 0) -> None:
        super().__init__(generator, "NoiseAugment")

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None, lengths: Optional[Tensor] = None) -> Tensor:
        return noise_augment(x, generator or self.generator, lengths)


class RollAugment(_GeneratorHolder):
    """:func:`random_roll` with its generator."""

    def __init__(self, max_shift: Optional[int] = None, generator: Union[torch.Generator, int, None] = 0) -> None:
        super().__init__(generator, "RollAugment")
        self.max_shift = max_shift

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None, lengths: Optional[Tensor] = None) -> Tensor:
        return random_roll(x, generator or self.generator, lengths, self.max_shift)


class GainAugment(_GeneratorHolder):
    """:func:`random_gain` with its generator."""

    def __init__(self, alpha: float = 10.0, generator: Union[torch.Generator, int, None] = 0) -> None:
        super().__init__(generator, "GainAugment")
        self.alpha = float(alpha)

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return random_gain(x, generator or self.generator, self.alpha)
