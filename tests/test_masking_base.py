"""audiossl/masking/base.py: MaskInfo construction, gather/restore round trips, generators."""

from __future__ import annotations

import pytest
import torch

from audiossl.masking.base import MaskInfo, resolve_generator


def sorted_reference(mask: torch.Tensor):
    """The obvious construction: a stable argsort puts visible ids first, each group ascending."""
    ids_shuffle = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    keep = int((~mask[0]).sum())
    return ids_shuffle[:, :keep], torch.argsort(ids_shuffle, dim=1), ids_shuffle[:, keep:]


@pytest.mark.parametrize("shape,hidden", [((6, 50), 13), ((3, 7), 0), ((3, 7), 7), ((1, 40000), 30000), ((4, 512), 410)])
def test_from_mask_equals_a_stable_sort(shape, hidden):
    g = torch.Generator().manual_seed(sum(shape) + hidden)
    mask = torch.rand(shape, generator=g).argsort(1) < hidden
    ref_keep, ref_restore, ref_masked = sorted_reference(mask)
    for info in (MaskInfo.from_mask(mask), MaskInfo.from_mask(mask, hidden)):
        assert torch.equal(info.mask, mask)
        assert torch.equal(info.ids_keep, ref_keep)
        assert torch.equal(info.ids_restore, ref_restore)
        assert torch.equal(info.ids_masked, ref_masked)
        assert info.num_keep == shape[1] - hidden and info.num_masked == hidden


def test_from_mask_rejects_unequal_rows_and_bad_shapes():
    with pytest.raises(ValueError, match="same number"):
        MaskInfo.from_mask(torch.tensor([[True, False], [True, True]]))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        MaskInfo.from_mask(torch.zeros(4, dtype=torch.bool))


def test_from_shuffle_keeps_noise_order_and_inverts():
    g = torch.Generator().manual_seed(0)
    ids_shuffle = torch.rand(5, 30, generator=g).argsort(1)
    info = MaskInfo.from_shuffle(ids_shuffle, 8)
    assert torch.equal(info.ids_keep, ids_shuffle[:, :8])
    assert torch.equal(info.ids_restore, ids_shuffle.argsort(1))
    assert torch.equal(info.mask.sum(1), torch.full((5,), 22))
    assert not info.mask.gather(1, info.ids_keep).any()


def test_gather_and_restore_round_trip():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 20, 3, generator=g)
    info = MaskInfo.from_mask(torch.rand(4, 20, generator=g).argsort(1) < 15)
    vis, hid = info.gather_visible(x), info.gather_masked(x)
    assert vis.shape == (4, 5, 3) and hid.shape == (4, 15, 3)
    full = torch.gather(torch.cat([vis, hid], 1), 1, info.ids_restore[..., None].expand(-1, -1, 3))
    assert torch.equal(full, x)
    restored = info.restore(vis)
    assert torch.equal(restored[~info.mask], x[~info.mask])
    assert torch.equal(restored[info.mask], torch.zeros_like(x[info.mask]))
    token = torch.tensor([7.0, 8.0, 9.0])
    assert torch.equal(info.restore(vis, token)[info.mask], token.expand(int(info.mask.sum()), 3))


def test_repeat_interleave_orders_clones_per_clip():
    info = MaskInfo.from_mask(torch.tensor([[True, False, False], [False, True, False]]))
    rep = info.repeat_interleave(3)
    assert rep.batch_size == 6
    assert torch.equal(rep.mask[:3], info.mask[:1].expand(3, 3))
    assert torch.equal(rep.mask[3:], info.mask[1:].expand(3, 3))


def test_resolve_generator_never_uses_the_global_rng():
    g = torch.Generator().manual_seed(3)
    assert resolve_generator(g) is g
    a = torch.rand(3, generator=resolve_generator(4))
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(4)))
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    torch.rand(2, generator=resolve_generator(None))
    assert torch.equal(before, torch.random.get_rng_state())
