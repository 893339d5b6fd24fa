"""Fine-tuning and linear probing of a pretrained (or randomly initialised) encoder.

Two modes share one epoch loop, one data split and one output layout:

* ``mode: finetune`` — the whole :class:`~audiossl.models.classifier.Classifier` trains, with
  layer-wise lr decay, drop-path, roll → mixup → SpecAugment on the normalised batch (EAT's
  order), label smoothing, and cross-entropy (single label) or BCE (multi label).
* ``mode: linprobe`` — the encoder is frozen; every clip is embedded once, without augmentation
  (first ``target_length`` frames), the training embeddings' mean/std standardise all of them
  (EVAR), and only ``BatchNorm1d(affine=False) + Linear`` trains (MAE ``main_linprobe``) on
  the cached embeddings. Seconds per epoch.

The run: :mod:`~audiossl.train.finetune_config` (configuration, the papers' defaults by source
family), :mod:`~audiossl.train.finetune_data` (the split into train, val and test clips, and
their batches), :mod:`~audiossl.train.selection` (best epoch on val, or on test with
``select_on_test: true``, the optimistic upstream protocol, reported ``"test (optimistic)"``;
the last epoch without either; weight averaging and the ensemble), :mod:`~audiossl.train.evaluation`
(scores and embeddings), :mod:`~audiossl.train.loop` (what the pretraining engine does alike).
This module builds the classifier and runs the epochs.

Outputs in ``out``:

* ``results.json`` (fixed schema)::

    {"task": "finetune" | "linprobe",
     "init": "pretrained" | "random",
     "checkpoint": str | null,            # the pretrained checkpoint, null for random init
     "model": str,                        # preset or source family, for report labels
     "source": str,                       # family whose defaults applied
     "split": {...},                      # {"column": "fold", "test_values": [1], "train_values": []}
                                          # or {"train": store, "test": store}; + "val_fraction"
     "selected_on": "val" | "test (optimistic)" | "last",
     "selected_epoch": int,               # 1-based
     "select_metric": "acc" | "mAP",
     "loss": "ce" | "bce",
     "metrics": {"val": {...} | null, "test": {...}},   # classification_metrics of the selected model
     "extra": [{"name": "weight_average", "epochs": [a, b], "metrics": {"val": ..., "test": ...}},
               {"name": "ensemble", "epochs": [1, n], "metrics": {...}}],
     "num_train_clips": int, "num_val_clips": int, "num_test_clips": int,
     "test_clips": "test_clips.txt", "epochs": int, "steps": int}

  Metric dicts are :func:`audiossl.train.metrics.classification_metrics` (``acc, mAP, mAUC,
  d_prime, ap_classes, auc_classes``); NaN is written as null.
* ``test_clips.txt``: the ids of the test clips actually evaluated (one per line), next to the
  metric computed on them (AudioSet copies differ).
* ``metrics.jsonl``: one record per epoch (train loss, lr, val and test metrics).
* ``checkpoint.pt``: training state after the last finished epoch (atomic; ``--resume``).
* ``best.pt`` while training, then ``model.pt``: the selected model, a native checkpoint of
  family ``"classifier"``. ``config.yaml``: the resolved configuration.

Exact resumption. Each epoch's randomness is a pure function of ``(seed, epoch)`` (clip order,
crops, augmentation draws, the global RNG used by drop-path), so a run stopped after epoch ``k``
and resumed gives the uninterrupted run's numbers on the CPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.checkpoint import CheckpointError, load_checkpoint, native_payload, save_checkpoint
from audiossl.files import atomic_path
from audiossl.models.classifier import Classifier, source_of
from audiossl.models.downstream import classifier_from_checkpoint, classifier_from_preset
from audiossl.train import distributed as dist_utils
from audiossl.train import evaluation
from audiossl.train.evaluation import json_clean
from audiossl.train.finetune_config import AugmentConfig, FinetuneConfig, FtModelConfig, FtOptimConfig
from audiossl.train.finetune_data import FinetuneData, resolve_normalizer, split_data
from audiossl.train.loop import (
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
    write_atomic,
    write_config,
)
from audiossl.train.metrics import classification_metrics
from audiossl.train.optim import Schedule, build_optimizer, epoch_milestones, layer_id, param_groups, set_lr
from audiossl.train.selection import Ensemble, Selection, WeightAverage, selection_split

# Importable from here since before the engine was split into the modules above.
from audiossl.train.config import apply_overrides, yaml_loader  # noqa: F401
from audiossl.train.finetune_config import (  # noqa: F401
    FAMILY_FINETUNE,
    LINPROBE_DEFAULTS,
    LOSSES,
    MODES,
    FtDataConfig,
    family_defaults,
    load_config,
    resolve_source,
)
from audiossl.train.finetune_data import Split, holdout  # noqa: F401
from audiossl.train.loop import PRECISIONS  # noqa: F401
from audiossl.train.selection import SELECTED_ON_TEST  # noqa: F401

logger = logging.getLogger(__name__)

# What a run writes into ``out`` (what --overwrite removes; any of them marks a folder as holding a run).
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "best.pt", "model.pt", "model_wa.pt", "results.json",
             "test_clips.txt")

# ------------------------------------------------------------------------------------- building
def finetune_param_groups(model: Classifier, o: FtOptimConfig, params: Optional[Sequence[nn.Parameter]] = None
                          ) -> List[Dict[str, Any]]:
    """:func:`audiossl.train.optim.param_groups` with layer decay; the ``"eat"`` style gives every
    parameter that is not in a block (patch conv, cls token, input norm, fc_norm, head) scale 1."""
    depth = model.encoder.config.depth
    groups = param_groups(model, o.weight_decay, params=params, layer_decay=o.layer_decay,
                          depth=depth if o.layer_decay is not None else None)
    if o.layer_decay is None or o.layer_decay_style == "mae":
        return groups
    merged: Dict[Tuple[float, float], Dict[str, Any]] = {}
    for g in groups:
        for name, p in zip(g["names"], g["params"]):
            lid = layer_id(name, depth)
            scale = g["lr_scale"] if 1 <= lid <= depth else 1.0
            key = (g["weight_decay"], scale)
            ng = merged.setdefault(key, {"params": [], "names": [], "weight_decay": key[0], "lr_scale": scale})
            ng["params"].append(p)
            ng["names"].append(name)
    return list(merged.values())


def build_classifier(m: FtModelConfig, mode: str, num_classes: int, seed: int
                     ) -> Tuple[Classifier, Optional[Dict[str, Any]], str]:
    """``(classifier, pretrained checkpoint or None, source family)`` of ``model.init``."""
    overrides = {"drop_path": m.drop_path} if mode == "finetune" else {"drop_path": 0.0}
    if m.init == "pretrained":
        ckpt = load_checkpoint(m.checkpoint)
        # The new head's init comes from the seed, not from whatever ran before in the process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = classifier_from_checkpoint(
                ckpt, num_classes=num_classes, pooling=m.pooling, head=m.head,
                head_init_std=m.head_init_std, which=m.which, encoder_overrides=overrides,
                strip_final_norm=m.strip_final_norm, path=m.checkpoint)
        if model.config.num_classes != num_classes:
            raise CheckpointError(m.checkpoint, f"has {model.config.num_classes} classes, the data {num_classes}")
        return model, ckpt, source_of(ckpt)
    model = classifier_from_preset(m.preset, num_classes, pooling=m.pooling, head=m.head or "ln_linear",
                                   head_init_std=m.head_init_std, encoder_overrides=overrides, seed=seed)
    return model, None, str(m.preset)


def _schedule(o: FtOptimConfig, epochs: int, steps_per_epoch: int) -> Schedule:
    total = steps_per_epoch * epochs
    warmup = int(round(o.warmup * total)) if o.warmup < 1 else int(o.warmup)
    milestones = epoch_milestones(o.step_start, o.step_every, epochs, steps_per_epoch) if o.schedule == "step" else ()
    return Schedule(o.lr, total, min(warmup, total), o.schedule, o.min_lr, o.warmup_init_lr, milestones, o.step_gamma)


# ------------------------------------------------------------------------------------- a batch
def _augment(x: Tensor, y: Tensor, lengths: Tensor, g: torch.Generator, a: AugmentConfig,
             train_set: Any) -> Tuple[Tensor, Tensor]:
    """Roll (time), mixup, SpecAugment on a normalised ``(B, T, F)`` batch, EAT's order."""
    from audiossl.data.dataset import mixup, random_roll, spec_augment

    if a.roll:
        x = random_roll(x, g, lengths)
    if a.mixup > 0:
        x, y, _, _ = mixup(x, y, g, a.mixup_alpha, a.mixup, a.mixup_mode)
    freqm, timem = a.freqm, a.timem
    if a.specaug_ratio is not None and not (freqm or timem):
        freqm, timem = int(x.shape[2] * a.specaug_ratio), int(x.shape[1] * a.specaug_ratio)
    if freqm or timem:
        value: Any = 0.0 if a.specaug_value == "zero" else train_set.pad_value
        x = spec_augment(x, freqm, timem, g, value if not isinstance(value, Tensor) else value.to(x.device))
    return x, y


