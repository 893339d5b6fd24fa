"""audiossl.embed and `audiossl embed`: real speech through a tiny EAT checkpoint.

The checkpoint's target_length is 128 frames (1.28 s), so the ~2.5 s sentences run through the
sliding windows and the short phrases through padding masks, with a model small enough to keep
the file fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiossl.audio import load
from audiossl.embed import Embedder, auto_pooling, embed_files, embedding_defaults, read_embeddings
from audiossl.features import FbankConfig, Normalizer, fbank
from audiossl.models.registry import build_model
from audiossl.checkpoint import native_payload, save_checkpoint

TARGET = 128
ATOL = 1e-5
SENTENCES = ("The quick brown fox jumps over the lazy dog.", "Hello.")


def _payload(model, family: str, **kw):
    return native_payload(
        model,
        family=family,
        fbank=FbankConfig.preset("ast").to_dict(),
        normalizer=Normalizer.preset("audioset").to_dict(),
        target_length=TARGET,
        **kw,
    )


@pytest.fixture(scope="module")
def eat_model():
    torch.manual_seed(0)
    return build_model("eat_tiny").eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, eat_model) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "eat_tiny.pt", _payload(eat_model, "eat"))


@pytest.fixture(scope="module")
def speech(make_speech):
    """A 2.5 s sentence (3 windows), a 0.5 s word, a 1.6 s crop (2 windows) and a 0.3 s crop
    (under two patches)."""
    sentence, word = (load(make_speech(t)) for t in SENTENCES)
    return [sentence, word, sentence[:25600], sentence[4000:8800]]


def test_auto_pooling_rules(eat_model):
    enc = eat_model.encoder
    assert auto_pooling({"family": "eat"}, enc) == "cls"
    assert auto_pooling({"family": "encoder", "meta": {"source": "eat_hf"}}, enc) == "cls"
    assert auto_pooling({"family": "encoder", "meta": {"source": "audiomae"}}, enc) == "mean"
    assert auto_pooling({"family": "mae"}, enc) == "mean"


def test_checkpoint_records_the_default_representation(eat_model, speech):
    """``meta.embed`` (what ``audiossl pretrain`` writes) is what "auto" means; explicit options
    win; a checkpoint without it keeps upstream's rule (EAT: CLS of the encoder output)."""
    recorded = _payload(eat_model, "eat", meta={"embed": {"pooling": "mean", "layers": [-2, -1], "layer_mean": True}})
    enc = eat_model.encoder
    assert embedding_defaults(recorded, enc) == {"pooling": "mean", "layers": [-2, -1], "layer_mean": True}
    assert embedding_defaults(_payload(eat_model, "eat"), enc) == {"pooling": "cls", "layers": None, "layer_mean": False}
    emb = Embedder.from_checkpoint(recorded)
    assert (emb.pooling, emb.layers, emb.layer_mean, emb.num_layers) == ("mean", [0, 1], True, None)
    got = emb.embed(speech[:2])
    stacked = Embedder.from_checkpoint(recorded, layers="all").embed(speech[:2])  # explicit: no mean
    for g, st in zip(got, stacked):
        assert g.clip.shape == (64,) and st.clip.shape == (2, 64)
        torch.testing.assert_close(g.clip, st.clip.mean(0), atol=ATOL, rtol=0)
        torch.testing.assert_close(g.frames, st.frames.mean(1), atol=ATOL, rtol=0)
    assert Embedder.from_checkpoint(recorded, pooling="cls").pooling == "cls"
    # A recorded layer the encoder lacks (another depth) falls back to the encoder output.
    deep = _payload(eat_model, "eat", meta={"embed": {"pooling": "mean", "layers": [5], "layer_mean": True}})
    assert embedding_defaults(deep, enc)["layers"] is None
    with pytest.raises(ValueError, match="layer_mean"):
        Embedder(enc, layer_mean=True)


def test_batched_equals_single(checkpoint, speech):
    emb = Embedder.from_checkpoint(checkpoint, max_rows=3)  # rows of several clips mixed per call
    assert emb.pooling == "cls" and emb.window_frames == TARGET and emb.hop_frames == TARGET // 2
    frames = [fbank(w)[1].item() for w in speech]
    assert max(frames) > TARGET > min(frames)  # both windows and padding are exercised
    batched = emb.embed(speech)
    for wave, b in zip(speech, batched):
        s = emb.embed([wave])[0]
        assert b.clip.shape == (64,) and b.frames.shape == s.frames.shape
        torch.testing.assert_close(b.clip, s.clip, atol=ATOL, rtol=0)
        torch.testing.assert_close(b.frames, s.frames, atol=ATOL, rtol=0)
        assert torch.equal(b.timestamps, s.timestamps)
    # Clips really differ (the equality above is not between constants).
    assert (batched[0].clip - batched[1].clip).abs().max() > 1e-2


