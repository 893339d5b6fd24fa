"""Import official checkpoints into native ones: ``convert("eat", "EAT-base.pt", "eat.pt")``.

Each source module exposes ``CONVERTERS`` (source name -> function taking what the upstream file
holds and returning a native payload, see :mod:`audiossl.train.checkpoint`); this module reads the
file (PyTorch pickle, safetensors, or a Hugging Face folder with ``config.json``), dispatches and
writes the result atomically. Converters do no I/O, so they are tested on in-memory dicts.
"""

from __future__ import annotations

import importlib
import json
import struct
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from audiossl.train.checkpoint import CheckpointError, PathLike, load_foreign, save_checkpoint

# source -> module defining it; imported lazily so one broken importer cannot break the others.
_SOURCES: Dict[str, str] = {
    "eat": "eat", "eat_hf": "eat",
    "ssast": "ast", "ast": "ast", "ast_hf": "ast",
    "maeast": "maeast",
    "audiomae": "mae", "mae": "mae",
    "ijepa": "jepa",
}
SOURCES = tuple(_SOURCES)

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def converter(source: str) -> Callable[..., Dict[str, Any]]:
    if source not in _SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; choose from {', '.join(SOURCES)}")
    module = importlib.import_module(f"audiossl.convert.{_SOURCES[source]}")
    return module.CONVERTERS[source]


def read_safetensors(path: PathLike) -> Dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a state dict (the format is an 8-byte little-endian header
    length, a JSON header of dtype/shape/offsets, then raw little-endian bytes), without the
    ``safetensors`` package."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(path, "is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"has an unreadable safetensors header: {e}") from e
    base = 8 + n
    out: Dict[str, torch.Tensor] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(spec["dtype"])
        if dtype is None:
            raise CheckpointError(path, f"tensor {name} has unsupported dtype {spec['dtype']}")
        start, end = spec["data_offsets"]
        if base + end > len(data):
            raise CheckpointError(path, f"is truncated: tensor {name} ends past the end of the file")
        buf = bytearray(data[base + start : base + end])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(spec["shape"]).clone()
    return out


def read_source(path: PathLike, *, trust: bool = False) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """What an upstream file or Hugging Face folder holds, and the folder's ``config.json``."""
    path = Path(path)
    hf_config = None
    if path.is_dir():
        cfg = path / "config.json"
        hf_config = json.loads(cfg.read_text()) if cfg.is_file() else None
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(path, "is a folder without model.safetensors or pytorch_model.bin")
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.suffix == ".safetensors":
        return read_safetensors(path), hf_config
    return load_foreign(path, trust=trust), hf_config


def convert_payload(source: str, obj: Any, *, hf_config: Optional[Dict[str, Any]] = None,
                    path: Optional[PathLike] = None) -> Dict[str, Any]:
    fn = converter(source)
    try:
        payload = fn(obj, hf_config=hf_config)
    except CheckpointError as e:
        raise CheckpointError(path, f"as a {source!r} checkpoint: {e.reason}") from e
    payload.setdefault("meta", {})
    payload["meta"].setdefault("source", source)
    if path is not None:
        payload["meta"].setdefault("source_file", Path(path).name)
    return payload


def convert(source: str, src: PathLike, out: PathLike, *, trust: bool = False) -> Path:
    """Read ``src`` as an upstream ``source`` checkpoint and write the native one to ``out``."""
    converter(source)  # an unknown source fails before reading a multi-GB file
    obj, hf_config = read_source(src, trust=trust)
    return save_checkpoint(out, convert_payload(source, obj, hf_config=hf_config, path=src))


__all__ = ["SOURCES", "convert", "convert_payload", "converter", "read_safetensors", "read_source"]
