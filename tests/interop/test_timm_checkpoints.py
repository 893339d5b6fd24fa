"""timm, the layer library the upstream models are built on: a random tiny ``VisionTransformer``
(patch 16, ViT-Ti width so the importers' head rule gives its 3 heads) saved in each official
checkpoint layout → ``audiossl convert`` → our encoder's output equals timm's
``forward_features`` (≤ 1e-4) on the same input.

* ``mae``: facebookresearch/mae's encoder files are ``{"model": timm ViT state dict}``; a
  3-channel 64×64 image (4×4 grid), tokens row-major in both.
* ``audiomae``: AudioMAE's encoder is the same timm ViT on ``(B, 1, T, F)`` fbanks (time is the
  image height, as ours): ``{"model": ...}`` with a 256×128 input (16×8 grid).
* ``ssast``: SSAST's ``ASTModel`` is a timm DeiT (``VisionTransformerDistilled``: cls + dist
  tokens) whose conv and table are replaced for one-channel input, run on the fbank transposed to
  ``(B, 1, F, T)``, so its patches are frequency-major; saved from ``nn.DataParallel`` as
  ``module.v.*`` (with its ``p_input_fdim``/``p_input_tdim`` scalars; the pretraining heads are
  left out, an encoder-only file). Here: timm's DeiT built for a ``(128, T)`` one-channel image, fed the transposed
  fbank, rows put back in time-major order for the comparison.
* ``ast``: AST's fine-tuned files are the same DeiT with a stride-10 conv (overlapping 16×16
  patches) and a table for that grid, plus ``module.mlp_head`` (LayerNorm, Linear on the mean of
  the two tokens). Here: timm's DeiT with its ``patch_embed.proj`` swapped for a stride-10 conv
  and its ``pos_embed`` for a table of the new grid, as AST's constructor does; logits compared too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm", reason="timm is not installed: run bash scripts/test.sh --interop")

from timm.models.deit import VisionTransformerDistilled  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from audiossl.audio import load  # noqa: E402
from audiossl.features import FbankConfig, Normalizer, fbank, pad_or_crop  # noqa: E402
from audiossl.models.downstream import classifier_from_checkpoint  # noqa: E402
from audiossl.checkpoint import load_checkpoint  # noqa: E402
from audiossl.models.registry import encoder_from_checkpoint  # noqa: E402

pytestmark = pytest.mark.interop

TOL = 1e-4
VIT_TI = dict(embed_dim=192, depth=2, num_heads=3, mlp_ratio=4.0, qkv_bias=True)


def randomise(model: nn.Module) -> nn.Module:
    """timm starts cls/dist tokens near zero and norms at one: make every tensor count."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def speech(make_speech):
    cfg, norm = FbankConfig.preset("ast"), Normalizer.preset("audioset")
    feats = [norm(pad_or_crop(fbank(load(make_speech(t)), cfg)[0][0], 256))
             for t in ("The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.")]
    return torch.stack(feats).unsqueeze(1)  # (2, 1, T=256, F=128)


