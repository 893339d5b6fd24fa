"""Masking library: every family returns a :class:`MaskInfo` (True = hidden)."""

from audiossl.masking.base import MaskInfo

__all__ = ["MaskInfo"]
