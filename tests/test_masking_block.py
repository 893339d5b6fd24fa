"""audiossl/masking/block.py against hand-computed counts and a per-row transcription of upstream.

``reference_row`` below is a straightforward per-row NumPy transcription of EAT's
``compute_block_mask_2d`` (centres with replacement, clamped block cells, multinomial-style
removal / top-up, optional 4-neighbour growth). The vectorised sampler must agree with it in
distribution; hand-computed numbers pin the counts and the block geometry.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
import pytest
import torch

from audiossl.masking.base import MaskInfo
from audiossl.masking.block import (
    EAT_FLEXIBLE_BLOCK_SHAPES,
    InverseBlockMasker,
    _choose_uniform,
    _distinct_candidate_draws,
    _Draws,
    _paint_blocks,
    block_mask,
    block_mask_num_keep,
    inverse_block_mask,
    num_block_centres,
)

# --------------------------------------------------------------------------------------------
# Independent references


def reference_row(
    H, W, rng, *, mask_prob=0.8, adjust=0.07, ml=5, inverse=True, same=True, expand=False, dropout=0.0
):
    """One row of upstream's algorithm, written per row with scalar indexing. Returns (hidden, covered before adjustment)."""
    L = H * W
    p = 1 - mask_prob if inverse else mask_prob
    n_c = int(L * ((p + adjust) / ml**2) * (1 + dropout))
    m = np.zeros((H, W), bool)
    off = ml // 2
    for c in rng.integers(0, L, n_c):
        r, col = divmod(int(c), W)
        for i in range(ml):
            for j in range(ml):
                m[min(max(r + i - off, 0), H - 1), min(max(col + j - off, 0), W - 1)] = True
    pre = int(m.sum())
    if same:
        final = int(L * p)
        target = int(final * (1 + dropout))
        while expand and m.sum() < target:
            nbs = np.zeros_like(m)
            nbs[1:] |= m[:-1]
            nbs[:-1] |= m[1:]
            nbs[:, 1:] |= m[:, :-1]
            nbs[:, :-1] |= m[:, 1:]
            cands = np.flatnonzero(nbs & ~m)
            if cands.size == 0:
                break
            m.reshape(-1)[rng.choice(cands, min(cands.size, target - int(m.sum())), replace=False)] = True
        m = m.reshape(-1)
        n = int(m.sum())
        if n > final:
            m[rng.choice(np.flatnonzero(m), n - final, replace=False)] = False
        elif n < final:
            m[rng.choice(np.flatnonzero(~m), final - n, replace=False)] = True
    m = m.reshape(-1)
    return (~m if inverse else m), pre


def expected_coverage(H, W, n_centres, ml=5):
    """E[# cells covered by n_centres clamped ml x ml blocks]: a cell (i, j) is hit by a centre
    in a rows-window of a_i positions times a columns-window of b_j positions."""
    off = ml // 2
    a = np.array([min(i + off, H - 1) - max(i - off, 0) + 1 for i in range(H)])
    b = np.array([min(j + off, W - 1) - max(j - off, 0) + 1 for j in range(W)])
    return float((1 - (1 - np.outer(a, b) / (H * W)) ** n_centres).sum())


def components(cells: np.ndarray) -> list[int]:
    """Sizes of the 4-connected components of a boolean (H, W) map."""
    H, W = cells.shape
    seen = np.zeros_like(cells)
    sizes = []
    for i, j in zip(*np.nonzero(cells)):
        if seen[i, j]:
            continue
        seen[i, j] = True
        queue, size = deque([(i, j)]), 0
        while queue:
            a, b = queue.popleft()
            size += 1
            for x, y in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                if 0 <= x < H and 0 <= y < W and cells[x, y] and not seen[x, y]:
                    seen[x, y] = True
                    queue.append((x, y))
        sizes.append(size)
    return sizes