def convert(source: str, obj, tmp_path) -> dict:
    src, out = tmp_path / f"{source}_upstream.pt", tmp_path / f"{source}.pt"
    torch.save(obj, src)
    proc = subprocess.run([sys.executable, "-m", "audiossl", "convert", "--from", source, str(src), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return load_checkpoint(out)


def encode(payload: dict, x: torch.Tensor) -> torch.Tensor:
    encoder, _ = encoder_from_checkpoint(payload)
    with torch.no_grad():
        return encoder.eval()(x).x


def freq_major_to_time_major(h: torch.Tensor, f_dim: int, t_dim: int, prefix: int) -> torch.Tensor:
    B, _, D = h.shape
    body = h[:, prefix:].reshape(B, f_dim, t_dim, D).transpose(1, 2).reshape(B, t_dim * f_dim, D)
    return torch.cat([h[:, :prefix], body], dim=1)


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def test_mae_image_encoder(tmp_path, figure):
    vit = randomise(VisionTransformer(img_size=64, patch_size=16, in_chans=3, num_classes=0, **VIT_TI))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = vit.forward_features(x)
    payload = convert("mae", {"model": vit.state_dict()}, tmp_path)
    d = _diff(encode(payload, x), ref)
    figure("mae {'model': timm ViT} 64x64 image: max abs diff vs timm forward_features", d)
    assert d <= TOL


def test_audiomae_encoder(tmp_path, speech, figure):
    vit = randomise(VisionTransformer(img_size=(256, 128), patch_size=16, in_chans=1, num_classes=0, **VIT_TI))
    with torch.no_grad():
        ref = vit.forward_features(speech)
    payload = convert("audiomae", {"model": vit.state_dict()}, tmp_path)
    d = _diff(encode(payload, speech), ref)
    figure("audiomae {'model': timm ViT} 256x128 fbank: max abs diff vs timm forward_features", d)
    assert d <= TOL


def deit_for_fbank(frames: int, stride: int) -> VisionTransformerDistilled:
    """SSAST/AST's arrangement from timm parts: DeiT on a one-channel (F, T) image; for a stride
    other than 16, a new conv and a positional table for its grid (AST's constructor)."""
    deit = VisionTransformerDistilled(img_size=(128, frames), patch_size=16, in_chans=1, num_classes=0, **VIT_TI)
    if stride != 16:
        f_dim, t_dim = (128 - 16) // stride + 1, (frames - 16) // stride + 1
        deit.patch_embed.proj = nn.Conv2d(1, VIT_TI["embed_dim"], kernel_size=16, stride=stride)
        deit.pos_embed = nn.Parameter(torch.zeros(1, 2 + f_dim * t_dim, VIT_TI["embed_dim"]))
    return randomise(deit)


def test_ssast_patch_encoder(tmp_path, speech, figure):
    deit = deit_for_fbank(256, 16)
    with torch.no_grad():
        ref = freq_major_to_time_major(deit.forward_features(speech.transpose(2, 3)), 8, 16, prefix=2)
    sd = {f"module.v.{k}": v for k, v in deit.state_dict().items()}
    # SSAST's pretraining model keeps its input size as two frozen scalar parameters.
    sd.update({"module.p_input_fdim": torch.tensor(128), "module.p_input_tdim": torch.tensor(256)})
    payload = convert("ssast", sd, tmp_path)
    d = _diff(encode(payload, speech), ref)
    figure("ssast module.v.* (timm DeiT, freq-major 16x16): max abs diff vs timm forward_features", d)
    assert d <= TOL


def test_ast_finetuned(tmp_path, speech, figure):
    deit = deit_for_fbank(256, 10)
    head = randomise(nn.Sequential(nn.LayerNorm(VIT_TI["embed_dim"]), nn.Linear(VIT_TI["embed_dim"], 7)))
    with torch.no_grad():
        tokens = deit.forward_features(speech.transpose(2, 3))
        ref_logits = head((tokens[:, 0] + tokens[:, 1]) / 2)
        ref = freq_major_to_time_major(tokens, 12, 25, prefix=2)
    sd = {**{f"module.v.{k}": v for k, v in deit.state_dict().items()},
          **{f"module.mlp_head.{k}": v for k, v in head.state_dict().items()}}
    payload = convert("ast", sd, tmp_path)
    d = _diff(encode(payload, speech), ref)
    clf = classifier_from_checkpoint(payload).eval()
    with torch.no_grad():
        dl = _diff(clf(speech), ref_logits)
    figure("ast module.v.* + mlp_head (timm DeiT, stride 10): max abs diff vs timm forward_features", d)
    figure("ast: max abs diff logits vs timm DeiT + mlp_head", dl)
    assert d <= TOL and dl <= TOL
