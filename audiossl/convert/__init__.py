"""Import official checkpoints into native ones: ``convert("eat", "EAT-base.pt", "eat.pt")``.

Each source module exposes ``CONVERTERS`` (source name -> function taking what the upstream file
holds and returning a native payload, see :mod:`audiossl.checkpoint`); this module reads the
file (PyTorch pickle, safetensors, or a Hugging Face folder with ``config.json``), dispatches and
writes the result atomically. Converters do no I/O, so they are tested on in-memory dicts.
"""

from __future__ import annotations

import importlib
import inspect
import json
import struct
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from audiossl.checkpoint import CheckpointError, PathLike, load_foreign, save_checkpoint
from audiossl.files import atomic_path, atomic_write_text

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


_SAFETENSORS_NAMES = {v: k for k, v in _SAFETENSORS_DTYPES.items()}


def write_safetensors(path: PathLike, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write a ``.safetensors`` file (the layout :func:`read_safetensors` reads), atomically."""
    path = Path(path)
    header: Dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _SAFETENSORS_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with atomic_path(path) as partial, open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    return path


def read_source(path: PathLike, *, trust: bool = False) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """What an upstream file or Hugging Face folder holds, and the folder's ``config.json``
    (with its ``preprocessor_config.json``, if any, under the key ``"_preprocessor"``)."""
    path = Path(path)
    hf_config = None
    if path.is_dir():
        cfg = path / "config.json"
        hf_config = json.loads(cfg.read_text()) if cfg.is_file() else None
        pre = path / "preprocessor_config.json"
        if hf_config is not None and pre.is_file():
            hf_config["_preprocessor"] = json.loads(pre.read_text())
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


def converter_options(source: str) -> Tuple[str, ...]:
    """Keyword options a converter takes besides ``hf_config`` (e.g. ``num_heads``, ``stride``)."""
    params = inspect.signature(converter(source)).parameters
    return tuple(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in ("hf_config", "hf_preprocessor"))


def convert_payload(source: str, obj: Any, *, hf_config: Optional[Dict[str, Any]] = None,
                    path: Optional[PathLike] = None, **options: Any) -> Dict[str, Any]:
    """``options``: what the file cannot say, e.g. ``num_heads`` for a non-standard width or
    ``stride`` of an AST fine-tuned file (see :func:`converter_options`)."""
    fn = converter(source)
    unknown = sorted(set(options) - set(converter_options(source)))
    if unknown:
        raise ValueError(f"the {source!r} importer takes no option {unknown}; it takes {list(converter_options(source))}")
    hf_config = None if hf_config is None else dict(hf_config)
    pre = hf_config.pop("_preprocessor", None) if hf_config else None
    if pre is not None and "hf_preprocessor" in inspect.signature(fn).parameters:
        options["hf_preprocessor"] = pre
    try:
        payload = fn(obj, hf_config=hf_config, **options)
    except CheckpointError as e:
        raise CheckpointError(path, f"as a {source!r} checkpoint: {e.reason}") from e
    payload.setdefault("meta", {})
    payload["meta"].setdefault("source", source)
    if path is not None:
        payload["meta"].setdefault("source_file", Path(path).name)
    return payload


def convert(source: str, src: PathLike, out: PathLike, *, trust: bool = False, **options: Any) -> Path:
    """Read ``src`` as an upstream ``source`` checkpoint and write the native one to ``out``."""
    converter(source)  # an unknown source fails before reading a multi-GB file
    obj, hf_config = read_source(src, trust=trust)
    return save_checkpoint(out, convert_payload(source, obj, hf_config=hf_config, path=src, **options))


def export_ast_hf_folder(checkpoint: PathLike, out_dir: PathLike, **kwargs: Any) -> Path:
    """Write a native patch model as a Hugging Face ``ASTForAudioClassification`` folder
    (``model.safetensors``, ``config.json``, ``preprocessor_config.json``)."""
    from audiossl.convert.ast import export_ast_hf, export_ast_hf_preprocessor
    from audiossl.checkpoint import load_checkpoint

    payload = load_checkpoint(checkpoint)
    state, config = export_ast_hf(payload, **kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", state)
    for name, data in (("config.json", config), ("preprocessor_config.json", export_ast_hf_preprocessor(payload))):
        atomic_write_text(out / name, json.dumps(data, indent=2))
    return out


__all__ = ["SOURCES", "convert", "convert_payload", "converter", "converter_options", "export_ast_hf_folder",
           "read_safetensors", "read_source", "write_safetensors"]
