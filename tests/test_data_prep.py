"""data_prep/esc50.py and data_prep/audioset.py, run as a user runs them (subprocesses from the repo root)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiossl.data.manifest import read_label_map, read_manifest

REPO = Path(__file__).resolve().parent.parent


def _run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"data_prep/{script}", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _wav(path: Path, frames: int, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(frames, dtype=np.float32), sample_rate, subtype="PCM_16")


@pytest.mark.parametrize("script", ["esc50.py", "audioset.py"])
def test_help(script):
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: data_prep/{script}" in proc.stdout


def _esc50(root: Path) -> None:
    rows = [("1-100032-A-0.wav", 1, 0, "dog"), ("1-100038-A-1.wav", 1, 1, "rooster"),
            ("2-100210-A-0.wav", 2, 0, "dog"), ("2-100210-B-1.wav", 2, 1, "rooster"),
            ("3-110389-A-1.wav", 3, 1, "rooster")]
    (root / "meta").mkdir(parents=True)
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for name, fold, target, category in rows:
        lines.append(f"{name},{fold},{target},{category},True,{name.split('-')[1]},{name.split('-')[2]}")
        # one clip resampled by mistake: --check-audio must name it
        rate = 16000 if name.startswith("2-100210-B") else 44100
        _wav(root / "audio" / name, frames=5 * rate, sample_rate=rate)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")


def test_esc50_script_outputs_and_rerun(tmp_path):
    root, out = tmp_path / "ESC-50-master", tmp_path / "data" / "esc50"
    _esc50(root)
    proc = _run("esc50.py", root, out, "--ast-json", "--check-audio")
    assert proc.returncode == 0, proc.stderr
    assert "5 clips, 2 classes, folds [1, 2, 3]" in proc.stdout
    assert "1 of 5 clips are not 44100 Hz mono x 220500 frames" in proc.stdout
    assert "2-100210-B-1.wav: 16000 Hz, 80000 frames" in proc.stdout

    m = read_manifest(out / "manifest.csv")  # finds class_labels_indices.csv beside it
    assert m.table["id"].tolist() == ["1-100032-A-0", "1-100038-A-1", "2-100210-A-0", "2-100210-B-1", "3-110389-A-1"]
    assert m.table["fold"].tolist() == [1, 1, 2, 2, 3]
    assert m.labels_multi_hot().argmax(1).tolist() == [0, 1, 0, 1, 1]
    assert (out / "class_labels_indices.csv").read_text() == 'index,mid,display_name\n0,/m/07rwj00,"dog"\n1,/m/07rwj01,"rooster"\n'

    eval2 = json.loads((out / "esc_eval_data_2.json").read_text())["data"]
    train2 = json.loads((out / "esc_train_data_2.json").read_text())["data"]
    assert [e["id"] for e in eval2] == ["2-100210-A-0", "2-100210-B-1"]
    assert [e["id"] for e in train2] == ["1-100032-A-0", "1-100038-A-1", "3-110389-A-1"]
    assert eval2[0]["labels"] == "/m/07rwj00" and eval2[0]["wav"] == str(root / "audio" / "2-100210-A-0.wav")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.csv", "class_labels_indices.csv"] + [f"esc_{s}_data_{k}.json" for s in ("train", "eval") for k in (1, 2, 3)]
    )

    # idempotent: a second run leaves every output as it was
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    again = _run("esc50.py", root, out, "--ast-json")
    assert again.returncode == 0, again.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == stamps

    strict = _run("esc50.py", root, out, "--check-audio", "--strict")
    assert strict.returncode == 1


def test_esc50_script_missing_file_fails_cleanly(tmp_path):
    root, out = tmp_path / "esc", tmp_path / "out"
    _esc50(root)
    (root / "audio" / "1-100038-A-1.wav").unlink()
    proc = _run("esc50.py", root, out)
    assert proc.returncode == 1
    assert f"error: {root / 'meta' / 'esc50.csv'}: 1 of 5 audio files" in proc.stderr
    assert "1-100038-A-1.wav" in proc.stderr
    assert not out.exists() or not any(out.iterdir())


LABELS = 'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n2,/m/012xff,"Dog"\n'


def _audioset(tmp_path: Path):
    (tmp_path / "class_labels_indices.csv").write_text(LABELS)
    (tmp_path / "balanced_train_segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3\n# YTID, start_seconds, end_seconds, positive_labels\n"
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"\n'
        '-_ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
        'a_b_c_d_e_f, 0.000, 7.000, "/m/09x0r"\n'
    )
    (tmp_path / "eval_segments.csv").write_text(
        "# a\n# b\n# c\n"
        '--4gqARaEJE,0.000,10.000,"""/m/09x0r",/m/05zppz,"/m/012xff""",,,,,,,\n'
        '--i-y1v8Hy8, 0.000, 9.000, "/m/09x0r"\n'
    )
    audio = tmp_path / "downloads"
    _wav(audio / "balanced_train_segments" / "Y--PJHxphWEs.wav", 320, 32000)
    _wav(audio / "bal" / "a" / "a_b_c_d_e_f_0.000.flac", 160, 16000)
    _wav(audio / "eval" / "--4gqARaEJE.flac", 160, 16000)
    return audio


def test_audioset_script_manifests_missing_report_and_summary(tmp_path):
    audio = _audioset(tmp_path)
    out = tmp_path / "out"
    proc = _run(
        "audioset.py", "--segments", tmp_path / "balanced_train_segments.csv", tmp_path / "eval_segments.csv",
        "--audio-dir", audio, "--label-csv", tmp_path / "class_labels_indices.csv", out, "--ast-json",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"balanced_train: 2/3 clips found (66.7%), 1 missing -> {out / 'missing_balanced_train.csv'}" in proc.stdout
    assert "eval: 1/2 clips found (50.0%), 1 missing" in proc.stdout
    assert "3 audio files scanned, 0 not used" in proc.stdout

    bal = read_manifest(out / "balanced_train.csv")
    assert bal.table["id"].tolist() == ["--PJHxphWEs", "a_b_c_d_e_f"]
    assert bal.table["split"].tolist() == ["balanced_train"] * 2
    np.testing.assert_allclose(bal.table["duration"], [10.0, 7.0])
    np.testing.assert_array_equal(bal.labels_multi_hot(), [[1, 1, 0], [1, 0, 0]])
    ev = read_manifest(out / "eval.json")
    assert ev.table["labels"].tolist() == [("/m/09x0r", "/m/05zppz", "/m/012xff")]
    assert read_label_map(out / "class_labels_indices.csv")["display_name"].iat[1] == "Male speech, man speaking"

    missing = pd.read_csv(out / "missing_balanced_train.csv", keep_default_na=False)
    assert missing.to_dict("records") == [
        {"ytid": "-_ZhevVpy1s", "start": 50.0, "end": 60.0, "labels": "/m/012xff",
         "source": str(tmp_path / "balanced_train_segments.csv"), "line": 5}
    ]
    assert pd.read_csv(out / "missing_eval.csv")["ytid"].tolist() == ["--i-y1v8Hy8"]

    # idempotent, and several --audio-dir options scan several folders
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    again = _run(
        "audioset.py", "--segments", tmp_path / "balanced_train_segments.csv", tmp_path / "eval_segments.csv",
        "--audio-dir", audio / "balanced_train_segments", "--audio-dir", audio / "bal", "--audio-dir", audio / "eval",
        "--label-csv", tmp_path / "class_labels_indices.csv", out, "--ast-json",
    )
    assert again.returncode == 0, again.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == stamps


def test_audioset_script_unknown_mid_names_file_and_line(tmp_path):
    audio = _audioset(tmp_path)
    seg = tmp_path / "eval_segments.csv"
    seg.write_text(seg.read_text() + '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"\n')
    proc = _run("audioset.py", "--segments", seg, "--audio-dir", audio,
                "--label-csv", tmp_path / "class_labels_indices.csv", tmp_path / "out")
    assert proc.returncode == 1
    assert f"error: {seg}:6: label '/m/03l9g' is not in the label table (3 classes)" in proc.stderr
