"""What the benchmark probes: a :class:`RepresentationSpec` and the passes that compute it.

Kinds:

* ``checkpoint``: a native checkpoint through :meth:`Embedder.from_checkpoint` with nothing but
  the options the spec sets. With ``pooling=None`` and ``layers=None`` that is exactly what a user
  of ``audiossl embed`` / HEAR gets: what the checkpoint records in ``meta.embed`` (pooling, blocks,
  their mean), else the family's default. ``pooling``
  (``"cls"``/``"mean"``) and ``layers`` add explicit variants: a block index, a list of them or
  ``"all"`` (one row per block, for a per-layer probe), or ``"topK-mean"`` (the mean of the last K
  blocks' clip vectors, which equals pooling the mean of their token outputs: pooling is linear).
  Every layer variant of one (checkpoint, pooling) comes from **one** encoder pass with
  ``layers="all"``; block outputs are taken before the final norm, as :mod:`audiossl.embed`
  documents. A default that itself has a layer axis is flattened, as HEAR's scene embedding is.
* ``random``: the checkpoint's family and config, initialised with the run's seed (its CPU RNG
  forked, so nothing global moves), in a copy of the checkpoint dict: same front end, normaliser,
  window and embedding defaults, so it is embedded exactly like ``checkpoint``. MAE-AST's input
  BatchNorm statistics act as the normaliser and are kept from the checkpoint.
* ``fbank``: per mel bin, mean and (population) std over time of the normalised log-mel of the
  clip's real frames: ``2 × n_mels`` values (256 for 128 bins). Front end and normaliser from
  ``path``'s checkpoint when given, else the ``ast`` fbank and AudioSet normalisation.
* ``hear``: a HEAR 2021 module by import name; ``module.load_model(path)`` (``load_model()``
  without a path) and ``get_scene_embeddings`` at ``model.sample_rate``. HEAR batches hold sounds
  of one length, so clips are grouped by length.

A bad clip stops the run with its path: every representation must see the same clips, or the
table compares different test sets.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from audiossl.evaluate.cache import file_identity
from audiossl.evaluate.tasks import EvaluateError, Task

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "PassKey", "RepresentationSpec", "WaveCache", "compute_pass", "parse_layers", "row_features",
           "spec_rows"]

KINDS = ("checkpoint", "random", "fbank", "hear")
LayersSpec = Union[None, str, int, Sequence[int]]
_TOP = re.compile(r"^top(\d+)-mean$")
# Clips per encoder call.
DEFAULT_BATCH = 16


def parse_layers(value: LayersSpec) -> Union[None, str, List[int]]:
    """``None``, ``"all"``, ``"topK-mean"`` or a list of block indices (from an int, a list, or
    a string ``"3"`` / ``"0,2,-1"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return "all"
        m = _TOP.match(text)
        if m:
            if int(m.group(1)) < 1:
                raise ValueError(f"layers {value!r}: K must be >= 1")
            return f"top{int(m.group(1))}-mean"
        try:
            out = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all', 'topK-mean' or block indices like '3' or '0,2', got {value!r}") from None
        if not out:
            raise ValueError("layers is empty")
        return out
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    out = [int(v) for v in value]
    if not out:
        raise ValueError("layers is empty")
    return out


@dataclass
class RepresentationSpec:
    """One representation to probe (see the module doc). ``name`` names its table row(s);
    ``reference`` (random, fbank) names the checkpoint row it is a baseline for."""

    name: str
    kind: str
    path: Optional[str] = None
    module: Optional[str] = None
    pooling: Optional[str] = None
    layers: LayersSpec = None
    reference: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"representation {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("checkpoint", "random") and not self.path:
            raise ValueError(f"representation {self.name!r}: a {self.kind} representation needs a checkpoint path")
        if self.kind == "hear" and not self.module:
            raise ValueError(f"representation {self.name!r}: a hear representation needs a module name")
        if self.pooling not in (None, "cls", "mean", "bands"):
            raise ValueError(f"representation {self.name!r}: pooling must be None, 'cls', 'mean' or 'bands', got {self.pooling!r}")
        if self.kind in ("fbank", "hear") and (self.pooling is not None or self.layers is not None):
            raise ValueError(f"representation {self.name!r}: pooling/layers apply to checkpoint and random only")
        self.layers = parse_layers(self.layers)
        if self.path is not None:
            self.path = os.fspath(self.path)

    @property
    def seeded(self) -> bool:
        """Whether each seed gives different embeddings (a new random encoder per seed)."""
        return self.kind == "random"

    @property
    def group(self) -> str:
        """The checkpoint row this one belongs to or is compared with."""
        return self.reference or self.name

    @property
    def all_layers(self) -> bool:
        return self.layers is not None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------- rows
def spec_rows(spec: RepresentationSpec, depth: Optional[int]) -> List[Tuple[str, Optional[Tuple[str, int]]]]:
    """``(variant, selector)`` for each row of ``spec``: selector None (the pass's clip vectors),
    ``("layer", j)`` or ``("top", K)``. ``variant`` is "" for the default, else e.g. ``"L2"``,
    ``"cls"``, ``"cls/top2-mean"``."""
    prefix = [spec.pooling] if spec.pooling else []
    if spec.layers is None:
        return [("/".join(prefix), None)]
    if depth is None:
        raise EvaluateError(spec.path, f"representation {spec.name!r}: layers need an encoder")
    if isinstance(spec.layers, str) and spec.layers.startswith("top"):
        k = int(_TOP.match(spec.layers).group(1))
        if k > depth:
            raise EvaluateError(spec.path, f"{spec.layers}: the encoder has only {depth} blocks")
        return [("/".join(prefix + [spec.layers]), ("top", k))]
    indices = range(depth) if spec.layers == "all" else spec.layers
    rows = []
    for j in indices:
        if not -depth <= j < depth:
            raise EvaluateError(spec.path, f"layer {j} is out of range for an encoder of {depth} blocks")
        rows.append(("/".join(prefix + [f"L{j % depth}"]), ("layer", j % depth)))
    return rows


def row_name(spec: RepresentationSpec, variant: str) -> str:
    return spec.name if not variant else f"{spec.name}/{variant}"


def row_features(x: np.ndarray, selector: Optional[Tuple[str, int]]) -> np.ndarray:
    """``(N, D)`` features of a row from a pass's ``(N, D)`` or ``(N, L, D)`` clip array."""
    if selector is None:
        return x.reshape(len(x), -1)
    kind, j = selector
    if kind == "layer":
        return x[:, j]
    return x[:, -j:].mean(1)


# ---------------------------------------------------------------------------------------- passes
@dataclass(frozen=True)
class PassKey:
    """One embedding computation shared by the rows derived from it."""

    kind: str
    path: Optional[str]
    module: Optional[str] = None
    pooling: Optional[str] = None
    all_layers: bool = False
    seed: Optional[int] = None

    @classmethod
    def of(cls, spec: RepresentationSpec, seed: Optional[int]) -> "PassKey":
        return cls(spec.kind, spec.path, spec.module, spec.pooling, spec.all_layers, seed if spec.seeded else None)

    @property
    def label(self) -> str:
        parts = [self.kind, os.path.splitext(os.path.basename(self.path or self.module or "preset"))[0]]
        if self.pooling:
            parts.append(self.pooling)
        if self.all_layers:
            parts.append("layers")
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        return "-".join(parts)

    def cache_key(self) -> Dict[str, Any]:
        """What the cached file depends on (the clips are checked separately)."""
        key: Dict[str, Any] = {"kind": self.kind, "pooling": self.pooling, "all_layers": self.all_layers,
                               "seed": self.seed, "file": file_identity(self.path)}
        if self.kind == "hear":
            try:
                spec = importlib.util.find_spec(self.module)
            except (ImportError, ValueError):  # a missing parent package: the pass will say so
                spec = None
            origin = getattr(spec, "origin", None) if spec is not None else None
            key["module"] = {"name": self.module, "file": file_identity(origin) if origin else None}
        return key


class WaveCache:
    """Decoded clips and their raw log-mels kept in memory across the passes of a run:
    ``(path, sample_rate)`` → waveform and ``(path, FbankConfig)`` → ``(T, F)`` log-mel, least
    recently used dropped past ``max_bytes``. A checkpoint, its random inits and the fbank
    baseline share one front end, so each clip is decoded and transformed once per run."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self.items: "OrderedDict[Tuple[Any, ...], Any]" = OrderedDict()
        self.bytes = 0

    def _lookup(self, key: Tuple[Any, ...], make):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        size = value.numel() * value.element_size()
        if size <= self.max_bytes:
            self.items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        return value

    def get(self, path: str, sample_rate: int):
        from audiossl.audio import load

        return self._lookup(("wave", path, int(sample_rate)), lambda: load(path, sample_rate))

    def logmel(self, path: str, config):
        """Raw (un-normalised) ``(T, F)`` log-mel of the clip; T is 0 for a clip under one frame."""
        from audiossl.features import fbank

        def make():
            feats, lengths = fbank(self.get(path, int(config.sample_frequency)), config)
            return feats[0, : int(lengths[0])].clone()

        return self._lookup(("logmel", path, config), make)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="clip", desc=desc, disable=not enabled, leave=False)


def _embedder_options(key: PassKey) -> Dict[str, Any]:
    """Only what the spec sets: leave every default to the checkpoint / embed."""
    options: Dict[str, Any] = {}
    if key.pooling is not None:
        options["pooling"] = key.pooling
    if key.all_layers:
        options["layers"] = "all"
    return options


def random_payload(ckpt: Mapping[str, Any], seed: int) -> Dict[str, Any]:
    """The checkpoint dict with its model re-initialised from ``seed`` (see the module doc)."""
    import torch

    from audiossl.models.registry import model_from_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = model_from_config(ckpt["family"], ckpt["config"])
    state = model.state_dict()
    for name in list(state):
        if name.startswith("batch_norm.") and name in ckpt["model"]:  # MAE-AST's input norm: the normaliser
            state[name] = ckpt["model"][name]
    payload = dict(ckpt)
    payload["model"] = state
    payload["meta"] = {**dict(ckpt.get("meta") or {}), "random_init_seed": int(seed)}
    return payload


def _load_clips(task: Task, split: str, sample_rate: int, waves: WaveCache):
    from audiossl.audio import AudioError

    out = []
    for clip_id, path in zip(task.splits[split].ids, task.splits[split].paths):
        try:
            out.append(waves.get(path, sample_rate))
        except AudioError as exc:
            raise EvaluateError(path, f"task {task.name!r}, clip {clip_id!r}: {exc.reason}") from None
    return out


def _load_logmels(task: Task, split: str, config, waves: WaveCache):
    from audiossl.audio import AudioError

    out = []
    for clip_id, path in zip(task.splits[split].ids, task.splits[split].paths):
        try:
            x = waves.logmel(path, config)
        except AudioError as exc:
            raise EvaluateError(path, f"task {task.name!r}, clip {clip_id!r}: {exc.reason}") from None
        if x.shape[0] == 0:
            raise EvaluateError(path, f"task {task.name!r}, clip {clip_id!r}: shorter than one fbank frame")
        out.append(x)
    return out


def _embed_split(embedder, logmels, batch_size: int, bar) -> np.ndarray:
    """Clip vectors in input order; clips are batched by length so padding stays small (batching
    does not change a clip's embedding: the embedder masks padding)."""
    order = sorted(range(len(logmels)), key=lambda i: logmels[i].shape[0])
    result: List[Optional[np.ndarray]] = [None] * len(logmels)
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        for i, emb in zip(idx, embedder.embed_fbank([logmels[i] for i in idx], frames=False)):
            result[i] = emb.clip.float().cpu().numpy()
        bar.update(len(idx))
    return np.stack(result)


def _encoder_pass(key: PassKey, task: Task, waves: WaveCache, device: str, batch_size: int, progress: bool):
    from audiossl.embed import Embedder
    from audiossl.checkpoint import load_checkpoint

    ckpt = load_checkpoint(key.path)
    if key.kind == "random":
        ckpt = random_payload(ckpt, key.seed)
    embedder = Embedder.from_checkpoint(ckpt, device=device, **_embedder_options(key))
    features = {}
    total = sum(len(s) for s in task.splits.values())
    with _progress(total, f"{task.name}: {key.label}", progress) as bar:
        for split in task.splits:
            logmels = _load_logmels(task, split, embedder.fbank_config, waves)
            features[split] = _embed_split(embedder, logmels, batch_size, bar)
    meta = {"pooling": embedder.pooling, "layers": embedder.layers, "layer_mean": getattr(embedder, "layer_mean", False),
            "depth": embedder.encoder.config.depth,
            "embed_dim": embedder.output_dim, "family": ckpt.get("family"), "sample_rate": embedder.sample_rate}
    return features, meta


def _front_end(path: Optional[str]):
    from audiossl.features import FbankConfig, Normalizer

    if path is None:
        return FbankConfig.preset("ast"), Normalizer.preset("audioset")
    from audiossl.embed import Embedder

    embedder = Embedder.from_checkpoint(path)
    return embedder.fbank_config, embedder.normalizer


def logmel_stats(logmel, normalizer) -> np.ndarray:
    """``(2F,)``: per mel bin, mean then population std over time of the normalised ``(T, F)``
    log-mel."""
    x = logmel.double()
    if normalizer is not None:
        x = normalizer(x)
    return np.concatenate([x.mean(0).numpy(), x.std(0, unbiased=False).numpy()])


def fbank_stats(wave, config, normalizer) -> np.ndarray:
    """:func:`logmel_stats` of a waveform's fbank under ``config``."""
    from audiossl.features import fbank

    feats, lengths = fbank(wave.float(), config)
    return logmel_stats(feats[0, : int(lengths[0])], normalizer)


def _fbank_pass(key: PassKey, task: Task, waves: WaveCache, progress: bool):
    config, normalizer = _front_end(key.path)
    features = {}
    total = sum(len(s) for s in task.splits.values())
    with _progress(total, f"{task.name}: {key.label}", progress) as bar:
        for split in task.splits:
            rows = []
            for x in _load_logmels(task, split, config, waves):
                rows.append(logmel_stats(x, normalizer))
                bar.update(1)
            features[split] = np.stack(rows)
    meta = {"fbank": config.to_dict(), "normalizer": normalizer.to_dict() if normalizer else None}
    return features, meta


def load_hear_module(module_name: str, path: Optional[str]):
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvaluateError(path, f"HEAR module {module_name!r} cannot be imported: {exc}") from None
    for attr in ("load_model", "get_scene_embeddings"):
        if not hasattr(module, attr):
            raise EvaluateError(path, f"{module_name!r} is not a HEAR module: it has no {attr}()")
    model = module.load_model(path) if path else module.load_model()
    return module, model


def _hear_pass(key: PassKey, task: Task, waves: WaveCache, device: str, batch_size: int, progress: bool):
    import torch

    module, model = load_hear_module(key.module, key.path)
    if hasattr(model, "to"):
        model = model.to(device)
    sample_rate = int(model.sample_rate)
    features = {}
    total = sum(len(s) for s in task.splits.values())
    with _progress(total, f"{task.name}: {key.label}", progress) as bar, torch.no_grad():
        for split in task.splits:
            clips = _load_clips(task, split, sample_rate, waves)
            by_length: Dict[int, List[int]] = {}
            for i, w in enumerate(clips):
                by_length.setdefault(w.numel(), []).append(i)
            result: List[Optional[np.ndarray]] = [None] * len(clips)
            for idx_all in by_length.values():
                for lo in range(0, len(idx_all), batch_size):
                    idx = idx_all[lo : lo + batch_size]
                    audio = torch.stack([clips[i] for i in idx]).to(device)
                    emb = module.get_scene_embeddings(audio, model)
                    for i, e in zip(idx, emb.detach().float().cpu().numpy()):
                        result[i] = e
                    bar.update(len(idx))
            features[split] = np.stack(result)
    size = getattr(model, "scene_embedding_size", None)
    return features, {"sample_rate": sample_rate, "scene_embedding_size": size}


def compute_pass(key: PassKey, task: Task, waves: WaveCache, *, device: str = "cpu",
                 batch_size: int = DEFAULT_BATCH, progress: bool = True):
    """``({split: (N, D) or (N, L, D) float32}, meta)`` for ``key`` on ``task``."""
    logger.info("%s: computing %s", task.name, key.label)
    if key.kind in ("checkpoint", "random"):
        features, meta = _encoder_pass(key, task, waves, device, batch_size, progress)
    elif key.kind == "fbank":
        features, meta = _fbank_pass(key, task, waves, progress)
    else:
        features, meta = _hear_pass(key, task, waves, device, batch_size, progress)
    _check_finite(key, task, features)
    return features, meta


def _check_finite(key: PassKey, task: Task, features: Mapping[str, np.ndarray]) -> None:
    """A clip whose features are not finite (a x1e30 recording, an overflowing model) would
    fail the probe far from its cause, or be cached: name it here instead."""
    for split, x in features.items():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            clips = task.splits[split]
            names = [f"{clips.ids[i]} ({clips.paths[i]})" for i in np.flatnonzero(bad)[:5]]
            more = f" and {int(bad.sum()) - 5} more" if bad.sum() > 5 else ""
            raise EvaluateError(key.path, f"representation {key.label!r} is not finite for {task.name}/{split} "
                                          f"clip(s) {', '.join(names)}{more}")