def assert_consistent(info: MaskInfo, num_keep: int) -> None:
    B, N = info.mask.shape
    assert info.num_keep == num_keep and info.num_masked == N - num_keep
    assert (info.mask.sum(1) == N - num_keep).all()
    assert not info.mask.gather(1, info.ids_keep).any()
    assert info.mask.gather(1, info.ids_masked).all()
    ids_shuffle = torch.cat([info.ids_keep, info.ids_masked], 1)
    assert torch.equal(ids_shuffle.gather(1, info.ids_restore), torch.arange(N).expand(B, N))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Counts


@pytest.mark.parametrize(
    "grid, base_masked, large_masked",
    [
        ((64, 8), 410, 384),  # AudioSet 1024 frames: 102 / 128 visible
        ((32, 8), 205, 192),  # ESC-50 512 frames: int(256 * 0.19999999999999996) = 51 visible
        ((8, 8), 52, 48),  # SPC-2: no centre fits, purely random keeps
        ((1, 512), 410, 384),
        ((1, 100), 81, 75),  # 1 - 0.8 = 0.19999999999999996, so 19 visible, not 20 (upstream's rounding)
        ((4, 3), 10, 9),
        ((3, 2), 5, 5),  # grid smaller than a block: int(6 * 0.2) = 1 visible
    ],
)
def test_exact_counts_for_eat_base_and_large(grid, base_masked, large_masked):
    N = grid[0] * grid[1]
    base = InverseBlockMasker.eat_base()(3, grid, generator=gen(0))
    large = InverseBlockMasker.eat_large()(3, grid, generator=gen(0))
    assert base.mask.shape == large.mask.shape == (48, N)  # 3 clips x 16 clones
    assert_consistent(base, N - base_masked)
    assert_consistent(large, N - large_masked)
    assert InverseBlockMasker.eat_base().num_keep(grid) == N - base_masked


def test_base_keeps_102_of_512_in_every_row_of_a_large_batch():
    info = inverse_block_mask(64, (64, 8), clone_batch=16, generator=gen(1))
    assert_consistent(info, 102)
    assert info.mask.shape == (1024, 512)


def test_centre_counts_are_upstreams():
    assert num_block_centres(512, 1 - 0.8, 0.07, (5, 5)) == 5
    assert num_block_centres(512, 1 - 0.75, 0.10, (5, 5)) == 7
    assert [num_block_centres(512, 1 - 0.8, 0.07, s) for s in EAT_FLEXIBLE_BLOCK_SHAPES] == [5, 5, 5]
    assert num_block_centres(256, 1 - 0.8, 0.07, (5, 5)) == 2
    assert num_block_centres(64, 1 - 0.8, 0.07, (5, 5)) == 0
    assert num_block_centres(512, 1 - 0.8, 0.07, (5, 5), mask_dropout=0.5) == 8
    assert num_block_centres(512, 0.8, 0.07, (5, 5)) == 17  # non-inverse: the blocks are hidden


@pytest.mark.parametrize("size", [3, 7, 10])  # 7 and 10 of 10 draw the complement
def test_choose_uniform_is_a_uniform_subset_of_the_candidates(size):
    rows = 6000
    candidate = torch.zeros(rows, 16, dtype=torch.bool)
    candidate[:, [0, 2, 3, 5, 8, 9, 11, 12, 14, 15]] = True
    chosen = _choose_uniform(candidate, torch.full((rows,), size), _Draws(gen(40), torch.device("cpu")))
    assert (chosen.sum(1) == size).all() and not (chosen & ~candidate).any()
    # Every candidate with probability size / 10 (standard error 0.0065), every pair size(size-1)/90.
    freq = chosen[:, candidate[0]].float().mean(0)
    assert torch.allclose(freq, torch.full((10,), size / 10), atol=0.03)
    pair = (chosen[:, 0] & chosen[:, 15]).float().mean().item()
    assert pair == pytest.approx(size * (size - 1) / 90, abs=0.03)


