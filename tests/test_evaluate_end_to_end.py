"""The benchmark end to end on real speech: a keyword task rendered with espeak-ng (3 words, split
by voice), a tiny EAT checkpoint, all baselines, per-layer rows; then resume and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from audiossl.data.manifest import Manifest, write_manifest
from audiossl.evaluate import evaluate, standard_representations
from audiossl.evaluate import runner as runner_module
from audiossl.features import FbankConfig, Normalizer
from audiossl.models.registry import build_model
from audiossl.checkpoint import native_payload, save_checkpoint

WORDS = ("yes", "no", "stop")
VOICES = {
    "train": ("en", "en-us", "en-gb-x-rp", "en+f3", "en-us+m3"),
    "valid": ("en-gb-scotland", "en+f2"),
    "test": ("en-gb-x-gbclan", "en-us+f4"),
}
LAYERS = ["all", "top2-mean"]


@pytest.fixture(scope="module")
def keyword_task(tmp_path_factory) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); real-speech tests skipped")
    root = tmp_path_factory.mktemp("kws")
    rows = []
    for split, voices in VOICES.items():
        speeds = (140, 190) if split == "train" else (165,)
        for voice in voices:
            for speed in speeds:
                for word in WORDS:
                    clip_id = f"{word}_{voice.replace('+', '_')}_{speed}"
                    path = root / "wav" / f"{clip_id}.wav"
                    path.parent.mkdir(exist_ok=True)
                    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), word], check=True,
                                   capture_output=True)
                    rows.append({"id": clip_id, "path": str(path), "labels": (word,), "split": split})
    return write_manifest(Manifest(pd.DataFrame(rows)), root / "manifest.csv")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = build_model("eat_tiny")  # untrained: the protocol, not the learning, is under test
    payload = native_payload(model, family="eat", fbank=FbankConfig.preset("ast").to_dict(),
                             normalizer=Normalizer.preset("audioset").to_dict(), target_length=128)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "eat_tiny.pt", payload)


def _specs(checkpoint):
    return standard_representations({"eat": checkpoint}, layers=LAYERS)


@pytest.fixture(scope="module")
def first_run(keyword_task, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    start = time.perf_counter()
    results = evaluate({"kws": keyword_task}, _specs(checkpoint), probe="logreg", seeds=3, out=out, knn=True,
                       progress=False)
    seconds = time.perf_counter() - start
    print(f"\nend-to-end evaluate (first run): {seconds:.1f} s, {results.stats}")
    return results, out, seconds


def test_end_to_end_table_rows_and_files(first_run):
    results, out, _ = first_run
    task = results.tasks["kws"]
    names = [r.name for r in task.rows]
    assert names == ["eat", "eat/L0", "eat/L1", "eat/top2-mean", "eat-random", "eat-random/L0", "eat-random/L1",
                     "eat-random/top2-mean", "fbank"]
    assert task.sizes == {"train": 30, "valid": 6, "test": 6}
    assert task.chance == pytest.approx(1 / 3)
    # Passes: default + all-layers for the checkpoint, the same per seed for random, one fbank.
    assert results.stats["passes_computed"] == 2 + 2 * 3 + 1
    eat, rand, fb = task.row("eat"), task.row("eat-random"), task.row("fbank")
    assert eat.info["pooling"] == "cls" and eat.dim == 64 and fb.dim == 256
    assert [r.seed for r in rand.runs] == [0, 1, 2] and len(eat.knn) == 3
    for row in task.rows:
        assert 0.0 <= row.test_mean <= 1.0 and row.runs[0].param == "C"
    kinds = {(m["pretrained"], m["kind"]): m for m in task.margins}
    assert kinds[("eat", "random")]["baseline"] == "eat-random"
    assert kinds[("eat/L1", "random")]["baseline"] == "eat-random/L1"
    assert kinds[("eat", "fbank")]["mean"] == pytest.approx(eat.test_mean - fb.test_mean)

    folder = out / "kws"
    md = (folder / "results.md").read_text()
    assert "| eat-random/top2-mean | random |" in md and "eat − eat-random (random)" in md
    table = pd.read_csv(folder / "results.csv")
    assert table["representation"].tolist() == names
    assert set(table["n_train"]) == {30} and "knn_test_mean" in table
    data = json.loads((folder / "results.json").read_text())
    assert len(data["rows"][0]["runs"]) == 3 and data["rows"][0]["runs"][0]["grid"]
    for name in ("summary.md", "summary.csv", "summary.json"):
        assert (out / name).is_file()
    assert "## kws: margins" in (out / "summary.md").read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (folder / "chart.png").exists()
    else:
        assert (folder / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.partial"))


def _no_compute(*args, **kwargs):
    raise AssertionError("a cached pass was recomputed")


def test_rerun_with_cache_recomputes_nothing(first_run, keyword_task, checkpoint, monkeypatch):
    results, out, _ = first_run
    monkeypatch.setattr(runner_module, "compute_pass", _no_compute)
    again = evaluate({"kws": keyword_task}, _specs(checkpoint), seeds=3, out=out, knn=True, progress=False)
    assert again.stats["passes_computed"] == 0 and again.stats["probes_fitted"] == 0
    assert [r.test_mean for r in again.tasks["kws"].rows] == [r.test_mean for r in results.tasks["kws"].rows]


def test_killed_run_resumes_at_the_missing_pass(first_run, keyword_task, checkpoint, monkeypatch):
    _, out, _ = first_run
    cached = sorted((out / "cache" / "kws").glob("random-eat_tiny-layers-seed2-*.npz"))
    assert len(cached) == 1
    cached[0].unlink()  # as if the run died while computing it
    computed = []
    real = runner_module.compute_pass

    def counting(key, *args, **kwargs):
        computed.append(key.label)
        return real(key, *args, **kwargs)

    monkeypatch.setattr(runner_module, "compute_pass", counting)
    again = evaluate({"kws": keyword_task}, _specs(checkpoint), seeds=3, out=out, knn=True, progress=False)
    assert computed == ["random-eat_tiny-layers-seed2"]
    assert again.stats["passes_cached"] == 8


def test_cli_reads_the_same_cache(first_run, keyword_task, checkpoint, monkeypatch, capsys):
    from audiossl.cli import main

    _, out, _ = first_run
    monkeypatch.setattr(runner_module, "compute_pass", _no_compute)
    code = main(["evaluate", "--task", f"kws={keyword_task}", "--checkpoint", f"eat={checkpoint}",
                 "--layers", "all", "--layers", "top2-mean", "--knn", "--out", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| eat-random |" in text and "eat − fbank (fbank)" in text


def test_cli_names_a_manifest_without_valid(tmp_path, keyword_task, caplog):
    from audiossl.cli import main

    table = pd.read_csv(keyword_task)
    table["split"] = table["split"].replace({"valid": "train"})
    bad = tmp_path / "bad.csv"
    table.to_csv(bad, index=False)
    code = main(["evaluate", "--task", f"bad={bad}", "--baselines", "fbank", "--out", str(tmp_path / "o")])
    assert code == 1
    assert f"{bad}: no valid split" in caplog.text


def test_cli_help_does_not_import_torch():
    code = ("import sys\nfrom audiossl.cli import main\ntry:\n    main(['evaluate', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert "--checkpoint NAME=CKPT" in proc.stdout
