"""The pretraining engine: config resolution, optimiser groups and schedules, every family
through the loop, exact resume after SIGKILL, the NaN guard, and DDP with two gloo processes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
import torch

from audiossl.checkpoint import load_checkpoint
from audiossl.models.registry import build_model, model_from_checkpoint
from audiossl.train.optim import Schedule, build_optimizer, cosine_ramp, layer_id, param_groups
from audiossl.train.pretrain import (
    FAMILY_OPTIM,
    PretrainConfig,
    Pretrainer,
    TrainingError,
    apply_overrides,
    checkpoints,
    load_config,
    pretrain,
)

REPO = Path(__file__).resolve().parents[1]


def _cfg(store: Path, out: Path, model: str = "eat_tiny", **kw) -> PretrainConfig:
    d = {
        "model": model,
        "data": {"train": str(store), "target_length": 128, "batch_size": 2, "num_workers": 0},
        "steps": 4, "save_every": 2, "log_every": 1, "out": str(out), "progress": False,
    }
    return PretrainConfig.from_dict(apply_overrides(d, [f"--{k}={v}" for k, v in kw.items()]))


def _metrics(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _cli(*args: str, env_extra: dict | None = None) -> List[str]:
    return [sys.executable, "-m", "audiossl", "pretrain", *args]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


# ------------------------------------------------------------------------------------- config
def test_every_family_schedule_is_a_fraction_of_the_run() -> None:
    # An absolute warm-up (SSAST's 1000 steps) makes a 2 000-step run half warm-up: every
    # family's lengths are fractions, so a short run is shaped like the paper's.
    for prefix, values in FAMILY_OPTIM:
        assert 0 <= values["warmup"] < 1, prefix
    cfg = PretrainConfig.from_dict({"model": "ssast_base_patch", "data": {"train": "x.h5"}, "steps": 930_000})
    assert round(cfg.optim.warmup * cfg.steps) == 1000  # SSAST's own run: its 1000-step warm-up


def test_family_defaults_are_the_papers_and_yaml_and_cli_override_them(tmp_path: Path) -> None:
    eat = PretrainConfig.from_dict({"model": "eat_base", "data": {"train": "x.h5"}})
    assert (eat.optim.optimizer, eat.optim.lr, eat.optim.betas, eat.optim.weight_decay, eat.optim.clip_grad) == (
        "adamw", 5e-4, [0.9, 0.95], 0.05, 4.0)
    ssast = PretrainConfig.from_dict({"model": "ssast_base_patch", "data": {"train": "x.h5"}})
    assert (ssast.optim.optimizer, ssast.optim.betas, ssast.optim.weight_decay) == ("adam", [0.95, 0.999], 5e-7)
    maeast = PretrainConfig.from_dict({"model": "maeast_patch_base", "data": {"train": "x.h5"}})
    assert (maeast.optim.betas, maeast.optim.eps, maeast.optim.schedule, maeast.optim.clip_grad) == (
        [0.9, 0.98], 1e-6, "linear", 10.0)
    ijepa = PretrainConfig.from_dict({"model": "ijepa_vit_base", "data": {"train": "x.h5"}})
    assert (ijepa.optim.weight_decay, ijepa.optim.weight_decay_end, ijepa.optim.warmup_init_lr) == (0.04, 0.4, 2e-4)

    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("model: eat_tiny\ndata: {train: a.h5, batch_size: 3}\noptim: {lr: 0.01}\nsteps: 7\n")
    cfg = load_config(yaml_path, ["--optim.lr", "2e-3", "--data.batch_size=5", "--optim.betas", "[0.8, 0.9]"])
    assert (cfg.optim.lr, cfg.data.batch_size, cfg.steps, cfg.optim.betas) == (2e-3, 5, 7, [0.8, 0.9])
    assert cfg.optim.weight_decay == 0.05  # the family default survives a partial optim section
    with pytest.raises(ValueError, match="optim.lrr"):
        load_config(yaml_path, ["--optim.lrr", "1"])
    with pytest.raises(ValueError, match="needs a value"):
        apply_overrides({}, ["--steps"])


def test_mae_base_lr_scales_with_the_effective_batch(speech_store: Path, tmp_path: Path) -> None:
    cfg = _cfg(speech_store, tmp_path, "audiomae_tiny", **{"optim.accum_steps": 2})
    trainer = Pretrainer(cfg)
    assert trainer.effective_batch == 4
    assert trainer.peak_lr == pytest.approx(2e-4 * 4 / 256)


# ------------------------------------------------------------------------------------- optim
def test_weight_decay_exclusions_follow_each_objective() -> None:
    eat = build_model("eat_tiny")
    groups = param_groups(eat, 0.05, params=[p for p in eat.parameters() if p.requires_grad])
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "encoder.cls_token" in decay  # EAT decays its 3-D cls token (upstream: only 1-D/bias exempt)
    assert "encoder.blocks.0.attn.qkv.bias" in no_decay and "encoder.blocks.0.norm1.weight" in no_decay
    assert not any(n.startswith("teacher.") for g in groups for n in g["names"])  # frozen teacher left out

    mae = build_model("audiomae_tiny")
    no_decay = {n for g in param_groups(mae, 0.05) if g["weight_decay"] == 0 for n in g["names"]}
    assert {"encoder.cls_token", "mask_token"} <= no_decay


def test_layer_decay_scales_blocks_like_mae_lr_decay() -> None:
    model = build_model("eat_tiny").encoder
    depth = model.config.depth
    assert layer_id("patch_embed.proj.weight", depth, "") == 0
    assert layer_id("blocks.0.mlp.fc1.weight", depth, "") == 1
    assert layer_id("head.weight", depth, "") == depth + 1
    groups = param_groups(model, 0.05, layer_decay=0.75, depth=depth, encoder_prefix="")
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scale["blocks.0.mlp.fc1.weight"] == pytest.approx(0.75 ** depth)
    assert scale["cls_token"] == pytest.approx(0.75 ** (depth + 1))
    opt = build_optimizer(groups, "adamw", lr=1.0)
    assert isinstance(opt, torch.optim.AdamW)


def test_schedule_warmup_cosine_linear_constant() -> None:
    s = Schedule(1.0, total_steps=110, warmup_steps=10, kind="cosine", min_lr=0.1)
    assert [s(0), s(5), s(10)] == [0.0, 0.5, 1.0]
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    lin = Schedule(1.0, total_steps=20, warmup_steps=10, kind="linear")
    assert lin(15) == pytest.approx(0.5)
    const = Schedule(2.0, total_steps=20, warmup_steps=4, kind="constant", warmup_init_lr=1.0)
    assert [const(0), const(2), const(19)] == [1.0, 1.5, 2.0]
    assert cosine_ramp(0, 10, 0.04, 0.4) == pytest.approx(0.04) and cosine_ramp(10, 10, 0.04, 0.4) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        Schedule(1.0, total_steps=10, warmup_steps=11)


# ------------------------------------------------------------------------------------- loop
@pytest.mark.parametrize("model", ["eat_tiny", "maeast_patch_tiny", "maeast_frame_tiny", "ssast_mini_patch",
                                   "audiomae_tiny", "ijepa_audio_tiny"])
def test_every_family_pretrains_and_its_checkpoint_reloads(speech_store: Path, tmp_path: Path, model: str) -> None:
    extra = {"model_args.encoder": "{pos_grid: [8, 8]}"} if model.startswith("ssast") else {}
    final = pretrain(_cfg(speech_store, tmp_path, model, steps=3, save_every=3, **extra))
    records = _metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in records)
    assert "pred_var" in records[0] or "acc" in records[0]
    ckpt = load_checkpoint(final)
    assert "train" not in ckpt and ckpt["target_length"] == 128 and ckpt["fbank"]["num_mel_bins"] == 128
    assert ckpt["normalizer"] is not None and ckpt["meta"]["step"] == 3
    # The representation embed/HEAR/evaluate use by default is recorded with the weights.
    from audiossl.models.registry import embedding_of

    assert ckpt["meta"]["embed"] == embedding_of(ckpt["family"]) and ckpt["meta"]["embed"]["pooling"] in ("cls", "mean", "bands")
    rebuilt = model_from_checkpoint(final)
    trained = {k: v for k, v in ckpt["model"].items()}
    assert all(torch.equal(rebuilt.state_dict()[k], trained[k]) for k in trained)
    assert len(checkpoints(tmp_path)) == 1 and "train" in load_checkpoint(checkpoints(tmp_path)[0])


def test_loss_falls_and_teacher_tracks_the_student(speech_store: Path, tmp_path: Path) -> None:
    cfg = _cfg(speech_store, tmp_path, "maeast_patch_tiny", steps=20, save_every=20, log_every=5,
               **{"optim.lr": 1e-3, "optim.warmup": 3})
    pretrain(cfg)
    losses = [r["loss"] for r in _metrics(tmp_path)]
    assert losses[-1] < 0.8 * losses[0], losses

    out = tmp_path / "eat"
    cfg = _cfg(speech_store, out, "eat_tiny", steps=3, save_every=3,
               **{"model_args": "{ema_decay: 0.5, ema_end_decay: 0.5, ema_reference_steps: 3}"})
    model = model_from_checkpoint(pretrain(cfg))
    records = _metrics(out)
    assert [r["ema"] for r in records] == [0.5, 0.5, 0.5]
    # after 3 updates with tau 0.5 the teacher sits between its init and the student
    s = dict(model.encoder.named_parameters())
    moved = [float((t - s[n]).detach().abs().max()) for n, t in model.teacher.named_parameters() if s[n].requires_grad]
    assert max(moved) > 0


def test_adaptive_masker_trains_around_a_frozen_mae_from_a_checkpoint(speech_store: Path, tmp_path: Path) -> None:
    mae = pretrain(_cfg(speech_store, tmp_path / "mae", "audiomae_tiny", steps=2, save_every=2))
    out = tmp_path / "masker"
    final = pretrain(_cfg(speech_store, out, "masker_audiomae_tiny", steps=3, save_every=3, init_from=str(mae)))
    records = _metrics(out)
    assert all(0 < r["keep_fraction"] < 1 and r["rec_error_learned"] > 0 and r["rec_error_random"] > 0
               for r in records)
    frozen = load_checkpoint(mae)["model"]
    trained = load_checkpoint(final)["model"]
    assert all(torch.equal(trained["mae." + k], v) for k, v in frozen.items())  # the MAE never moved


def test_resume_after_sigkill_reproduces_the_uninterrupted_losses(speech_store: Path, tmp_path: Path) -> None:
    common = ["--model", "eat_tiny", "--data.train", str(speech_store), "--data.target_length", "128",
              "--data.batch_size", "2", "--data.num_workers", "1", "--steps", "8", "--save_every", "2",
              "--log_every", "1", "--progress", "false", "--model_args", "{ema_anneal_end_step: 8}",
              "--model_args.encoder", "{drop_path: 0.1}"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_cli(*common, "--out", str(ref)), check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen(_cli(*common, "--out", str(cut)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "checkpoint-00000004.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its step-4 checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "model.pt").exists()
    subprocess.run(_cli(*common, "--out", str(cut), "--resume"), check=True, env=_env(), capture_output=True)

    want, got = _metrics(ref), _metrics(cut)
    assert [r["step"] for r in got] == list(range(1, 9))
    keys = ("loss", "frame_loss", "utterance_loss", "lr", "ema", "grad_norm", "pred_var", "target_var")
    assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in want]
    a, b = load_checkpoint(ref / "model.pt")["model"], load_checkpoint(cut / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(speech_store: Path, tmp_path: Path) -> None:
    trainer = Pretrainer(_cfg(speech_store, tmp_path, "maeast_patch_tiny", steps=6))
    forward = trainer.net.forward

    def poisoned(x, generator=None):
        out = forward(x, generator=generator)
        if trainer.step == 2:
            out.loss = out.loss * float("nan")
        return out

    trainer.net.forward = poisoned
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3.*checkpoint-00000002\.pt"):
        trainer.run()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-00000002.pt"]
    state = load_checkpoint(tmp_path / "checkpoint-00000002.pt")
    assert state["train"]["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values()
                                                if v.is_floating_point())
    assert not (tmp_path / "model.pt").exists()


def test_cli_reports_config_errors_and_prints_the_resolved_config(tmp_path: Path) -> None:
    bad = subprocess.run(_cli("--model", "eat_tiny", "--optim.nope", "1"), env=_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "optim.nope" in bad.stderr
    ok = subprocess.run(_cli("--model", "eat_base", "--data.train", "x.h5", "--print-config"), env=_env(),
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "clip_grad: 4.0" in ok.stdout


def test_torchrun_two_gloo_processes_train_and_resume_exactly(speech_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    args = ["--model", "maeast_patch_tiny", "--data.train", str(speech_store), "--data.target_length", "128",
            "--data.batch_size", "2", "--data.num_workers", "0", "--steps", "4", "--save_every", "2",
            "--log_every", "1", "--progress", "false", "--device", "cpu", "--out", str(out)]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "audiossl", "pretrain", *args]
    done = subprocess.run(run, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first = _metrics(out)
    assert [r["step"] for r in first] == [1, 2, 3, 4]  # one record per step, written by rank 0 only
    state = load_checkpoint(out / "checkpoint-00000004.pt")["train"]
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # both ranks drew different masks (per-rank generators) but hold one model (DDP all-reduce)
    assert not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])

    (out / "checkpoint-00000004.pt").unlink()
    (out / "model.pt").unlink()
    again = subprocess.run(run + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [{k: v for k, v in r.items() if k != "clips_per_s"} for r in _metrics(out)] == [
        {k: v for k, v in r.items() if k != "clips_per_s"} for r in first]


def test_a_learned_table_that_does_not_fit_the_crop_fails_before_training(speech_store: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pos_grid: \[8, 8\]"):
        Pretrainer(_cfg(speech_store, tmp_path, "ssast_mini_patch"))


def test_step_schedule_matches_multisteplr_stepped_per_epoch() -> None:
    from audiossl.train.optim import epoch_milestones

    spe, epochs = 3, 9
    sched = Schedule(1.0, total_steps=spe * epochs, kind="step", milestones=epoch_milestones(6, 1, epochs, spe), gamma=0.5)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(range(6, 1000, 1)), gamma=0.5)
    for epoch in range(epochs):  # upstream: scheduler.step() after each epoch
        want = opt.param_groups[0]["lr"]
        assert [sched(epoch * spe + i) for i in range(spe)] == pytest.approx([want] * spe), epoch
        opt.step()
        ref.step()


def test_names_importable_before_the_shared_parts_moved_still_are() -> None:
    import audiossl.train.pretrain as pt
    from audiossl import checkpoint
    from audiossl.train import config, loop

    assert pt.TrainingError is loop.TrainingError and pt.PRECISIONS is loop.PRECISIONS
    assert pt.apply_overrides is config.apply_overrides and pt.yaml_loader is config.yaml_loader
    assert pt.CheckpointError is checkpoint.CheckpointError and pt.load_checkpoint is checkpoint.load_checkpoint
