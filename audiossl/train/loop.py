"""The parts of a training loop that the pretraining and fine-tuning engines share.

Device and mixed precision (bf16/fp16 autocast on CUDA, a grad scaler for fp16 only), the
seeded random streams that make a resumed run draw what the uninterrupted one drew, the
optimiser update (unscale, clip, step), the files of a run directory (``config.yaml``,
``metrics.jsonl``, atomic text writes) and restoring model, optimiser and scaler from a
checkpoint's training state. What differs between the engines (when to save, which checkpoint
to resume from, what a metrics record holds) stays in each engine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from audiossl.checkpoint import CheckpointError, load_checkpoint, load_state_dict
from audiossl.files import OutputError, atomic_write_text, is_no_space, no_space_error
from audiossl.train import distributed as dist_utils

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible resume); says what is kept."""


class RunFolderError(TrainingError):
    """The output folder holds a run that this one would mix with: the command line must say
    what to do with it (``--resume``, another ``--out``, ``--overwrite``)."""


# ------------------------------------------------------------------------------------- device
def device_for(name: str, info: dist_utils.DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", info.local_rank)
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def grad_scaler(amp_dtype: Optional[torch.dtype]) -> Optional[torch.amp.GradScaler]:
    """bf16 has fp32's range and needs no loss scaling; fp16 does."""
    return torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]) -> ContextManager[Any]:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def seed_generator(seed: int, rank: int, stream: int = 0) -> torch.Generator:
    """A generator for one named random stream of a run, independent of every other stream."""
    import numpy as np

    words = np.random.SeedSequence([seed, rank, stream, 0x6D61736B]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return g


# ------------------------------------------------------------------------------------- update
def backward(loss: torch.Tensor, scaler: Optional[torch.amp.GradScaler]) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
                   params: Sequence[nn.Parameter], max_norm: Optional[float]) -> Optional[torch.Tensor]:
    """Unscale, clip the gradients' total norm to ``max_norm`` and step; returns the norm before
    clipping (``None``: no clipping and no norm; ``math.inf``: the norm without clipping)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if max_norm is not None else None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return norm


# ------------------------------------------------------------------------------------- run files
def write_atomic(path: Path, text: str) -> None:
    """``path`` replaced whole or not at all (a full disk raises :class:`~audiossl.files.OutputError`)."""
    atomic_write_text(path, text)


def write_config(out: Path, config: Mapping[str, Any]) -> None:
    """``out/config.yaml``: the resolved configuration, in the order of its dataclass fields."""
    import yaml

    write_atomic(out / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line, appended by a single ``write`` on an unbuffered ``O_APPEND`` descriptor:
    the record reaches the file whole when the process dies after the call, and a power loss
    or full disk during it leaves at most a torn last line, which :func:`truncate_metrics`
    drops."""
    data = (json.dumps(record) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            done = os.write(fd, data)
            while done < len(data):  # a short write: only on a full disk, which the next write reports
                done += os.write(fd, data[done:])
        finally:
            os.close(fd)
    except OSError as e:
        if is_no_space(e):
            raise no_space_error(path, e, kept="the records before this one are kept") from e
        raise OutputError(path, f"cannot append a metrics record ({e.strerror or e})") from e


def _metric_lines(path: Path) -> List[Tuple[str, Dict[str, Any]]]:
    lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    found, torn = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            found.append((line, record))
        else:
            torn.append(number)
    if torn:
        tail = torn == [len(lines)]  # the last line, without its newline
        logger.warning("%s: dropped %s (torn by an interrupted write)", path,
                       "the last line" if tail else f"lines {torn}, which are not JSON records")
    return found


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a line that is not a JSON record (the torn tail of a
    write cut by a power loss or a full disk) is dropped with a warning naming it."""
    return [record for _, record in _metric_lines(path)] if path.exists() else []


def truncate_metrics(path: Path, key: str, last: int) -> None:
    """Keep the records whose ``key`` ("step", "epoch") is at most ``last``, the checkpoint's:
    a resumed run writes the later ones again. Torn lines go too (see :func:`read_metrics`)."""
    if not path.exists():
        return
    keep = [line for line, r in _metric_lines(path) if isinstance(r.get(key), (int, float)) and r[key] <= last]
    write_atomic(path, "".join(line + "\n" for line in keep))


# ------------------------------------------------------------------------------------- run folder
def run_files(out: Path, patterns: Sequence[str]) -> List[Path]:
    """The files in ``out`` that a run writes (``patterns``: glob patterns of their names), with
    the ``.partial`` leftovers of interrupted writes; sorted by name."""
    if not out.is_dir():
        return []
    names = list(patterns) + [p + ".partial" for p in patterns]
    return sorted(p for p in out.iterdir() if p.is_file() and any(fnmatch.fnmatchcase(p.name, n) for n in names))


def _names(paths: Sequence[Path], most: int = 6) -> str:
    names = [p.name for p in paths]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def claim_out(out: Path, patterns: Sequence[str], *, resume: bool, overwrite: bool, remove: bool = True) -> None:
    """Make ``out`` fit for a new run, or the run it holds fit to continue.

    A folder that is missing, empty or holds none of a run's files is used as it is. One that
    holds a run needs ``resume`` (continue it; the engine checks there is something to continue)
    or ``overwrite`` (its run files are removed first, and said; every other file stays and is
    named); anything else raises :class:`RunFolderError`: a second run would overwrite the
    first's results, and its checkpoints and metrics would mix with the first's. ``remove``:
    whether this process deletes (the main one of a distributed run)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: --resume continues the run in the folder, "
                         "--overwrite removes it")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: the output folder is a file")
    found = run_files(out, patterns)
    if not found or resume:
        return
    if not overwrite:
        raise RunFolderError(f"{out} holds a run ({_names(found)}): pass --resume to continue it, a new --out, "
                             "or --overwrite to clear it first")
    if not remove:
        return
    for path in found:
        path.unlink(missing_ok=True)
    others = sorted(out.iterdir())
    logger.warning("--overwrite: removed the previous run's %d files from %s (%s)%s", len(found), out, _names(found, 20),
                   f"; kept the {len(others)} other entries: {_names(others)}" if others else "")


