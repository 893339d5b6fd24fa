"""audiossl/masking/chunk.py against straightforward transcriptions of the upstream loops."""

from __future__ import annotations

import random

import pytest
import torch

from audiossl.masking.chunk import (
    ChunkMask,
    _faithful_select,
    _first_cover,
    chunk_mask,
    corrected_chunk_cells,
    mae_ast_chunk_cells,
    ssast_chunk_cells,
)
from audiossl.masking.stats import component_sizes, position_frequency


# --- reference loops (upstream semantics, written plainly) ---------------------------------------


def ssast_loop(N, t_dim, M, anchors, c):
    """SSAST gen_maskid_patch with a given anchor stream; returns upstream (freq-major) ids."""
    S, it = [], iter(anchors)
    while len(set(S)) <= M:
        s = next(it)
        for i in range(c):
            for j in range(c):
                k = s + t_dim * i + j
                if 0 < k < N:
                    S.append(k)
    return sorted(set(S))[:M]


def mae_ast_loop(N, chan, M, anchors, c):
    """MAE-AST chunk_mask with a given anchor stream (time-major ids)."""
    S, it = set(), iter(anchors)
    while len(S) <= M:
        t0 = next(it)
        for a in range(c):
            for b in range(c):
                k = t0 + a + chan * b
                if k < N:
                    S.add(k)
    return sorted(S)[:M]


