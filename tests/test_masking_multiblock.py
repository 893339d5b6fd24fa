"""audiossl/masking/multiblock.py: shapes, disjointness, block geometry, I-JEPA quirks, errors."""

from __future__ import annotations

import logging
import math
import time

import pytest
import torch

from audiossl.masking.base import MaskInfo
from audiossl.masking.multiblock import (
    MULTIBLOCK_PRESETS,
    MultiBlockMasker,
    MultiBlockMasks,
    _truncate_random,
    _truncate_raster,
    multiblock_audio,
    multiblock_image,
    multiblock_masks,
)

GRIDS = [(14, 14), (16, 16), (64, 8), (8, 64), (1, 512)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bbox(mask_row: torch.Tensor, grid) -> tuple[int, int, int, int, int]:
    """(top, left, h, w, count) of the True cells of one flattened row."""
    H, W = grid
    rows, cols = torch.nonzero(mask_row.view(H, W), as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    return top, left, int(rows.max()) - top + 1, int(cols.max()) - left + 1, rows.numel()


def check_maskinfo(info: MaskInfo, B: int, N: int) -> None:
    assert info.mask.shape == (B, N) and info.mask.dtype == torch.bool
    assert info.ids_keep.shape[0] == B and info.ids_keep.shape[1] + info.ids_masked.shape[1] == N
    assert bool((info.mask.sum(1) == info.num_masked).all())
    assert not bool(info.mask.gather(1, info.ids_keep).any())
    assert bool(info.mask.gather(1, info.ids_masked).all())
    assert bool((info.ids_keep.diff(dim=1) > 0).all()) and bool((info.ids_masked.diff(dim=1) > 0).all())
    perm = torch.cat([info.ids_keep, info.ids_masked], 1)
    assert torch.equal(perm.gather(1, info.ids_restore), torch.arange(N).expand(B, N))


def modes_for(grid):
    return ["corrected", "faithful"] if min(grid) >= 2 else ["corrected"]


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("B", [1, 16])
def test_shapes_equal_lengths_and_no_overlap(grid, B):
    H, W = grid
    for mode in modes_for(grid):
        for units in ("patches", "grid"):
            m = multiblock_masks(B, grid, mode=mode, aspect_units=units, generator=gen(B))
            assert isinstance(m, MultiBlockMasks) and m.grid == grid
            assert len(m.contexts) == 1 and len(m.targets) == 4
            kc, kt = m.context.num_keep, m.targets[0].num_masked
            assert m.context_ids.shape == (1, B, kc) and m.target_ids.shape == (4, B, kt)
            assert kc >= 10 and kt >= 1
            check_maskinfo(m.context, B, H * W)
            for t in m.targets:
                check_maskinfo(t, B, H * W)
                assert t.num_masked == kt
            # The context never sees a target token (faithful: unless a constraint was relaxed).
            if m.num_relaxed == 0:
                visible = ~m.context.mask
                assert not bool((visible & m.target_union).any()), (mode, units)
            assert torch.equal(m.target_ids[0], m.targets[0].ids_masked)
            assert torch.equal(m.context_ids[0], m.context.ids_keep)


def test_context_ids_are_ijepa_masks_enc_and_nenc():
    m = multiblock_masks(6, (14, 14), nenc=2, npred=3, generator=gen(3))
    assert m.context_ids.shape[:2] == (2, 6) and m.target_ids.shape[:2] == (3, 6)
    with pytest.raises(ValueError, match="contexts"):
        m.context
    for c in m.contexts:
        assert not bool((~c.mask & m.target_union).any())
    # Both contexts are truncated to one length so they stack.
    assert m.contexts[0].num_keep == m.contexts[1].num_keep


def test_to_device_keeps_everything():
    m = multiblock_masks(2, (14, 14), generator=gen(0)).to("cpu")
    assert m.context.mask.device.type == "cpu" and len(m.targets) == 4


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("grid", [(14, 14), (64, 8), (8, 64), (1, 512)])
def test_corrected_targets_are_rectangles_of_the_drawn_scale(grid):
    H, W = grid
    N = H * W
    smin, smax = 0.15, 0.2
    for seed in range(12):
        m = multiblock_masks(4, grid, generator=gen(seed))
        shapes = set()
        for t in m.targets:
            for b in range(4):
                top, left, h, w, count = bbox(t.mask[b], grid)
                assert count == h * w, "a target block is not a full rectangle"
                assert top + h <= H and left + w <= W
                shapes.add((h, w))
                # Area is k = int(N * s) up to the rounding of one side (|hw - k| <= max(h, w) / 2).
                slack = max(h, w) / 2
                assert int(N * smin) - slack <= h * w <= int(N * smax) + slack, (h, w)
        assert len(shapes) == 1, "one block size per batch"


def test_corrected_aspect_in_range_and_independent_of_scale():
    grid = (64, 64)  # large blocks: rounding moves the aspect by < 5 %
    aspects, areas = [], []
    for seed in range(40):
        m = multiblock_masks(1, grid, generator=gen(seed))
        _, _, h, w, _ = bbox(m.targets[0].mask[0], grid)
        aspects.append(h / w)
        areas.append(h * w)
        assert 0.75 * 0.93 <= h / w <= 1.5 * 1.07
    assert min(aspects) < 0.85 and max(aspects) > 1.35, "aspect range is not explored"
    # Independent draws: some larger block is less tall than a smaller one.
    pairs = [(a1 > a2) != (r1 > r2) for a1, r1 in zip(areas, aspects) for a2, r2 in zip(areas, aspects) if a1 != a2]
    assert any(pairs)


def test_faithful_scale_and_aspect_share_one_draw():
    grid = (64, 64)
    draws = []
    for seed in range(30):
        u = torch.rand(1, generator=gen(seed)).item()
        m = multiblock_masks(1, grid, mode="faithful", generator=gen(seed))
        _, _, h, w, _ = bbox(m.targets[0].mask[0], grid)
        draws.append((u, h * w, h / w))
    draws.sort()
    # Larger u -> larger area AND taller block, monotonically (quirk 1).
    assert all(a[1] <= b[1] + 64 and a[2] <= b[2] + 0.05 for a, b in zip(draws, draws[1:]))
    assert draws[-1][2] > draws[0][2] + 0.5


def ijepa_block_size_reference(u, H, W, scale, aspect):
    """Transcription of I-JEPA's ``_sample_block_size`` from the reference prose."""
    k = int(H * W * (scale[0] + u * (scale[1] - scale[0])))
    r = aspect[0] + u * (aspect[1] - aspect[0])
    h = int(round(math.sqrt(k * r)))
    w = int(round(math.sqrt(k / r)))
    while h >= H:
        h -= 1
    while w >= W:
        w -= 1
    return h, w


@pytest.mark.parametrize("grid", [(14, 14), (16, 16), (64, 8)])
def test_faithful_block_sizes_equal_ijepa_for_the_iteration_seed(grid):
    H, W = grid
    for itr in range(8):
        ref = torch.Generator().manual_seed(itr)
        u_pred = torch.rand(1, generator=ref).item()
        u_enc = torch.rand(1, generator=ref).item()
        hp, wp = ijepa_block_size_reference(u_pred, H, W, (0.15, 0.2), (0.75, 1.5))
        he, we = ijepa_block_size_reference(u_enc, H, W, (0.85, 1.0), (1.0, 1.0))
        m = multiblock_masks(3, grid, mode="faithful", allow_overlap=True, generator=itr)  # int seed
        for t in m.targets:
            for b in range(3):
                assert bbox(t.mask[b], grid)[2:] == (hp, wp, hp * wp)
        for b in range(3):  # with overlap allowed the context is the whole block
            assert bbox(~m.context.mask[b], grid)[2:] == (he, we, he * we)


def test_worked_example_from_the_reference():
    """ViT-H/14 on 16x16: targets of 38-51 patches, context square clipped to 15x15."""
    for itr in range(10):
        m = multiblock_masks(2, (16, 16), mode="faithful", allow_overlap=True, generator=gen(itr))
        u = torch.rand(1, generator=gen(itr)).item()
        k = int(256 * (0.15 + 0.05 * u))
        assert 38 <= k <= 51
        assert m.targets[0].num_masked == pytest.approx(k, abs=8)
        assert bbox(~m.context.mask[0], (16, 16))[2:4] == (15, 15)


def test_faithful_never_covers_last_row_or_column_but_corrected_does():
    grid = (14, 14)
    H, W = grid
    cover = {"faithful": torch.zeros(H, W, dtype=torch.bool), "corrected": torch.zeros(H, W, dtype=torch.bool)}
    for mode in cover:
        for seed in range(4):
            m = multiblock_masks(64, grid, mode=mode, allow_overlap=True, generator=gen(seed))
            cover[mode] |= m.target_union.any(0).view(H, W) | (~m.context.mask).any(0).view(H, W)
    assert not bool(cover["faithful"][-1].any()) and not bool(cover["faithful"][:, -1].any())
    assert bool(cover["faithful"][:-1, :-1].all())
    assert bool(cover["corrected"].all())


def test_corrected_full_context_block_is_the_complement_of_the_target_union():
    grid = (14, 14)
    m = multiblock_masks(32, grid, enc_scale=(1.0, 1.0), generator=gen(5))
    complement = ~m.target_union
    visible = ~m.context.mask
    assert not bool((visible & ~complement).any())
    sizes = complement.sum(1)
    k = m.context.num_keep
    assert k == int(sizes.min())
    tight = sizes == k
    assert torch.equal(visible[tight], complement[tight])
    # Truncation of the larger contexts is a random subset, not a raster prefix.
    loose = torch.nonzero(~tight).flatten().tolist()
    assert loose
    prefix = [bool(torch.equal(visible[b], complement[b] & (complement[b].cumsum(0) <= k))) for b in loose]
    assert not all(prefix)


def test_full_grid_context_with_overlap_allowed():
    m = multiblock_masks(3, (14, 14), enc_scale=(1.0, 1.0), allow_overlap=True, generator=gen(0))
    assert m.context.num_keep == 196 and m.context.num_masked == 0


def test_truncation_helpers():
    blocks = torch.tensor([[[[1, 1], [1, 0]]], [[[1, 1], [1, 1]]]], dtype=torch.bool)  # (2, 1, 2, 2)
    raster = _truncate_raster(blocks)
    assert raster.tolist() == [[[True, True, True, False]], [[True, True, True, False]]]
    rnd = _truncate_random(blocks, gen(0), torch.device("cpu"))
    assert rnd.sum(-1).tolist() == [[3], [3]]
    assert not bool((rnd & ~blocks.flatten(2)).any())
    seen = {tuple(_truncate_random(blocks, gen(s), torch.device("cpu"))[1, 0].tolist()) for s in range(20)}
    assert len(seen) > 1  # the dropped token of the full row varies with the seed


# ----------------------------------------------------------------------------- quirks and errors


def test_faithful_relaxation_drops_constraints_with_a_warning(caplog):
    # Large targets leave no room for a context of > min_keep tokens: I-JEPA relaxes.
    # With one target of 9x9 the 13x13 context keeps >= 88 tokens, so one relaxation suffices.
    with caplog.at_level(logging.WARNING, logger="audiossl.masking.multiblock"):
        m = multiblock_masks(
            16, (14, 14), mode="faithful", npred=2, pred_scale=(0.45, 0.45), pred_aspect=(1.0, 1.0),
            min_keep=60, generator=gen(0),
        )
    assert m.num_relaxed > 0
    assert "Valid mask not found" in caplog.text
    assert m.context.num_keep > 60
    visible = ~m.context.mask
    # The *last* target constraint is dropped first: target 0 stays excluded, target 1 may overlap.
    assert not bool((visible & m.targets[0].mask).any())
    assert bool((visible & m.targets[1].mask).any())


def test_faithful_min_keep_is_strict():
    # Contexts squeezed between big targets often land exactly on min_keep + 1 tokens, never on
    # min_keep: I-JEPA accepts a placement only with *more than* min_keep tokens.
    sizes = []
    for seed in range(10):
        m = multiblock_masks(
            64, (14, 14), mode="faithful", pred_scale=(0.3, 0.3), pred_aspect=(1.0, 1.0), min_keep=30,
            generator=gen(seed),
        )
        sizes.append(m.context.num_keep)
    assert min(sizes) == 31
    with pytest.raises(ValueError, match="min_keep=25"):  # 5x5 targets, 25 tokens: not > 25
        multiblock_masks(2, (14, 14), mode="faithful", pred_scale=(0.125, 0.125), pred_aspect=(1.0, 1.0), min_keep=25)
    m = multiblock_masks(2, (14, 14), mode="faithful", pred_scale=(0.125, 0.125), pred_aspect=(1.0, 1.0), min_keep=24)
    assert m.targets[0].num_masked == 25
    # Corrected mode reads min_keep as "at least", and only for the context.
    m = multiblock_masks(2, (14, 14), pred_scale=(0.125, 0.125), pred_aspect=(1.0, 1.0), min_keep=25, generator=gen(0))
    assert m.targets[0].num_masked == 25


def test_faithful_hang_cases_raise_value_error_quickly():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="min_keep"):  # ijepa#68: 2x2 grid, nothing > min_keep
        multiblock_masks(4, (2, 2), mode="faithful", generator=gen(0))
    with pytest.raises(ValueError, match="2x2"):
        multiblock_masks(4, (1, 512), mode="faithful", generator=gen(0))
    with pytest.raises(ValueError, match="min_keep"):
        multiblock_masks(4, (14, 14), mode="faithful", min_keep=196, generator=gen(0))
    assert time.perf_counter() - t0 < 2.0


def test_corrected_impossible_min_keep_raises_after_bounded_tries():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="could not place a context"):
        # 4 targets of >= 29 tokens always cut into a 196-token context.
        multiblock_masks(16, (14, 14), enc_scale=(1.0, 1.0), min_keep=190, generator=gen(0))
    with pytest.raises(ValueError, match="fewer than min_keep"):
        multiblock_masks(4, (3, 3), min_keep=10, generator=gen(0))
    assert time.perf_counter() - t0 < 5.0


