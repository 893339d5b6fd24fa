"""Issue 13 (reliability), `audiossl embed` and the HEAR API over it: non-finite clips are skipped
and listed as `audiossl fbank` lists them, a run that embeds nothing fails, mismatch errors name
the file, the batching tolerance is the documented one, and the skipped list survives any file
name. Synthetic tones through a tiny EAT (1.28 s windows), so nothing here needs espeak-ng."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiossl import hear
from audiossl.audio import AudioError
from audiossl.checkpoint import CheckpointError, load_checkpoint, native_payload, save_checkpoint
from audiossl.embed import Embedder, embed_files, read_embeddings
from audiossl.features import FbankConfig, Normalizer
from audiossl.models.encoder import Encoder
from audiossl.models.registry import build_model

SR = 16000
TARGET = 128
# Clip lengths in samples: under one patch, under a window, one window, and 2-4 windows.
LENGTHS = (3000, 8000, 16000, 20000, 25600, 30000, 41000, 52000)


def _payload(model, family: str = "eat", **kw):
    return native_payload(
        model,
        family=family,
        fbank=FbankConfig.preset("ast").to_dict(),
        normalizer=Normalizer.preset("audioset").to_dict(),
        target_length=TARGET,
        **kw,
    )


def _tone(n: int, i: int) -> np.ndarray:
    t = np.arange(n) / SR
    noise = np.random.default_rng(i).standard_normal(n)
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t * (1 + t)) + 0.05 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "eat_tiny.pt", _payload(build_model("eat_tiny")))


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tones")
    for i, n in enumerate(LENGTHS):
        sf.write(str(root / f"c{i}.wav"), _tone(n, i), SR)
    return root


def _read_skipped(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh, delimiter="\t"))


def _command_args(*argv: str) -> argparse.Namespace:
    from audiossl.commands import embed as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args([*argv, "--quiet"])


# ------------------------------------------------------------------- 1. non-finite embeddings
def test_non_finite_clip_is_skipped_and_listed_like_fbank(tmp_path, checkpoint):
    """Samples ×1e30 overflow the float32 power spectrum: `audiossl fbank` skips such a clip
    ("fbank is not finite"); embed skipped nothing and wrote a NaN clip vector. Now it skips and
    lists it, and the clips batched with it get what they get without it."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        sf.write(str(clips / f"ok{i}.wav"), _tone(12000 + 4000 * i, i), SR)
    sf.write(str(clips / "huge.wav"), _tone(16000, 9) * np.float32(1e30), SR, subtype="FLOAT")
    out = tmp_path / "emb.h5"
    summary = embed_files(checkpoint, clips, out, frames=True, batch_size=8, progress=False)
    assert (summary["clips"], summary["skipped"]) == (3, 1)
    data = read_embeddings(out)
    assert data["ids"].tolist() == ["ok0", "ok1", "ok2"]
    assert np.isfinite(data["clip"]).all() and np.isfinite(data["frames"]).all()
    rows = _read_skipped(out.with_name(out.name + ".skipped.tsv"))
    assert rows[0] == ["manifest_index", "id", "path", "reason"]
    assert [r[:3] for r in rows[1:]] == [["0", "huge", str(clips / "huge.wav")]]
    assert rows[1][3].startswith("fbank is not finite")
    # The other clips of the batch are what they are alone.
    emb = Embedder.from_checkpoint(checkpoint)
    from audiossl.audio import load

    for i in range(3):
        alone = emb.embed([load(clips / f"ok{i}.wav")])[0]
        np.testing.assert_allclose(data["clip"][i], alone.clip.numpy(), atol=1e-6, rtol=0)


