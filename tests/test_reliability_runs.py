"""Issue 13, the training runs: re-running into a folder that holds a run (refused, or cleared
with ``--overwrite``), ``metrics.jsonl`` after ``--resume`` equal to the uninterrupted run's
record for record (averaged records, torn last line), and a checkpoint whose front end differs
from the store's (an error unless allowed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from audiossl.checkpoint import CheckpointError, load_checkpoint, native_payload, save_checkpoint
from audiossl.models.registry import build_model
from audiossl.train.config import apply_overrides
from audiossl.train.finetune import FinetuneConfig, Finetuner, finetune
from audiossl.train.loop import TrainingError, append_metrics, truncate_metrics
from audiossl.train.pretrain import PretrainConfig, Pretrainer, checkpoints, pretrain

REPO = Path(__file__).resolve().parents[1]
SR = 16000


# ------------------------------------------------------------------------------------- fixtures
def _pt_cfg(store: Path, out: Path, **kw) -> PretrainConfig:
    d = {
        "model": "maeast_patch_tiny",
        "data": {"train": str(store), "target_length": 128, "batch_size": 2, "num_workers": 0},
        "steps": 4, "save_every": 2, "log_every": 1, "out": str(out), "progress": False, "device": "cpu",
    }
    return PretrainConfig.from_dict(apply_overrides(d, [f"--{k}={v}" for k, v in kw.items()]))


def _records(out: Path, drop=("clips_per_s", "seconds")) -> List[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """12 one-second clips of three clearly different sounds, folds 1-4, precomputed."""
    from audiossl.data.manifest import Manifest, label_map_from_labels, read_manifest, write_manifest
    from audiossl.data.store import compute_stats, precompute, write_normalizer

    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    rows = []
    for kind in ("tone", "noise", "click"):
        for i in range(4):
            if kind == "tone":
                x = 0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t)
            elif kind == "noise":
                x = 0.1 * rng.standard_normal(SR)
            else:
                x = np.zeros(SR)
                x[:: int(rng.integers(800, 2000))] = 0.9
            path = root / f"{kind}_{i}.wav"
            sf.write(str(path), x.astype(np.float32), SR)
            rows.append({"id": f"{kind}_{i}", "path": str(path), "labels": (kind,), "fold": i + 1})
    table = pd.DataFrame(rows)
    write_manifest(Manifest(table, label_map_from_labels(table["labels"])), root / "manifest.csv")
    store = root / "store.h5"
    precompute(read_manifest(root / "manifest.csv"), store, workers=1, progress=False)
    write_normalizer(store, compute_stats(store, progress=False).to_normalizer())
    return store, root / "manifest.csv"


def _pretrained(path: Path, fbank=None) -> Path:
    torch.manual_seed(0)
    save_checkpoint(path, native_payload(build_model("eat_tiny"), family="eat", target_length=96, fbank=fbank,
                                         meta={"preset": "eat_tiny"}))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return _pretrained(tmp_path_factory.mktemp("ckpt") / "eat_tiny.pt")


def _ft_dict(store: Path, manifest: Path, ckpt: Path, out: Path, **top) -> dict:
    d = {
        "model": {"checkpoint": str(ckpt)},
        "data": {"store": str(store), "manifest": str(manifest), "split_column": "fold", "test_values": [1],
                 "target_length": 96, "batch_size": 4, "eval_batch_size": 32, "num_workers": 0, "val_fraction": 0.0},
        "mode": "linprobe", "epochs": 2, "out": str(out), "progress": False, "device": "cpu",
    }
    for k, v in top.items():
        if isinstance(v, dict):
            d.setdefault(k, {}).update(v)
        else:
            d[k] = v
    return d


def _ft_cfg(*args, **top) -> FinetuneConfig:
    return FinetuneConfig.from_dict(_ft_dict(*args, **top), source="eat_tiny")


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


# ------------------------------------------------------------------------------------- 1. re-runs
def test_pretrain_refuses_a_folder_that_holds_a_run_and_leaves_it_alone(speech_store: Path, tmp_path: Path) -> None:
    pretrain(_pt_cfg(speech_store, tmp_path, steps=6, save_every=3))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TrainingError, match=r"holds a run.*--resume.*--out.*--overwrite"):
        pretrain(_pt_cfg(speech_store, tmp_path, steps=4))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_pretrain_overwrite_clears_only_the_runs_files(speech_store: Path, tmp_path: Path, caplog) -> None:
    pretrain(_pt_cfg(speech_store, tmp_path, steps=6, save_every=3))  # checkpoints 3 and 6, sorting after the new
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "checkpoint-00000009.pt.partial").write_bytes(b"torn")
    with caplog.at_level(logging.INFO, logger="audiossl"):
        pretrain(_pt_cfg(speech_store, tmp_path, steps=4, save_every=2), overwrite=True)
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-00000002.pt", "checkpoint-00000004.pt"]
    assert [r["step"] for r in _records(tmp_path)] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "model.pt")["meta"]["step"] == 4
    assert (tmp_path / "notes.txt").read_text() == "mine\n" and not list(tmp_path.glob("*.partial"))
    said = caplog.text
    assert "checkpoint-00000006.pt" in said and "kept" in said and "notes.txt" in said


def test_an_empty_or_missing_folder_needs_no_flag(speech_store: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    pretrain(_pt_cfg(speech_store, tmp_path / "empty", steps=1, save_every=1))
    pretrain(_pt_cfg(speech_store, tmp_path / "new" / "deeper", steps=1, save_every=1))
    assert (tmp_path / "empty" / "model.pt").is_file() and (tmp_path / "new" / "deeper" / "model.pt").is_file()


def test_resume_without_a_checkpoint_starts_over_or_refuses_a_finished_run(speech_store: Path, tmp_path: Path,
                                                                             caplog) -> None:
    # Killed before its first checkpoint: config.yaml and a record; --resume starts from step 0 and
    # the stale record goes, so the folder reads as one run.
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text("steps: 4\n")
    append_metrics(killed / "metrics.jsonl", {"step": 1, "epoch": 0, "loss": 9.0})
    with caplog.at_level(logging.INFO, logger="audiossl"):
        pretrain(_pt_cfg(speech_store, killed, steps=2, save_every=2), resume=True)
    assert [r["step"] for r in _records(killed)] == [1, 2] and _records(killed)[0]["loss"] != 9.0
    assert "starting from step 0" in caplog.text
    # A finished run whose checkpoints were deleted (to save space) has nothing to resume: refused,
    # rather than trained again over its model.pt.
    for p in checkpoints(killed):
        p.unlink()
    model = (killed / "model.pt").read_bytes()
    with pytest.raises(TrainingError, match=r"no checkpoint to resume from.*--overwrite"):
        pretrain(_pt_cfg(speech_store, killed, steps=2, save_every=2), resume=True)
    assert (killed / "model.pt").read_bytes() == model


def test_finetune_and_linprobe_refuse_and_overwrite(labelled, pretrained, tmp_path: Path) -> None:
    store, manifest = labelled
    out = tmp_path / "probe"
    first = finetune(_ft_cfg(store, manifest, pretrained, out, epochs=1))
    results = (out / "results.json").read_text()
    with pytest.raises(TrainingError, match=r"holds a run.*--resume.*--overwrite"):
        finetune(_ft_cfg(store, manifest, pretrained, out, epochs=2))
    assert (out / "results.json").read_text() == results and len(_records(out)) == 1
    (out / "mine.csv").write_text("a\n")
    again = finetune(_ft_cfg(store, manifest, pretrained, out, epochs=2), overwrite=True)
    assert [r["epoch"] for r in _records(out)] == [1, 2] and again["epochs"] == 2 and first["epochs"] == 1
    assert (out / "mine.csv").read_text() == "a\n"
    with pytest.raises(ValueError, match="resume.*overwrite"):
        finetune(_ft_cfg(store, manifest, pretrained, out), resume=True, overwrite=True)


def test_commands_refuse_in_one_line_and_take_overwrite(labelled, pretrained, tmp_path: Path, capsys) -> None:
    import yaml

    from audiossl import cli

    store, manifest = labelled
    conf = tmp_path / "conf.yaml"
    d = _ft_dict(store, manifest, pretrained, tmp_path / "o", epochs=1)
    d.pop("mode")
    conf.write_text(yaml.safe_dump(d))
    argv = ["linprobe", "--config", str(conf)]
    assert cli.main(argv) == 0
    again = subprocess.run([sys.executable, "-m", "audiossl", *argv], env=_env(), capture_output=True, text=True)
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.returncode == 2 and len(lines) == 1, again.stderr
    assert "holds a run" in lines[0] and "--overwrite" in lines[0] and "Traceback" not in again.stderr
    assert cli.main(argv + ["--overwrite", "--epochs", "2"]) == 0
    assert [r["epoch"] for r in _records(tmp_path / "o")] == [1, 2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as both:
        cli.main(argv + ["--overwrite", "--resume"])
    assert both.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_pretrain_and_finetune_commands_have_overwrite() -> None:
    import argparse

    from audiossl.commands import finetune as ft_cmd
    from audiossl.commands import linprobe as lp_cmd
    from audiossl.commands import pretrain as pt_cmd

    for module in (pt_cmd, ft_cmd, lp_cmd):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert parser.parse_args(["--overwrite"]).overwrite is True


# ------------------------------------------------------------------------------------- 2. metrics
def _stop_at(monkeypatch, step: int) -> None:
    """Raise KeyboardInterrupt before optimiser update ``step`` (as a kill would)."""
    original = Pretrainer.train_step

    def train_step(self, batches):
        if self.step + 1 == step:
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(Pretrainer, "train_step", train_step)


def test_pretrain_resume_gives_the_uninterrupted_records_with_averaged_logs(speech_store: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    kw = dict(steps=12, save_every=6, log_every=4)
    pretrain(_pt_cfg(speech_store, tmp_path / "full", **kw))
    want = _records(tmp_path / "full")
    assert [r["step"] for r in want] == [4, 8, 12]

    cut = tmp_path / "cut"
    _stop_at(monkeypatch, 10)  # after the step-8 record, the newest checkpoint is step 6
    with pytest.raises(KeyboardInterrupt):
        pretrain(_pt_cfg(speech_store, cut, **kw))
    monkeypatch.undo()
    assert [r["step"] for r in _records(cut)] == [4, 8]
    pretrain(_pt_cfg(speech_store, cut, **kw), resume=True)
    assert _records(cut) == want  # step 8 averages steps 5-8 again, not 7-8


def test_finetune_resume_drops_the_epochs_past_the_checkpoint(labelled, pretrained, tmp_path: Path,
                                                              monkeypatch) -> None:
    store, manifest = labelled
    kw = dict(epochs=3, mode="finetune", data={"val_fraction": 0.25}, optim={"lr": 1e-3})
    finetune(_ft_cfg(store, manifest, pretrained, tmp_path / "full", **kw))
    original = Finetuner.save
    calls = {"n": 0}

    def save(self):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's record is written, its checkpoint not
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Finetuner, "save", save)
    with pytest.raises(KeyboardInterrupt):
        finetune(_ft_cfg(store, manifest, pretrained, tmp_path / "cut", **kw))
    monkeypatch.undo()
    assert [r["epoch"] for r in _records(tmp_path / "cut")] == [1, 2]
    finetune(_ft_cfg(store, manifest, pretrained, tmp_path / "cut", **kw), resume=True)
    assert _records(tmp_path / "cut") == _records(tmp_path / "full")


def test_a_torn_last_line_is_dropped_with_a_warning(speech_store: Path, tmp_path: Path, monkeypatch,
                                                    caplog) -> None:
    kw = dict(steps=4, save_every=2, log_every=1)
    pretrain(_pt_cfg(speech_store, tmp_path / "full", **kw))
    cut = tmp_path / "cut"
    _stop_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_pt_cfg(speech_store, cut, **kw))
    monkeypatch.undo()
    with open(cut / "metrics.jsonl", "a") as f:  # power lost in the middle of the step-3 record
        f.write('{"step": 3, "epoch": 0, "loss": 1.2')
    with caplog.at_level(logging.WARNING, logger="audiossl"):
        pretrain(_pt_cfg(speech_store, cut, **kw), resume=True)
    assert _records(cut) == _records(tmp_path / "full")
    assert "metrics.jsonl" in caplog.text and "torn" in caplog.text


def test_truncate_metrics_on_both_keys_and_torn_lines(tmp_path: Path, caplog) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_metrics(path, {"step": step, "epoch": step})
    path.write_bytes(path.read_bytes() + b'{"step": 4, "ep')
    with caplog.at_level(logging.WARNING, logger="audiossl"):
        truncate_metrics(path, "epoch", 2)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    assert "torn" in caplog.text
    path.write_text('{"step": 1}\n{"st\n{"step": 2}\n')  # a torn line inside: dropped too, and said
    truncate_metrics(path, "step", 5)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_append_metrics_writes_each_record_in_one_write(tmp_path: Path, monkeypatch) -> None:
    writes = []
    real = os.write

    def counting(fd, data):
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    append_metrics(tmp_path / "m.jsonl", {"step": 1, "loss": 0.5})
    append_metrics(tmp_path / "m.jsonl", {"step": 2, "loss": 0.25})
    assert writes == [b'{"step": 1, "loss": 0.5}\n', b'{"step": 2, "loss": 0.25}\n']
    assert (tmp_path / "m.jsonl").read_bytes() == b"".join(writes)


# ------------------------------------------------------------------------------------- 4. front end
def _other_front_end(store: Path) -> dict:
    from audiossl.data.store import FbankStore

    fb = FbankStore(store).fbank_config.to_dict()
    fb["window_type"] = "povey" if fb["window_type"] != "povey" else "hanning"
    fb["dither"] = 0.5
    return fb


def test_finetune_refuses_a_checkpoint_of_another_front_end(labelled, tmp_path: Path, caplog) -> None:
    store, manifest = labelled
    ckpt = _pretrained(tmp_path / "other.pt", fbank=_other_front_end(store))
    with pytest.raises(CheckpointError) as err:
        finetune(_ft_cfg(store, manifest, ckpt, tmp_path / "o", epochs=1))
    text = str(err.value)
    assert str(ckpt) in text and str(store) in text and "window_type" in text and "dither" in text
    assert "data.allow_front_end_mismatch" in text and not (tmp_path / "o").exists()
    with caplog.at_level(logging.WARNING, logger="audiossl"):
        finetune(_ft_cfg(store, manifest, ckpt, tmp_path / "o", epochs=1, data={"allow_front_end_mismatch": True}))
    assert "window_type" in caplog.text and (tmp_path / "o" / "results.json").is_file()


def test_pretrain_init_from_refuses_a_checkpoint_of_another_front_end(speech_store: Path, tmp_path: Path,
                                                                      caplog) -> None:
    ckpt = tmp_path / "init.pt"
    save_checkpoint(ckpt, native_payload(build_model("maeast_patch_tiny"), family="maeast",
                                         fbank=_other_front_end(speech_store)))
    with pytest.raises(CheckpointError, match=r"window_type.*data.allow_front_end_mismatch") as err:
        Pretrainer(_pt_cfg(speech_store, tmp_path / "o", init_from=str(ckpt)))
    assert str(speech_store) in str(err.value) and str(ckpt) in str(err.value)
    with caplog.at_level(logging.WARNING, logger="audiossl"):
        Pretrainer(_pt_cfg(speech_store, tmp_path / "o", init_from=str(ckpt),
                           **{"data.allow_front_end_mismatch": "true"}))
    assert "window_type" in caplog.text


def test_checkpoints_from_before_the_new_keys_still_resume(labelled, pretrained, speech_store: Path, tmp_path: Path,
                                                          monkeypatch, caplog) -> None:
    store, manifest = labelled
    out = tmp_path / "ft"
    original = Finetuner.save

    def save_then_stop(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Finetuner, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune(_ft_cfg(store, manifest, pretrained, out))
    monkeypatch.undo()
    ckpt = load_checkpoint(out / "checkpoint.pt")
    del ckpt["train"]["config"]["data"]["allow_front_end_mismatch"]  # written before the key existed
    save_checkpoint(out / "checkpoint.pt", ckpt)
    assert finetune(_ft_cfg(store, manifest, pretrained, out), resume=True)["epochs"] == 2

    cut = tmp_path / "pt"
    _stop_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_pt_cfg(speech_store, cut, steps=4, save_every=3, log_every=2))
    monkeypatch.undo()
    path = checkpoints(cut)[-1]
    ckpt = load_checkpoint(path)
    del ckpt["train"]["window"]  # no log window saved
    save_checkpoint(path, ckpt)
    with caplog.at_level(logging.WARNING, logger="audiossl"):
        pretrain(_pt_cfg(speech_store, cut, steps=4, save_every=3, log_every=2), resume=True)
    assert [r["step"] for r in _records(cut)] == [2, 4] and "no log window" in caplog.text


def test_a_sigkilled_pretrain_resumes_to_the_uninterrupted_records_and_model(speech_store: Path, tmp_path: Path) -> None:
    """kill -9 of a real ``audiossl pretrain`` process at whatever moment follows its first
    checkpoint (mid-step, mid-checkpoint write or mid-append), then ``--resume``: the records and
    the final model equal those of a run that was never interrupted."""
    import signal
    import time

    import yaml

    kw = dict(steps=120, save_every=10, log_every=4)
    pretrain(_pt_cfg(speech_store, tmp_path / "full", **kw))
    cut = tmp_path / "cut"
    config = tmp_path / "cut.yaml"
    config.write_text(yaml.safe_dump(_pt_cfg(speech_store, cut, **kw).to_dict()))
    proc = subprocess.Popen([sys.executable, "-m", "audiossl", "pretrain", "--config", str(config)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(cut.glob("checkpoint-*.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, "pretrain ended before its first checkpoint"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (cut / "model.pt").exists(), "killed too late: the run had finished"
    pretrain(_pt_cfg(speech_store, cut, **kw), resume=True)
    assert _records(cut) == _records(tmp_path / "full")
    a, b = load_checkpoint(cut / "model.pt")["model"], load_checkpoint(tmp_path / "full" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_curves_script_skips_a_torn_metrics_line(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_curves", REPO / "recipes" / "common" / "plot_curves.py")
    plot_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_curves)
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert [r["step"] for r in plot_curves.read(path)] == [1, 2]
