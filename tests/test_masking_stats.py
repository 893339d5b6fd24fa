"""audiossl/masking/stats.py: hand-computed cases and the samplers' expected statistics."""

from __future__ import annotations

import math
from collections import deque

import pytest
import torch

from audiossl.masking.base import MaskInfo
from audiossl.masking.chunk import ChunkMask
from audiossl.masking.random import RandomMask
from audiossl.masking.stats import (
    block_size_histogram,
    component_sizes,
    connected_components,
    coverage,
    format_table,
    mask_summary,
    masks_tensor,
    overlap,
    position_frequency,
    sample_masks,
)


def grid_mask(rows):
    """Masks from strings: '#' hidden, '.' visible."""
    return torch.tensor([[c == "#" for c in "".join(r)] for r in rows])


def bfs_sizes(mask, H, W):
    """Reference 4-connected component sizes of one row, by breadth-first search."""
    cells = mask.view(H, W).tolist()
    seen = [[False] * W for _ in range(H)]
    sizes = []
    for h in range(H):
        for w in range(W):
            if cells[h][w] and not seen[h][w]:
                seen[h][w] = True
                queue, n = deque([(h, w)]), 0
                while queue:
                    y, x = queue.popleft()
                    n += 1
                    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < H and 0 <= xx < W and cells[yy][xx] and not seen[yy][xx]:
                            seen[yy][xx] = True
                            queue.append((yy, xx))
                sizes.append(n)
    return sorted(sizes)


def test_coverage_and_position_frequency_hand_case():
    m = grid_mask([["##..", "#..."], ["....", "...."]])  # two rows of a 2 x 4 grid
    torch.testing.assert_close(coverage(m), torch.tensor([3 / 8, 0.0]))
    freq = position_frequency(m, (2, 4))
    assert freq.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError):
        position_frequency(m, (3, 3))


def test_masks_tensor_accepts_maskinfo_and_lists():
    info = MaskInfo.from_mask(grid_mask([["#.", ".#"]]))
    stacked = masks_tensor([info, info.mask, info])
    assert stacked.shape == (3, 4) and stacked.dtype == torch.bool
    assert masks_tensor(torch.tensor([True, False])).shape == (1, 2)


def test_overlap_hand_values():
    a = grid_mask([["##.."], ["...."]])
    b = grid_mask([[".##."], ["...."]])
    out = overlap(a, b)
    # row 0: inter 1, union 3; row 1: both empty -> iou 1, fractions 0
    assert out["intersection"] == pytest.approx(0.5)
    assert out["iou"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["frac_of_a"] == pytest.approx(0.25)
    assert out["frac_of_b"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        overlap(a, b[:, :3])


def test_connected_components_hand_case():
    rows = [
        "##..#",
        "#..##",
        "..#..",
        "#.#.#",
    ]
    m = grid_mask([rows])
    labels = connected_components(m, (4, 5))[0]
    # diagonal neighbours are not 4-connected
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 5],
            [1, 0, 0, 5, 5],
            [0, 0, 13, 0, 0],
            [16, 0, 13, 0, 20],
        ]
    )
    assert torch.equal(labels, expected)
    assert sorted(component_sizes(m, (4, 5)).tolist()) == [1, 1, 2, 3, 3]
    hist = block_size_histogram(m, (4, 5))
    assert hist[1] == 2 and hist[2] == 1 and hist[3] == 2 and hist.sum() == 5


def test_connected_components_snake_converges():
    # one long serpentine block: min-label propagation must travel its whole length
    H, W = 9, 9
    m = torch.zeros(H, W, dtype=torch.bool)
    m[0::2, :] = True
    for h in range(1, H, 2):
        m[h, W - 1 if h % 4 == 1 else 0] = True
    assert component_sizes(m.view(1, -1), (H, W)).tolist() == [int(m.sum())]


def test_components_match_bfs_on_random_masks():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(20, 12 * 7, generator=g) < 0.55
    sizes = component_sizes(masks, (12, 7))
    ref = sum((bfs_sizes(masks[i], 12, 7) for i in range(20)), [])
    assert sorted(sizes.tolist()) == sorted(ref)


def test_random_sampler_statistics():
    masks = sample_masks(RandomMask(mask_ratio=0.75), (64, 8), batch_size=250, num_batches=4, seed=0)
    assert masks.shape == (1000, 512)
    s = mask_summary(masks, (64, 8))
    assert s["coverage_mean"] == pytest.approx(0.75) and s["coverage_std"] == 0.0
    assert s["masked_per_row"] == 384
    assert 0.68 < s["freq_min"] and s["freq_max"] < 0.82
    assert s["edge_ratio"] == pytest.approx(1.0, abs=0.02)
    # chunks make fewer, larger blocks than random masking at a similar ratio
    chunks = mask_summary(sample_masks(ChunkMask(), (64, 8), batch_size=250, num_batches=1, seed=0), (64, 8))
    assert chunks["blocks_per_row"] < s["blocks_per_row"]
    assert chunks["block_size_mean"] > s["block_size_mean"]


def test_faithful_ssast_under_masks_token_zero_and_lowest_frequency_row():
    masks = sample_masks(ChunkMask.ssast(faithful=True), (64, 8), batch_size=500, num_batches=2, seed=1)
    freq = position_frequency(masks, (64, 8))
    assert freq[0, 0] == 0.0  # SSAST's `0 < k` test
    low, middle = freq[:, 0].mean().item(), freq[:, 3:6].mean().item()
    assert abs(low - 0.42) < 0.03 and abs(middle - 0.88) < 0.03  # reference simulation values
    s = mask_summary(masks, (64, 8))
    assert s["freq_min"] == 0.0 and s["edge_ratio"] < 0.85
    corrected = mask_summary(sample_masks(ChunkMask.ssast(), (64, 8), batch_size=500, num_batches=2, seed=1), (64, 8))
    assert corrected["edge_ratio"] == pytest.approx(1.0, abs=0.03)


def test_sample_masks_select_and_summary_edge_cases():
    def pair_sampler(batch_size, grid, *, generator=None, device=None):
        return (RandomMask(0.5)(batch_size, grid, generator=generator, device=device), "extra")

    masks = sample_masks(pair_sampler, (2, 2), batch_size=3, num_batches=2, select=lambda out: out[0])
    assert masks.shape == (6, 4)
    s = mask_summary(masks, (2, 2))  # no interior cells on a 2 x 2 grid
    assert math.isnan(s["edge_ratio"])
    empty = mask_summary(torch.zeros(2, 6, dtype=torch.bool), (2, 3))
    assert empty["blocks_per_row"] == 0 and empty["block_size_max"] == 0


def test_format_table():
    text = format_table([("random", {"coverage_mean": 0.75}), ("chunk", {"coverage_mean": 0.78125})], ["coverage_mean"])
    lines = text.splitlines()
    assert lines[0].startswith("family") and "coverage_mean" in lines[0]
    assert lines[2].startswith("random") and "0.75" in lines[2]
    assert "0.7812" in lines[3]
    assert format_table([]) == ""
