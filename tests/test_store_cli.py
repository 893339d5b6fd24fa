"""The `audiossl fbank`, `fbank-merge` and `stats` commands, and kill -9 at any moment of a precompute."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from audiossl.cli import main
from audiossl.data.manifest import Manifest, read_manifest, write_manifest
from audiossl.data.store import FbankStore
from audiossl.features import Normalizer

from test_store import assert_same_store, make_corpus

# Runs the CLI in a fresh interpreter that SIGKILLs itself on the (after+1)-th call of one writer
# function: a kill -9 landing at an exact, chosen moment.
SELF_KILL = """
import os, shutil, signal, sys
import audiossl.data.precompute as P
import audiossl.files as F
from audiossl.cli import main
name, after = sys.argv[1], int(sys.argv[2])
calls = [0]
owner = {"rmtree": shutil, "_fsync": F}.get(name, P)
original = getattr(owner, name)
def wrapped(*args, **kwargs):
    calls[0] += 1
    if calls[0] > after:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, name, wrapped)
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def manifest_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    manifest = make_corpus(root / "audio")
    path = root / "manifest.csv"
    write_manifest(manifest, path)
    return path


@pytest.fixture(scope="module")
def long_manifest_csv(manifest_csv) -> Path:
    """80 rows over the same files: a run long enough to be killed from outside."""
    base = read_manifest(manifest_csv)
    table = pd.concat([base.table.assign(id=base.table["id"] + f"-{k}") for k in range(6)], ignore_index=True)
    path = manifest_csv.with_name("long.csv")
    write_manifest(Manifest(table, base.label_map), path)
    return path