def test_batched_equals_single_mean_pooling_all_layers(checkpoint, speech):
    emb = Embedder.from_checkpoint(checkpoint, pooling="mean", layers="all")
    batched = emb.embed(speech[1:3])
    for wave, b in zip(speech[1:3], batched):
        s = emb.embed([wave])[0]
        assert b.clip.shape == (2, 64) and b.frames.shape[1:] == (2, 64)
        torch.testing.assert_close(b.clip, s.clip, atol=ATOL, rtol=0)
        torch.testing.assert_close(b.frames, s.frames, atol=ATOL, rtol=0)
    # EAT has no final norm: the last block's output is the encoder output.
    last = Embedder.from_checkpoint(checkpoint, pooling="mean").embed(speech[1:2])[0]
    torch.testing.assert_close(batched[0].frames[:, -1], last.frames, atol=ATOL, rtol=0)


def test_short_clip_is_the_encoder_on_its_padded_fbank(checkpoint, eat_model, speech):
    """A clip under one window: fbank -> zero-pad the raw log-mel to whole patches -> normalise
    -> encoder, CLS and per-step frequency means; the partial last patch stays visible."""
    wave = speech[1]
    feats, n = fbank(wave)
    T = int(n)
    assert T < TARGET and T % 16
    x = Normalizer.preset("audioset")(torch.nn.functional.pad(feats, (0, 0, 0, -T % 16)))
    with torch.no_grad():
        out = eat_model.encoder(x.unsqueeze(1))
    got = Embedder.from_checkpoint(checkpoint).embed([wave])[0]
    torch.testing.assert_close(got.clip, out.x[0, 0], atol=ATOL, rtol=0)
    steps = out.tokens[0].reshape(-(-T // 16), 8, 64).mean(1)
    torch.testing.assert_close(got.frames, steps, atol=ATOL, rtol=0)


def test_bands_pooling_keeps_each_frequency_band(checkpoint, eat_model, speech):
    """pooling="bands": per frequency band the mean over the clip's token steps, bands
    concatenated low to high (8 × 64); frames concatenate the bands of each step. A long clip's
    windows are averaged by frames, as for the other poolings, and batching changes nothing."""
    wave = speech[1]
    feats, n = fbank(wave)
    T = int(n)
    x = Normalizer.preset("audioset")(torch.nn.functional.pad(feats, (0, 0, 0, -T % 16)))
    with torch.no_grad():
        grid = eat_model.encoder(x.unsqueeze(1)).tokens[0].reshape(-(-T // 16), 8, 64)
    emb = Embedder.from_checkpoint(checkpoint, pooling="bands")
    assert emb.num_bands == 8 and emb.output_dim == 512
    got = emb.embed([wave])[0]
    torch.testing.assert_close(got.clip, grid.mean(0).flatten(), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.frames, grid.flatten(1), atol=ATOL, rtol=0)
    # Not the mean pooling in disguise: the bands differ, and their average is the mean row.
    mean = Embedder.from_checkpoint(checkpoint, pooling="mean").embed([wave])[0]
    torch.testing.assert_close(got.clip.reshape(8, 64).mean(0), mean.clip, atol=ATOL, rtol=0)
    assert (got.clip.reshape(8, 64)[0] - got.clip.reshape(8, 64)[-1]).abs().max() > 1e-2
    batched = emb.embed(speech)  # a padded batch of four lengths, two of them windowed
    for w, b in zip(speech, batched):
        s = emb.embed([w])[0]
        assert b.clip.shape == (512,) and b.frames.shape[1] == 512
        torch.testing.assert_close(b.clip, s.clip, atol=ATOL, rtol=0)
        torch.testing.assert_close(b.frames, s.frames, atol=ATOL, rtol=0)


def test_timestamps_are_token_centres(checkpoint):
    emb = Embedder.from_checkpoint(checkpoint)
    # 16 frames of 25 ms every 10 ms: the first step spans 0..175 ms, centre 87.5; hop 160 ms.
    assert emb.step_ms == 160.0
    np.testing.assert_allclose(emb.step_timestamps(4).numpy(), [87.5, 247.5, 407.5, 567.5])


def test_long_clip_windows_are_stitched_without_duplicates(checkpoint, speech):
    emb = Embedder.from_checkpoint(checkpoint, pooling="mean", hop_ms=400)  # 40 frames -> 32 (2 steps)
    assert emb.hop_frames == 32
    wave = speech[0]
    feats = fbank(wave)[0][0]
    T = feats.shape[0]
    spans = emb.window_spans(T)
    assert spans[0] == (0, TARGET) and spans[1][0] == 32 and sum(1 for s, n in spans if n < TARGET) == 1
    assert spans[-1][0] + spans[-1][1] == T and spans[-2][0] + TARGET < T
    got = emb.embed([wave])[0]
    steps = -(-T // 16)
    assert got.frames.shape == (steps, 64)
    np.testing.assert_allclose(np.diff(got.timestamps.numpy()), 160.0)

    # Reference: each window alone, its steps placed at start/16 + local index; a step is taken
    # from the window whose central hop-wide stretch holds it (margin (8 - 2) // 2 = 3 steps).
    alone = [emb.embed_fbank([feats[s : s + n]])[0] for s, n in spans]
    expected = []
    for g in range(steps):
        k = min(max((g - 3) // 2, 0), len(spans) - 1)
        expected.append(alone[k].frames[g - k * 2])
    torch.testing.assert_close(got.frames, torch.stack(expected), atol=ATOL, rtol=0)
    weights = torch.tensor([n for _, n in spans], dtype=torch.float32)
    clip = sum(w * a.clip for w, a in zip(weights / weights.sum(), alone))
    torch.testing.assert_close(got.clip, clip, atol=ATOL, rtol=0)


def test_learned_positions_always_get_full_windows(speech):
    torch.manual_seed(0)
    model = build_model("ssast_tiny_patch", encoder={"depth": 2, "embed_dim": 64, "num_heads": 4})
    emb = Embedder.from_checkpoint(_payload(model, "ssast"))
    assert emb.pooling == "mean" and emb.window_frames == 64 * 16  # SSAST's (64, 8) table
    batched = emb.embed(speech[1:4:2])
    for wave, b in zip(speech[1:4:2], batched):
        s = emb.embed([wave])[0]
        torch.testing.assert_close(b.clip, s.clip, atol=ATOL, rtol=0)
        torch.testing.assert_close(b.frames, s.frames, atol=ATOL, rtol=0)


def test_imported_encoder_checkpoint_matches_the_objective(tmp_path, checkpoint, eat_model, speech):
    """An imported EAT arrives as a bare ``encoder`` checkpoint with meta.source: it embeds with
    CLS pooling and gives what the objective's student gives."""
    path = save_checkpoint(tmp_path / "enc.pt", _payload(eat_model.encoder, "encoder", meta={"source": "eat"}))
    a = Embedder.from_checkpoint(path)
    b = Embedder.from_checkpoint(checkpoint)
    assert a.pooling == "cls"
    torch.testing.assert_close(a.embed(speech[:2])[1].clip, b.embed(speech[:2])[1].clip, atol=0, rtol=0)


def test_imported_hf_eat_matches_upstream_features(tmp_path, folder):
    """Issue 6: an EAT imported from Hugging Face embeds as upstream extracts (its fixture holds
    ``EATModel.extract_features`` on a normalised fbank: CLS first, then 4 x 8 patch tokens), and
    `embed_files` runs on it."""
    fixture = Path(__file__).parent / "fixtures" / "convert" / "eat_hf.pt"
    if not fixture.is_file():
        pytest.skip("tests/fixtures/convert/eat_hf.pt (from the convert tests) is missing")
    from audiossl.convert import convert_payload

    fx = torch.load(fixture, weights_only=True)
    path = save_checkpoint(tmp_path / "eat_hf.pt", convert_payload("eat_hf", fx["state_dict"], hf_config=fx["config"]))
    emb = Embedder.from_checkpoint(path)
    assert emb.pooling == "cls"
    raw = emb.normalizer.inverse(fx["input"][:, 0])  # the embedder normalises itself
    feats = fx["features"]
    for i, got in enumerate(emb.embed_fbank(list(raw))):
        torch.testing.assert_close(got.clip, feats[i, 0], atol=1e-5, rtol=0)
        steps = feats[i, 1:].reshape(-1, 8, feats.shape[-1]).mean(1)
        torch.testing.assert_close(got.frames, steps, atol=1e-5, rtol=0)
    summary = embed_files(path, folder / "a.wav", tmp_path / "imported.h5", progress=False)
    assert summary["clips"] == 1 and read_embeddings(tmp_path / "imported.h5")["clip"].shape == (1, 32)


def test_maeast_input_batch_norm_becomes_the_normaliser():
    from audiossl.embed.embedder import _input_normalizer

    torch.manual_seed(0)
    model = build_model("maeast_frame_tiny").eval()
    model.batch_norm.running_mean.fill_(-5.0)
    model.batch_norm.running_var.fill_(9.0)
    x = torch.randn(1, 1, 20, 128) * 3 - 4
    want = model.normalize(x)
    for norm in (None, {"mean": -4.0, "std": 4.0}):
        payload = native_payload(model, family="maeast", normalizer=norm)
        if norm is not None:  # the checkpoint's normaliser runs first, then the BatchNorm
            want = model.normalize(Normalizer(**norm)(x))
        torch.testing.assert_close(_input_normalizer(payload)(x), want, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- files and CLI
@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_speech) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for name, text in (("a", SENTENCES[0]), ("sub/b", SENTENCES[1])):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / f"{name}.wav"), sf.read(str(make_speech(text)))[0], 16000)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    sf.write(str(root / "tiny.wav"), np.zeros(200, dtype=np.float32), 16000)  # < one 25 ms frame
    return root


@pytest.mark.parametrize("suffix", ["h5", "npz"])
def test_embed_files_writes_and_lists_skipped(tmp_path, checkpoint, folder, suffix):
    out = tmp_path / f"emb.{suffix}"
    summary = embed_files(checkpoint, folder, out, frames=True, batch_size=3, progress=False)
    assert summary["clips"] == 2 and summary["skipped"] == 2
    assert not out.with_name(out.name + ".partial").exists()
    data = read_embeddings(out)
    assert data["ids"].tolist() == ["a", "sub/b"]
    assert data["clip"].shape == (2, 64) and data["clip"].dtype == np.float32
    assert data["attrs"]["pooling"] == "cls" and data["attrs"]["window_frames"] == TARGET
    emb = Embedder.from_checkpoint(checkpoint)
    for i, name in enumerate(["a", "sub/b"]):
        ref = emb.embed([load(folder / f"{name}.wav")])[0]
        np.testing.assert_allclose(data["clip"][i], ref.clip.numpy(), atol=ATOL)
        lo, n = data["frame_offsets"][i], data["num_steps"][i]
        np.testing.assert_allclose(data["frames"][lo : lo + n], ref.frames.numpy(), atol=ATOL)
        np.testing.assert_allclose(data["timestamps"][lo : lo + n], ref.timestamps.numpy())
        assert data["duration"][i] == pytest.approx(load(folder / f"{name}.wav").numel() / 16000)
    assert data["frames"].shape[0] == data["num_steps"].sum()
    lines = out.with_name(out.name + ".skipped.tsv").read_text().splitlines()
    assert lines[0] == "manifest_index\tid\tpath\treason"
    skipped = {line.split("\t")[1]: line.split("\t")[3] for line in lines[1:]}
    assert set(skipped) == {"broken", "tiny"} and "shorter than one fbank frame" in skipped["tiny"]


def test_embed_single_file_without_frames(tmp_path, checkpoint, folder):
    out = tmp_path / "one.h5"
    embed_files(checkpoint, folder / "a.wav", out, progress=False, layers="0,-1")
    data = read_embeddings(out)
    assert data["ids"].tolist() == ["a"] and data["clip"].shape == (1, 2, 64)
    assert "frames" not in data and not out.with_name("one.h5.skipped.tsv").exists()
    # --format wins over the suffix, and the reader tells the formats apart by content.
    other = tmp_path / "one.bin"
    embed_files(checkpoint, folder / "a.wav", other, fmt="npz", progress=False, layers="0,-1")
    np.testing.assert_array_equal(read_embeddings(other)["clip"], data["clip"])


def test_cli_end_to_end(tmp_path, checkpoint, folder):
    out = tmp_path / "cli.npz"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "audiossl", "embed", str(checkpoint), str(folder), "-o", str(out),
         "--frames", "--layers", "all", "--pooling", "mean", "--batch-size", "2", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 clips embedded, 2 skipped" in proc.stdout
    data = read_embeddings(out)
    assert data["clip"].shape == (2, 2, 64) and data["frames"].shape[1:] == (2, 64)
    assert data["attrs"]["pooling"] == "mean"


def test_command_reports_a_bad_checkpoint(tmp_path, folder, caplog):
    import argparse

    from audiossl.commands import embed as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "missing.pt"), str(folder), "-o", str(tmp_path / "x.h5"), "--quiet"])
    assert command.run(args) == 1
    assert "no such file" in caplog.text and not (tmp_path / "x.h5").exists()