def test_non_finite_embedding_of_a_finite_fbank_is_skipped(tmp_path, checkpoint, tones, monkeypatch):
    """A finite fbank can still give a non-finite embedding (overflow inside a reduced-precision
    encoder): that clip is skipped and listed too, its batch-mates kept."""
    original = Embedder.embed_fbank

    def poisoned(self, feats, frames=True):
        out = original(self, feats, frames=frames)
        out[1].clip = torch.full_like(out[1].clip, float("nan"))
        return out

    monkeypatch.setattr(Embedder, "embed_fbank", poisoned)
    out = tmp_path / "emb.npz"
    summary = embed_files(checkpoint, tones, out, batch_size=8, progress=False)
    assert (summary["clips"], summary["skipped"]) == (len(LENGTHS) - 1, 1)
    assert np.isfinite(read_embeddings(out)["clip"]).all()
    rows = _read_skipped(out.with_name(out.name + ".skipped.tsv"))
    assert rows[1][1] == "c1" and rows[1][3].startswith("embedding is not finite")


# ------------------------------------------------------------------- 2. nothing embedded
def test_nothing_embedded_fails_with_the_reason(tmp_path, checkpoint, caplog):
    """One corrupt file used to exit 0 with "0 clips embedded" and leave an empty output (which a
    recipe's `[ -f out ] ||` guard then takes for done). Now the command exits 1 naming the file
    and the reason, writes no output, and keeps the skipped list."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    out = tmp_path / "x.h5"
    from audiossl.commands import embed as command

    with caplog.at_level(logging.ERROR):
        assert command.run(_command_args(str(checkpoint), str(bad), "-o", str(out))) == 1
    assert "nothing embedded" in caplog.text and str(bad) in caplog.text and "corrupt" in caplog.text
    assert not out.exists() and not out.with_name("x.h5.partial").exists()
    assert _read_skipped(out.with_name("x.h5.skipped.tsv"))[1][2] == str(bad)
    with pytest.raises(AudioError, match="nothing embedded"):
        embed_files(checkpoint, bad, out, progress=False)
    # A library caller that wants an empty file for an all-bad input can still have one.
    summary = embed_files(checkpoint, bad, out, progress=False, allow_empty=True)
    assert summary["clips"] == 0 and read_embeddings(out)["clip"].shape == (0, 64)


# ------------------------------------------------------------------- 3. mismatch names the file
def test_checkpoint_that_does_not_fit_names_its_path(tmp_path, checkpoint, tones, caplog):
    broken = load_checkpoint(checkpoint)
    broken["model"].pop("encoder.patch_embed.proj.weight")
    broken_path = save_checkpoint(tmp_path / "broken.pt", broken)
    with pytest.raises(CheckpointError, match="does not fit the model") as info:
        Embedder.from_checkpoint(broken_path)
    assert str(broken_path) in str(info.value)
    with pytest.raises(CheckpointError, match="does not fit the model") as info:
        hear.load_model(str(broken_path))
    assert str(broken_path) in str(info.value)

    mel64 = load_checkpoint(checkpoint)
    mel64["fbank"]["num_mel_bins"] = 64
    mel64_path = save_checkpoint(tmp_path / "mel64.pt", mel64)
    from audiossl.commands import embed as command

    for path in (broken_path, mel64_path):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert command.run(_command_args(str(path), str(tones), "-o", str(tmp_path / "x.h5"))) == 1
        assert str(path) in caplog.text


def test_window_past_a_stored_position_table_fails_before_any_clip(tmp_path, tones):
    """An imported EAT stores its position table; a window longer than the table used to fail
    mid-run, on the first long clip, with neither the clip's nor the checkpoint's path. Now the
    embedder refuses the window at once, naming the checkpoint, and its default window fits."""
    torch.manual_seed(0)
    config = dataclasses.replace(build_model("eat_tiny").encoder.config, pos_table_rows=8 * 8)  # 8 steps: 128 frames
    path = save_checkpoint(tmp_path / "table.pt", _payload(Encoder(config), "encoder", meta={"source": "eat"}))
    with pytest.raises(ValueError, match="stored position table") as info:
        Embedder.from_checkpoint(path, window_frames=256)
    assert str(path) in str(info.value)
    summary = embed_files(path, tones, tmp_path / "t.h5", progress=False)
    assert summary["clips"] == len(LENGTHS)
    assert Embedder(Encoder(config)).window_frames == TARGET  # no target_length: the table's length


def test_a_clip_the_model_cannot_take_names_the_files(tmp_path, checkpoint, tones, monkeypatch):
    """Any other ValueError of the encoder on a batch stops the run (it is a mismatch, not a bad
    clip) naming the checkpoint and the batch's files, and leaves no partial output."""

    def refuse(self, feats, frames=True):
        raise ValueError("token grid (99, 8) does not fit")

    monkeypatch.setattr(Embedder, "embed_fbank", refuse)
    out = tmp_path / "x.h5"
    with pytest.raises(ValueError, match="does not fit") as info:
        embed_files(checkpoint, tones / "c3.wav", out, progress=False)
    assert str(checkpoint) in str(info.value) and str(tones / "c3.wav") in str(info.value)
    assert not out.exists() and not out.with_name("x.h5.partial").exists()


