"""transformers, the real package: a randomly initialised ``ASTForAudioClassification`` written
with ``save_pretrained`` → ``audiossl convert --from ast_hf`` → the same hidden states (every
layer and the final one) and logits on the fbank of real speech; ``audiossl convert --export
ast_hf`` → ``ASTForAudioClassification.from_pretrained`` → the same again; and
``ASTFeatureExtractor`` (its AudioSet defaults, and the one the export writes) against our
``ast`` front end + ``audioset`` normaliser.

HF AST runs its conv over ``(B, 1, F, T)``, so its patch tokens are frequency-major
(``f·T' + t``); ours are time-major. The comparison puts HF's rows in our order (cls and dist
first in both).
"""

from __future__ import annotations

import sys

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed: run bash scripts/test.sh --interop")

from audiossl.audio import load  # noqa: E402
from audiossl.features import FbankConfig, Normalizer, fbank, pad_or_crop  # noqa: E402
from audiossl.models.downstream import classifier_from_checkpoint  # noqa: E402
from audiossl.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.interop

TOL = 1e-4
FRAMES, STRIDE, PATCH = 128, 10, 16
GRID_F = GRID_T = (FRAMES - PATCH) // STRIDE + 1  # 12 x 12 overlapping patches


def tiny_ast() -> "transformers.ASTForAudioClassification":
    cfg = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 patch_size=PATCH, frequency_stride=STRIDE, time_stride=STRIDE, max_length=FRAMES,
                                 num_mel_bins=128, num_labels=5)
    torch.manual_seed(0)
    model = transformers.ASTForAudioClassification(cfg).eval()
    with torch.no_grad():  # HF starts cls/dist/positions at zero: make every tensor count
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model


def time_major(h: torch.Tensor) -> torch.Tensor:
    body = h[:, 2:].reshape(h.shape[0], GRID_F, GRID_T, h.shape[-1]).transpose(1, 2).reshape(h.shape[0], -1, h.shape[-1])
    return torch.cat([h[:, :2], body], dim=1)


@pytest.fixture(scope="module")
def speech_fbank(make_speech):
    cfg = FbankConfig.preset("ast")
    clips = [load(make_speech(t)) for t in ("The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.")]
    norm = Normalizer.preset("audioset")
    x = torch.stack([norm(pad_or_crop(fbank(w, cfg)[0][0], FRAMES)) for w in clips])  # (2, 128, 128)
    return clips, x


def hf_outputs(model, x):
    with torch.no_grad():
        out = model(input_values=x, output_hidden_states=True)
    return out.logits, [time_major(h) for h in out.hidden_states[1:]]


def our_outputs(ckpt_path, x):
    clf = classifier_from_checkpoint(load_checkpoint(ckpt_path)).eval()
    with torch.no_grad():
        enc = clf.encoder(x.unsqueeze(1), return_hidden=True)
        return clf(x), enc.hidden, enc.x


def cli(*args, cwd):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "audiossl", "convert", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def test_from_ast_hf_and_back(tmp_path, speech_fbank, figure):
    _, x = speech_fbank
    model = tiny_ast()
    model.save_pretrained(tmp_path / "hf")
    cli("--from", "ast_hf", tmp_path / "hf", tmp_path / "ast.pt", cwd=tmp_path)
    ref_logits, ref_hidden = hf_outputs(model, x)
    with torch.no_grad():
        ref_last = time_major(model.audio_spectrogram_transformer(input_values=x).last_hidden_state)
    logits, hidden, last = our_outputs(tmp_path / "ast.pt", x)
    layers = max(_diff(h, r) for h, r in zip(hidden, ref_hidden))
    figure("HF -> audiossl: max abs diff per-layer hidden states", layers)
    figure("HF -> audiossl: max abs diff final hidden state", _diff(last, ref_last))
    figure("HF -> audiossl: max abs diff logits", _diff(logits, ref_logits))
    assert len(hidden) == len(ref_hidden) == 2
    assert layers <= TOL and _diff(last, ref_last) <= TOL and _diff(logits, ref_logits) <= TOL

    cli("--export", "ast_hf", tmp_path / "ast.pt", tmp_path / "exported", cwd=tmp_path)
    back = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "exported").eval()
    back_logits, back_hidden = hf_outputs(back, x)
    figure("audiossl -> HF from_pretrained: max abs diff logits", _diff(back_logits, logits))
    figure("audiossl -> HF from_pretrained: max abs diff hidden states",
           max(_diff(h, r) for h, r in zip(back_hidden, hidden)))
    assert _diff(back_logits, logits) <= TOL and _diff(back_logits, ref_logits) <= TOL
    assert max(_diff(h, r) for h, r in zip(back_hidden, ref_hidden)) <= TOL

    # The exported preprocessor_config.json is the checkpoint's front end.
    fe = transformers.ASTFeatureExtractor.from_pretrained(tmp_path / "exported")
    assert (fe.max_length, fe.num_mel_bins, fe.sampling_rate) == (FRAMES, 128, 16000)


@pytest.mark.parametrize("max_length", [1024, FRAMES])
def test_feature_extractor_equals_our_front_end(speech_fbank, max_length, figure):
    """HF's extractor leaves out one step of upstream AST's: the clip's mean is not subtracted
    from the waveform before the fbank (``remove_waveform_mean`` in our ``ast`` preset). Kaldi's
    per-frame DC removal takes most of a constant offset out anyway, so the two differ only by
    float rounding in near-silent frames; the test compares exactly (≤ 1e-4) with that one
    option matched and reports the preset-as-is figure beside it."""
    import dataclasses

    clips, _ = speech_fbank
    fe = transformers.ASTFeatureExtractor(max_length=max_length)  # AudioSet mean/std, 128 bins, 16 kHz
    cfg, norm = FbankConfig.preset("ast"), Normalizer.preset("audioset")
    hf_cfg = dataclasses.replace(cfg, remove_waveform_mean=False)
    assert (fe.mean, fe.std) == pytest.approx((norm.mean, norm.std))
    for i, wav in enumerate(clips):
        ref = fe(wav.numpy(), sampling_rate=16000, return_tensors="pt").input_values[0]
        matched = _diff(norm(pad_or_crop(fbank(wav, hf_cfg)[0][0], max_length)), ref)
        preset = _diff(norm(pad_or_crop(fbank(wav, cfg)[0][0], max_length)), ref)
        figure(f"ASTFeatureExtractor(max_length={max_length}) clip {i}: max abs diff vs ast (no waveform mean removal)", matched)
        figure(f"ASTFeatureExtractor(max_length={max_length}) clip {i}: max abs diff vs ast preset as is", preset)
        assert matched <= TOL and preset <= 1e-3
