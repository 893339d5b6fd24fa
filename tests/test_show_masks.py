"""`audiossl show-masks`: PNGs, stats table and JSON, skipped families, errors."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys

import pytest

from audiossl.commands import show_masks

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def parse(*argv):
    parser = argparse.ArgumentParser()
    show_masks.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_generated_signal_writes_pngs_and_stats(tmp_path, capsys):
    out = tmp_path / "masks"
    args = parse("--out", str(out), "--families", "random,chunk,drop", "--target-length", "256",
                 "--stats-rows", "64", "--examples", "2")
    assert show_masks.run(args) == 0
    for name in ("random", "chunk", "drop"):
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    stats = json.loads((out / "stats.json").read_text())
    assert stats["grid"] == [16, 8] and stats["source"] == "generated test signal"
    fam = stats["families"]
    # 128 tokens: random 0.8 keeps int(128 * 0.2) = 25; chunk keeps SSAST's 112/512 share = 28
    assert fam["random"]["coverage_mean"] == pytest.approx(103 / 128)
    assert fam["chunk"]["coverage_mean"] == pytest.approx(100 / 128)
    assert fam["drop"]["coverage_mean"] == pytest.approx(1 - (12 * 6) / 128)  # int(16*.8)=12, int(8*.8)=6
    table = capsys.readouterr().out
    assert "random" in table and "coverage_mean" in table


def test_real_speech_file(tmp_path, make_speech):
    # make_speech (tests/conftest.py) skips with a message where espeak-ng is missing; 44.1 kHz
    # stereo also exercises the resampling and downmix on the way in
    wav = make_speech("masks over a spectrogram of speech", sample_rate=44100, channels=2)
    args = parse("--audio", str(wav), "--out", str(tmp_path / "out"), "--families", "random",
                 "--target-length", "320", "--stats-rows", "32", "--examples", "1")
    assert show_masks.run(args) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["source"] == wav.name and stats["grid"] == [20, 8]
    assert (tmp_path / "out" / "random.png").read_bytes().startswith(PNG_MAGIC)


def test_errors(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.ERROR)
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is not a wav file")
    assert show_masks.run(parse("--audio", str(bad), "--out", str(tmp_path))) == 1
    assert "not_audio.wav" in caplog.text
    assert show_masks.run(parse("--families", "nope", "--out", str(tmp_path))) == 2
    assert "unknown families" in caplog.text
    assert show_masks.run(parse("--target-length", "8", "--out", str(tmp_path))) == 2
    assert "at least 16 frames" in caplog.text
    assert show_masks.run(parse("--families", ",", "--out", str(tmp_path))) == 1
    assert "no masking family could be drawn" in caplog.text
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert show_masks.run(parse("--out", str(tmp_path))) == 1
    assert "pip install 'audiossl[viz]'" in caplog.text


def test_family_names_match_the_gallery():
    from audiossl.masking.gallery import FAMILIES

    assert show_masks.FAMILIES == tuple(FAMILIES)


def test_help_imports_no_torch():
    code = ("import sys; from audiossl.cli import main\n"
            "try:\n    main(['show-masks', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--families" in out and out.strip().endswith("False")