# ------------------------------------------------------------------- 4. batching tolerance
def test_batch_size_changes_results_only_to_float_rounding(tmp_path, checkpoint, tones):
    """Measured: batch 1 vs batch 8 differ by ~2-5e-7 (float32 kernels reduce padded batches in
    another order); the help says so instead of promising identical results."""
    from audiossl.commands import embed as command

    got = {}
    for b in (1, 8):
        embed_files(checkpoint, tones, tmp_path / f"b{b}.h5", frames=True, batch_size=b, progress=False)
        got[b] = read_embeddings(tmp_path / f"b{b}.h5")
    for key in ("clip", "frames"):
        scale = max(1.0, float(np.abs(got[1][key]).max()))
        np.testing.assert_allclose(got[8][key], got[1][key], atol=1e-6 * scale, rtol=0)
    doc = " ".join(command.__doc__.split())
    assert "never changes" not in doc and "float rounding (~1e-6)" in doc


# ------------------------------------------------------------------- 5. skipped-list quoting
def test_skipped_list_survives_tabs_and_newlines_in_names(tmp_path, checkpoint, tones):
    names = ["tab\tname", "new\nline", 'quote"d']
    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(str(clips / "good.wav"), _tone(16000, 0), SR)
    for name in names:
        (clips / f"{name}.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    out = tmp_path / "emb.h5"
    summary = embed_files(checkpoint, clips, out, progress=False)
    assert summary["skipped"] == len(names)
    rows = _read_skipped(out.with_name(out.name + ".skipped.tsv"))
    assert rows[0] == ["manifest_index", "id", "path", "reason"] and all(len(r) == 4 for r in rows)
    assert sorted(r[1] for r in rows[1:]) == sorted(names)
    assert sorted(r[2] for r in rows[1:]) == sorted(str(clips / f"{n}.wav") for n in names)


# ------------------------------------------------------------------- HEAR
def test_hear_refuses_sounds_with_non_finite_embeddings(checkpoint):
    """HEAR's API cannot skip a sound, so a sound whose embedding is not finite is an error
    naming it, not a NaN row handed to the probe."""
    model = hear.load_model(str(checkpoint))
    audio = torch.from_numpy(np.stack([_tone(20000, 0), _tone(20000, 1) * np.float32(1e30)]))
    with pytest.raises(ValueError, match=r"sound\(s\) \[1\]"):
        hear.get_scene_embeddings(audio, model)
    with pytest.raises(ValueError, match=r"sound\(s\) \[1\]"):
        hear.get_timestamp_embeddings(audio, model)
    nan = audio[:1].clone()
    nan[0, 100] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        hear.get_scene_embeddings(nan, model)
    ok = hear.get_scene_embeddings(audio[:1], model)
    assert torch.isfinite(ok).all()


def test_hear_refusals_of_a_checkpoint_name_its_path(tmp_path, checkpoint):
    """The HEAR model's own refusal (a sample rate the validator rejects) names the file, as the
    embedder's do (a state dict that does not fit: see above)."""
    fb = FbankConfig.preset("ast").to_dict()
    fb["sample_frequency"] = 32000.0
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m32k.pt", native_payload(build_model("eat_tiny"), family="eat", fbank=fb))
    with pytest.raises(ValueError, match="HEAR allows sample rates") as info:
        hear.load_model(str(path))
    assert str(path) in str(info.value)
