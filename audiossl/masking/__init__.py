"""Masking library: every family returns a :class:`MaskInfo` (True = hidden).

One module per family, each a pure function plus a dataclass callable holding its parameters:

==================  =====================================  ==========================================
family              function / callable                    upstream
==================  =====================================  ==========================================
random              ``random_mask`` / ``RandomMask``       MAE, AudioMAE, MAE-AST frame, SSAST frame
chunk               ``chunk_mask`` / ``ChunkMask``         SSAST patch, MAE-AST patch
inverse block       ``inverse_block_mask`` /               EAT (data2vec 2.0), with clone batches
                    ``InverseBlockMasker``
multi-block         ``multiblock_masks`` /                 I-JEPA (faithful), V-JEPA style (corrected)
                    ``MultiBlockMasker``
hierarchical        ``hierarchical_masks`` /               H-JEPA levels
                    ``HierarchicalMasker``
learned             ``LearnedMasker``                      content-adaptive, Gumbel-sigmoid top-k
time/freq drop      ``time_freq_drop`` / ``TimeFreqDrop``  AudioMAE fine-tuning
==================  =====================================  ==========================================

``audiossl.masking.stats`` measures any of them (coverage, per-position frequency, overlap,
block sizes); ``audiossl show-masks`` draws them.
"""

from audiossl.masking.base import GeneratorLike, MaskInfo, resolve_generator
from audiossl.masking.block import (
    EAT_FLEXIBLE_BLOCK_SHAPES,
    InverseBlockMasker,
    block_mask,
    block_mask_num_keep,
    inverse_block_mask,
    num_block_centres,
)
from audiossl.masking.chunk import ChunkMask, chunk_mask
from audiossl.masking.drop import TimeFreqDrop, time_freq_drop
from audiossl.masking.hierarchical import HierarchicalMasker, HierarchicalMasks, hierarchical_masks, level_scales
from audiossl.masking.learned import (
    GumbelSigmoid,
    LearnedMask,
    LearnedMasker,
    composite_mse,
    gumbel_sigmoid,
    masker_regularizer,
    mean_score_penalty,
    score_entropy,
    straight_through_topk,
)
from audiossl.masking.multiblock import (
    MULTIBLOCK_PRESETS,
    MultiBlockMasker,
    MultiBlockMasks,
    multiblock_audio,
    multiblock_image,
    multiblock_masks,
)
from audiossl.masking.random import RandomMask, random_mask

__all__ = [
    "EAT_FLEXIBLE_BLOCK_SHAPES", "MULTIBLOCK_PRESETS", "ChunkMask", "GeneratorLike", "GumbelSigmoid",
    "HierarchicalMasker", "HierarchicalMasks", "InverseBlockMasker", "LearnedMask", "LearnedMasker",
    "MaskInfo", "MultiBlockMasker", "MultiBlockMasks", "RandomMask", "TimeFreqDrop", "block_mask",
    "block_mask_num_keep", "chunk_mask", "composite_mse", "gumbel_sigmoid", "hierarchical_masks",
    "inverse_block_mask", "level_scales", "masker_regularizer", "mean_score_penalty",
    "multiblock_audio", "multiblock_image", "multiblock_masks", "num_block_centres", "random_mask",
    "resolve_generator", "score_entropy", "straight_through_topk", "time_freq_drop",
]
