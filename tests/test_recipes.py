"""The recipes as users run them: a reduced offline demo end to end (generated ESC-50-style
corpus -> the ESC-50 recipe: pretrain, linear probe and fine-tuning, pretrained vs random init,
embeddings, report), and a stage restart that redoes only what is missing."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    done = _run("recipes/demo/run.sh", "--out", str(out), "--clips-per-fold", "1", "--folds", "1 2",
                "--pretrain-steps", "6", "--epochs", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out / "stdout.txt").write_text(done.stdout)
    return out


def test_reduced_demo_runs_end_to_end_and_prints_the_table(demo: Path) -> None:
    esc = demo / "esc50"
    stdout = (demo / "stdout.txt").read_text()
    assert "mean ± std" in stdout and "pretrained" in stdout and "random" in stdout
    for task in ("linprobe", "finetune"):
        for init in ("pretrained", "random"):
            for fold in (1, 2):
                res = json.loads((esc / task / init / f"fold{fold}" / "results.json").read_text())
                assert res["task"] == task and res["init"] == init and res["selected_on"] == "val"
                assert res["split"]["test_values"] == [fold] and res["num_test_clips"] == 8
                assert len((esc / task / init / f"fold{fold}" / "test_clips.txt").read_text().split()) == 8
    assert (esc / "pretrain" / "model.pt").is_file() and (esc / "embeddings.h5").is_file()
    table = (esc / "results.md").read_text()
    assert table.count("mean ± std") >= 4
    assert (esc / "results.csv").is_file() and (esc / "curves.png").stat().st_size > 1000
    assert len(list((demo / "masks").glob("*.png"))) >= 3
    # stage 3: the learning benchmark on keyword spotting, pretrained vs random init vs fbank
    if shutil.which("espeak-ng"):
        kws = json.loads((demo / "probe" / "eval" / "espeak_kws" / "results.json").read_text())
        kinds = {row["kind"] for row in kws["rows"]}
        assert {"checkpoint", "random", "fbank"} <= kinds
        assert "espeak_kws" in stdout and "maeast_patch-random" in stdout


def test_a_stage_restart_redoes_only_what_is_missing(demo: Path) -> None:
    esc = demo / "esc50"
    kept = esc / "finetune" / "pretrained" / "fold1" / "results.json"
    redo = esc / "finetune" / "pretrained" / "fold2"
    before = json.loads((redo / "results.json").read_text())
    stamp = kept.stat().st_mtime_ns
    args = ["recipes/esc50/run.sh", "--data", str(demo / "corpus"), "--family", "ssast_patch", "--size", "tiny",
            "--out", str(esc), "--folds", "1 2", "--random-baseline", "--epochs", "2", "--stage", "5", "--stop-stage", "5"]

    (redo / "results.json").unlink()  # as if killed after the last epoch, before the results
    again = _run(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finetune pretrained fold 1: done" in again.stdout and kept.stat().st_mtime_ns == stamp
    assert json.loads((redo / "results.json").read_text())["metrics"] == before["metrics"]

    for f in redo.iterdir():  # a fold that never ran: trained again, to the same numbers
        f.unlink()
    again = _run(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    after = json.loads((redo / "results.json").read_text())
    assert after["metrics"] == before["metrics"] and after["selected_epoch"] == before["selected_epoch"]


def test_every_recipe_masks_what_its_paper_masks_at_the_recipes_grid() -> None:
    """A preset's absolute mask count is for its own grid: SSAST-mini's 24 of 32 patches became
    24 of 256 (9 %) in the ESC-50 tiny config. Each config, built as it is, hides ~75 % as SSAST
    (400 of 512) does."""
    from audiossl.models.registry import build_config
    from audiossl.train.pretrain import load_config

    for path in sorted(REPO.glob("recipes/*/conf/pretrain_*.yaml")):
        cfg = load_config(path, ["--data.train", "x.h5"])
        if not cfg.model.startswith("ssast"):
            continue
        model_cfg = build_config(cfg.model, **cfg.model_args)
        grid = model_cfg.encoder.pos_grid
        share = model_cfg.num_masked / (grid[0] * grid[1])
        assert 0.7 <= share <= 0.8, f"{path.relative_to(REPO)}: {model_cfg.num_masked} of {grid[0] * grid[1]} tokens"


@pytest.mark.parametrize("option", ["--threads", "--pretrain-runs"])
@pytest.mark.parametrize("value", ["0", "two", ""])
def test_probe_recipe_refuses_a_bad_count_before_doing_anything(option: str, value: str, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    done = _run("recipes/probe/run.sh", "--out", str(out), option, value, "--no-install")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{option} must be a positive integer, got '{value}'" in done.stderr
    assert not out.exists()


def test_probe_recipe_pretrains_each_run_with_its_own_seed(make_speech, tmp_path: Path) -> None:
    # Stage 3 alone, on a store of real speech (one batch of 16 clips) standing in for the pooled
    # training audio.
    from audiossl.data.manifest import read_manifest
    from audiossl.data.store import compute_stats, precompute, write_normalizer

    out = tmp_path / "probe"
    (out / "tasks" / "toy").mkdir(parents=True)
    (out / "tasks" / "toy" / "manifest.csv").write_text("id,path,labels,split\n")
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for i in range(16):
        shutil.copy(make_speech(f"Clip number {i} of the pooled training audio."), wavs / f"c{i}.wav")
    store = out / "pool" / "train.h5"
    precompute(read_manifest(wavs), store, workers=1, progress=False)
    write_normalizer(store, compute_stats(store, progress=False).to_normalizer())
    done = _run("recipes/probe/run.sh", "--out", str(out), "--tasks", "toy", "--families", "maeast_patch",
                "--steps", "2", "--pretrain-runs", "2", "--stage", "3", "--stop-stage", "3", "--no-install")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name, seed in (("maeast_patch", 1), ("maeast_patch-run2", 2)):
        run = out / "pretrain" / name
        assert (run / "model.pt").exists(), name
        assert f"seed: {seed}\n" in (run / "config.yaml").read_text(), name
    minutes = (out / "pretrain" / "minutes.txt").read_text()
    assert "maeast_patch:" in minutes and "maeast_patch-run2:" in minutes
    again = _run("recipes/probe/run.sh", "--out", str(out), "--tasks", "toy", "--families", "maeast_patch",
                 "--pretrain-runs", "2", "--stage", "3", "--stop-stage", "3", "--no-install")
    assert again.returncode == 0 and "maeast_patch-run2: pretrained" in again.stdout