def fbank_args(manifest: Path, out: Path, *extra: str) -> list:
    return ["fbank", "--manifest", str(manifest), "--out", str(out), "--norm", "esc50", "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(manifest_csv, long_manifest_csv, tmp_path_factory) -> dict:
    """Uninterrupted runs to compare the killed-and-resumed ones with."""
    root = tmp_path_factory.mktemp("ref")
    refs = {}
    for name, manifest in (("short", manifest_csv), ("long", long_manifest_csv)):
        out = root / f"{name}.h5"
        assert main(fbank_args(manifest, out, "--workers", "1")) == 0
        refs[name] = out
    return refs


def h5_content(path: Path) -> dict:
    """Every dataset (padding rows included) and every attr of a store file."""
    out = {}
    with h5py.File(path, "r") as fh:
        for name, dset in fh.items():
            data = dset[()]
            out[name] = data.tolist() if data.dtype.kind == "O" else data
        out["attrs"] = {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in fh.attrs.items()}
    return out


def assert_identical_files(a: Path, b: Path) -> None:
    ca, cb = h5_content(a), h5_content(b)
    assert sorted(ca) == sorted(cb)
    for key in ca:
        if key == "attrs":
            assert ca[key] == cb[key]
        elif isinstance(ca[key], list):
            assert ca[key] == cb[key], key
        else:
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
    sa, sb = (Path(str(p) + ".skipped.tsv") for p in (a, b))
    assert sa.read_text().replace(str(a.parent), "") == sb.read_text().replace(str(b.parent), "")


# ---------------------------------------------------------------------------------------------
# kill -9


@pytest.mark.parametrize(
    "name, after, workers",
    [
        ("_fsync", 2, "2"),  # 2 segments renamed, the 3rd written as .partial only (pool running)
        ("_ragged_index", 1, "1"),  # STORE.h5.partial half assembled
        ("rmtree", 0, "1"),  # STORE.h5 renamed into place, segment folder still there
    ],
)
def test_kill_at_a_chosen_moment_then_resume(manifest_csv, reference, tmp_path, name, after, workers):
    out = tmp_path / "train.h5"
    args = fbank_args(manifest_csv, out, "--workers", workers, "--segment-clips", "2")
    proc = subprocess.run(
        [sys.executable, "-c", SELF_KILL, name, str(after), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seg_dir = Path(str(out) + ".partial.d")
    if name == "rmtree":
        assert out.exists() and seg_dir.exists()
    else:
        assert not out.exists() and len(list(seg_dir.glob("seg-*.h5"))) >= 2
    if name == "_fsync":
        assert list(seg_dir.glob("*.partial"))
    if name == "_ragged_index":
        assert Path(str(out) + ".partial").exists()

    assert main(args) == 0  # the same command, re-run
    assert not seg_dir.exists() and not Path(str(out) + ".partial").exists()
    assert not Path(str(out) + ".lock").exists()  # a killed run's lock file is taken over, then removed
    assert_identical_files(out, reference["short"])


def test_external_kill_9_then_resume(long_manifest_csv, reference, tmp_path):
    out = tmp_path / "long.h5"
    args = fbank_args(long_manifest_csv, out, "--workers", "1", "--segment-clips", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "audiossl", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    seg_dir = Path(str(out) + ".partial.d")
    deadline = time.monotonic() + 120
    try:
        while len(list(seg_dir.glob("seg-*.h5"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(seg_dir.glob("seg-*.h5")))
    assert not out.exists() and 3 <= done < 78, done

    assert main(args) == 0
    assert_identical_files(out, reference["long"])
    assert_same_store(FbankStore(out), FbankStore(reference["long"]))


# ---------------------------------------------------------------------------------------------
# commands


def test_fbank_command_summary_and_options(manifest_csv, tmp_path, capsys):
    out = tmp_path / "s.h5"
    config = tmp_path / "front.yaml"
    config.write_text("fbank:\n  window_type: povey\n  htk_compat: false\n  remove_waveform_mean: false\n")
    assert main(fbank_args(manifest_csv, out, "--config", str(config), "--dtype", "float32", "--workers", "2")) == 0
    text = capsys.readouterr().out
    assert f"{out}: 9 clips written, 4 skipped" in text and "clips/s" in text and "MiB on disk" in text
    store = FbankStore(out)
    assert store.fbank_config.window_type == "povey" and store.fbank_config.htk_compat is False
    assert store.normalizer == Normalizer.preset("esc50") and store.dtype == np.float32

    # a different manifest/config for an existing store is refused, --overwrite replaces it
    assert main(fbank_args(manifest_csv, out, "--workers", "1")) == 1
    assert main(fbank_args(manifest_csv, out, "--workers", "1", "--overwrite")) == 0
    assert FbankStore(out).fbank_config.window_type == "hanning"
    assert main(fbank_args(manifest_csv, out, "--shard", "3/3")) == 2
    assert main(fbank_args(manifest_csv, out, "--config", "nope")) == 2


def test_shards_and_merge_commands(manifest_csv, reference, tmp_path, caplog):
    shards = [tmp_path / f"train.shard-{i}-of-2.h5" for i in range(2)]
    for i, path in enumerate(shards):
        assert main(fbank_args(manifest_csv, path, "--shard", f"{i}/2", "--workers", "1")) == 0
    merged = tmp_path / "train.h5"
    with caplog.at_level(logging.ERROR):
        assert main(["fbank-merge", str(merged), str(shards[1])]) == 1
    assert "missing shard(s) 0 of 2" in caplog.text and not merged.exists()
    assert main(["fbank-merge", str(merged), *map(str, shards)]) == 0
    assert_same_store(FbankStore(merged), FbankStore(reference["short"]))


def test_stats_command(reference, tmp_path, capsys):
    out = tmp_path / "s.h5"
    out.write_bytes(reference["short"].read_bytes())
    store = FbankStore(out)
    values = np.concatenate([store.read(i) for i in range(len(store))]).astype(np.float64)
    assert main(["stats", str(out), "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert printed["mean"] == pytest.approx(values.mean(), rel=1e-10)
    assert printed["std"] == pytest.approx(values.std(), rel=1e-10)
    assert FbankStore(out).normalizer == Normalizer.preset("esc50")  # unchanged without --write
    store.close()
    assert main(["stats", str(out), "--quiet", "--write"]) == 0
    assert "saved as the normalizer" in capsys.readouterr().out
    assert FbankStore(out).normalizer == Normalizer.from_dict(printed)
    assert main(["stats", str(tmp_path / "missing.h5")]) == 1
