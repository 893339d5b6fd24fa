"""audiossl/masking/hierarchical.py: level scales, per-level masks, determinism."""

from __future__ import annotations

import pytest
import torch

from audiossl.masking.hierarchical import HierarchicalMasker, HierarchicalMasks, hierarchical_masks, level_scales
from audiossl.masking.multiblock import MultiBlockMasks


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_geometric_scales_have_a_constant_ratio():
    s = level_scales(4, 0.02, 0.54, "geometric")
    assert s == pytest.approx([0.02, 0.06, 0.18, 0.54])
    assert s[0] == 0.02 and s[-1] == 0.54


def test_linear_scales_have_a_constant_step():
    assert level_scales(3, 0.1, 0.5, "linear") == pytest.approx([0.1, 0.3, 0.5])
    assert level_scales(1, 0.2, 0.2) == [0.2]


def test_end_points_are_exact_so_scale_max_one_is_valid():
    s = level_scales(7, 0.013, 1.0, "geometric")
    assert s[-1] == 1.0 and all(a < b for a, b in zip(s, s[1:]))


def test_level_scale_errors():
    with pytest.raises(ValueError):
        level_scales(0, 0.1, 0.2)
    with pytest.raises(ValueError):
        level_scales(3, 0.3, 0.2)
    with pytest.raises(ValueError):
        level_scales(1, 0.1, 0.2)
    with pytest.raises(ValueError):
        level_scales(3, 0.1, 0.2, "cubic")


@pytest.mark.parametrize("grid", [(14, 14), (64, 8), (8, 64), (1, 512)])
@pytest.mark.parametrize("progression", ["geometric", "linear"])
def test_each_level_targets_follow_its_scale(grid, progression):
    H, W = grid
    N = H * W
    m = hierarchical_masks(4, grid, progression=progression, generator=gen(1))
    assert isinstance(m, HierarchicalMasks) and m.num_levels == 3
    assert m.scales == pytest.approx(level_scales(3, 0.05, 0.3, progression))
    areas = []
    for level, s in zip(m.levels, m.scales):
        assert isinstance(level, MultiBlockMasks) and len(level.targets) == 4
        k = int(N * s)
        rows, cols = torch.nonzero(level.targets[0].mask[0].view(H, W), as_tuple=True)
        h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        assert h * w == level.targets[0].num_masked  # a full rectangle
        assert abs(h * w - k) <= max(h, w) / 2
        visible = ~level.context.mask
        assert not bool((visible & level.target_union).any())
        areas.append(h * w)
    assert areas == sorted(areas) and areas[0] < areas[-1]


def test_npred_per_level_and_faithful_mode():
    m = hierarchical_masks(
        3, (16, 16), scale_min=0.1, scale_max=0.4, npred=(4, 2, 1), mode="faithful", generator=gen(0)
    )
    assert [len(level.targets) for level in m.levels] == [4, 2, 1]
    with pytest.raises(ValueError, match="entries"):
        hierarchical_masks(3, (16, 16), npred=(4, 2), generator=gen(0))


def test_same_seed_same_levels_and_levels_are_distinct_draws():
    a = hierarchical_masks(4, (64, 8), generator=gen(7))
    b = HierarchicalMasker()(4, (64, 8), generator=gen(7))
    for la, lb in zip(a.levels, b.levels):
        assert torch.equal(la.context.mask, lb.context.mask) and torch.equal(la.target_ids, lb.target_ids)
    c = hierarchical_masks(4, (64, 8), generator=gen(8))
    assert not torch.equal(a.levels[0].target_union, c.levels[0].target_union)
    assert not torch.equal(a.levels[0].context.mask, a.levels[1].context.mask)


def test_masker_config_scales_and_batch_of_one():
    masker = HierarchicalMasker(num_levels=2, scale_min=0.15, scale_max=0.7, npred=(8, 2), progression="linear")
    assert masker.scales == [0.15, 0.7]  # V-JEPA's short- and long-range pair
    m = masker(1, (14, 14), generator=gen(0))
    assert m.levels[0].target_ids.shape[:2] == (8, 1) and m.levels[1].target_ids.shape[:2] == (2, 1)
    assert m.to("cpu").num_levels == 2
