"""TEMPORARY re-export while issue 12 moves callers to :mod:`audiossl.checkpoint` (the format)
and :mod:`audiossl.models.registry` (rebuilding models). Deleted once nothing imports it."""

from audiossl.checkpoint import *  # noqa: F401,F403
from audiossl.checkpoint import PathLike, _pickle_refusal, _torch_load  # noqa: F401
from audiossl.models.registry import DEFAULT_ENCODER, encoder_from_checkpoint, model_from_checkpoint  # noqa: F401
