"""The pretraining engine: one loop for every objective in :mod:`audiossl.models`.

An objective is any module whose ``forward(x, generator=g)`` returns an output with ``.loss`` and
``.logs()``; optional hooks: ``on_step(step, total_steps)`` (before the forward: temperature and
schedule of the learned masker), ``update_teacher(step[, total_steps])`` (after the optimiser:
EMA teachers), ``trainable_parameters()``, ``no_weight_decay()``, ``load_pretrained(ckpt)``.

Exact resumption. Everything a step consumes is either saved or a pure function of saved
numbers: the model, optimiser, grad scaler; the global torch RNG (dropout, drop-path) and the
generator that draws masks, per rank; the data position (epoch, batches taken), with the clip
order drawn from ``(seed, epoch)`` and each clip's random crop from ``(seed, epoch, row)``
(:func:`audiossl.data.dataset.item_generator`); the learning rate is a function of the step.
So a run killed after checkpoint ``k`` and resumed reproduces the uninterrupted run's losses
bit for bit on the CPU.

Files in ``out``: ``config.yaml`` (the resolved configuration), ``checkpoint-<step>.pt``
(training state, the last ``keep_last``), ``model.pt`` (the final native checkpoint without
training state, what downstream commands load), ``metrics.jsonl`` (one record per logged step).

:class:`Pretrainer` is one class past ~250 lines on purpose: the loop, its exact resumption and
its checkpoints read and write the same state (RNG streams, data position, the open log window);
what the fine-tuning engine shares with it already lives in :mod:`audiossl.train.loop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import re
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from audiossl.checkpoint import load_checkpoint, load_state_dict, native_payload, save_checkpoint
from audiossl.models.registry import preset_names
from audiossl.train import distributed as dist_utils
from audiossl.train.config import (
    ConfigError,
    build_section,
    check_choice,
    check_keys,
    check_optim,
    check_range,
    check_store_path,
    open_store,
    read_config,
    section,
)
from audiossl.train.loop import (
    PRECISIONS,
    RunFolderError,
    TrainingError,
    append_metrics,
    autocast,
    autocast_dtype,
    backward,
    check_front_end,
    claim_out,
    device_for,
    grad_scaler,
    load_training_state,
    optimizer_step,
    restore_training_state,
    seed_generator,
    truncate_metrics,
    write_config,
)
from audiossl.train.optim import OPTIMIZERS, SCHEDULES, Schedule, build_optimizer, cosine_ramp, param_groups, set_lr

# Importable from here since before the shared parts moved to train/config.py and train/loop.py.
from audiossl.checkpoint import CheckpointError  # noqa: F401
from audiossl.train.config import apply_overrides, yaml_loader  # noqa: F401

logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
# What a run writes into ``out`` (what --overwrite removes; any of them marks a folder as holding a run).
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint-*.pt", "model.pt")


# ------------------------------------------------------------------------------------- config
# The papers' optimisation, by preset-name prefix (first match wins). ``warmup`` < 1 is a
# fraction of ``steps``; ``blr`` is MAE's base lr (lr = blr × effective batch / 256). Longer
# prefixes come before their own prefixes (maeast before mae). Every length is a fraction of the
# run (warm-up here, cosine/linear decay to ``steps``, EAT's EMA in EATConfig.ema_reference_steps,
# I-JEPA's momentum and weight-decay ramps over ``steps``), so a 2 000-step run has the shape of
# the paper's 400 000-step one.
FAMILY_OPTIM: List[Tuple[str, Dict[str, Any]]] = [
    # EAT (pretraining_AS2M.yaml): fairseq adam = AdamW, 53.3k of 400k warm-up, clip 4; the
    # yaml's min_lr is unset (0), the paper's Table 4 says 1e-6: we follow the paper.
    ("eat", dict(optimizer="adamw", lr=5e-4, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.05,
                 schedule="cosine", warmup=53_333 / 400_000, min_lr=1e-6, clip_grad=4.0)),
    # AudioMAE (AS-2M): blr 2e-4, wd 1e-4, 3 of 33 epochs warm-up, half-cosine to 0, no clipping.
    ("audiomae", dict(optimizer="adamw", blr=2e-4, betas=[0.9, 0.95], eps=1e-8, weight_decay=1e-4,
                      schedule="cosine", warmup=3 / 33, min_lr=0.0, clip_grad=None)),
    # MAE-AST: fairseq adam (decoupled), (0.9, 0.98), eps 1e-6, wd 0.01, linear decay after 32k
    # of 400k warm-up, clip 10.
    ("maeast", dict(optimizer="adamw", lr=1e-4, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.01,
                    schedule="linear", warmup=32_000 / 400_000, min_lr=0.0, clip_grad=10.0)),
    # MAE (ImageNet): blr 1.5e-4, wd 0.05, 40 of 800 epochs warm-up.
    ("mae", dict(optimizer="adamw", blr=1.5e-4, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.05,
                 schedule="cosine", warmup=40 / 800, min_lr=0.0, clip_grad=None)),
    # SSAST: torch Adam with L2 5e-7, (0.95, 0.999), a 1000-step warm-up in 10 epochs of AS-2M +
    # LibriSpeech at batch 24 (~930k updates), kept as that fraction so a short run is not half
    # warm-up; upstream then halves the lr on a validation plateau, which an unsupervised run
    # here does not have: constant.
    ("ssast", dict(optimizer="adam", lr=1e-4, betas=[0.95, 0.999], eps=1e-8, weight_decay=5e-7,
                   schedule="constant", warmup=1000 / 930_000, min_lr=0.0, clip_grad=None)),
    # I-JEPA: AdamW default betas, lr 2e-4 → 1e-3 over 40 of 300 epochs then cosine to 1e-6,
    # weight decay ramped 0.04 → 0.4 by a cosine.
    ("ijepa", dict(optimizer="adamw", lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.04,
                   weight_decay_end=0.4, schedule="cosine", warmup=40 / 300, warmup_init_lr=2e-4,
                   min_lr=1e-6, clip_grad=None)),
    # The adaptive masker trains a small scorer: plain AdamW.
    ("masker", dict(optimizer="adamw", lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
                    schedule="cosine", warmup=0.05, min_lr=0.0, clip_grad=1.0)),
]


def family_optim(preset: str) -> Dict[str, Any]:
    for prefix, values in FAMILY_OPTIM:
        if preset.startswith(prefix):
            return dict(values)
    return {}


@dataclass
class DataConfig:
    train: str = ""  # an fbank store (.h5); merge shards with `audiossl fbank-merge` first
    target_length: int = 1024
    crop: str = "random"
    batch_size: int = 12  # clips per process per micro-batch
    num_workers: int = 2
    normalizer: Optional[str] = "store"  # "store", a preset name, or None for raw log-mel
    # init_from trained on another fbank front end than the store's is an error; true: a warning.
    allow_front_end_mismatch: bool = False


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    lr: Optional[float] = None
    blr: Optional[float] = None
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.05
    weight_decay_end: Optional[float] = None
    schedule: str = "cosine"
    warmup: float = 0.0
    warmup_init_lr: float = 0.0
    min_lr: float = 0.0
    clip_grad: Optional[float] = None
    accum_steps: int = 1


@dataclass
class PretrainConfig:
    model: str = "eat_tiny"
    model_args: Dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 1000  # optimiser updates
    out: str = "exp/pretrain"
    seed: int = 1
    precision: str = "auto"  # auto = bf16 autocast on CUDA if supported, else fp16; fp32 on CPU
    device: str = "auto"
    save_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    init_from: Optional[str] = None  # a native checkpoint to start from (the masker's frozen MAE)
    progress: bool = True

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PretrainConfig":
        """``d`` over the defaults of its model's family; every wrong value is a
        :class:`~audiossl.train.config.ConfigError` naming its key."""
        d = dict(d)
        check_keys(cls, d, "")
        data, optim = section(d, "data"), section(d, "optim")
        d.pop("data", None)
        d.pop("optim", None)
        model = d.get("model", cls.model)
        if not isinstance(model, str):
            raise ConfigError("model", f"expected a preset name, got {model!r}")
        cfg = build_section(cls, d, "", data=build_section(DataConfig, data, "data."),
                            optim=build_section(OptimConfig, {**family_optim(model), **optim}, "optim."))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from audiossl.data.dataset import CropMode
        from audiossl.features import NORM_PRESETS

        if self.model not in preset_names():
            raise ConfigError("model", f"unknown preset {self.model!r}; choose from {', '.join(preset_names())}")
        check_choice("precision", self.precision, PRECISIONS)
        for key in ("steps", "save_every", "log_every", "keep_last"):
            check_range(key, getattr(self, key), at_least=1)
        o, d = self.optim, self.data
        check_optim(o, OPTIMIZERS, SCHEDULES)
        check_range("optim.blr", o.blr, positive=True)
        check_range("optim.weight_decay_end", o.weight_decay_end, at_least=0)
        check_range("optim.accum_steps", o.accum_steps, at_least=1)
        if o.lr is None and o.blr is None:
            raise ConfigError("optim.lr", "not set: set optim.lr (or optim.blr, MAE's base lr per 256 clips)")
        if not d.train:
            raise ConfigError("data.train", "not set: set it to an fbank store (.h5)")
        check_store_path("data.train", d.train)
        check_choice("data.crop", d.crop, typing.get_args(CropMode))
        check_choice("data.normalizer", d.normalizer, ["store", None, *NORM_PRESETS])
        check_range("data.target_length", d.target_length, at_least=1)
        check_range("data.batch_size", d.batch_size, at_least=1)
        check_range("data.num_workers", d.num_workers, at_least=0)


def load_config(path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> PretrainConfig:
    return PretrainConfig.from_dict(read_config(path, overrides, "a pretraining config"))


# ------------------------------------------------------------------------------------- helpers
def checkpoints(out: Union[str, Path]) -> List[Path]:
    """The step checkpoints in ``out``, oldest first (only complete files: writes are atomic)."""
    out = Path(out)
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint-*.pt") if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _teacher_update(model: nn.Module):
    fn = getattr(model, "update_teacher", None)
    if fn is None:
        return None
    takes_total = "total_steps" in inspect.signature(fn).parameters
    return (lambda step, total: fn(step, total)) if takes_total else (lambda step, total: fn(step))


def _check_grid(model: nn.Module, cfg: PretrainConfig) -> None:
    """A learned positional table fixes the token grid: say so before the first step."""
    enc = getattr(model, "encoder", None)
    ecfg = getattr(enc, "config", None)
    if ecfg is None or ecfg.pos_embed != "learned":
        return
    grid = tuple(enc.grid_shape(cfg.data.target_length))
    if grid != tuple(ecfg.pos_grid):
        raise ValueError(
            f"{cfg.model} has a learned positional table for a {tuple(ecfg.pos_grid)} token grid, but "
            f"data.target_length {cfg.data.target_length} gives {grid}: set data.target_length to match or "
            f"--model_args.encoder '{{pos_grid: {list(grid)}}}'"
        )


# ------------------------------------------------------------------------------------- engine
class Pretrainer:
    """Builds model, data and optimiser from a :class:`PretrainConfig` and runs the loop."""

    def __init__(self, cfg: PretrainConfig) -> None:
        from audiossl.data.dataset import FbankDataset
        from audiossl.models.registry import build_model, family_of

        self.cfg = cfg
        self.info = dist_utils.init(cfg.device)
        self.device = device_for(cfg.device, self.info)
        self.out = Path(cfg.out)
        self.family = family_of(cfg.model)
        torch.manual_seed(cfg.seed * 1009 + self.info.rank)
        self.generator = seed_generator(cfg.seed, self.info.rank)

        self.store = open_store("data.train", cfg.data.train)
        self.model = build_model(cfg.model, **cfg.model_args)
        _check_grid(self.model, cfg)
        if cfg.init_from:
            self._init_from(cfg.init_from)
        self.model.to(self.device)

        normalizer: Any = cfg.data.normalizer
        if normalizer not in (None, "store"):
            from audiossl.features import Normalizer

            normalizer = Normalizer.preset(normalizer)
        self.dataset = FbankDataset(self.store, target_length=cfg.data.target_length, crop=cfg.data.crop,
                                    normalizer=normalizer, seed=cfg.seed)
        if len(self.dataset) < cfg.data.batch_size * self.info.world_size:
            raise ValueError(f"{cfg.data.train}: {len(self.dataset)} clips is fewer than one batch "
                             f"({cfg.data.batch_size} × {self.info.world_size} processes)")
        self.sampler = dist_utils.ResumableSampler(len(self.dataset), seed=cfg.seed, rank=self.info.rank,
                                                   world_size=self.info.world_size)

        o = cfg.optim
        trainable = getattr(self.model, "trainable_parameters", None)
        groups = param_groups(self.model, o.weight_decay, params=trainable() if callable(trainable) else None)
        self.effective_batch = cfg.data.batch_size * o.accum_steps * self.info.world_size
        self.peak_lr = o.lr if o.lr is not None else o.blr * self.effective_batch / 256
        warmup = int(round(o.warmup * cfg.steps)) if o.warmup < 1 else int(o.warmup)
        self.schedule = Schedule(self.peak_lr, cfg.steps, min(warmup, cfg.steps), o.schedule, o.min_lr, o.warmup_init_lr)
        self.optimizer = build_optimizer(groups, o.optimizer, lr=self.peak_lr, betas=o.betas, eps=o.eps)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.scaler = grad_scaler(self.amp_dtype)
        self.params = [p for g in groups for p in g["params"]]

        self.net: nn.Module = self.model
        if self.info.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.teacher_update = _teacher_update(self.model)
        self.step = 0  # optimiser updates done
        self.epoch = 0
        self.batches_in_epoch = 0  # micro-batches of this epoch consumed by finished updates
        # The steps since the last metrics record: saved with a checkpoint, so the first record
        # after a resume averages the steps the uninterrupted run's record did.
        self.window: Dict[str, float] = {}
        self.n_window = 0
        self.window_seconds = 0.0  # time spent on those steps before the checkpoint
        self._window_t0 = time.perf_counter()

    # -------------------------------------------------------------------------------- setup
    def _init_from(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        check_front_end(ckpt, path, self.store, self.cfg.data.allow_front_end_mismatch)
        hook = getattr(self.model, "load_pretrained", None)
        if callable(hook):
            hook(ckpt, path=path)
        else:
            load_state_dict(self.model, ckpt["model"], path=path)
        logger.info("initialised %s from %s", self.cfg.model, path)

    def resume(self) -> bool:
        """Load the newest checkpoint in ``out``; False (fresh start) if there is none. A run
        killed before its first checkpoint starts again from step 0 (its records are dropped);
        a finished one without checkpoints (deleted to save space) has nothing to continue."""
        found = checkpoints(self.out)
        if not found:
            if (self.out / "model.pt").exists():
                raise RunFolderError(f"{self.out} holds a finished run (model.pt) but no checkpoint to resume from: "
                                     "pass --overwrite to train it again, or a new --out")
            logger.info("no checkpoint in %s: starting from step 0", self.out)
            if self.info.is_main:
                truncate_metrics(self.out / "metrics.jsonl", "step", 0)
            return False
        path = found[-1]
        ckpt, train = load_training_state(path)
        old = train["config"]
        for key in ("model", "model_args", "seed"):
            if old.get(key) != getattr(self.cfg, key):
                raise TrainingError(f"{path}: cannot resume with a different {key} "
                                    f"({old.get(key)!r} in the checkpoint, {getattr(self.cfg, key)!r} now)")
        if old["data"]["batch_size"] != self.cfg.data.batch_size or train["world_size"] != self.info.world_size:
            logger.warning("%s: batch size or process count changed; the data order will not match the original run", path)
        restore_training_state(self.model, self.optimizer, self.scaler, ckpt, path)
        self.step, self.epoch, self.batches_in_epoch = int(train["step"]), int(train["epoch"]), int(train["batches_in_epoch"])
        rng = train.get("rng") or []
        if len(rng) == self.info.world_size:
            dist_utils.set_rng_state(rng[self.info.rank], self.generator)
        else:
            logger.warning("%s: saved by %d processes, resumed by %d: RNG streams restart", path, len(rng), self.info.world_size)
        windows = train.get("window") or []
        if len(windows) == self.info.world_size:
            w = windows[self.info.rank]
            self.window, self.n_window, self.window_seconds = dict(w["sums"]), int(w["n"]), float(w["seconds"])
        elif self.step % self.cfg.log_every:  # an older checkpoint, or another process count
            logger.warning("%s: no log window for %d processes: the next record averages only the steps after %d",
                           path, self.info.world_size, self.step)
        if self.info.is_main:
            truncate_metrics(self.out / "metrics.jsonl", "step", self.step)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batches_in_epoch)
        return True

    # -------------------------------------------------------------------------------- data
    def _batches(self) -> Iterator[Dict[str, Any]]:
        """Micro-batches from the saved position on, across epochs, forever."""
        from torch.utils.data import DataLoader

        bs = self.cfg.data.batch_size
        while True:
            self.dataset.set_epoch(self.epoch)
            self.sampler.set_position(self.epoch, self.batches_in_epoch * bs)
            # Its own generator: a DataLoader otherwise draws worker seeds from the global RNG
            # (which dropout uses too), and a resumed run would draw once more than the original.
            loader = DataLoader(self.dataset, batch_size=bs, sampler=self.sampler, drop_last=True,
                                num_workers=self.cfg.data.num_workers, collate_fn=self.dataset.collate_fn,
                                pin_memory=self.device.type == "cuda",
                                generator=seed_generator(self.cfg.seed, self.info.rank, self.epoch + 1))
            for batch in loader:
                yield batch
            self.epoch += 1
            self.batches_in_epoch = 0

    # -------------------------------------------------------------------------------- step
    def _forward(self, x: torch.Tensor):
        with autocast(self.device, self.amp_dtype):
            return self.net(x, generator=self.generator)

    def train_step(self, batches: Iterator[Dict[str, Any]]) -> Dict[str, float]:
        cfg, o = self.cfg, self.cfg.optim
        self.model.train()
        on_step = getattr(self.model, "on_step", None)
        if callable(on_step):
            on_step(self.step, cfg.steps)
        lr = self.schedule(self.step)
        wd = cosine_ramp(self.step, cfg.steps, o.weight_decay, o.weight_decay_end) if o.weight_decay_end is not None else None
        set_lr(self.optimizer, lr, wd)
        sums: Dict[str, float] = {}
        finite = True
        clips = 0
        for micro in range(o.accum_steps):
            batch = next(batches)
            x = batch["fbank"].to(self.device, non_blocking=True)
            if x.dim() == 3:
                x = x.unsqueeze(1)
            clips += x.shape[0]
            last = micro == o.accum_steps - 1
            sync = self.net.no_sync() if (self.info.enabled and not last) else contextlib.nullcontext()
            with sync:
                out = self._forward(x)
                loss = out.loss / o.accum_steps
                finite &= bool(torch.isfinite(out.loss.detach()))
                backward(loss, self.scaler)
            for k, v in out.logs().items():
                sums[k] = sums.get(k, 0.0) + float(v) / o.accum_steps
            self.batches_in_epoch += 1
        if dist_utils.any_rank(not finite, self.device):
            raise TrainingError(
                f"non-finite loss at step {self.step + 1} (lr {lr:.3g}, logs {sums}); stopped before the "
                f"optimiser step. The last good checkpoint is {self._last_checkpoint() or 'none (no checkpoint yet)'}: "
                "lower optim.lr, enable clipping (optim.clip_grad) or use precision fp32/bf16, then --resume."
            )
        max_norm = o.clip_grad if o.clip_grad is not None else math.inf  # inf: not clipped, still measured
        grad_norm = float(optimizer_step(self.optimizer, self.scaler, self.params, max_norm))
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        logs = dict(sums, lr=lr, grad_norm=grad_norm, clips=float(clips))
        if wd is not None:
            logs["weight_decay"] = wd
        if self.teacher_update is not None:
            logs["ema"] = float(self.teacher_update(self.step, cfg.steps))
        return logs

    # -------------------------------------------------------------------------------- saving
    def _last_checkpoint(self) -> Optional[Path]:
        found = checkpoints(self.out)
        return found[-1] if found else None

    def _payload(self, with_training_state: bool) -> Dict[str, Any]:
        fbank = self.store.fbank_config
        norm = self.dataset.normalizer
        train = None
        if with_training_state:
            train = {
                "config": self.cfg.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                "world_size": self.info.world_size,
            }
        rng = dist_utils.gather_objects(dist_utils.rng_state(self.generator))  # every rank calls this
        if train is not None:
            train["rng"] = rng
            train["window"] = dist_utils.gather_objects({
                "sums": dict(self.window), "n": self.n_window,
                "seconds": self.window_seconds + time.perf_counter() - self._window_t0})
        return native_payload(
            self.model, family=self.family,
            fbank=None if fbank is None else fbank.to_dict(),
            normalizer=norm.to_dict() if hasattr(norm, "to_dict") else None,
            target_length=self.cfg.data.target_length,
            meta=self._meta(),
            train=train,
        )

    def _meta(self) -> Dict[str, Any]:
        from audiossl.models.registry import embedding_of

        meta: Dict[str, Any] = {"preset": self.cfg.model, "step": self.step, "train_store": str(self.cfg.data.train)}
        embed = embedding_of(self.family)
        if embed is not None:
            meta["embed"] = embed  # the representation embed/HEAR/evaluate use by default
        return meta

    def save(self) -> Optional[Path]:
        payload = self._payload(True)
        path = None
        if self.info.is_main:
            path = save_checkpoint(self.out / f"checkpoint-{self.step:08d}.pt", payload)
            for old in checkpoints(self.out)[: -max(self.cfg.keep_last, 1)]:
                old.unlink(missing_ok=True)
        dist_utils.barrier()
        return path

    def save_final(self) -> Path:
        payload = self._payload(False)
        path = self.out / "model.pt"
        if self.info.is_main:
            save_checkpoint(path, payload)
        dist_utils.barrier()
        return path

    # -------------------------------------------------------------------------------- loop
    def run(self) -> Path:
        from tqdm.auto import tqdm

        cfg = self.cfg
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(self.out, cfg.to_dict())
        metrics_path = self.out / "metrics.jsonl"
        batches = self._batches()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and self.info.is_main),
                   desc=f"pretrain {cfg.model}", dynamic_ncols=True)
        self._window_t0 = time.perf_counter()
        try:
            while self.step < cfg.steps:
                logs = self.train_step(batches)
                for k, v in logs.items():
                    self.window[k] = self.window.get(k, 0.0) + v
                self.n_window += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    seconds = self.window_seconds + time.perf_counter() - self._window_t0
                    self._log(metrics_path, self.window, self.n_window, seconds, bar)
                    self.window, self.n_window, self.window_seconds = {}, 0, 0.0
                    self._window_t0 = time.perf_counter()
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
        finally:
            bar.close()
        return self.save_final()

    def _log(self, path: Path, window: Dict[str, float], n: int, seconds: float, bar: Any) -> None:
        keys = sorted(window)
        means = dist_utils.all_mean(torch.tensor([window[k] / n for k in keys], dtype=torch.float64, device=self.device))
        record: Dict[str, Any] = {"step": self.step, "epoch": self.epoch}
        record.update({k: float(v) for k, v in zip(keys, means.tolist())})
        clips = record.pop("clips", 0.0) * self.info.world_size * n
        record["clips_per_s"] = clips / max(seconds, 1e-9)
        if self.info.is_main:
            append_metrics(path, record)
            bar.set_postfix({k: f"{record[k]:.4g}" for k in ("loss", "lr") if k in record})


def pretrain(cfg: PretrainConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train ``cfg`` and return the final native checkpoint (``out/model.pt``). A ``cfg.out``
    that holds a run needs ``resume`` (continue it) or ``overwrite`` (remove its files first);
    see :func:`audiossl.train.loop.claim_out`."""
    # Before the process group forms, so every rank has looked at the folder before any writes
    # to it; the main process (RANK 0 of torchrun) is the one that removes.
    claim_out(Path(cfg.out), RUN_FILES, resume=resume, overwrite=overwrite,
              remove=int(os.environ.get("RANK", "0")) == 0)
    trainer = Pretrainer(cfg)
    try:
        dist_utils.barrier()
        if resume:
            trainer.resume()
        return trainer.run()
    finally:
        dist_utils.shutdown()
