"""Native checkpoints: one ``torch.save`` dict of plain containers and tensors, so it loads
with ``weights_only=True``, written atomically, and carrying everything needed to rebuild the
model and its front end:

.. code-block:: python

    {"format": "audiossl", "version": 1,
     "family": "eat",                 # a key of models.registry.FAMILIES ("encoder" for bare encoders)
     "config": {...},                 # the family config's to_dict()
     "model": state_dict,             # the whole objective (student, teacher, decoder, ...)
     "fbank": FbankConfig.to_dict() | None,
     "normalizer": {"mean": m, "std": s} | None,
     "target_length": int | None,     # frames the model was trained on
     "meta": {...},                   # free: preset, source checkpoint, step, audiossl version
     "train": {...}}                  # optional: optimiser, schedule, RNG, data position (resume)

Foreign checkpoints (fairseq, AudioMAE's ``args``) hold pickled Python objects; they load only
through :func:`load_foreign` with ``trust=True``, because unpickling runs arbitrary code.

This module is a foundation: models, train, convert, embed and hear all read and write through
it, so it imports none of them. Rebuilding a model from ``(family, config)`` is the registry's
job (:func:`audiossl.models.registry.model_from_checkpoint`).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

import audiossl
from audiossl.files import PathLike, atomic_path, file_problem

FORMAT = "audiossl"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used as asked, with the file and the reason."""

    def __init__(self, path: Optional[PathLike], reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


# ------------------------------------------------------------------------------------- writing
def native_payload(
    model: nn.Module,
    *,
    family: str,
    fbank: Optional[Mapping[str, Any]] = None,
    normalizer: Optional[Mapping[str, float]] = None,
    target_length: Optional[int] = None,
    meta: Optional[Mapping[str, Any]] = None,
    train: Optional[Mapping[str, Any]] = None,
    state_dict: Optional[Mapping[str, torch.Tensor]] = None,
) -> Dict[str, Any]:
    """The checkpoint dict of ``model`` (which must have ``.config.to_dict()``)."""
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise TypeError(f"{type(model).__name__} has no .config.to_dict(); cannot write a native checkpoint")
    payload: Dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "family": family,
        "config": model.config.to_dict(),
        "model": dict(state_dict if state_dict is not None else model.state_dict()),
        "fbank": None if fbank is None else dict(fbank),
        "normalizer": None if normalizer is None else {k: float(v) for k, v in dict(normalizer).items()},
        "target_length": None if target_length is None else int(target_length),
        "meta": {"audiossl_version": audiossl.__version__, **dict(meta or {})},
    }
    if train is not None:
        payload["train"] = dict(train)
    return payload


