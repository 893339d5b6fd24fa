"""Issue 13 (reliability), the store writers: one writer per store (``--overwrite`` included), a
full disk (clear error, exit 1, no segfault, nothing half written left), skipped-clip lists that
survive any file name, and one atomic-write path for every store file.

The concurrent-writer tests pause the first writer at a chosen moment (after its first segment)
and let the second one run to its end meanwhile: no timing is guessed. The full-disk tests run
the command in a fresh interpreter, since a crash inside HDF5 must show as the exit code, not
take pytest with it.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiossl.cli import main
from audiossl.data import precompute as P
from audiossl.data.manifest import Manifest, read_manifest, write_manifest
from audiossl.data.store import FbankStore, merge_shards

from test_store import BAD, CLIPS, assert_same_store, make_corpus

# The CLI in a fresh interpreter that, once its first segment is renamed into place, touches
# READY and waits for GO: the moment a second writer is let loose on the same store.
PAUSED = """
import sys, time
from pathlib import Path
import audiossl.data.precompute as P
from audiossl.cli import main
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
original = P._write_segment
def paused(*args, **kwargs):
    segment = original(*args, **kwargs)
    if not ready.exists():
        ready.touch()
        deadline = time.monotonic() + 120
        while not go.exists():
            if time.monotonic() > deadline:
                sys.exit("never told to go on")
            time.sleep(0.01)
    return segment
P._write_segment = paused
sys.exit(main(sys.argv[3:]))
"""


def fbank_args(manifest: Path, out: Path, *extra: str) -> list:
    return ["fbank", "--manifest", str(manifest), "--out", str(out), "--quiet", "--workers", "1", *extra]


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiossl", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def manifest_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    path = root / "manifest.csv"
    write_manifest(make_corpus(root / "audio"), path)
    return path


@pytest.fixture(scope="module")
def reference(manifest_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    assert main(fbank_args(manifest_csv, out)) == 0
    return out


def leftovers(folder: Path) -> list:
    """Half-written files and locks anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob("*") if p.suffix in (".partial", ".tmp", ".lock"))


# ---------------------------------------------------------------------------------------------
# 1. one writer per store, --overwrite included


@pytest.mark.parametrize("second", ["overwrite", "finished"])
def test_a_second_writer_is_refused_while_the_first_runs(manifest_csv, reference, tmp_path, second):
    """``overwrite``: the second run replaces the store with another dtype (--overwrite), which
    used to delete the first run's segment folder, lock included, before locking.
    ``finished``: the store is complete and the first run rebuilds it (--overwrite); the second,
    plain run used to take the segment folder for debris of a finished run and delete it."""
    out = tmp_path / "s.h5"
    first_args = fbank_args(manifest_csv, out, "--segment-clips", "2")
    if second == "overwrite":
        second_args = fbank_args(manifest_csv, out, "--overwrite", "--dtype", "float32")
    else:
        shutil.copy(reference, out)
        shutil.copy(str(reference) + ".skipped.tsv", str(out) + ".skipped.tsv")
        first_args.append("--overwrite")
        second_args = fbank_args(manifest_csv, out)
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", PAUSED, str(ready), str(go), *first_args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert first.poll() is None, "the first run ended before its first segment: " + first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        other = cli(*second_args)
        assert other.returncode == 1, other.stderr
        assert f"{out}: another `audiossl fbank` run (pid {first.pid}" in other.stderr
        assert "Traceback" not in other.stderr
    finally:
        go.touch()
        stdout, stderr = first.communicate(timeout=180)
    assert first.returncode == 0, stderr
    assert f"{out}: 9 clips written, 4 skipped" in stdout
    # the first run's result is the store, complete and in its dtype
    store = FbankStore(out)
    assert store.dtype == np.float16
    assert_same_store(store, FbankStore(reference))
    assert leftovers(tmp_path) == [] and not Path(str(out) + ".partial.d").exists()


def test_the_lock_is_released_and_a_later_run_proceeds(manifest_csv, reference, tmp_path):
    out = tmp_path / "s.h5"
    assert main(fbank_args(manifest_csv, out, "--dtype", "float32")) == 0
    assert main(fbank_args(manifest_csv, out, "--overwrite")) == 0  # the next writer is not refused
    assert FbankStore(out).dtype == np.float16
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# 2. a full disk

# Sizes measured for the test corpus (segments of 2 clips): the 3-clip store 123 KiB, the 7
# segments 332 KiB, the 13-clip store 385 KiB; tmpfs counts whole 4 KiB pages.
DISK_KIB = 640  # old store + segments fit (455 KiB), segments + new store do not (840 KiB)
TINY_KIB = 32  # not even the first segment (54 KiB)


