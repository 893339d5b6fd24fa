"""audiossl/masking/drop.py against a transcription of AudioMAE's random_masking_2d."""

from __future__ import annotations

import pytest
import torch

from audiossl.masking.drop import TimeFreqDrop, time_freq_drop


def audiomae_masking_2d(x, T, F, mask_t_prob, mask_f_prob, gen):
    """AudioMAE models_vit.random_masking_2d, written out (time gather, then frequency gather)."""
    N, L, D = x.shape
    x = x.reshape(N, T, F, D)
    len_keep_t = int(T * (1 - mask_t_prob))
    noise = torch.rand(N, T, generator=gen)
    ids_keep = torch.argsort(noise, dim=1)[:, :len_keep_t]
    x = torch.gather(x, 1, ids_keep[:, :, None, None].repeat(1, 1, F, D))
    x = x.permute(0, 2, 1, 3)
    len_keep_f = int(F * (1 - mask_f_prob))
    noise = torch.rand(N, F, generator=gen)
    ids_keep = torch.argsort(noise, dim=1)[:, :len_keep_f]
    x = torch.gather(x, 1, ids_keep[:, :, None, None].repeat(1, 1, len_keep_t, D))
    return x.permute(0, 2, 1, 3).reshape(N, len_keep_f * len_keep_t, D)


@pytest.mark.parametrize("grid,pt,pf,keep", [((64, 8), 0.2, 0.2, 306), ((32, 8), 0.2, 0.2, 150), ((101, 12), 0.2, 0.2, 80 * 9), ((64, 8), 0.0, 0.0, 512), ((8, 8), 0.5, 0.0, 32)])
def test_exact_counts(grid, pt, pf, keep):
    info = time_freq_drop(4, grid, pt, pf, generator=0)
    N = grid[0] * grid[1]
    assert info.num_keep == keep and (info.mask.sum(1) == N - keep).all()
    shuffle = torch.cat([info.ids_keep, info.ids_masked], 1)
    assert torch.equal(shuffle.gather(1, info.ids_restore), torch.arange(N).expand(4, N))


def test_gather_visible_equals_audiomae_x_masked():
    T, F, D = 64, 8, 5
    x = torch.randn(3, T * F, D)
    ref = audiomae_masking_2d(x, T, F, 0.2, 0.2, torch.Generator().manual_seed(11))
    info = time_freq_drop(3, (T, F), 0.2, 0.2, generator=torch.Generator().manual_seed(11))
    assert torch.equal(info.gather_visible(x), ref)


def test_structure_whole_columns_and_rows():
    info = TimeFreqDrop()(8, (64, 8), generator=3)
    visible = (~info.mask).view(8, 64, 8)
    for b in range(8):
        rows = visible[b].any(1)
        cols = visible[b].any(0)
        assert rows.sum() == 51 and cols.sum() == 6
        # a token is visible exactly when its time column and its frequency row are both kept
        assert torch.equal(visible[b], rows[:, None] & cols[None, :])
    assert torch.equal(info.ids_masked, info.ids_masked.sort(1).values)


def test_per_position_frequency_and_seeds():
    info = TimeFreqDrop()(3000, (64, 8), generator=4)
    freq = info.mask.float().mean(0)
    expected = 1 - (51 / 64) * (6 / 8)
    assert (freq - expected).abs().max() < 0.05
    a = time_freq_drop(4, (64, 8), generator=torch.Generator().manual_seed(1))
    b = time_freq_drop(4, (64, 8), generator=torch.Generator().manual_seed(1))
    c = time_freq_drop(4, (64, 8), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)


def test_batch_of_one_and_grid_errors():
    info = time_freq_drop(1, (3, 1), 0.5, 0.0, generator=0)  # keep int(1.5) = 1 time step
    assert info.num_keep == 1
    with pytest.raises(ValueError):
        TimeFreqDrop()(2, 512)
    with pytest.raises(ValueError):
        time_freq_drop(2, (4, 4), 1.2, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda():
    info = time_freq_drop(4, (64, 8), generator=torch.Generator().manual_seed(0), device="cuda")
    assert info.mask.is_cuda and info.ids_restore.is_cuda
    ref = time_freq_drop(4, (64, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(info.mask.cpu(), ref.mask)


def test_one_row_axis_keeps_its_row():
    # frame tokens: (T', 1); AudioMAE's int(1 * 0.8) = 0 would hide every token
    for grid, kept in (((512, 1), 409), ((1, 512), 409)):
        info = time_freq_drop(3, grid, 0.2, 0.2, generator=0)
        assert info.num_keep == kept and not info.mask.all(1).any()
