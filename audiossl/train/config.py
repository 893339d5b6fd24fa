"""A run's configuration as a user writes it: a YAML file, ``--section.key value`` overrides on
top, and the unknown-key check of each dataclass section. Both engines' ``load_config`` read
through here; their dataclasses and family defaults stay with each engine."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union


def check_keys(cls: Any, d: Mapping[str, Any], prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config keys {[prefix + k for k in unknown]}; known: {sorted(prefix + k for k in known)}")


def yaml_loader() -> Any:
    """PyYAML's SafeLoader, plus floats written without a dot (``5e-4``), which YAML 1.1 reads as
    strings and every learning rate in a recipe is written as."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def apply_overrides(d: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``["--optim.lr", "1e-3", "--steps=10"]`` → nested dict updates; values are YAML scalars."""
    import yaml

    loader = yaml_loader()
    out = json.loads(json.dumps(d))
    items = list(overrides)
    i = 0
    while i < len(items):
        tok = items[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ValueError(f"expected --key value, got {tok!r}")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise ValueError(f"{tok} needs a value")
            value = items[i + 1]
            i += 1
        i += 1
        node = out
        parts = key.replace("-", "_").split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--{key}: {p} is not a section")
        node[parts[-1]] = yaml.load(value, Loader=loader)
    return out


def read_config(path: Optional[Union[str, Path]], overrides: Sequence[str], what: str) -> Dict[str, Any]:
    """The YAML mapping at ``path`` (none: empty) with ``overrides`` applied; ``what`` names the
    kind of config in the error for a file that is not a mapping ("a pretraining config")."""
    import yaml

    d: Dict[str, Any] = {}
    if path is not None:
        with open(path) as f:
            d = yaml.load(f, Loader=yaml_loader()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path}: {what} is a YAML mapping")
    return apply_overrides(d, overrides)
