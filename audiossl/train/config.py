"""A run's configuration as a user writes it: a YAML file, ``--section.key value`` overrides on
top, and the checks of each dataclass section (unknown keys, and each value against its field's
type). Both engines' ``load_config`` read through here; their dataclasses, family defaults and
value checks (ranges, accepted names) stay with each engine, written with the helpers below so
that every error names its key: ``optim.lr: expected a number, got 'fast'``."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union


class ConfigError(ValueError):
    """A configuration value that cannot be used: ``key`` (``optim.lr``) and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


def check_keys(cls: Any, d: Mapping[str, Any], prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError("", f"unknown config keys {[prefix + k for k in unknown]}; "
                              f"known: {sorted(prefix + k for k in known)}")


# ------------------------------------------------------------------------------------- types
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true or false values"}


def _scalar(value: Any, kind: Any) -> Tuple[bool, Any]:
    """``(fits, value converted)`` for ``int``, ``float``, ``str``, ``bool``; anything else fits."""
    if kind is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):  # YAML's true is no number
        return False, value
    if kind is int:
        if isinstance(value, float) and value.is_integer():  # steps: 1e5
            return True, int(value)
        return isinstance(value, int), value
    if kind is float:
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if kind is str:
        return isinstance(value, str), value
    return True, value


def _expected(kind: Any) -> Tuple[str, Any]:
    """``(words, check)`` for a field type: ``check(value) -> (fits, converted)``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        words, check = _expected(inner[0]) if len(inner) == 1 else ("a value", lambda v: (True, v))
        return f"{words} or null", lambda v: (True, None) if v is None else check(v)
    if origin in (list, tuple, Sequence, typing.get_origin(Sequence[int])) or kind in (list, tuple):
        item = args[0] if args else Any
        if item is Any or item not in _PLURALS:
            return "a list", lambda v: (isinstance(v, (list, tuple)), list(v) if isinstance(v, (list, tuple)) else v)

        def check_list(v: Any) -> Tuple[bool, Any]:
            if not isinstance(v, (list, tuple)):
                return False, v
            done = [_scalar(x, item) for x in v]
            return all(ok for ok, _ in done), [x for _, x in done]

        return f"a list of {_PLURALS[item]}", check_list
    if origin in (dict, Mapping) or kind is dict:
        return "a mapping", lambda v: (isinstance(v, dict), v)
    if kind in _NAMES:
        return _NAMES[kind], lambda v: _scalar(v, kind)
    return "a value", lambda v: (True, v)


def build_section(cls: Any, d: Optional[Mapping[str, Any]], prefix: str, **sections: Any) -> Any:
    """``cls(**d)`` after the checks every section shares: ``d`` is a mapping, its keys are
    fields of ``cls`` and each value fits the field's type (``int``, ``float``, ``bool``,
    ``str``, ``Optional``, lists of them, mappings); ints and integral floats are converted to
    the field's type (``lr: 1`` is 1.0, ``steps: 1e5`` is 100000). ``sections``: already built
    nested sections, passed through."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ConfigError(prefix.rstrip("."), f"expected a section (a mapping of keys), got {d!r}")
    check_keys(cls, d, prefix)
    hints = typing.get_type_hints(cls)
    values: Dict[str, Any] = {}
    for name, value in d.items():
        words, check = _expected(hints[name])
        fits, converted = check(value)
        if not fits:
            raise ConfigError(prefix + name, f"expected {words}, got {value!r}")
        values[name] = converted
    return cls(**values, **sections)


def section(d: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """The mapping of section ``name`` of ``d`` (empty when missing or null)."""
    value = d.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected a section (a mapping of keys), got {value!r}")
    return dict(value)


# ------------------------------------------------------------------------------------- values
def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        names = ", ".join("null" if c is None else str(c) for c in choices)
        raise ConfigError(key, f"{value!r} is not one of {names}")


def check_range(key: str, value: Any, *, positive: bool = False, at_least: Optional[float] = None,
                below: Optional[float] = None) -> None:
    """``value`` (skipped when None) > 0, >= ``at_least``, < ``below``."""
    if value is None:
        return
    if positive and not value > 0:
        raise ConfigError(key, f"must be positive, got {value!r}")
    if at_least is not None and not value >= at_least:
        raise ConfigError(key, f"must be >= {at_least:g}, got {value!r}")
    if below is not None and not value < below:
        raise ConfigError(key, f"must be < {below:g}, got {value!r}")


def check_optim(o: Any, optimizers: Iterable[str], schedules: Iterable[str]) -> None:
    """The fields both engines' optimiser sections share (``optim.*``)."""
    check_choice("optim.optimizer", o.optimizer, optimizers)
    check_choice("optim.schedule", o.schedule, schedules)
    for key in ("lr", "eps", "clip_grad"):
        check_range("optim." + key, getattr(o, key), positive=True)
    for key in ("weight_decay", "warmup", "warmup_init_lr", "min_lr"):
        check_range("optim." + key, getattr(o, key), at_least=0)
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError("optim.betas", f"expected two numbers in [0, 1), got {o.betas!r}")


def open_store(key: str, path: Any) -> Any:
    """The :class:`~audiossl.data.store.FbankStore` at config key ``key``; one that cannot be
    opened (missing, not HDF5, not a store) is a :class:`ConfigError` naming the key."""
    from audiossl.data.store import FbankStore, StoreError

    try:
        return FbankStore(path)
    except StoreError as e:
        raise ConfigError(key, f"{e} (an fbank store made by `audiossl fbank` is expected)") from e


_MANIFEST_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".lst")


def check_store_path(key: str, path: Any) -> None:
    """A manifest where an fbank store is expected, caught by its name before anything opens it."""
    if isinstance(path, str) and path.lower().endswith(_MANIFEST_SUFFIXES):
        raise ConfigError(key, f"{path} is a manifest (a list of clips), but an fbank store (.h5) is expected: "
                               f"make one with `audiossl fbank --manifest {path} --out STORE.h5`")


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
            raise ConfigError(str(path), f"{what} is a YAML mapping")
    return apply_overrides(d, overrides)
