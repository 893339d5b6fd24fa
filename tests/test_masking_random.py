"""audiossl/masking/random.py: MAE random masking and its MAE-AST / SSAST-frame variants."""

from __future__ import annotations

import pytest
import torch

from audiossl.masking.base import resolve_generator
from audiossl.masking.random import RandomMask, grid_size, num_keep_for_ratio, random_mask


def check_consistent(info, N, K):
    B = info.batch_size
    assert info.mask.shape == (B, N) and info.mask.dtype == torch.bool
    assert info.ids_keep.shape == (B, K) and info.ids_masked.shape == (B, N - K)
    assert (info.mask.sum(1) == N - K).all()
    assert not info.mask.gather(1, info.ids_keep).any()
    assert info.mask.gather(1, info.ids_masked).all()
    shuffle = torch.cat([info.ids_keep, info.ids_masked], 1)
    assert torch.equal(shuffle.gather(1, info.ids_restore), torch.arange(N).expand(B, N))


@pytest.mark.parametrize(
    "N,ratio,keep",
    [(512, 0.8, 102), (196, 0.75, 49), (512, 0.75, 128), (1, 0.0, 1), (16, 1.0, 0), (10, 0.9, 0)],
)
def test_exact_counts_follow_mae_truncation(N, ratio, keep):
    # int(10 * (1 - 0.9)) is int(0.9999999999999998) = 0 in MAE: the same expression, not round()
    assert num_keep_for_ratio(N, ratio) == keep
    info = random_mask(3, N, ratio, generator=torch.Generator().manual_seed(0))
    check_consistent(info, N, keep)


def test_mae_ast_keeps_at_least_one():
    assert num_keep_for_ratio(10, 0.9, min_keep=1) == 1
    info = RandomMask.mae_ast()(2, 3, generator=0)  # int(3 * 0.25) = 0 -> 1
    check_consistent(info, 3, 1)


def test_visible_ids_are_mae_noise_order():
    # MAE: ids_shuffle = argsort(uniform noise); visible = first K in that (unsorted) order
    info = random_mask(4, 50, 0.6, generator=torch.Generator().manual_seed(3))
    noise = torch.rand(4, 50, generator=torch.Generator().manual_seed(3))
    order = noise.argsort(dim=1)
    assert torch.equal(info.ids_keep, order[:, :20])
    assert torch.equal(info.ids_restore, order.argsort(dim=1))


def test_exact_count_for_ssast_frame_models():
    info = RandomMask.ssast_frame()(5, (512, 1), generator=1)
    check_consistent(info, 512, 112)
    with pytest.raises(ValueError):
        random_mask(1, 10, None, num_masked=11)
    with pytest.raises(ValueError):
        random_mask(1, 10, None)


def test_seeds_reproduce_and_differ():
    a = random_mask(8, 512, 0.75, generator=torch.Generator().manual_seed(7))
    b = random_mask(8, 512, 0.75, generator=torch.Generator().manual_seed(7))
    c = random_mask(8, 512, 0.75, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_keep, b.ids_keep)
    assert not torch.equal(a.mask, c.mask)
    assert torch.equal(random_mask(2, 64, 0.5, generator=11).mask, random_mask(2, 64, 0.5, generator=11).mask)
    # rows of one batch differ from each other
    assert not torch.equal(a.mask[0], a.mask[1])


def test_generator_state_advances_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    g = torch.Generator().manual_seed(0)
    first = random_mask(2, 32, 0.5, generator=g)
    second = random_mask(2, 32, 0.5, generator=g)
    random_mask(2, 32, 0.5)  # generator=None: a fresh entropy-seeded generator, not the global one
    assert not torch.equal(first.mask, second.mask)
    assert torch.equal(torch.rand(3), expected)


def test_same_for_batch_and_batch_of_one():
    info = RandomMask(mask_ratio=0.75, same_for_batch=True)(6, (8, 8), generator=2)
    assert (info.mask == info.mask[:1]).all()
    one = random_mask(1, 7, 0.5, generator=0)
    check_consistent(one, 7, 3)


def test_per_position_frequency_is_flat():
    info = RandomMask.audiomae()(2000, (64, 8), generator=5)
    freq = info.mask.float().mean(0)
    expected = 410 / 512
    assert (freq - expected).abs().max() < 0.05  # 4.5 sigma at 2000 rows
    assert abs(freq.mean().item() - expected) < 1e-6


def test_device_and_helpers():
    info = random_mask(2, 16, 0.5, generator=torch.Generator(), device="cpu")
    assert info.mask.device.type == "cpu"
    assert grid_size((64, 8)) == 512 and grid_size(7) == 7
    g = torch.Generator()
    assert resolve_generator(g) is g
    assert torch.equal(torch.rand(3, generator=resolve_generator(4)), torch.rand(3, generator=torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError):
        num_keep_for_ratio(10, 1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generator_and_device():
    g = torch.Generator(device="cuda").manual_seed(0)
    info = random_mask(4, 512, 0.8, generator=g, device="cuda")
    assert info.mask.is_cuda and info.ids_keep.is_cuda
    again = random_mask(4, 512, 0.8, generator=torch.Generator(device="cuda").manual_seed(0), device="cuda")
    assert torch.equal(info.mask, again.mask)
    cpu_gen_to_cuda = random_mask(4, 512, 0.8, generator=torch.Generator().manual_seed(0), device="cuda")
    assert cpu_gen_to_cuda.mask.is_cuda
    check_consistent(cpu_gen_to_cuda.to("cpu"), 512, 102)