def test_invalid_arguments():
    for kwargs in (
        dict(mode="fixed"), dict(aspect_units="seconds"), dict(pred_scale=(0.3, 0.2)),
        dict(enc_aspect=(0.0, 1.0)), dict(npred=0), dict(min_keep=-1),
    ):
        with pytest.raises(ValueError):
            multiblock_masks(2, (14, 14), generator=gen(0), **kwargs)
    with pytest.raises(ValueError, match="grid"):
        multiblock_masks(2, (0, 14), generator=gen(0))


# ----------------------------------------------------------------------------- determinism, config


@pytest.mark.parametrize("mode", ["corrected", "faithful"])
def test_same_seed_same_masks_and_different_seed_differs(mode):
    a = multiblock_masks(8, (64, 8), mode=mode, generator=gen(11))
    b = multiblock_masks(8, (64, 8), mode=mode, generator=gen(11))
    c = multiblock_masks(8, (64, 8), mode=mode, generator=gen(12))
    assert torch.equal(a.context.mask, b.context.mask) and torch.equal(a.target_ids, b.target_ids)
    assert not torch.equal(a.target_union, c.target_union)


def test_device_argument_and_fresh_generator():
    m = multiblock_masks(2, (14, 14), device="cpu")  # no generator: OS-seeded, still valid
    assert m.context.mask.device.type == "cpu"
    check_maskinfo(m.context, 2, 196)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_and_device():
    g = torch.Generator(device="cuda").manual_seed(0)
    m = multiblock_masks(8, (64, 8), generator=g, device="cuda")
    assert m.context.mask.is_cuda and m.target_ids.is_cuda
    assert not bool((~m.context.mask & m.target_union).any())
    m2 = multiblock_masks(8, (64, 8), generator=torch.Generator().manual_seed(0), device="cuda")
    m3 = multiblock_masks(8, (64, 8), generator=torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(m2.context.mask.cpu(), m3.context.mask)


def test_masker_config_matches_function_and_presets():
    masker = MultiBlockMasker(mode="faithful", npred=3)
    a = masker(4, (14, 14), generator=gen(2))
    b = multiblock_masks(4, (14, 14), mode="faithful", npred=3, generator=gen(2))
    assert torch.equal(a.context.mask, b.context.mask) and torch.equal(a.target_ids, b.target_ids)
    img = multiblock_image()
    assert (img.npred, img.pred_scale, img.pred_aspect, img.enc_scale, img.enc_aspect, img.min_keep) == (
        4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), (1.0, 1.0), 10
    )
    assert not img.allow_overlap and img.nenc == 1
    assert MULTIBLOCK_PRESETS["audio"]().aspect_units == "grid"