def save_checkpoint(path: PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` through ``path.partial`` + rename: a kill, an error or a full
    disk mid-write leaves the previous file intact and no partial file behind."""
    path = Path(path)
    with atomic_path(path) as partial:
        with open(partial, "wb") as f:  # a file object: a full disk surfaces as ENOSPC, not "unexpected pos"
            torch.save(dict(payload), f)
    return path


# ------------------------------------------------------------------------------------- reading
def _torch_load(path: Path, *, weights_only: bool, map_location: Any, **kwargs: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, **kwargs)
    except pickle.UnpicklingError:
        if weights_only and not _is_pickle(path):
            raise CheckpointError(path, _BROKEN) from None
        raise
    except (ModuleNotFoundError, AttributeError):
        if weights_only:
            raise CheckpointError(path, _BROKEN) from None
        raise  # trusted unpickling of a class that is not installed: load_foreign stubs it
    except Exception as e:  # noqa: BLE001 - zip, EOF and memo errors all mean the same to a user
        raise CheckpointError(path, f"{_BROKEN} ({type(e).__name__}: {_first_line(e)})") from e


_BROKEN = "is not a readable PyTorch checkpoint (truncated, corrupt, or another kind of file)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` holds a well-formed pickle stream (a zip checkpoint's ``data.pkl``, or a
    legacy file's leading magic-number pickle), read with :mod:`pickletools`, which parses opcodes
    without running any. Random bytes or text fail at once; a checkpoint with pickled objects
    parses. Tells "refused because it holds objects" from "broken"."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                stream: Any = io.BytesIO(z.read(name))
        else:
            stream = open(path, "rb")
        with stream:
            for _ in pickletools.genops(stream):
                pass
        return True
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle"
        return False


def _check_file(path: Path) -> None:
    problem = file_problem(path, what="checkpoint file")
    if problem is not None:
        inside = sorted(path.glob("*.pt"), key=lambda p: p.stat().st_mtime) if path.is_dir() else []
        if inside:
            problem += f"; pass one of its files, e.g. {inside[-1]}"
        raise CheckpointError(path, problem)


def _pickle_refusal(path: Path) -> CheckpointError:
    return CheckpointError(
        path,
        "holds pickled Python objects (typical of fairseq and AudioMAE checkpoints), which can run "
        "arbitrary code when loaded. If you trust where it came from, pass --trust-checkpoint "
        "(trust=True in Python).",
    )


def load_foreign(path: PathLike, *, trust: bool = False, map_location: Any = "cpu") -> Any:
    """Load any PyTorch checkpoint: safely when it holds only tensors and containers, with full
    unpickling only when ``trust`` is set."""
    path = Path(path)
    _check_file(path)
    try:
        return _torch_load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError:
        if not trust:
            raise _pickle_refusal(path) from None
    try:
        return _torch_load(path, weights_only=False, map_location=map_location)
    except (ModuleNotFoundError, AttributeError):
        pass  # e.g. fairseq/omegaconf objects in `cfg`: stand-ins keep the tensors reachable
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, f"unpickling failed even when trusted: {_first_line(e)}") from e
    try:
        return _torch_load(path, weights_only=False, map_location=map_location, pickle_module=_stub_pickle)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure is reported with the file
        raise CheckpointError(path, f"unpickling failed even when trusted: {e}") from e


class Stub:
    """Stands for an object whose class is not installed (fairseq, omegaconf, argparse-free
    configs): its pickled state lands in ``__dict__`` (or ``.state``), its constructor arguments
    in ``.args``, so converters can read stored hyper-parameters with ``getattr``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"<Stub {type(self).__module__}.{type(self).__name__}>"


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (Stub,), {"__module__": module})


class _stub_pickle:  # noqa: N801 - torch.load wants a module-like object
    Unpickler = _StubUnpickler
    load = staticmethod(pickle.load)
    __name__ = "audiossl_stub_pickle"


def load_checkpoint(path: PathLike, *, map_location: Any = "cpu") -> Dict[str, Any]:
    """A native checkpoint, loaded with ``weights_only=True`` and checked for its format keys."""
    path = Path(path)
    _check_file(path)
    try:
        ckpt = _torch_load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            path,
            "is not a native audiossl checkpoint (it holds pickled Python objects). Import official "
            "checkpoints first with `audiossl convert --from FAMILY IN OUT`.",
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            path,
            "is not a native audiossl checkpoint (no format='audiossl' key); convert it first with "
            "`audiossl convert --from FAMILY IN OUT`",
        )
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(path, f"was written by a newer audiossl (format version {ckpt['version']} > {VERSION})")
    missing = [k for k in ("family", "config", "model") if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"lacks the keys {missing}")
    return ckpt


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, path: Optional[PathLike] = None,
                     what: str = "model") -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs {what} {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_short(shapes)}")
        raise CheckpointError(path, f"does not fit the {what} ({type(module).__name__}): " + "; ".join(parts))


def _short(items: list, limit: int = 12) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more


def load_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, path: Optional[PathLike] = None,
                    what: str = "model") -> nn.Module:
    check_state_dict(module, state_dict, path=path, what=what)
    module.load_state_dict(state_dict, strict=True)
    return module
