"""Tests for audiossl/data/augment.py: SpecAugment, mixup, roll, gain and noise, and their pickling."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchaudio

from audiossl.data.augment import (
    Mixup,
    NoiseAugment,
    SpecAugment,
    mixup,
    noise_augment,
    random_gain,
    random_roll,
    roll_rows,
    spec_augment,
)

BETA10_VAR = 1.0 / 84.0  # Var Beta(a, a) = 1 / (4 (2a + 1)) = 1/84 for a = 10


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ---------------------------------------------------------------------------------------------
# SpecAugment


def test_spec_augment_equals_torchaudio_iid_masks():
    """Same seed → the very masks torchaudio's iid Frequency- then TimeMasking draw on (B,1,F,T)."""
    B, T, F = 6, 100, 128
    x = torch.randn(B, T, F, generator=gen(1)) + 3.0
    ours = spec_augment(x, freqm=48, timem=60, generator=gen(123))

    torch.manual_seed(123)
    ref = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T): the AST issue #58 layout
    ref = torchaudio.transforms.FrequencyMasking(48, iid_masks=True)(ref)
    ref = torchaudio.transforms.TimeMasking(60, iid_masks=True)(ref)
    ref = ref.squeeze(1).transpose(1, 2)
    assert torch.equal(ours, ref)


def test_spec_augment_widths_below_param_and_value():
    B, T, F = 400, 64, 32
    x = torch.full((B, T, F), 5.0)
    out = spec_augment(x, freqm=8, timem=12, generator=gen(0), value=-1.5)
    masked = out == -1.5
    assert torch.all((out == 5.0) | masked)
    # a frequency band masks whole columns, a time band whole rows
    freq_cols = masked.all(dim=1)  # (B, F)
    time_rows = masked.all(dim=2)  # (B, T)
    f_width = freq_cols.sum(1)
    t_width = time_rows.sum(1)
    assert int(f_width.max()) <= 7 and int(t_width.max()) <= 11  # U{0..param-1}
    assert int(f_width.max()) == 7 and int(t_width.max()) == 11  # and the top is reached
    # widths are uniform on {0..param-1}: mean (param-1)/2
    assert abs(f_width.float().mean().item() - 3.5) < 0.35
    assert abs(t_width.float().mean().item() - 5.5) < 0.5
    # bands are contiguous
    for b in range(20):
        cols = torch.nonzero(freq_cols[b]).flatten()
        if len(cols):
            assert int(cols[-1] - cols[0] + 1) == len(cols)
    # each cell is masked iff its row or its column is
    assert torch.equal(masked, freq_cols[:, None, :] | time_rows[:, :, None])
    # per-item positions differ
    assert len({tuple(torch.nonzero(time_rows[b]).flatten().tolist()) for b in range(B)}) > 20


def test_spec_augment_class_and_4d_and_per_bin_value():
    x = torch.zeros(3, 1, 20, 8)
    value = torch.arange(8, dtype=torch.float32) + 1
    out = SpecAugment(4, 6, value=value, generator=7)(x)
    assert out.shape == x.shape
    hit = out[:, 0] != 0
    # masked cells carry their bin's value
    cols = torch.arange(8).expand(3, 20, 8)
    assert torch.equal(out[:, 0][hit], (cols[hit] + 1).float())
    # zero params: no-op
    assert torch.equal(spec_augment(x[:, 0], 0, 0, gen(0)), x[:, 0])


# ---------------------------------------------------------------------------------------------
# Mixup


def test_mixup_label_arithmetic_by_hand():
    x = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    res = mixup(x, y, gen(5), alpha=10.0, prob=1.0, mode="elem")
    lam = res.lam
    assert lam.shape == (4,) and torch.all((lam > 0) & (lam < 1))
    # item 0 mixes with item 3, item 1 with item 2
    l0, l1 = lam[0].item(), lam[1].item()
    assert res.labels[0].tolist() == pytest.approx([1.0, 1 - l0, 0.0])  # shared label → 1.0
    assert res.labels[1].tolist() == pytest.approx([0.0, l1, 1 - l1])
    assert res.fbank[0].tolist() == pytest.approx([l0 * 1 + (1 - l0) * 4] * 2)
    assert res.fbank[1].tolist() == pytest.approx([l1 * 2 + (1 - l1) * 3] * 2)
    # labels still sum to the mix of the two label counts
    expected = lam * y.sum(1) + (1 - lam) * y.flip(0).sum(1)
    assert torch.allclose(res.labels.sum(1), expected)


def test_mixup_lambda_distribution_is_beta10():
    B = 40000
    res = mixup(torch.zeros(B, 1), torch.zeros(B, 1), gen(0), alpha=10.0, prob=1.0, mode="elem")
    lam = res.lam.double()
    assert abs(lam.mean().item() - 0.5) < 0.003
    assert abs(lam.var().item() - BETA10_VAR) / BETA10_VAR < 0.05


