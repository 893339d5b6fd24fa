"""audiossl/viz.py: figure helpers, the spectrogram the gallery draws on, the mask gallery, and
the MAE reconstruction figure."""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest
import torch

from audiossl import viz
from audiossl.audio import AudioError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_spectrogram_pads_and_crops():
    wave = viz.demo_signal(0.5)
    spec = viz.spectrogram(wave, 100)
    assert spec.shape == (100, 128)
    # 0.5 s -> 48 frames, then padding at the clip's quietest value (silence in the picture)
    assert (spec[48:] == spec[:48].min()).all() and spec[:48].std() > 1
    assert viz.spectrogram(np.concatenate([wave] * 4), 64).shape == (64, 128)


def test_gallery_spectrogram_lengths(tmp_path):
    spec, source = viz.gallery_spectrogram()
    assert spec.shape == (1024, 128) and source == "generated test signal"
    assert viz.gallery_spectrogram(target_length=40)[0].shape == (32, 128)  # whole patches only
    with pytest.raises(ValueError, match="at least 16 frames"):
        viz.gallery_spectrogram(target_length=8)
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is not a wav file")
    with pytest.raises(AudioError, match="not_audio.wav"):
        viz.gallery_spectrogram(bad)


def test_save_png_is_atomic_and_matches_savefig(tmp_path):
    pytest.importorskip("matplotlib")
    fig = viz.new_figure(figsize=(2, 1), dpi=50)
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    path = viz.save_png(fig, tmp_path / "sub" / "line.png")
    direct = tmp_path / "direct.png"
    fig.savefig(direct, format="png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.read_bytes() == direct.read_bytes()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["line.png"]


def test_missing_matplotlib_names_what_needed_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"the chart needs matplotlib: pip install 'audiossl\[viz\]'"):
        viz.new_figure("the chart")


def test_mask_gallery_writes_one_png_per_layer_and_stats(tmp_path):
    pytest.importorskip("matplotlib")
    gallery = viz.mask_gallery(tmp_path / "m", families=["random", "hierarchical"], target_length=128,
                               examples=1, stats_rows=16)
    assert gallery.grid == (8, 8) and gallery.source == "generated test signal"
    labels = [label for label, _ in gallery.rows]
    assert labels[0] == "random" and labels[1:] == [f"hierarchical[{i}]" for i in range(len(labels) - 1)]
    assert [p.name for p in gallery.paths] == [
        label.replace("[", "_").replace("]", "") + ".png" for label in labels
    ]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in gallery.paths)
    stats = json.loads((tmp_path / "m" / "stats.json").read_text())
    assert stats == {"grid": [8, 8], "source": "generated test signal", "families": dict(gallery.rows)}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([p.name for p in gallery.paths] + ["stats.json"])
    table = gallery.table()
    assert table.startswith("mask statistics over 16 masks per family, grid 8x8") and "coverage_mean" in table


def test_mask_gallery_skips_what_cannot_sample_the_grid(tmp_path, caplog):
    pytest.importorskip("matplotlib")
    gallery = viz.mask_gallery(tmp_path, families=["chunk-ssast-faithful"], target_length=16, stats_rows=4)
    assert gallery.rows == [] and not (tmp_path / "stats.json").exists()
    assert "skipping family chunk-ssast-faithful" in caplog.text
    with pytest.raises(ValueError, match="unknown families"):
        viz.mask_gallery(tmp_path, families=["nope"])


def test_reconstruction_figure_keeps_the_mae_eps_and_import_path():
    from audiossl.models import reconstruction_figure as from_models
    from audiossl.models.mae import NORM_PIX_EPS, reconstruction_figure

    assert reconstruction_figure is from_models is viz.reconstruction_figure
    assert inspect.signature(viz.reconstruction_figure).parameters["norm_pix_eps"].default == NORM_PIX_EPS


@pytest.mark.parametrize("family", ["audio", "image"])
def test_reconstruction_figure_writes_png(tmp_path, family):
    pytest.importorskip("matplotlib")
    from audiossl.models.mae import audiomae_tiny, mae_tiny

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 64, 128, generator=gen) if family == "audio" else torch.randn(1, 3, 32, 32, generator=gen)
    torch.manual_seed(0)
    model = (audiomae_tiny(norm_pix_loss=True) if family == "audio" else mae_tiny()).eval()
    path = viz.reconstruction_figure(x, model(x, generator=0), tmp_path / "recon.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recon.png"]
