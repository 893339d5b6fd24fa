"""audiossl/masking/gallery.py: the family table, layers of every sampler output, sampling."""

from __future__ import annotations

import pytest
import torch

from audiossl.masking.base import MaskInfo
from audiossl.masking.gallery import FAMILIES, PATCH, mask_layers, sample_family, select_families
from audiossl.masking.stats import mask_summary

SPEC = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))  # 8 x 8 tokens
GRID = (SPEC.shape[0] // PATCH, SPEC.shape[1] // PATCH)


def test_select_families():
    assert select_families() == list(FAMILIES)
    assert select_families(["drop", "random"]) == ["drop", "random"]
    assert select_families([]) == []
    with pytest.raises(ValueError, match=r"unknown families \['nope'\]; known: random, chunk"):
        select_families(["random", "nope"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_samples_its_examples_and_statistics(name):
    layers = sample_family(name, SPEC, GRID, examples=2, rows=16, seed=0)
    assert layers and all(layer.label.startswith(name) for layer in layers)
    for layer in layers:
        assert layer.hidden.shape == (2, 64) and layer.hidden.dtype == torch.bool
        assert layer.freq.shape == GRID and layer.summary["rows"] == 16
        assert (layer.targets is not None) == ("target_in_context" in layer.summary)
    if name == "hierarchical":
        assert [layer.label for layer in layers] == [f"hierarchical[{i}]" for i in range(len(layers))]


def test_same_seed_same_masks_and_the_examples_come_first():
    a = sample_family("random", SPEC, GRID, examples=3, rows=32, seed=7)[0]
    b = sample_family("random", SPEC, GRID, examples=3, rows=32, seed=7)[0]
    assert torch.equal(a.hidden, b.hidden) and a.summary == b.summary
    # one generator: the statistics draws continue after the examples
    sampler, _ = FAMILIES["random"](SPEC)
    gen = torch.Generator().manual_seed(7)
    first = sampler(3, GRID, gen, "cpu").mask.bool()
    many = sampler(32, GRID, gen, "cpu").mask.bool()
    assert torch.equal(a.hidden, first) and a.summary == mask_summary(many, GRID)


def test_a_family_that_cannot_sample_the_grid_raises_value_error():
    with pytest.raises(ValueError):
        sample_family("chunk-ssast-faithful", SPEC[:16], (1, 8), examples=1, rows=4)


def test_mask_layers_of_every_output_kind():
    mask = torch.tensor([[True, False, True, False]])
    info = MaskInfo.from_mask(mask)
    assert [(s, h.tolist(), t) for s, h, t in mask_layers(info)] == [("", mask.tolist(), None)]
    assert mask_layers(mask.int())[0][1].dtype == torch.bool
    assert mask_layers((info, "ignored"))[0][1].tolist() == mask.tolist()

    class Learned:
        pass

    learned = Learned()
    learned.info = info
    assert mask_layers(learned)[0][1].tolist() == mask.tolist()

    class Jepa:
        context = info
        targets = [torch.tensor([[False, True, False, False]]), MaskInfo.from_mask(torch.tensor([[False, False, False, True]]))]

    (suffix, hidden, targets), = mask_layers(Jepa())
    assert hidden.tolist() == mask.tolist() and targets.tolist() == [[False, True, False, True]]

    class Levels:
        levels = [info, Jepa()]

    assert [s for s, _, _ in mask_layers(Levels())] == ["[0]", "[1]"]
    with pytest.raises(TypeError, match="cannot draw a sampler output of type str"):
        mask_layers("nope")