def test_mixup_batch_mode_and_probability_and_lengths():
    x = torch.randn(8, 5, 3, generator=gen(0))
    y = torch.eye(8)
    lengths = torch.tensor([5, 1, 2, 3, 4, 5, 5, 2])
    m = Mixup(alpha=0.8, prob=1.0, mode="batch", generator=3)
    res = m(x, y, lengths)
    assert torch.all(res.lam == res.lam[0]) and 0 < res.lam[0] < 1
    assert torch.equal(res.lengths, torch.maximum(lengths, lengths.flip(0)))
    # prob: fraction of mixed batches / items
    g = gen(1)
    mixed = sum(
        bool(mixup(x, y, g, alpha=10.0, prob=0.3, mode="batch").lam[0] < 1) for _ in range(2000)
    )
    assert abs(mixed / 2000 - 0.3) < 0.035
    lam = mixup(torch.zeros(20000, 1), torch.zeros(20000, 1), gen(2), prob=0.5, mode="elem").lam
    assert abs((lam < 1).float().mean().item() - 0.5) < 0.015
    # unmixed items are untouched
    res = mixup(x, y, gen(9), prob=0.0, mode="elem", lengths=lengths)
    assert torch.equal(res.fbank, x) and torch.equal(res.labels, y) and torch.equal(res.lengths, lengths)
    # reproducible
    a = mixup(x, y, gen(4), mode="elem")
    b = mixup(x, y, gen(4), mode="elem")
    assert torch.equal(a.fbank, b.fbank) and torch.equal(a.lam, b.lam)


# ---------------------------------------------------------------------------------------------
# Roll / gain / noise


def test_roll_rows_matches_torch_roll():
    x = torch.arange(4 * 7 * 2, dtype=torch.float32).view(4, 7, 2)
    shifts = torch.tensor([0, 3, -2, 9])
    out = roll_rows(x, shifts)
    for b in range(4):
        assert torch.equal(out[b], torch.roll(x[b], int(shifts[b]), dims=0))
    lengths = torch.tensor([7, 4, 3, 1])
    out = roll_rows(x, shifts, lengths)
    for b in range(4):
        n = int(lengths[b])
        assert torch.equal(out[b, :n], torch.roll(x[b, :n], int(shifts[b]), dims=0))
        assert torch.equal(out[b, n:], x[b, n:])


def test_random_roll_waveform_shift_range():
    wav = torch.arange(10, dtype=torch.float32).expand(3000, 10)
    out = random_roll(wav, gen(0))
    shifts = (-out[:, 0]) % 10  # out[0] = x[-s mod N]
    assert set(shifts.long().tolist()) == set(range(10))  # U{0..N-1}
    out = random_roll(torch.arange(100.0).expand(3000, 100), gen(1), max_shift=10)
    s = out[:, 0].long()
    signed = torch.where(s > 50, s - 100, s)  # out[0] = x[-shift mod 100]
    assert set((-signed).tolist()) == set(range(-10, 10))  # randint(-10, 10): -10..9


def test_random_gain_is_beta_plus_half():
    wav = torch.ones(30000, 4)
    out = random_gain(wav, gen(0))
    g = out[:, 0].double()
    assert torch.all(out == out[:, :1])
    assert g.min() > 0.5 and g.max() < 1.5
    assert abs(g.mean().item() - 1.0) < 0.003
    assert abs(g.var().item() - BETA10_VAR) / BETA10_VAR < 0.05


def test_noise_augment_is_scaled_uniform_then_time_roll():
    B, T, F = 6, 30, 4
    x = torch.randn(B, T, F, generator=gen(0))
    out = noise_augment(x, gen(1))
    assert torch.equal(NoiseAugment(generator=1)(x), out)  # class == function, same generator
    for b in range(B):
        matches = []
        for s in range(-10, 10):
            noise = torch.roll(out[b], -s, dims=0) - x[b]
            if noise.min() >= -1e-6 and noise.max() < 0.1 + 1e-6:
                matches.append(s)
        # exactly one shift undoes the roll and leaves noise in [0, U(0,1)/10) with one scale
        assert len(matches) == 1, (b, matches)
        noise = torch.roll(out[b], -matches[0], dims=0) - x[b]
        assert noise.std() > 0  # i.i.d. per cell, not a constant


# ---------------------------------------------------------------------------------------------
# Pickling (transforms travel to spawn workers)


def test_augmentations_pickle_with_generator_state():
    """Transforms travel to spawn workers: the generator state must survive pickling."""
    import multiprocessing.reduction

    aug = SpecAugment(10, 20, generator=3)
    aug(torch.zeros(2, 50, 16))  # advance the stream
    for dumps in (pickle.dumps, lambda o: bytes(multiprocessing.reduction.ForkingPickler.dumps(o))):
        clone = pickle.loads(dumps(aug))
        x = torch.randn(4, 50, 16, generator=gen(0))
        assert torch.equal(clone(x), SpecAugment(10, 20, generator=aug.generator.clone_state())(x))
    m = pickle.loads(pickle.dumps(Mixup(generator=5)))
    assert torch.equal(m(torch.ones(4, 2), torch.eye(4)).lam, Mixup(generator=5)(torch.ones(4, 2), torch.eye(4)).lam)
