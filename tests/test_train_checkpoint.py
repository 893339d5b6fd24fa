"""Native checkpoints: round trip, weights_only loading, refusal of pickles without trust,
stand-ins for classes that are not installed, and errors that name the keys."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from audiossl.models.registry import build_model
from audiossl.checkpoint import CheckpointError, Stub, check_state_dict, load_checkpoint, load_foreign, native_payload, save_checkpoint
from audiossl.models.registry import encoder_from_checkpoint, model_from_checkpoint


def test_round_trip_rebuilds_the_model_and_its_encoders(tmp_path: Path) -> None:
    model = build_model("eat_tiny")
    path = save_checkpoint(tmp_path / "m.pt", native_payload(
        model, family="eat", fbank={"num_mel_bins": 128}, normalizer={"mean": -4.0, "std": 4.5}, target_length=256))
    assert not (tmp_path / "m.pt.partial").exists()
    rebuilt = model_from_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))
    student, ckpt = encoder_from_checkpoint(path)
    teacher, _ = encoder_from_checkpoint(path, which="teacher")
    assert student is not teacher and ckpt["target_length"] == 256 and ckpt["normalizer"] == {"mean": -4.0, "std": 4.5}
    enc = build_model("ijepa_audio_tiny")
    save_checkpoint(tmp_path / "j.pt", native_payload(enc, family="jepa"))
    default, _ = encoder_from_checkpoint(tmp_path / "j.pt")
    assert torch.equal(default.patch_embed.proj.weight, model_from_checkpoint(tmp_path / "j.pt").target_encoder.patch_embed.proj.weight)


def test_bare_encoders_are_a_checkpoint_family(tmp_path: Path) -> None:
    enc = build_model("maeast_patch_tiny").encoder
    save_checkpoint(tmp_path / "e.pt", native_payload(enc, family="encoder"))
    got, _ = encoder_from_checkpoint(tmp_path / "e.pt")
    assert type(got).__name__ == "Encoder" and got.config == enc.config


def test_pickled_checkpoints_need_trust_and_missing_classes_become_stubs(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"args": argparse.Namespace(embed_dim=64), "model": {"w": torch.ones(2)}}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_foreign(path)
    with pytest.raises(CheckpointError, match="audiossl convert"):
        load_checkpoint(path)
    assert load_foreign(path, trust=True)["args"].embed_dim == 64

    # a class whose module is gone (fairseq/omegaconf on a machine without them)
    script = textwrap.dedent(f"""
        import sys, types, torch
        mod = types.ModuleType("gone_pkg"); sys.modules["gone_pkg"] = mod
        class Cfg:
            pass
        Cfg.__module__ = "gone_pkg"; mod.Cfg = Cfg
        c = Cfg(); c.model = {{"depth": 3}}
        torch.save({{"cfg": c, "model": {{"w": torch.zeros(3)}}}}, {str(tmp_path / 'fs.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    obj = load_foreign(tmp_path / "fs.pt", trust=True)
    assert isinstance(obj["cfg"], Stub) and obj["cfg"].model == {"depth": 3} and obj["model"]["w"].shape == (3,)


def test_truncated_and_mismatched_checkpoints_name_the_problem(tmp_path: Path) -> None:
    model = build_model("maeast_patch_tiny")
    path = save_checkpoint(tmp_path / "m.pt", native_payload(model, family="maeast"))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*truncated"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
    sd = dict(model.state_dict())
    sd.pop("encoder.patch_embed.proj.weight")
    sd["extra.weight"] = torch.zeros(1)
    vec = next(k for k, v in sd.items() if v.dim() == 1 and k.startswith("encoder.blocks."))
    sd[vec] = torch.zeros(5)
    with pytest.raises(CheckpointError) as err:
        check_state_dict(model, sd, path="x.pt")
    msg = str(err.value)
    assert "missing keys [encoder.patch_embed.proj.weight]" in msg and "unexpected keys [extra.weight]" in msg
    assert f"{vec}: checkpoint (5,) vs model (64,)" in msg
    payload = torch.load(path, weights_only=True)
    payload["model"] = sd
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt.*missing keys"):
        model_from_checkpoint(tmp_path / "bad.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a native audiossl checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
