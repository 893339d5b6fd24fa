"""recipes/audioset/run.sh on a miniature AudioSet laid out as users download it: segment CSVs
with clips missing, YouTube-id file names, multi-label clips. Checks mAP comes out on the eval
clips actually present and that their list is written next to the metric."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
MIDS = ["/m/0a", "/m/0b", "/m/0c", "/m/0d"]
SR = 16000


def _synths():
    spec = importlib.util.spec_from_file_location("make_corpus", REPO / "recipes" / "demo" / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [mod.harmonic_tone, mod.noise_bursts, mod.click_train, mod.chirp_up]


def _segments(path: Path, rows) -> None:
    lines = ["# Segments csv created for a test", f"# num_ytids={len(rows)}", "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{ytid}, 0.000, 4.000, "{",".join(MIDS[c] for c in classes)}"' for ytid, classes in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def mini_audioset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audioset")
    meta, audio = root / "meta", root / "audio"
    meta.mkdir()
    audio.mkdir()
    (meta / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"class {i}"\n' for i, m in enumerate(MIDS)))
    synths = _synths()
    rng = np.random.default_rng(0)
    n = 4 * SR
    splits = {"balanced_train": 24, "eval": 10}
    for split, count in splits.items():
        rows = []
        for i in range(count):
            classes = sorted({i % 4, int(rng.integers(4))})
            ytid = f"{split[:3]}{i:08d}"
            rows.append((ytid, classes))
            x = sum(synths[c](rng, n) for c in classes)
            sf.write(audio / f"Y{ytid}.wav", (0.3 * x / max(np.abs(x).max(), 1e-6)).astype(np.float32), SR)
        rows.append((f"{split[:3]}missing0", [0]))  # listed but never downloaded
        _segments(meta / f"{split}_segments.csv", rows)
    return root


def test_audioset_recipe_reports_map_on_the_eval_clips_present(mini_audioset: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        ["bash", "recipes/audioset/run.sh", "--audio-dir", str(mini_audioset / "audio"), "--meta-dir",
         str(mini_audioset / "meta"), "--family", "maeast_patch", "--size", "tiny", "--out", str(out),
         "--pretrain-steps", "4", "--epochs", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "eval clips used: 10" in done.stdout
    missing = (out / "data" / "missing_eval.csv").read_text()
    assert "evamissing0" in missing
    for run in ("finetune_as20k", "linprobe_as20k"):
        res = json.loads((out / run / "results.json").read_text())
        assert res["loss"] == "bce" and res["select_metric"] == "mAP" and res["num_test_clips"] == 10
        assert 0.0 < res["metrics"]["test"]["mAP"] <= 1.0
        clips = (out / run / "test_clips.txt").read_text().split()
        assert len(clips) == 10 and all(c.startswith("eva") for c in clips)
    assert "mean ± std" in (out / "results.md").read_text()