def test_audio_preset_gives_the_same_time_frequency_extent_in_both_layouts():
    """(64, 8) time-major and (8, 64) frequency-major grids: transposed blocks, same extents."""
    audio = multiblock_audio()
    t_major, f_major = [], []
    for seed in range(30):
        a = audio(1, (64, 8), generator=gen(seed))
        b = audio(1, (8, 64), generator=gen(seed))
        _, _, ha, wa, _ = bbox(a.targets[0].mask[0], (64, 8))
        _, _, hb, wb, _ = bbox(b.targets[0].mask[0], (8, 64))
        t_major.append((ha / 64, wa / 8))  # (time fraction, frequency fraction)
        f_major.append((wb / 64, hb / 8))
        assert ha * wa == pytest.approx(hb * wb, abs=max(ha, wa, hb, wb))
    mean = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
    assert mean(t_major, 0) == pytest.approx(mean(f_major, 0), rel=0.15)
    assert mean(t_major, 1) == pytest.approx(mean(f_major, 1), rel=0.15)
    # In patch units the same preset would give square-ish blocks: 64x8 blocks are then much
    # wider in relative frequency than in relative time.
    patches = MultiBlockMasker(pred_aspect=(0.5, 2.0))
    p = patches(1, (64, 8), generator=gen(0))
    _, _, hp, wp, _ = bbox(p.targets[0].mask[0], (64, 8))
    assert wp / 8 > 2 * hp / 64
