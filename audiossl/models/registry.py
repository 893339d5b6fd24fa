"""One registry of named presets across the objectives, so recipes and the CLI can say
``model: eat_base`` and checkpoints can rebuild a model from ``(family, config dict)``
(:func:`model_from_checkpoint`, :func:`encoder_from_checkpoint`: the native format itself lives
in :mod:`audiossl.checkpoint`, below every model).

Each family module keeps its own ``<FAMILY>_PRESETS`` (name -> config factory) and
``<family>_config(name, **overrides)``; this module only indexes them. ``encoder={...}`` in the
overrides replaces encoder fields, as in the family functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from torch import nn

from audiossl.checkpoint import CheckpointError, PathLike, load_checkpoint, load_state_dict
from audiossl.models import classifier, eat, jepa, mae, maeast, masker, ssast
from audiossl.models.encoder import Encoder, EncoderConfig


@dataclass(frozen=True)
class Family:
    name: str
    model: Callable[[Any], nn.Module]
    config_cls: Any
    presets: Mapping[str, Callable[[], Any]]
    config: Callable[..., Any]


FAMILIES: Dict[str, Family] = {
    "mae": Family("mae", mae.MAE, mae.MAEConfig, mae.MAE_PRESETS, mae.mae_config),
    "ssast": Family("ssast", ssast.SSAST, ssast.SSASTConfig, ssast.SSAST_PRESETS, ssast.ssast_config),
    "maeast": Family("maeast", maeast.MAEAST, maeast.MAEASTConfig, maeast.MAEAST_PRESETS, maeast.maeast_config),
    "eat": Family("eat", eat.EAT, eat.EATConfig, eat.EAT_PRESETS, eat.eat_config),
    "jepa": Family("jepa", jepa.JEPA, jepa.JEPAConfig, jepa.JEPA_PRESETS, jepa.jepa_config),
    "masker": Family("masker", masker.AdaptiveMasker, masker.AdaptiveMaskerConfig, masker.MASKER_PRESETS,
                     masker.masker_config),
}

# Models that are not pretraining objectives but live in checkpoints: a bare encoder (imported
# official weights, embeddings) and a fine-tuned classifier.
CHECKPOINT_FAMILIES: Dict[str, Family] = {
    "encoder": Family("encoder", Encoder, EncoderConfig, {}, lambda name, **kw: EncoderConfig(**kw)),
    "classifier": Family("classifier", classifier.Classifier, classifier.ClassifierConfig, {},
                         lambda name, **kw: classifier.ClassifierConfig(**kw)),
}


# The clip representation each objective's own pretraining records as the default of
# ``audiossl embed``, HEAR and ``audiossl evaluate`` (``meta.embed`` of its checkpoints; see
# :func:`audiossl.embed.embedding_defaults`): the one the learning benchmark
# (``benchmarks/bench_learning.py``) found best for that family. ``layers`` are block indices
# (negative from the end) averaged when ``layer_mean``; None is the encoder's normed output.
EMBEDDINGS: Dict[str, Dict[str, Any]] = {
    # Measured on the five real-audio tasks (recipes/probe) with tiny presets: the mean of patch
    # tokens beat EAT's CLS by 5-15 points, and the average of the top two blocks beat the last
    # block alone on most tasks for every family (the last block specialises in the pretext
    # task; data2vec/EAT's targets average the top blocks for the same reason). Keeping the
    # frequency bands apart ("bands", MSM-MAE/M2D's evaluation) beat the mean over all patches
    # by 4-30 points on every task for every patch family, pretrained and random-init alike
    # (benchmarks/README.md); on frame tokens (one band) it is the mean.
    family: {"pooling": "bands", "layers": [-2, -1], "layer_mean": True}
    for family in ("eat", "maeast", "ssast", "mae", "jepa")
}

def embedding_of(family: str) -> Optional[Dict[str, Any]]:
    """What a checkpoint of ``family`` records in ``meta.embed`` (None: nothing to record)."""
    found = EMBEDDINGS.get(family)
    return None if found is None else dict(found)


def _index() -> Dict[str, Family]:
    index: Dict[str, Family] = {}
    for family in FAMILIES.values():
        for name in family.presets:
            if name in index:
                raise RuntimeError(f"preset {name!r} is defined by both {index[name].name} and {family.name}")
            index[name] = family
    return index


def preset_names() -> List[str]:
    return sorted(_index())


def family_of(preset: str) -> str:
    index = _index()
    if preset not in index:
        raise ValueError(f"unknown model preset {preset!r}; choose from {', '.join(sorted(index))}")
    return index[preset].name


def build_config(preset: str, **overrides: Any) -> Any:
    return FAMILIES[family_of(preset)].config(preset, **overrides)


def build_model(preset: str, **overrides: Any) -> nn.Module:
    """``build_model("eat_base")``, ``build_model("maeast_patch_tiny", mask_ratio=0.5)``."""
    family = FAMILIES[family_of(preset)]
    return family.model(family.config(preset, **overrides))


def model_from_config(family: str, config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from what a checkpoint stores: its family and ``config.to_dict()``."""
    known = {**FAMILIES, **CHECKPOINT_FAMILIES}
    if family not in known:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(sorted(known))}")
    spec = known[family]
    return spec.model(spec.config_cls.from_dict(dict(config)))


# Which sub-module a downstream user gets from an objective: EAT fine-tunes its student; I-JEPA
# evaluates the target (EMA) encoder, as upstream's evaluation does.
DEFAULT_ENCODER = {"jepa": "target_encoder"}
_ENCODER_ATTRS = {"student": "encoder", "teacher": None, "encoder": "encoder", "target_encoder": "target_encoder"}
_TEACHER_ATTRS = ("teacher", "target_encoder")


def model_from_checkpoint(ckpt: Union[PathLike, Mapping[str, Any]], *, map_location: Any = "cpu",
                          path: Optional[PathLike] = None) -> nn.Module:
    """Rebuild the checkpoint's model from its family and config and load its weights. ``path``
    names the file in errors when ``ckpt`` is an already loaded dict."""
    if not isinstance(ckpt, Mapping):
        path = ckpt
        ckpt = load_checkpoint(ckpt, map_location=map_location)
    try:
        model = model_from_config(ckpt["family"], ckpt["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(path, f"its config does not build a {ckpt['family']!r} model: {e}") from e
    return load_state_dict(model, ckpt["model"], path=path)


def encoder_from_checkpoint(
    ckpt: Union[PathLike, Mapping[str, Any]], *, which: Optional[str] = None, map_location: Any = "cpu",
    path: Optional[PathLike] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The encoder a downstream task uses, and the checkpoint dict (for ``fbank``/``normalizer``).

    ``which``: ``"student"`` (the trained encoder), ``"teacher"`` (EAT's or I-JEPA's EMA copy) or
    None for the family's default (:data:`DEFAULT_ENCODER`)."""
    if not isinstance(ckpt, Mapping):
        path = ckpt
        ckpt = load_checkpoint(ckpt, map_location=map_location)
    model = model_from_checkpoint(ckpt, path=path)
    if isinstance(model, Encoder):
        return model, dict(ckpt)
    which = which or DEFAULT_ENCODER.get(ckpt["family"], "student")
    if which == "teacher":
        attr = next((a for a in _TEACHER_ATTRS if hasattr(model, a)), None)
    else:
        attr = _ENCODER_ATTRS.get(which, which)
    enc = getattr(model, attr, None) if attr else None
    if not isinstance(enc, Encoder):
        raise CheckpointError(path, f"a {ckpt['family']!r} model has no {which!r} encoder")
    return enc, dict(ckpt)
