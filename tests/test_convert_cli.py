"""`audiossl convert` end to end: Hugging Face folders (safetensors + config.json +
preprocessor_config.json) in and out, converter options, and the trust flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audiossl.convert import convert_payload, read_safetensors, write_safetensors
from audiossl.checkpoint import load_checkpoint, save_checkpoint
from audiossl.models.registry import encoder_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "convert"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiossl", "convert", *args], capture_output=True, text=True)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.ones(2, dtype=torch.bfloat16),
               "empty": torch.zeros(0, 3)}
    got = read_safetensors(write_safetensors(tmp_path / "m.safetensors", tensors))
    assert set(got) == set(tensors) and all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in tensors.items())


def test_hf_ast_folder_out_and_back_in(tmp_path: Path) -> None:
    fx = torch.load(FIXTURES / "ast_hf.pt", weights_only=True)
    native = save_checkpoint(tmp_path / "ast.pt", convert_payload("ast_hf", fx["checkpoint"], hf_config=fx["config"]))
    out = _cli("--export", "ast_hf", str(native), str(tmp_path / "hf"))
    assert out.returncode == 0, out.stderr
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {"model.safetensors", "config.json", "preprocessor_config.json"}
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    back = _cli("--from", "ast_hf", str(tmp_path / "hf"), str(tmp_path / "back.pt"))
    assert back.returncode == 0, back.stderr
    a, b = load_checkpoint(native), load_checkpoint(tmp_path / "back.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["normalizer"] == pytest.approx({"mean": pre["mean"], "std": pre["std"]})
    enc, _ = encoder_from_checkpoint(tmp_path / "back.pt")
    with torch.no_grad():
        hidden = enc(fx["input"].unsqueeze(1) if fx["input"].dim() == 3 else fx["input"]).x
    assert hidden.shape[0] == fx["input"].shape[0]


def test_options_reach_the_importer_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    fx = torch.load(FIXTURES / "ast.pt", weights_only=True)
    src = tmp_path / "ast_upstream.pth"
    torch.save(fx["checkpoint"], src)
    bad = _cli("--from", "ast", str(src), str(tmp_path / "x.pt"), "--option", "colour=blue")
    assert bad.returncode == 1 and "takes no option ['colour']" in bad.stderr
    ok = _cli("--from", "ast", str(src), str(tmp_path / "y.pt"), "--option", "num_heads=4")
    assert ok.returncode == 0, ok.stderr
    assert load_checkpoint(tmp_path / "y.pt")["config"]["num_heads"] == 4


def test_pickled_upstream_files_need_the_trust_flag(tmp_path: Path) -> None:
    import argparse

    fx = torch.load(FIXTURES / "audiomae_finetuned.pt", weights_only=True)
    ckpt = dict(fx["checkpoint"]) if "checkpoint" in fx else {"model": fx["model"]}
    ckpt["args"] = argparse.Namespace(dataset="audioset")
    src = tmp_path / "audiomae.pth"
    torch.save(ckpt, src)
    refused = _cli("--from", "audiomae", str(src), str(tmp_path / "a.pt"))
    assert refused.returncode == 1 and "--trust-checkpoint" in refused.stderr and not (tmp_path / "a.pt").exists()
    trusted = _cli("--from", "audiomae", str(src), str(tmp_path / "a.pt"), "--trust-checkpoint", "--option", "num_heads=4")
    assert trusted.returncode == 0, trusted.stderr


def test_the_command_offers_every_importer() -> None:
    """The CLI keeps its own list (so --help imports no torch); it must name every importer."""
    from audiossl import convert
    from audiossl.commands import convert as command

    assert set(command.SOURCES) == set(convert.SOURCES)
