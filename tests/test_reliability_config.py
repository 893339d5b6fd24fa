"""Issue 13, configuration errors: a wrong value names its key and what the key accepts (or
its type), in one line, exit code 2, no traceback (the traceback with ``-v``); for the
pretraining and the fine-tuning / linear-probe configs, through ``load_config`` and the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

from audiossl import cli
from audiossl.train import finetune_config, pretrain
from audiossl.train.config import ConfigError, build_section

REPO = Path(__file__).resolve().parents[1]

PRETRAIN = ["--model", "eat_tiny", "--data.train", "x.h5"]
FINETUNE = ["--model.init", "random", "--model.preset", "eat_tiny", "--data.store", "x.h5", "--data.manifest",
            "m.csv", "--data.split_column", "fold", "--data.test_values", "[1]"]
FINETUNE_STORES = ["--model.init", "random", "--model.preset", "eat_tiny", "--data.train", "a.h5", "--data.test",
                   "b.h5"]

PRETRAIN_CASES = [
    (["--optim.lr", "fast"], r"^optim\.lr: expected a number( or null)?, got 'fast'$"),
    (["--steps", "ten"], r"^steps: expected an integer, got 'ten'$"),
    (["--optim.lr=-1e-3"], r"^optim\.lr: must be positive, got -0\.001$"),
    (["--optim.weight_decay=-1"], r"^optim\.weight_decay: must be >= 0, got -1"),
    (["--model", "nope_tiny"], r"^model: unknown preset 'nope_tiny'; choose from .*eat_tiny"),
    (["--optim.optimizer", "sgd"], r"^optim\.optimizer: 'sgd' is not one of adamw, adam$"),
    (["--optim.schedule", "cosin"], r"^optim\.schedule: 'cosin' is not one of cosine, linear, constant, step$"),
    (["--data.crop", "middle"], r"^data\.crop: 'middle' is not one of start, random, center$"),
    (["--data.normalizer", "weird"], r"^data\.normalizer: 'weird' is not one of store, null, audioset, .*esc50"),
    (["--data.train", "clips.csv"], r"^data\.train: clips\.csv is a manifest .*an fbank store \(\.h5\) is expected"),
    (["--data.batch_size", "0"], r"^data\.batch_size: must be >= 1, got 0$"),
    (["--progress", "maybe"], r"^progress: expected true or false, got 'maybe'$"),
    (["--optim.betas", "[0.9, fast]"], r"^optim\.betas: expected a list of numbers, got \[0\.9, 'fast'\]$"),
    (["--data", "5"], r"^data: expected a section \(a mapping of keys\), got 5$"),
]

FINETUNE_CASES = [
    (FINETUNE, ["--optim.lr", "fast"], r"^optim\.lr: expected a number, got 'fast'$"),
    (FINETUNE, ["--epochs", "ten"], r"^epochs: expected an integer, got 'ten'$"),
    (FINETUNE, ["--optim.lr=-1"], r"^optim\.lr: must be positive, got -1"),
    (FINETUNE, ["--model.preset", "nope"], r"^model\.preset: unknown preset 'nope'; choose from .*eat_tiny"),
    (FINETUNE, ["--optim.optimizer", "sgd"], r"^optim\.optimizer: 'sgd' is not one of adamw, adam$"),
    (FINETUNE, ["--data.crop", "middle"], r"^data\.crop: 'middle' is not one of start, random, center$"),
    (FINETUNE, ["--data.normalizer", "weird"], r"^data\.normalizer: 'weird' is not one of store, checkpoint, null, "),
    (FINETUNE, ["--data.store", "clips.csv"], r"^data\.store: clips\.csv is a manifest .*fbank store \(\.h5\)"),
    (FINETUNE_STORES, ["--data.train", "train.csv"], r"^data\.train: train\.csv is a manifest"),
    (FINETUNE_STORES, ["--data.test", "test.tsv"], r"^data\.test: test\.tsv is a manifest"),
    (FINETUNE, ["--model.pooling", "max"], r"^model\.pooling: 'max' is not one of cls, mean, cls_dist_mean, null$"),
    (FINETUNE, ["--augment.mixup", "lots"], r"^augment\.mixup: expected a number, got 'lots'$"),
    (FINETUNE, ["--select_metric", "f1"], r"^select_metric: 'f1' is not one of auto, acc, mAP$"),
    (FINETUNE, ["--mode", "probe"], r"^mode: 'probe' is not one of finetune, linprobe$"),
]


@pytest.mark.parametrize("overrides,message", PRETRAIN_CASES, ids=[" ".join(c[0]) for c in PRETRAIN_CASES])
def test_pretrain_config_errors_name_the_key(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        pretrain.load_config(None, PRETRAIN + overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("base,overrides,message", FINETUNE_CASES, ids=[" ".join(c[1]) for c in FINETUNE_CASES])
def test_finetune_config_errors_name_the_key(base, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        finetune_config.load_config(None, base + overrides)
    assert "\n" not in str(err.value)


def test_the_linear_probe_config_is_checked_alike() -> None:
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected a number"):
        finetune_config.load_config(None, FINETUNE + ["--optim.lr", "fast"], mode="linprobe")


def test_yaml_values_are_checked_as_overrides_are(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("model: eat_tiny\nsteps: ten\ndata: {train: x.h5}\n")
    with pytest.raises(ConfigError, match=r"^steps: expected an integer, got 'ten'$"):
        pretrain.load_config(conf)


def test_good_values_are_converted_to_the_field_type() -> None:
    cfg = pretrain.load_config(None, PRETRAIN + ["--steps", "1e3", "--optim.lr", "1", "--data.normalizer", "null"])
    assert cfg.steps == 1000 and isinstance(cfg.steps, int) and isinstance(cfg.optim.lr, float)
    assert cfg.data.normalizer is None
    with pytest.raises(ConfigError, match=r"^steps: expected an integer, got 1\.5$"):
        pretrain.load_config(None, PRETRAIN + ["--steps", "1.5"])


def test_types_come_from_the_dataclass_fields() -> None:
    @dataclass
    class Section:
        count: int = 1
        rate: Optional[float] = None
        name: str = "a"
        flag: bool = False
        items: List[int] = field(default_factory=list)

    s = build_section(Section, {"count": 2.0, "rate": 3, "items": (1, 2)}, "sec.")
    assert (s.count, s.rate, s.items) == (2, 3.0, [1, 2]) and isinstance(s.rate, float)
    for values, message in (({"count": True}, r"sec\.count: expected an integer, got True"),
                            ({"rate": "x"}, r"sec\.rate: expected a number or null, got 'x'"),
                            ({"name": 3}, r"sec\.name: expected a string, got 3"),
                            ({"flag": "yes"}, r"sec\.flag: expected true or false, got 'yes'"),
                            ({"items": [1, "b"]}, r"sec\.items: expected a list of integers, got \[1, 'b'\]"),
                            ({"nope": 1}, r"unknown config keys \['sec\.nope'\]")):
        with pytest.raises(ConfigError, match=message):
            build_section(Section, values, "sec.")


# ------------------------------------------------------------------------------------- the CLI
def _main(caplog, argv):
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = cli.main(argv)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    return rc, errors


@pytest.mark.parametrize("command,argv,key", [
    ("pretrain", PRETRAIN + ["--optim.lr", "fast"], "optim.lr"),
    ("pretrain", PRETRAIN + ["--data.train", "clips.csv"], "data.train"),
    ("finetune", FINETUNE + ["--epochs", "ten"], "epochs"),
    ("linprobe", FINETUNE + ["--data.crop", "middle"], "data.crop"),
])
def test_the_commands_say_it_in_one_line_with_exit_code_2(caplog, tmp_path: Path, command, argv, key) -> None:
    rc, errors = _main(caplog, [command, *argv, "--out", str(tmp_path / "o")])
    assert rc == 2 and len(errors) == 1
    assert key + ":" in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert not errors[0].exc_info
    rc, errors = _main(caplog, ["-v", command, *argv, "--out", str(tmp_path / "o")])
    assert rc == 2 and len(errors) == 1 and errors[0].exc_info  # -v: the traceback too
    rc, errors = _main(caplog, [command, *argv, "--out", str(tmp_path / "o"), "-v"])  # -v after the command
    assert rc == 2 and len(errors) == 1 and errors[0].exc_info


def test_a_store_that_cannot_be_opened_is_a_config_error(caplog, tmp_path: Path) -> None:
    rc, errors = _main(caplog, ["pretrain", "--model", "eat_tiny", "--data.train", str(tmp_path / "missing.h5"),
                                "--device", "cpu", "--out", str(tmp_path / "o")])
    assert rc == 2 and len(errors) == 1 and not errors[0].exc_info
    assert "data.train: " in errors[0].getMessage() and "missing.h5" in errors[0].getMessage()
    notastore = tmp_path / "notes.h5"
    notastore.write_text("id,path\n")
    rc, errors = _main(caplog, ["linprobe", *FINETUNE_STORES, "--data.train", str(notastore), "--data.test",
                                str(notastore), "--device", "cpu", "--out", str(tmp_path / "p")])
    assert rc == 2 and len(errors) == 1 and "data.train: " in errors[0].getMessage()


def test_no_traceback_on_stderr_but_with_v(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "audiossl", "pretrain", *PRETRAIN, "--optim.lr", "fast"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "optim.lr: expected a number" in lines[0], done.stderr
    loud = subprocess.run(cmd + ["-v"], env=env, capture_output=True, text=True)
    assert loud.returncode == 2 and "Traceback" in loud.stderr and "optim.lr" in loud.stderr