# ------------------------------------------------------------------------------------- front end
def check_front_end(ckpt: Mapping[str, Any], ckpt_path: Any, store: Any, allow: bool) -> None:
    """A checkpoint trained on another fbank than the store's would see features it never saw:
    a :class:`CheckpointError` naming both files and the fields, unless ``allow``
    (``data.allow_front_end_mismatch``), which keeps it a warning. Either side without a
    recorded front end is not compared."""
    from audiossl.features import FbankConfig

    theirs, ours = ckpt.get("fbank"), store.fbank_config
    if not theirs or ours is None:
        return
    diff = FbankConfig.from_dict(theirs).diff(ours)
    if not diff:
        return
    fields = ", ".join(f"{k} {a!r} (checkpoint) vs {b!r} (store)" for k, (a, b) in diff.items())
    what = f"its front end differs from the one of the store {store.path}: {fields}"
    if allow:
        logger.warning("%s: %s; training anyway (data.allow_front_end_mismatch)", ckpt_path, what)
        return
    raise CheckpointError(ckpt_path, f"{what}. The model would see features it was not trained on: make the store "
                                     "with the checkpoint's front end, or set data.allow_front_end_mismatch: true "
                                     "to train anyway")


# ------------------------------------------------------------------------------------- resume
def load_training_state(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(checkpoint, checkpoint["train"])``; a checkpoint without training state cannot resume."""
    ckpt = load_checkpoint(path)
    train = ckpt.get("train")
    if not train:
        raise CheckpointError(path, "has no training state to resume from")
    return ckpt, train


def restore_training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
                           ckpt: Mapping[str, Any], path: Path) -> None:
    """Model weights, optimiser state and (when both sides use one) the grad scaler's scale."""
    train = ckpt["train"]
    load_state_dict(model, ckpt["model"], path=path)
    optimizer.load_state_dict(train["optimizer"])
    if scaler is not None and train.get("scaler"):
        scaler.load_state_dict(train["scaler"])

