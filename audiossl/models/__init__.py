"""Models: one shared ViT :class:`Encoder`; MAE, MAE-AST, SSAST, EAT and JEPA are objectives
around it (decoders, predictors, teachers and losses live in their own modules)."""

from audiossl.models.encoder import (
    Encoder,
    EncoderConfig,
    EncoderOutput,
    LinearPatchTokenizer,
    family_config,
)

__all__ = ["Encoder", "EncoderConfig", "EncoderOutput", "LinearPatchTokenizer", "family_config"]