def test_rejection_rounds_continue_until_every_row_is_served():
    candidate = torch.rand(500, 40, generator=gen(41)) < 0.3
    count = torch.minimum(candidate.sum(1) // 2, torch.tensor(5))
    cells, take = _distinct_candidate_draws(candidate, count, 1, _Draws(gen(42), torch.device("cpu")))
    assert cells.shape[1] > 20  # one draw per round forces many rounds
    assert torch.equal(take.sum(1), count)
    assert candidate.gather(1, cells)[take].all()
    sink = torch.zeros(500, 41, dtype=torch.bool).scatter_(1, torch.where(take, cells, 40), True)
    assert torch.equal(sink[:, :40].sum(1), count)  # the taken draws are distinct


def test_non_inverse_short_grid_uses_the_complement_and_stays_uniform():
    # 4x4, no centre (int(16 * 0.87 / 25) = 0), 12 of 16 to hide: the sampler draws the 4 to keep.
    info = inverse_block_mask(300, (4, 4), inverse=False, clone_batch=10, generator=gen(43))
    assert_consistent(info, 4)
    assert torch.allclose(info.mask.float().mean(0), torch.full((16,), 12 / 16), atol=0.03)


# --------------------------------------------------------------------------------------------
# Geometry (hand-computed)


def painted(centres, grid, shape, offset=2):
    H, W = grid
    flat = torch.tensor([[r * W + c for r, c in centres]])
    return _paint_blocks(flat, H, W, shape, offset)[0].view(H, W)


def rect(grid, rows, cols):
    out = torch.zeros(grid, dtype=torch.bool)
    out[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return out


def test_blocks_are_clamped_at_the_borders():
    assert torch.equal(painted([(0, 0)], (64, 8), (5, 5)), rect((64, 8), (0, 2), (0, 2)))
    assert torch.equal(painted([(63, 3)], (64, 8), (5, 5)), rect((64, 8), (61, 63), (1, 5)))
    assert torch.equal(painted([(30, 4)], (64, 8), (5, 5)), rect((64, 8), (28, 32), (2, 6)))
    assert torch.equal(painted([(1, 1)], (3, 3), (5, 5)), torch.ones(3, 3, dtype=torch.bool))
    two = painted([(0, 0), (10, 7)], (64, 8), (5, 5))
    assert torch.equal(two, rect((64, 8), (0, 2), (0, 2)) | rect((64, 8), (8, 12), (5, 7)))


def test_flexible_shapes_stay_anchored_at_mask_length_over_two():
    # (6, 4) at (10, 5): rows 10-2 .. 10+3, cols 5-2 .. 5+1; (8, 3) at (10, 7): cols 5..7.
    assert torch.equal(painted([(10, 5)], (64, 8), (6, 4)), rect((64, 8), (8, 13), (3, 6)))
    assert torch.equal(painted([(10, 7)], (64, 8), (8, 3)), rect((64, 8), (8, 15), (5, 7)))
    # A block that does not contain its centre piles clamped cells on the border, as upstream.
    assert torch.equal(painted([(0, 0)], (8, 8), (1, 1)), rect((8, 8), (0, 0), (0, 0)))
    assert torch.equal(painted([(5, 5)], (8, 8), (1, 1)), rect((8, 8), (3, 3), (3, 3)))


def test_painting_matches_upstreams_per_offset_clamping():
    rng = np.random.default_rng(3)
    H, W, (h, w), off = 20, 7, (6, 4), 2
    centres = rng.integers(0, H * W, (40, 6))
    ours = _paint_blocks(torch.from_numpy(centres), H, W, (h, w), off).numpy()
    for row, cs in zip(ours, centres):
        ref = np.zeros((H, W), bool)
        for c in cs:
            for i in range(h):
                for j in range(w):
                    ref[min(max(c // W + i - off, 0), H - 1), min(max(c % W + j - off, 0), W - 1)] = True
        assert np.array_equal(row, ref.reshape(-1))


# --------------------------------------------------------------------------------------------
# Clone batches, seeds, devices


def test_clone_rows_follow_repeat_interleave_and_share_the_clip_block_shape():
    # One centre per row (int(256 * 0.07 / 16) = 1), offset 0: shape (1, 16) paints a horizontal
    # run, (16, 1) a vertical one. The shape is drawn per clip, so all 16 clones of a clip agree.
    hidden = block_mask(
        40, (16, 16), mask_prob=0.07, mask_prob_adjust=0.0, mask_length=1, inverse=False,
        require_same_masks=False, block_shape=[(1, 16), (16, 1)], clone_batch=16, generator=gen(4),
    ).view(40, 16, 16, 16)
    orientation = np.zeros((40, 16), dtype="U1")
    for i in range(40):
        for j in range(16):
            rows, cols = np.nonzero(hidden[i, j].numpy())
            orientation[i, j] = "h" if len(set(cols)) > 1 else "v" if len(set(rows)) > 1 else "?"
    per_clip = [set(o) - {"?"} for o in orientation]
    assert all(len(s) == 1 for s in per_clip)
    assert {"h", "v"} == set().union(*per_clip)
    # Clones are independent draws, not copies.
    assert all(len({hidden[i, j].numpy().tobytes() for j in range(16)}) > 8 for i in range(40))


def test_clone_batch_rows_gather_the_right_clip():
    info = inverse_block_mask(3, (64, 8), clone_batch=16, generator=gen(5))
    x = (torch.arange(3)[:, None] * 1000 + torch.arange(512)).unsqueeze(-1)  # (3, 512, 1)
    visible = info.gather_visible(x.repeat_interleave(16, 0))[..., 0]
    assert torch.equal(visible // 1000, torch.arange(48)[:, None].expand(48, 102) // 16)
    assert torch.equal(visible % 1000, info.ids_keep)


def test_same_seed_same_masks_different_seed_different_masks():
    a = inverse_block_mask(4, (64, 8), clone_batch=16, generator=gen(6))
    b = inverse_block_mask(4, (64, 8), clone_batch=16, generator=gen(6))
    c = inverse_block_mask(4, (64, 8), clone_batch=16, generator=gen(7))
    for name in ("mask", "ids_keep", "ids_restore", "ids_masked"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.mask, c.mask)
    g = gen(6)
    first, second = inverse_block_mask(4, (64, 8), generator=g), inverse_block_mask(4, (64, 8), generator=g)
    assert not torch.equal(first.mask, second.mask)


def test_int_seeds_and_no_global_rng():
    a = inverse_block_mask(4, (64, 8), clone_batch=4, generator=123)
    b = inverse_block_mask(4, (64, 8), clone_batch=4, generator=gen(123))
    assert torch.equal(a.mask, b.mask)
    state = torch.random.get_rng_state()
    inverse_block_mask(4, (64, 8), clone_batch=4, expand_adjacent=True, block_shape=EAT_FLEXIBLE_BLOCK_SHAPES)
    assert torch.equal(state, torch.random.get_rng_state())


def test_every_option_is_reproducible():
    kwargs = dict(expand_adjacent=True, mask_dropout=0.2, block_shape=EAT_FLEXIBLE_BLOCK_SHAPES, clone_batch=4)
    a = inverse_block_mask(6, (32, 8), generator=gen(8), **kwargs)
    b = inverse_block_mask(6, (32, 8), generator=gen(8), **kwargs)
    assert torch.equal(a.mask, b.mask)
    c = inverse_block_mask(6, (30, 9), non_overlapping=True, generator=gen(8))
    d = inverse_block_mask(6, (30, 9), non_overlapping=True, generator=gen(8))
    assert torch.equal(c.mask, d.mask)


def test_masker_equals_the_function():
    masker = InverseBlockMasker.eat_large(clone_batch=4)
    a = masker(5, (64, 8), generator=gen(9))
    b = inverse_block_mask(5, (64, 8), mask_prob=0.75, mask_prob_adjust=0.10, clone_batch=4, generator=gen(9))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_restore, b.ids_restore)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_gives_the_same_masks_on_cuda():
    kwargs = dict(clone_batch=16, expand_adjacent=True, block_shape=EAT_FLEXIBLE_BLOCK_SHAPES)
    cpu = inverse_block_mask(12, (64, 8), generator=gen(10), **kwargs)
    cuda = inverse_block_mask(12, (64, 8), generator=gen(10), device="cuda", **kwargs)
    assert cuda.mask.device.type == "cuda"
    for name in ("mask", "ids_keep", "ids_restore", "ids_masked"):
        assert torch.equal(getattr(cpu, name), getattr(cuda, name).cpu())


# --------------------------------------------------------------------------------------------
# Agreement in distribution with the per-row reference


@pytest.fixture(scope="module")
def reference_base():
    rng = np.random.default_rng(11)
    rows = [reference_row(64, 8, rng) for _ in range(3000)]
    return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])


def test_coverage_before_adjustment_matches_reference_and_closed_form(reference_base):
    _, ref_pre = reference_base
    hidden = block_mask(500, (64, 8), require_same_masks=False, clone_batch=16, generator=gen(12))
    ours_pre = (512 - hidden.sum(1)).numpy()
    expected = expected_coverage(64, 8, 5)
    assert expected == pytest.approx(95.77, abs=0.01)
    # Standard errors: 11.6 / sqrt(8000) = 0.13 (ours), 11.6 / sqrt(3000) = 0.21 (reference).
    assert ours_pre.mean() == pytest.approx(expected, abs=0.6)
    assert ref_pre.mean() == pytest.approx(expected, abs=0.9)
    # Share of rows topped up / trimmed on the way to 102 (about 68% / 29%, as simulated upstream).
    for pre in (ours_pre, ref_pre):
        assert (pre < 102).mean() == pytest.approx(0.69, abs=0.03)
        assert (pre > 102).mean() == pytest.approx(0.29, abs=0.03)
    assert (ours_pre < 102).mean() == pytest.approx((ref_pre < 102).mean(), abs=0.03)


def test_position_frequencies_match_reference_including_edge_effects(reference_base):
    ref_hidden, _ = reference_base
    ours = inverse_block_mask(1024, (64, 8), clone_batch=16, generator=gen(13)).mask.float().numpy()
    ref_keep = 1 - ref_hidden.mean(0).reshape(64, 8)
    our_keep = 1 - ours.mean(0).reshape(64, 8)
    # Per position: standard error of the difference ~ 0.0077, so 0.04 is > 5 sigma.
    assert np.abs(our_keep - ref_keep).max() < 0.04
    assert np.abs(our_keep.mean(0) - ref_keep.mean(0)).max() < 0.01  # per mel band
    assert np.abs(our_keep.mean(1) - ref_keep.mean(1)).max() < 0.035  # per time step
    # Edge effects upstream has and we keep: clamped blocks make border cells visible less often.
    for keep in (our_keep, ref_keep):
        assert keep[0, 0] < 0.14 and keep[30, 4] > 0.2
        assert keep[:, 0].mean() < keep[:, 3].mean() - 0.05


def test_non_inverse_mode_matches_closed_form_and_reference():
    # Non-inverse: 17 centres of hidden blocks, then exactly int(512 * 0.8) = 409 hidden.
    hidden = block_mask(200, (64, 8), inverse=False, require_same_masks=False, clone_batch=8, generator=gen(14))
    assert hidden.sum(1).float().mean().item() == pytest.approx(expected_coverage(64, 8, 17), abs=1.0)
    info = inverse_block_mask(200, (64, 8), inverse=False, clone_batch=8, generator=gen(15))
    assert_consistent(info, 512 - 409)
    rng = np.random.default_rng(16)
    ref = np.stack([reference_row(64, 8, rng, inverse=False)[0] for _ in range(1000)])
    assert np.abs(info.mask.float().numpy().mean(0) - ref.mean(0)).max() < 0.06


def test_expand_adjacent_matches_reference_and_grows_blocks():
    rng = np.random.default_rng(17)
    ref = np.stack([reference_row(32, 8, rng, expand=True)[0] for _ in range(800)])
    ours = inverse_block_mask(100, (32, 8), expand_adjacent=True, clone_batch=8, generator=gen(18)).mask.numpy()
    plain = inverse_block_mask(100, (32, 8), clone_batch=8, generator=gen(19)).mask.numpy()

    def mean_components(hidden):
        return np.mean([len(components(~h.reshape(32, 8))) for h in hidden[:400]])

    # 2 centres per row on 32x8: growth instead of random singletons keeps the visible cells in
    # about two pieces; the plain top-up scatters single cells.
    ours_c, ref_c, plain_c = mean_components(ours), mean_components(ref), mean_components(plain)
    assert ours_c == pytest.approx(ref_c, abs=0.25)
    assert ours_c < 2.5 < plain_c - 2
    assert np.abs(ours.mean(0) - ref.mean(0)).max() < 0.08
    assert (ours.sum(1) == 256 - 51).all()


def test_expand_adjacent_survives_grids_without_centres():
    info = inverse_block_mask(4, (8, 8), expand_adjacent=True, clone_batch=4, generator=gen(20))
    assert_consistent(info, 12)  # upstream asserts here; we fall back to the random top-up


def test_short_grid_without_centres_is_uniformly_random(caplog):
    with caplog.at_level(logging.WARNING, logger="audiossl.masking.block"):
        info = inverse_block_mask(400, (5, 11), clone_batch=10, generator=gen(21))
    assert "no 5x5 block centre" in caplog.text
    assert_consistent(info, 10)  # int(55 * 0.19999999999999996) = 10, upstream's rounding
    keep = 1 - info.mask.float().mean(0)
    assert torch.allclose(keep, torch.full((55,), 10 / 55), atol=0.03)


def test_blocks_are_contiguous():
    info = inverse_block_mask(20, (64, 8), clone_batch=10, generator=gen(22))
    g = gen(23)
    shuffled = torch.rand(200, 512, generator=g).argsort(1)
    random_hidden = torch.ones(200, 512, dtype=torch.bool).scatter_(1, shuffled[:, :102], False)
    block_sizes = [np.mean(components(~h.reshape(64, 8))) for h in info.mask.numpy()]
    random_sizes = [np.mean(components(~h.reshape(64, 8))) for h in random_hidden.numpy()]
    assert np.mean(block_sizes) > 5 * np.mean(random_sizes)
    assert np.mean(random_sizes) < 2.0


# --------------------------------------------------------------------------------------------
# Options


def tiles_all_or_nothing(hidden, grid, shape):
    H, W = grid
    h, w = shape
    full = 0
    for i in range(0, H, h):
        for j in range(0, W, w):
            tile = hidden[i : i + h, j : j + w]
            assert tile.all() or not tile.any()
            full += int(tile.all())
    return full


@pytest.mark.parametrize("grid, shape, tiles", [((64, 8), (5, 5), 22), ((15, 15), (5, 5), 7), ((64, 8), (4, 4), 27)])
def test_non_overlapping_places_whole_lattice_tiles_on_any_grid(grid, shape, tiles):
    # int(ceil(H/h) * ceil(W/w) * 0.87): 13*2 -> 22, 3*3 -> 7, 16*2 -> 27. Upstream crashed on 64x8.
    hidden = block_mask(
        30, grid, inverse=False, require_same_masks=False, non_overlapping=True,
        block_shape=shape, generator=gen(24),
    ).view(30, *grid).numpy()
    assert all(tiles_all_or_nothing(h, grid, shape) == tiles for h in hidden)
    counts = inverse_block_mask(30, grid, non_overlapping=True, block_shape=shape, generator=gen(25)).mask.sum(1)
    assert (counts == grid[0] * grid[1] - int(grid[0] * grid[1] * (1 - 0.8))).all()


def test_non_overlapping_inverse_keeps_whole_tiles():
    # Inverse: int(26 * 0.27) = 7 visible tiles of 5x5 (cropped at the 8-wide edge) before the top-up.
    hidden = block_mask(
        20, (64, 8), require_same_masks=False, non_overlapping=True, generator=gen(26)
    ).view(20, 64, 8).numpy()
    assert all(tiles_all_or_nothing(~h, (64, 8), (5, 5)) == 7 for h in hidden)


def test_mask_dropout_adds_centres_but_not_kept_tokens():
    hidden = block_mask(100, (64, 8), mask_dropout=0.5, require_same_masks=False, clone_batch=8, generator=gen(27))
    assert (512 - hidden.sum(1)).float().mean().item() == pytest.approx(expected_coverage(64, 8, 8), abs=1.0)
    assert_consistent(inverse_block_mask(10, (64, 8), mask_dropout=0.5, generator=gen(28)), 102)


def test_mask_length_sets_block_size_and_centre_count():
    # 3x3 blocks: int(512 * 0.27 / 9) = 15 centres.
    hidden = block_mask(100, (64, 8), mask_length=3, require_same_masks=False, clone_batch=8, generator=gen(29))
    assert (512 - hidden.sum(1)).float().mean().item() == pytest.approx(expected_coverage(64, 8, 15, ml=3), abs=1.0)


def test_flexible_shapes_are_all_used():
    # With one centre per row (non-inverse, tiny mask_prob) an interior block shows its full shape.
    hidden = block_mask(
        300, (64, 16), mask_prob=0.03, mask_prob_adjust=0.0, inverse=False, require_same_masks=False,
        block_shape=EAT_FLEXIBLE_BLOCK_SHAPES, generator=gen(30),
    ).view(300, 64, 16).numpy()
    seen = set()
    for h in hidden:
        rows, cols = np.nonzero(h)
        seen.add((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
    assert set(EAT_FLEXIBLE_BLOCK_SHAPES) <= seen


def test_ragged_masks_only_through_block_mask():
    hidden = block_mask(8, (64, 8), require_same_masks=False, clone_batch=4, generator=gen(31))
    assert len(set(hidden.sum(1).tolist())) > 1
    with pytest.raises(ValueError, match="block_mask"):
        inverse_block_mask(8, (64, 8), require_same_masks=False)


def test_ids_are_ascending_like_a_stable_sort_of_the_mask():
    info = inverse_block_mask(4, (32, 8), clone_batch=4, generator=gen(44))
    reference = MaskInfo.from_mask(info.mask)
    for name in ("ids_keep", "ids_restore", "ids_masked"):
        assert torch.equal(getattr(info, name), getattr(reference, name)), name


def test_masker_presets_and_yaml_shapes():
    base, large = InverseBlockMasker.eat_base(), InverseBlockMasker.eat_large()
    assert (base.mask_prob, base.mask_prob_adjust, base.mask_length, base.clone_batch) == (0.8, 0.07, 5, 16)
    assert (large.mask_prob, large.mask_prob_adjust) == (0.75, 0.10)
    assert InverseBlockMasker(block_shape=[[6, 4], [5, 5], [8, 3]]).block_shape == EAT_FLEXIBLE_BLOCK_SHAPES
    assert InverseBlockMasker(block_shape=[5, 5]).block_shape == (5, 5)
    with pytest.raises(ValueError, match="negative"):
        InverseBlockMasker(mask_prob_adjust=-0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mask_prob=1.5), "mask_prob"),
        (dict(mask_length=0), "mask_length"),
        (dict(grid=(0, 8)), "grid"),
        (dict(grid=(64,)), "grid"),
        (dict(clone_batch=0), "clone_batch"),
        (dict(batch_size=-1), "batch_size"),
        (dict(block_shape=(0, 3)), "block shapes"),
        (dict(block_shape=[]), "block_shape"),
        (dict(mask_dropout=-0.1), "mask_dropout"),
        (dict(mask_prob_adjust=-0.5), "negative"),
        (dict(grid=(1, 4)), "no visible"),  # int(4 * 0.2) = 0 visible tokens
        (dict(inverse=False, mask_prob=1.0), "no visible"),
    ],
)
def test_impossible_parameters_raise(kwargs, match):
    args = dict(batch_size=2, grid=(64, 8))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        inverse_block_mask(args.pop("batch_size"), args.pop("grid"), **args)


def test_num_keep_helper_and_empty_batch():
    assert block_mask_num_keep((64, 8)) == 102
    assert block_mask_num_keep((64, 8), mask_prob=0.8, inverse=False) == 103
    empty = inverse_block_mask(0, (64, 8), clone_batch=16)
    assert empty.mask.shape == (0, 512) and empty.ids_keep.shape == (0, 102)