def _loss(logits: Tensor, y: Tensor, loss_kind: str, bce_reduction: str) -> Tensor:
    logits = logits.float()
    if loss_kind == "ce":
        return -(y * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    if bce_reduction == "label_sum":
        return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / y.sum().clamp(min=1.0)
    return F.binary_cross_entropy_with_logits(logits, y)


# ------------------------------------------------------------------------------------- engine
class Finetuner:
    """Builds the classifier, the split and the optimiser from a :class:`FinetuneConfig` and
    runs the epochs; ``checkpoint.pt`` after each one holds all it needs to resume."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        self.cfg = cfg
        self.device = device_for(cfg.device, dist_utils.DistInfo())
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.out = Path(cfg.out)
        self.split = sp = split_data(cfg.data)
        if len(sp.train_rows) == 0:
            raise ValueError("no training clips left after the split")
        labels = np.asarray(sp.train_store.labels)
        self.num_classes = int(labels.shape[1])
        single = bool((labels[sp.train_rows].sum(axis=1) == 1).all())
        self.loss_kind = cfg.loss if cfg.loss != "auto" else ("ce" if single else "bce")
        self.select_metric = cfg.select_metric if cfg.select_metric != "auto" else ("acc" if self.loss_kind == "ce" else "mAP")

        self.model, self.ckpt, self.source = build_classifier(cfg.model, cfg.mode, self.num_classes, cfg.seed)
        self.target_length = int(cfg.data.target_length or (self.ckpt or {}).get("target_length") or 1024)
        self.model.fit_grid(self.target_length)
        if self.ckpt is not None:
            for store in dict.fromkeys((sp.train_store, sp.test_store)):
                check_front_end(self.ckpt, cfg.model.checkpoint, store, cfg.data.allow_front_end_mismatch)
        self.model.to(self.device)
        self.data = FinetuneData(cfg, sp, self.target_length, resolve_normalizer(cfg.data.normalizer, self.ckpt),
                                 self.device)
        self.normalizer = self.data.train_set.normalizer

        if cfg.mode == "linprobe":
            for p in self.model.encoder.parameters():
                p.requires_grad_(False)
            params = list(self.model.head.parameters())
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        self.groups = finetune_param_groups(self.model, cfg.optim, params=params)
        self.params = [p for g in self.groups for p in g["params"]]
        self.steps_per_epoch = self.data.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.schedule = _schedule(cfg.optim, cfg.epochs, self.steps_per_epoch)
        o = cfg.optim
        self.optimizer = build_optimizer(self.groups, o.optimizer, lr=o.lr, betas=o.betas, eps=o.eps)
        self.scaler = grad_scaler(self.amp_dtype)

        # state saved each epoch
        self.epoch = 0  # finished epochs
        self.step = 0
        has_val = self.data.eval_sets["val"] is not None
        self.selection = Selection(self.select_metric, selection_split(cfg.select_on_test, has_val))
        self.weight_average = WeightAverage(cfg.wa_start, cfg.wa_end)
        self.ensemble = Ensemble(cfg.ensemble)
        self.features: Optional[Dict[str, Tuple[Tensor, Tensor]]] = None  # the linear probe's embeddings

    # -------------------------------------------------------------------------------- evaluation
    def predict(self, name: str, model: Optional[Classifier] = None) -> Tuple[Tensor, Tensor]:
        """``(scores, targets)`` of split ``name`` ("val" or "test")."""
        model = model or self.model
        if self.features is not None:
            z, t = self.features[name]
            return evaluation.predict_features(model, z, t, self.device, self.loss_kind)
        return evaluation.predict(model, self.data.eval_loader(name), self.device, self.amp_dtype, self.loss_kind)

    def _prepare_linprobe(self) -> None:
        """Embed every clip once; standardise with the training embeddings' statistics."""
        sp = self.split
        logger.info("embedding %d train, %d val, %d test clips", len(sp.train_rows), len(sp.val_rows), len(sp.test_rows))
        self.features = {}
        for name in ("train", "val", "test"):
            if self.data.eval_sets[name] is not None:
                z, t, _ = evaluation.embed(self.model, self.data.eval_loader(name), self.device, self.amp_dtype)
                self.features[name] = (z, t)
        z_train = self.features["train"][0]
        mean = z_train.mean(dim=0)
        std = z_train.std(dim=0, unbiased=False).clamp(min=1e-6)
        self.model.feature_mean.copy_(mean.to(self.device))
        self.model.feature_std.copy_(std.to(self.device))

    # -------------------------------------------------------------------------------- training
    def _seed_epoch(self, epoch: int) -> torch.Generator:
        # Drop-path and dropout use the global RNG: reseeding it per epoch makes a resumed
        # epoch draw what the uninterrupted run drew.
        torch.manual_seed(int(seed_generator(self.cfg.seed, 0, 4000 + epoch).initial_seed()) % (2**63))
        return seed_generator(self.cfg.seed, 0, 1000 + epoch)

    def _batches(self, epoch: int) -> Iterator[Tuple[Tensor, Tensor, Optional[Tensor]]]:
        """Training batches ``(x, y, lengths)``: fbank ``(B, T, F)``, or the probe's embeddings."""
        if self.features is not None:
            return self.data.feature_batches(*self.features["train"], epoch)
        return self.data.train_batches(epoch)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg = self.cfg
        g = self._seed_epoch(epoch)
        self.model.train()
        if self.features is None and cfg.mode == "linprobe":
            raise TrainingError("linear probe features were not prepared")
        if cfg.mode == "linprobe":
            self.model.encoder.eval()
        total, n, lr = 0.0, 0, 0.0
        for x, y, lengths in self._batches(epoch):
            lr = self.schedule(min(self.step, self.total_steps - 1))
            set_lr(self.optimizer, lr)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast(self.device, self.amp_dtype):
                if self.features is not None:
                    logits = self.model.forward_head(x)
                else:
                    x, y = _augment(x, y, lengths, g, cfg.augment, self.data.train_set)
                    logits = self.model(x.unsqueeze(1))
            loss = _loss(logits, y, self.loss_kind, cfg.bce_reduction)
            if not bool(torch.isfinite(loss.detach())):
                raise TrainingError(f"non-finite loss at epoch {epoch + 1} step {self.step + 1} (lr {lr:.3g}); "
                                    f"the last good state is {self.out / 'checkpoint.pt'}: lower optim.lr or use fp32, then --resume")
            self.optimizer.zero_grad(set_to_none=True)
            backward(loss, self.scaler)
            optimizer_step(self.optimizer, self.scaler, self.params, cfg.optim.clip_grad)
            self.step += 1
            total += float(loss.detach())
            n += 1
        return {"loss": total / max(n, 1), "lr": lr}

    def _end_epoch(self, epoch: int, logs: Dict[str, float], seconds: float) -> Dict[str, Any]:
        """Evaluate after epoch ``epoch`` (0-based): its metrics record, best.pt if it is the best."""
        record: Dict[str, Any] = {"epoch": epoch + 1, "step": self.step, **logs, "seconds": seconds}
        scores = {}
        for name in ("val", "test"):
            if self.data.eval_sets[name] is not None:
                scores[name], targets = self.predict(name)
                record[name] = classification_metrics(scores[name], targets)
        self.ensemble.add_epoch(scores)
        if self.selection.update(epoch, record):
            save_checkpoint(self.out / "best.pt", self._payload(None))
        self.weight_average.add(epoch + 1, self.model)
        return record

    # -------------------------------------------------------------------------------- saving
    def _payload(self, train: Optional[Dict[str, Any]], state_dict: Optional[Mapping[str, Tensor]] = None) -> Dict[str, Any]:
        fb = self.split.train_store.fbank_config
        norm = self.normalizer
        lm = self.split.train_store.label_map
        return native_payload(
            self.model, family="classifier", fbank=None if fb is None else fb.to_dict(),
            normalizer=norm.to_dict() if hasattr(norm, "to_dict") else None, target_length=self.target_length,
            meta={"task": self.cfg.mode, "init": self.cfg.model.init, "source_checkpoint": self.cfg.model.checkpoint,
                  "epoch": self.epoch, "labels": None if lm is None else [str(x) for x in lm["mid"]]},
            train=train, state_dict=state_dict)

    def save(self) -> Path:
        train = {
            "config": self.cfg.to_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch, "step": self.step,
            **self.selection.state(), **self.weight_average.state(), **self.ensemble.state(),
        }
        return save_checkpoint(self.out / "checkpoint.pt", self._payload(train))

    def resume(self) -> bool:
        """Continue after the last finished epoch in ``out``; False (fresh start) if none."""
        path = self.out / "checkpoint.pt"
        if not path.is_file():
            done = [name for name in ("results.json", "model.pt") if (self.out / name).exists()]
            if done:
                raise RunFolderError(f"{self.out} holds a finished run ({', '.join(done)}) but no checkpoint.pt to "
                                     "resume from: pass --overwrite to train it again, or a new --out")
            logger.info("no checkpoint in %s: starting from epoch 0", self.out)
            truncate_metrics(self.out / "metrics.jsonl", "epoch", 0)
            return False
        ckpt, train = load_training_state(path)
        old, now = train["config"], self.cfg.to_dict()
        for config in (old, now):  # a switch that changes no number of the run
            config.get("data", {}).pop("allow_front_end_mismatch", None)
        for key in ("mode", "model", "data", "seed"):
            if old.get(key) != now.get(key):
                raise TrainingError(f"{path}: cannot resume with a different {key} ({old.get(key)!r} then, {now.get(key)!r} now)")
        restore_training_state(self.model, self.optimizer, self.scaler, ckpt, path)
        self.epoch, self.step = int(train["epoch"]), int(train["step"])
        for part in (self.selection, self.weight_average, self.ensemble):
            part.load_state(train)
        truncate_metrics(self.out / "metrics.jsonl", "epoch", self.epoch)
        logger.info("resumed from %s after epoch %d", path, self.epoch)
        return True

    # -------------------------------------------------------------------------------- loop
    def run(self) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_config(self.out, cfg.to_dict())
        if cfg.mode == "linprobe":
            self._prepare_linprobe()
        metrics_path = self.out / "metrics.jsonl"
        bar = tqdm(total=cfg.epochs, initial=self.epoch, disable=not cfg.progress, desc=f"{cfg.mode} {self.source}",
                   dynamic_ncols=True)
        try:
            while self.epoch < cfg.epochs:
                t0 = time.perf_counter()
                logs = self.train_epoch(self.epoch)
                self.epoch += 1
                record = self._end_epoch(self.epoch - 1, logs, time.perf_counter() - t0)
                append_metrics(metrics_path, json_clean(record))
                self.save()
                bar.update(1)
                shown = {k: f"{record[k][self.select_metric]:.4g}" for k in ("val", "test") if k in record}
                bar.set_postfix({"loss": f"{logs['loss']:.4g}", **shown})
        finally:
            bar.close()
        return self.finish()

    def finish(self) -> Dict[str, Any]:
        """Write ``model.pt`` (the selected model), the extra rows and ``results.json``."""
        # best.pt goes only after results.json is written: a run killed in between resumes here
        # and finds the selected model in best.pt, or in model.pt once that copy is complete.
        src = self.out / "best.pt"
        if not src.exists():
            src = self.out / "model.pt"
        best = load_checkpoint(src)
        if src.name == "best.pt":
            with atomic_path(self.out / "model.pt") as partial:  # a full disk: OutputError, model.pt kept
                shutil.copyfile(src, partial)
        extra = [row for row in (self._weight_average_row(best["model"]), self.ensemble.row(self.data.targets))
                 if row is not None]
        test_ids = [str(i) for i in np.asarray(self.split.test_store.ids)[self.split.test_rows]]
        write_atomic(self.out / "test_clips.txt", "".join(i + "\n" for i in test_ids))
        results = json_clean(self._results(extra, len(test_ids)))
        write_atomic(self.out / "results.json", json.dumps(results, indent=2) + "\n")
        (self.out / "best.pt").unlink(missing_ok=True)
        return results

    def _weight_average_row(self, selected: Mapping[str, Tensor]) -> Optional[Dict[str, Any]]:
        avg = self.weight_average.averaged(self.model, selected)
        if avg is None:
            return None
        avg.to(self.device)
        metrics = {n: classification_metrics(*self.predict(n, avg)) if self.data.eval_sets[n] is not None else None
                   for n in ("val", "test")}
        save_checkpoint(self.out / "model_wa.pt", self._payload(None, state_dict=avg.state_dict()))
        return {"name": "weight_average", "epochs": [self.cfg.wa_start, self.cfg.wa_end], "metrics": metrics}

    def _results(self, extra: List[Dict[str, Any]], num_test_clips: int) -> Dict[str, Any]:
        cfg, m, sp = self.cfg, self.cfg.model, self.split
        return {
            "task": cfg.mode,
            "init": m.init,
            "checkpoint": m.checkpoint if m.init == "pretrained" else None,
            "model": m.preset if m.init == "random" else (self.source or "unknown"),
            "source": self.source,
            "split": sp.description,
            "selected_on": self.selection.selected_on,
            "selected_epoch": self.selection.best["epoch"],
            "select_metric": self.select_metric,
            "loss": self.loss_kind,
            "metrics": self.selection.best["metrics"],
            "extra": extra,
            "num_train_clips": int(len(sp.train_rows)),
            "num_val_clips": int(len(sp.val_rows)),
            "num_test_clips": num_test_clips,
            "test_clips": "test_clips.txt",
            "epochs": cfg.epochs,
            "steps": self.step,
        }


def finetune(cfg: FinetuneConfig, *, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Run ``cfg`` (either mode) and return the ``results.json`` dict. A ``cfg.out`` that holds
    a run needs ``resume`` (continue it) or ``overwrite`` (remove its files first); see
    :func:`audiossl.train.loop.claim_out`."""
    claim_out(Path(cfg.out), RUN_FILES, resume=resume, overwrite=overwrite)
    trainer = Finetuner(cfg)
    if resume:
        trainer.resume()
    return trainer.run()
