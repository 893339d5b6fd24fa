"""audiossl.train.loop: the parts both engines share (precision, seeded streams, the optimiser
update, run files, restoring training state), on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from audiossl.checkpoint import CheckpointError, native_payload, save_checkpoint
from audiossl.train.distributed import DistInfo
from audiossl.train.loop import (
    append_metrics,
    autocast,
    autocast_dtype,
    backward,
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


def test_cpu_runs_in_fp32_without_a_scaler() -> None:
    cpu = device_for("cpu", DistInfo())
    assert cpu == torch.device("cpu")
    for precision in ("auto", "fp32", "bf16", "fp16"):
        assert autocast_dtype(precision, cpu) is None
    assert grad_scaler(None) is None and grad_scaler(torch.bfloat16) is None
    with autocast(cpu, None):
        assert not torch.is_autocast_enabled("cpu")
    assert device_for("cuda", DistInfo(rank=1, world_size=2, local_rank=1)) == torch.device("cuda", 1)


def test_seeded_streams_repeat_and_differ() -> None:
    a = torch.rand(4, generator=seed_generator(1, 0, 7))
    assert torch.equal(a, torch.rand(4, generator=seed_generator(1, 0, 7)))
    for other in (seed_generator(2, 0, 7), seed_generator(1, 1, 7), seed_generator(1, 0, 8)):
        assert not torch.equal(a, torch.rand(4, generator=other))


def _grads(model: nn.Module) -> list:
    return [p.grad.clone() for p in model.parameters()]


def test_optimizer_step_clips_only_when_asked() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    params = list(model.parameters())

    backward((model(torch.randn(5, 3)) * 100).sum(), None)
    before = _grads(model)
    assert optimizer_step(opt, None, params, None) is None
    norm = optimizer_step(opt, None, params, math.inf)  # measured, not clipped
    assert float(norm) == pytest.approx(float(torch.cat([g.flatten() for g in before]).norm()))
    assert all(torch.equal(g, p.grad) for g, p in zip(before, params))
    optimizer_step(opt, None, params, 1.0)
    assert float(torch.cat([p.grad.flatten() for p in params]).norm()) == pytest.approx(1.0, rel=1e-4)


def test_run_files(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_metrics(path, {"step": step, "epoch": step // 2})
    truncate_metrics(path, "step", 2)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    truncate_metrics(path, "epoch", 0)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1]
    truncate_metrics(tmp_path / "missing.jsonl", "step", 0)
    assert not (tmp_path / "missing.jsonl").exists()

    write_atomic(tmp_path / "a.txt", "x\n")
    write_config(tmp_path, {"b": 1, "a": {"c": 2}})
    assert (tmp_path / "a.txt").read_text() == "x\n" and not list(tmp_path.glob("*.partial"))
    assert (tmp_path / "config.yaml").read_text() == "b: 1\na:\n  c: 2\n"  # field order, not sorted


class _Config:
    def to_dict(self) -> dict:  # what native_payload stores as the model's config
        return {"in": 3, "out": 2}


def _linear() -> nn.Linear:
    model = nn.Linear(3, 2)
    model.config = _Config()
    return model


def test_training_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _linear()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    backward(model(torch.randn(4, 3)).sum(), None)
    optimizer_step(opt, None, list(model.parameters()), None)
    save_checkpoint(tmp_path / "ckpt.pt", native_payload(model, family="test", train={"optimizer": opt.state_dict(),
                                                                                     "scaler": None, "step": 1}))
    save_checkpoint(tmp_path / "model.pt", native_payload(model, family="test"))

    other = _linear()
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    ckpt, train = load_training_state(tmp_path / "ckpt.pt")
    assert train["step"] == 1
    restore_training_state(other, other_opt, None, ckpt, tmp_path / "ckpt.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(CheckpointError, match="no training state"):
        load_training_state(tmp_path / "model.pt")