def ssast_to_ours(ids, H, W):
    return sorted((k % H) * W + (k // H) for k in ids)


class AnchorPainter:
    """Feeds a fixed per-row anchor stream to the vectorised cover, round after round (later
    rounds go to the unfinished rows only, each continuing its own stream)."""

    def __init__(self, anchors, cells_of, sizes, grid):
        self.anchors, self.cells_of, self.sizes, self.grid = anchors, cells_of, sizes, grid
        self.pos = torch.zeros(anchors.shape[0], dtype=torch.long)
        self.rounds = 0

    def __call__(self, k, rows):
        idx = self.pos[rows].unsqueeze(1) + torch.arange(k)
        self.pos[rows] += k
        self.rounds += 1
        return self.cells_of(self.anchors[rows.unsqueeze(1), idx], self.sizes[rows], self.grid)


# --- exactness of the vectorised reformulation ---------------------------------------------------


@pytest.mark.parametrize("grid,M", [((64, 8), 400), ((16, 4), 40), ((5, 3), 12)])
def test_faithful_ssast_equals_the_loop_on_the_same_anchors(grid, M):
    H, W = grid
    N = H * W
    rng = random.Random(0)
    B = 12
    sizes = torch.tensor([rng.choice([3, 4, 5]) for _ in range(B)])
    anchors = torch.tensor([[rng.randrange(N) for _ in range(3000)] for _ in range(B)])
    painter = AnchorPainter(anchors, ssast_chunk_cells, sizes, grid)
    first = _first_cover(B, N, M + 1, 4.0, painter, torch.device("cpu"))
    assert painter.rounds > 1  # small first round: the follow-up rounds are exercised too
    mask = _faithful_select(first, M)
    for b in range(B):
        ref = ssast_loop(N, H, M, anchors[b].tolist(), int(sizes[b]))
        assert torch.nonzero(mask[b]).flatten().tolist() == ref
    # the public function applies the frequency-major -> time-major permutation
    ours = mask.view(B, W, H).transpose(1, 2).reshape(B, N)
    assert torch.nonzero(ours[0]).flatten().tolist() == ssast_to_ours(ssast_loop(N, H, M, anchors[0].tolist(), int(sizes[0])), H, W)


@pytest.mark.parametrize("grid,M", [((64, 8), 384), ((10, 1), 7)])
def test_faithful_mae_ast_equals_the_loop_on_the_same_anchors(grid, M):
    H, W = grid
    N = H * W
    rng = random.Random(1)
    sizes = torch.tensor([4, 3, 5])
    anchors = torch.tensor([[rng.randrange(N) for _ in range(3000)] for _ in range(3)])
    first = _first_cover(3, N, M + 1, 10.0, AnchorPainter(anchors, mae_ast_chunk_cells, sizes, grid), torch.device("cpu"))
    mask = _faithful_select(first, M)
    for b in range(3):
        assert torch.nonzero(mask[b]).flatten().tolist() == mae_ast_loop(N, W, M, anchors[b].tolist(), int(sizes[b]))


def test_corrected_selection_stops_at_the_first_chunk_reaching_m():
    H, W, M = 16, 8, 50
    N = H * W
    B = 6
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([3, 4, 5, 3, 4, 5])
    h0 = torch.randint(-4, H, (B, 2000), generator=g)
    w0 = torch.randint(-4, W, (B, 2000), generator=g)
    anchors = torch.stack([h0, w0], -1)

    def cells_of(a, sizes, grid):
        return corrected_chunk_cells(a[..., 0], a[..., 1], sizes, grid)

    first = _first_cover(B, N, M, 5.0, AnchorPainter(anchors, cells_of, sizes, (H, W)), torch.device("cpu"))
    key = torch.where(first == torch.iinfo(torch.int64).max, float("inf"), first.double() + 0.5)
    mask = torch.zeros(B, N, dtype=torch.bool).scatter_(1, key.topk(M, largest=False).indices, True)
    for b in range(B):
        covered, before = set(), set()
        c = int(sizes[b])
        for h, w in anchors[b].tolist():
            before = set(covered)
            covered |= {(h + i) * W + (w + j) for i in range(c) for j in range(c) if 0 <= h + i < H and 0 <= w + j < W}
            if len(covered) >= M:
                break
        chosen = set(torch.nonzero(mask[b]).flatten().tolist())
        assert len(chosen) == M and before <= chosen <= covered


# --- geometry: wrap vs clip ----------------------------------------------------------------------


def test_chunk_geometry_wraps_upstream_and_clips_when_corrected():
    H, W = 64, 8  # our grid; SSAST index f * 64 + t
    size = torch.tensor([3])
    cells, valid = ssast_chunk_cells(torch.tensor([[63]]), size, (H, W))  # t = 63, f = 0: right time edge
    got = sorted(cells[valid].tolist())
    # j = 1, 2 run into t = 0, 1 of the next frequency row: the wrap
    assert got == sorted([63, 64, 65, 127, 128, 129, 191, 192, 193])
    cells, valid = corrected_chunk_cells(torch.tensor([[63]]), torch.tensor([[6]]), size, (H, W))
    assert sorted(cells[valid].tolist()) == [63 * 8 + 6, 63 * 8 + 7]
    cells, valid = mae_ast_chunk_cells(torch.tensor([[7]]), size, (H, W))  # t = 0, f = 7
    assert sorted(cells[valid].tolist()) == [7, 8, 9, 15, 16, 17, 23, 24, 25]  # +a wraps into t = 1
    cells, valid = ssast_chunk_cells(torch.tensor([[0]]), size, (H, W))
    assert 0 not in cells[valid].tolist()


# --- public API -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grid,M,faithful,upstream",
    [
        ((64, 8), 400, False, "ssast"),
        ((64, 8), 400, True, "ssast"),
        ((8, 64), 400, False, "ssast"),
        ((32, 8), 200, True, "mae_ast"),
        ((2, 2), 3, False, "ssast"),  # grid smaller than any chunk
        ((2, 2), 2, True, "ssast"),
        ((64, 1), 48, False, "ssast"),  # frame tokens
        ((1, 51), 40, False, "ssast"),
        ((3, 3), 0, False, "ssast"),
        ((3, 3), 9, False, "ssast"),
        ((1, 1), 1, False, "ssast"),
    ],
)
def test_exact_counts(grid, M, faithful, upstream):
    info = chunk_mask(5, grid, M, faithful=faithful, upstream=upstream, generator=torch.Generator().manual_seed(0))
    N = grid[0] * grid[1]
    assert info.mask.shape == (5, N)
    assert (info.mask.sum(1) == M).all()
    assert info.num_keep == N - M


def test_presets_and_ratio():
    assert ChunkMask.mae_ast().num_masked_for(512) == 384
    assert ChunkMask.ssast().num_masked_for(512) == 400
    assert (ChunkMask.ssast()(3, (64, 8), generator=0).mask.sum(1) == 400).all()
    shared = ChunkMask.mae_ast(faithful=True)(4, (64, 8), generator=0).mask
    assert (shared == shared[:1]).all()  # MAE-AST: one mask per batch


def test_seeds_reproduce_and_differ():
    a = chunk_mask(4, (64, 8), 400, generator=torch.Generator().manual_seed(3))
    b = chunk_mask(4, (64, 8), 400, generator=torch.Generator().manual_seed(3))
    c = chunk_mask(4, (64, 8), 400, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    assert not torch.equal(a.mask[0], a.mask[1])
    f = chunk_mask(4, (64, 8), 400, faithful=True, generator=9).mask
    assert torch.equal(f, chunk_mask(4, (64, 8), 400, faithful=True, generator=9).mask)


def test_impossible_requests_raise():
    with pytest.raises(ValueError, match="never end"):
        chunk_mask(1, (4, 4), 15, faithful=True)  # SSAST can never mask token 0
    with pytest.raises(ValueError):
        chunk_mask(1, (4, 4), 17)
    with pytest.raises(ValueError):
        chunk_mask(1, (4, 4), 3, chunk_sizes=(0,))
    with pytest.raises(ValueError):
        chunk_mask(1, (4, 4), 3, faithful=True, upstream="beats")


def test_faithful_ssast_statistics_match_the_reference():
    # reference (2000 simulated upstream draws): token 0 never masked, lowest frequency row ~0.42,
    # middle rows ~0.88; ours must agree with a loop driven by Python's random as upstream is
    H, W, M, rows = 64, 8, 400, 400
    ours = position_frequency(chunk_mask(rows, (H, W), M, faithful=True, generator=0), (H, W))
    rng = random.Random(0)
    ref = torch.zeros(H * W)
    for _ in range(rows):
        ids = ssast_to_ours(ssast_loop(H * W, H, M, iter(lambda: rng.randrange(H * W), None), rng.choice([3, 4, 5])), H, W)
        ref[ids] += 1
    ref = (ref / rows).view(H, W)
    assert ours[0, 0] == 0 and ref[0, 0] == 0
    assert abs(ours[:, 0].mean().item() - 0.42) < 0.03
    assert abs(ours[:, 3:6].mean().item() - 0.88) < 0.03
    assert (ours.mean(0) - ref.mean(0)).abs().max() < 0.03  # per frequency row
    assert (ours.mean(1) - ref.mean(1)).abs().max() < 0.08  # per time step (fewer draws each)


def test_corrected_sampler_is_unbiased_and_masks_token_zero():
    H, W, M = 64, 8, 400
    freq = position_frequency(chunk_mask(1500, (H, W), M, generator=1), (H, W))
    assert (freq - M / (H * W)).abs().max() < 0.06
    assert (freq.mean(0) - M / (H * W)).abs().max() < 0.015
    assert freq[0, 0] > 0.6
    # the upstream anchor range (edge_unbiased=False) reproduces the low-index bias
    biased = position_frequency(chunk_mask(1500, (H, W), M, edge_unbiased=False, generator=1), (H, W))
    assert biased[:, 0].mean() < 0.5 < biased[:, 4].mean()


def test_frame_chunks_are_longer_runs_than_random():
    from audiossl.masking.random import random_mask

    grid, M = (128, 1), 64
    chunks = component_sizes(chunk_mask(64, grid, M, chunk_sizes=(4,), generator=2), grid).float().mean()
    rand = component_sizes(random_mask(64, 128, num_masked=M, mask_ratio=None, generator=2), grid).float().mean()
    assert rand < 2.5 and chunks > 2 * rand


def test_fixed_chunk_size_single_chunk_is_a_square():
    # M = 9 with c = 3 and anchors fully inside: one 3 x 3 block
    info = chunk_mask(50, (30, 30), 9, chunk_sizes=(3,), edge_unbiased=False, generator=5)
    sizes = component_sizes(info, (30, 30))
    # most draws fit one chunk; every block is at most 9 cells, and some are exactly a 3 x 3 square
    assert sizes.max() <= 9 and (sizes == 9).sum() >= 30
    full = [m.view(30, 30) for m in info.mask if m.sum() == 9 and component_sizes(m.unsqueeze(0), (30, 30)).tolist() == [9]]
    for m in full:
        rows, cols = m.nonzero(as_tuple=True)
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("faithful,upstream", [(False, "ssast"), (True, "ssast"), (True, "mae_ast")])
def test_cuda(faithful, upstream):
    make = lambda: chunk_mask(  # noqa: E731
        64, (64, 8), 400, faithful=faithful, upstream=upstream,
        generator=torch.Generator(device="cuda").manual_seed(0), device="cuda",
    )
    info = make()
    assert info.mask.is_cuda and (info.mask.sum(1) == 400).all()
    assert torch.equal(info.mask, make().mask)
    cpu_gen = chunk_mask(8, (64, 8), 400, faithful=faithful, upstream=upstream, generator=0, device="cuda")
    assert cpu_gen.mask.is_cuda and torch.equal(cpu_gen.mask.cpu(), chunk_mask(8, (64, 8), 400, faithful=faithful, upstream=upstream, generator=0).mask)