def test_disk_full_during_assembly_clear_error_old_store_intact_and_resumable(manifest_csv, reference, small_disk,
                                                                              tmp_path):
    disk = small_disk(DISK_KIB)
    out = disk / "s.h5"
    subset = tmp_path / "subset.csv"
    write_manifest(read_manifest(manifest_csv).subset(np.arange(3)), subset)
    done = cli(*fbank_args(subset, out))
    assert done.returncode == 0, done.stderr
    old = out.read_bytes()

    run = cli(*fbank_args(manifest_csv, out, "--overwrite", "--segment-clips", "2"))
    assert run.returncode == 1, run.stderr  # it was -11: a segfault at exit (139 in a shell), after a traceback
    assert f"{out}: cannot be written: no space left on device" in run.stderr
    assert "kept s.h5 as it was before" in run.stderr and "; the store needs about 0.3 MiB;" in run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    assert out.read_bytes() == old and len(FbankStore(out)) == 3  # the previous store as it was
    seg_dir = Path(str(out) + ".partial.d")
    segments = sorted(seg_dir.glob("seg-*.h5"))
    assert len(segments) == 7 and f"7 finished segments stay in {seg_dir}" in run.stderr
    assert leftovers(disk) == []  # no partial file holds the space

    # The kept segments are complete: moved where there is room, the same command resumes from
    # them, computes nothing, and writes the store an uninterrupted run writes.
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    shutil.copytree(seg_dir, roomy / seg_dir.name)
    resumed = cli(*fbank_args(manifest_csv, roomy / "s.h5", "--segment-clips", "2"))
    assert resumed.returncode == 0, resumed.stderr
    assert "(13 clips resumed from an interrupted run)" in resumed.stdout
    assert_same_store(FbankStore(roomy / "s.h5"), FbankStore(reference))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_disk_full_on_the_first_segment(manifest_csv, small_disk, workers):
    disk = small_disk(TINY_KIB)
    out = disk / "s.h5"
    run = cli(*fbank_args(manifest_csv, out, "--segment-clips", "2", "--workers", workers))
    assert run.returncode == 1, run.stderr  # it was -11, a segfault, after a traceback
    seg = Path(str(out) + ".partial.d") / "seg-000000000000.h5"
    assert f"{seg}: cannot be written: no space left on device" in run.stderr
    assert "no finished segment" in run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    assert sorted(disk.iterdir()) == []  # no partial file, no empty segment folder, no lock


def test_merge_on_a_full_disk(manifest_csv, small_disk, tmp_path):
    manifest = read_manifest(manifest_csv)
    shards = [tmp_path / f"s.shard-{i}-of-2.h5" for i in range(2)]
    for i, path in enumerate(shards):
        P.precompute(manifest, path, shard=(i, 2), workers=1, progress=False)
    for kib, victim in ((16, "m.h5"), (24, "m.h5.skipped.tsv")):
        disk = small_disk(kib)  # the merged store is 21 KiB, its skipped list 0.4 KiB
        run = cli("fbank-merge", str(disk / "m.h5"), *map(str, shards))
        assert run.returncode == 1, run.stderr
        assert f"{disk / victim}: cannot be written: no space left on device" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
        assert sorted(disk.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 3. skipped lists with tabs and newlines in names


def _odd_corpus(root: Path) -> Manifest:
    """Two good clips and two undecodable files whose names hold a tab, a newline and a quote."""
    base = make_corpus(root, clips=[CLIPS[0], CLIPS[1]])
    rows = base.table.to_dict("records")
    for k, name in enumerate(['bad\tone\n"x".wav', "bad\ntwo\tz.wav"]):
        path = root / name
        path.write_text("this is not audio\n" * 20)
        rows.insert(1 + 2 * k, {"id": name[:-4], "path": str(path), "labels": ()})
    return Manifest(pd.DataFrame(rows), base.label_map)


def _read_tsv(path: Path) -> list:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


def test_skipped_list_quotes_tabs_and_newlines_and_merge_reads_it_back(tmp_path):
    manifest = _odd_corpus(tmp_path / "audio")
    out = tmp_path / "s.h5"
    P.precompute(manifest, out, workers=1, progress=False)
    rows = _read_tsv(Path(str(out) + ".skipped.tsv"))
    assert rows[0] == ["manifest_index", "id", "path", "reason"]
    table = manifest.table
    assert [r[:3] for r in rows[1:]] == [[str(i), table["id"][i], table["path"][i]] for i in (1, 3)]
    assert all(r[3].startswith("unreadable audio: ") for r in rows[1:])

    # Each shard holds one odd name; the merged list is theirs, read with the same dialect.
    shards = [tmp_path / f"s.shard-{i}-of-2.h5" for i in range(2)]
    for i, path in enumerate(shards):
        P.precompute(manifest, path, shard=(i, 2), workers=1, progress=False)
    merged = merge_shards(tmp_path / "m.h5", shards)
    assert _read_tsv(Path(str(merged) + ".skipped.tsv")) == rows


def test_ordinary_skipped_lists_are_unchanged(manifest_csv, reference):
    lines = Path(str(reference) + ".skipped.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "manifest_index\tid\tpath\treason" and len(lines) == 1 + len(BAD)
    assert all('"' not in line and len(line.split("\t")) == 4 for line in lines)
