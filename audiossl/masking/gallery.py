"""Every masking family as a ready sampler over one spectrogram, measured the same way.

:data:`FAMILIES` is the table ``audiossl show-masks`` draws: family name -> a builder that takes
the ``(T, F)`` spectrogram and returns ``(sample, title)``, where
``sample(batch_size, grid, generator, device)`` draws masks on the 16 x 16-patch token grid and
``title`` says which configuration it is. :func:`sample_family` draws a few example masks and many
more for the statistics (:mod:`audiossl.masking.stats`), one :class:`GalleryLayer` per drawable
layer (hierarchical masks have one per level). Drawing them is :mod:`audiossl.viz`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from audiossl.masking.base import MaskInfo
from audiossl.masking.block import InverseBlockMasker
from audiossl.masking.chunk import ChunkMask
from audiossl.masking.drop import TimeFreqDrop
from audiossl.masking.hierarchical import HierarchicalMasker
from audiossl.masking.learned import LearnedMasker
from audiossl.masking.multiblock import multiblock_audio
from audiossl.masking.random import RandomMask
from audiossl.masking.stats import mask_summary, overlap, position_frequency
from audiossl.tokenizers import patchify

__all__ = ["FAMILIES", "PATCH", "GalleryLayer", "mask_layers", "sample_family", "select_families"]

PATCH = 16  # token patch (time x frequency), as AST, SSAST, EAT and AudioMAE

Sampler = Callable[[int, Tuple[int, int], torch.Generator, Any], Any]
Builder = Callable[[Tensor], Tuple[Sampler, str]]


def _config_sampler(factory: Callable[..., Any], **kwargs: Any) -> Builder:
    """Sampler from a masking config (``__call__(batch_size, grid, *, generator, device)``) built
    by ``factory(**kwargs)`` — a dataclass or a preset function."""

    def build(spec: Tensor) -> Tuple[Sampler, str]:
        config = factory(**kwargs)
        return (lambda b, grid, gen, dev: config(b, grid, generator=gen, device=dev)), repr(config)

    return build


def _learned_sampler(spec: Tensor) -> Tuple[Sampler, str]:
    """An untrained :class:`LearnedMasker` on the patchified spectrogram. Its scores start at
    zero, so its masks are pure Gumbel noise: this shows the mechanics (an exact budget per row,
    drawn from the generator), not a trained policy."""
    spec = (spec - spec.mean()) / (2 * spec.std().clamp(min=1e-6))
    tokens = patchify(spec.reshape(1, 1, *spec.shape[-2:]), PATCH)  # (1, N, 256)
    masker = LearnedMasker(tokens.shape[-1]).train()

    def sample(b, grid, gen, dev):
        with torch.no_grad():
            return masker.to(dev)(tokens.to(dev).expand(b, -1, -1), grid, generator=gen)

    return sample, f"untrained {LearnedMasker.__name__} (zero scores: Gumbel noise only)"


FAMILIES: Dict[str, Builder] = {
    "random": _config_sampler(RandomMask, mask_ratio=0.8),
    # SSAST's 400 of 512 as a ratio, so that any grid length works
    "chunk": _config_sampler(ChunkMask, num_masked=None, mask_ratio=400 / 512),
    "chunk-ssast-faithful": _config_sampler(ChunkMask, num_masked=None, mask_ratio=400 / 512, faithful=True),
    "drop": _config_sampler(TimeFreqDrop),
    # one mask per clip: EAT's 16 clones of a clip are independent draws of the same law
    "inverse-block": _config_sampler(InverseBlockMasker, clone_batch=1),
    "multiblock": _config_sampler(multiblock_audio),
    "hierarchical": _config_sampler(HierarchicalMasker),
    "learned": _learned_sampler,
}


def select_families(names: Optional[Sequence[str]] = None) -> List[str]:
    """``names`` checked against :data:`FAMILIES` (``None``: all of them, in table order)."""
    if names is None:
        return list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    return list(names)


def mask_layers(out: Any) -> List[Tuple[str, Tensor, Optional[Tensor]]]:
    """``[(suffix, hidden (B, N) bool, targets (B, N) bool | None)]`` from any sampler output: a
    :class:`MaskInfo`, a ``(B, N)`` tensor, a learned mask (``.info``), hierarchical masks
    (``.levels``, suffixed ``[i]``) or context/target masks (JEPA: targets are the union of the
    target blocks)."""
    if isinstance(out, MaskInfo):
        return [("", out.mask.bool(), None)]
    if isinstance(out, Tensor):
        return [("", out.bool(), None)]
    if isinstance(getattr(out, "info", None), MaskInfo):  # learned masker output
        return [("", out.info.mask.bool(), None)]
    if hasattr(out, "levels"):
        layers = []
        for i, level in enumerate(out.levels):
            layers += [(f"[{i}]{s}", h, t) for s, h, t in mask_layers(level)]
        return layers
    if hasattr(out, "context") and hasattr(out, "targets"):
        context = out.context
        hidden = context.mask.bool() if isinstance(context, MaskInfo) else context.bool()
        targets = None
        for t in out.targets:
            m = t.mask.bool() if isinstance(t, MaskInfo) else t.bool()
            targets = m if targets is None else targets | m
        return [("", hidden, targets)]
    if isinstance(out, (tuple, list)) and out:
        return mask_layers(out[0])
    raise TypeError(f"cannot draw a sampler output of type {type(out).__name__}")


@dataclass
class GalleryLayer:
    """One drawable layer of a family: ``hidden``/``targets`` ``(examples, N)`` bool on the CPU,
    ``freq`` the ``grid``-shaped masking frequency over the statistics draws, ``summary``
    :func:`mask_summary` of those draws (+ ``target_in_context`` where there are targets)."""

    label: str
    title: str
    hidden: Tensor
    targets: Optional[Tensor]
    freq: Tensor
    summary: Dict[str, float]


def sample_family(
    name: str,
    spec: Tensor,
    grid: Tuple[int, int],
    *,
    examples: int = 3,
    rows: int = 512,
    seed: int = 0,
    device: Any = "cpu",
) -> List[GalleryLayer]:
    """``examples`` masks to show, then ``rows`` more for the statistics, from one generator
    seeded with ``seed``. Raises ``ValueError`` where the family cannot sample ``grid``."""
    sampler, title = FAMILIES[name](spec)
    gen = torch.Generator(device=device).manual_seed(seed)
    shown = max(examples, 1)
    example_layers = mask_layers(sampler(shown, grid, gen, device))
    many_layers = mask_layers(sampler(rows, grid, gen, device))
    layers = []
    for (suffix, hidden, targets), (_, hidden_many, targets_many) in zip(example_layers, many_layers):
        summary = mask_summary(hidden_many, grid)
        if targets_many is not None:
            summary["target_in_context"] = overlap(~hidden_many, targets_many)["frac_of_b"]
        layers.append(GalleryLayer(
            label=name + suffix,
            title=title,
            hidden=hidden[:shown].cpu(),
            targets=None if targets is None else targets[:shown].cpu(),
            freq=position_frequency(hidden_many, grid).cpu(),
            summary=summary,
        ))
    return layers
