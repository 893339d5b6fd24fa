"""torch.distributed glue: one process per device under ``torchrun``, DDP for gradients.

Nothing here launches processes; ``torchrun --nproc_per_node N -m audiossl pretrain ...`` does,
and :func:`init` reads the environment it sets. Without it every helper is a no-op, so the same
code runs on one CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group that ``torchrun`` describes (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a 1-D tensor of statistics (identity without a process group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one (so all ranks stop together)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (e.g. RNG states), in rank order, on every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class ResumableSampler(Sampler[int]):
    """Epoch-seeded shuffled order, split across ranks, that can start mid-epoch.

    Epoch ``e`` uses the permutation drawn from ``(seed, e)``; rank ``r`` of ``W`` takes items
    ``r, r + W, ...`` of it (padded by wrapping so every rank has the same count, as
    ``DistributedSampler``). ``start`` skips that many of this rank's items, which is how a
    resumed run continues from the exact batch where the checkpoint was taken.
    """

    def __init__(self, num_items: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)

    @property
    def per_rank(self) -> int:
        return -(-self.num_items // self.world_size)

    def order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            order = rng.permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        total = self.per_rank * self.world_size
        if total > self.num_items:
            order = np.concatenate([order, order[: total - self.num_items]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch)[self.start :].tolist())


def rng_state(generator: Optional[torch.Generator] = None) -> dict:
    """Every RNG state a step may consume (as tensors/ints only, for ``weights_only`` loading)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: Optional[torch.Generator] = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
