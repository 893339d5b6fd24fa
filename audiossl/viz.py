"""Figures: masks over a spectrogram (the mask gallery) and MAE reconstructions.

matplotlib is optional (``pip install 'audiossl[viz]'``): it is imported by :func:`new_figure`
only, which raises an ``ImportError`` naming what needed it. Figures are plain Agg-backed
``matplotlib.figure.Figure`` objects — no pyplot, so no global backend switch and no figure to
close — and :func:`save_png` writes them to ``name.partial`` and renames.

:func:`mask_gallery` is ``audiossl show-masks``: for each family of
:data:`audiossl.masking.gallery.FAMILIES` it writes ``<out>/<family>.png`` (a few example masks
over the log-mel spectrogram and the per-position masking frequency over many draws, which
exposes edge bias) and ``<out>/stats.json`` (coverage, frequency extremes, edge ratio, block sizes).
"""

from __future__ import annotations

import io
import json
import logging
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from audiossl.features import FbankConfig, fbank
from audiossl.files import atomic_write_bytes, atomic_write_text
from audiossl.masking.gallery import PATCH, GalleryLayer, sample_family, select_families
from audiossl.masking.stats import format_table
from audiossl.tokenizers import patchify, unpatchify

__all__ = [
    "GALLERY_STATS_KEYS",
    "MaskGallery",
    "cells_to_frames",
    "demo_signal",
    "draw_spectrogram",
    "gallery_spectrogram",
    "heat_map",
    "mask_gallery",
    "new_figure",
    "overlay_cells",
    "reconstruction_figure",
    "require_matplotlib",
    "save_png",
    "spectrogram",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

N_MELS = 128
SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # the 10 ms fbank hop
DEMO_FRAMES = 1024
# MAE's NORM_PIX_EPS (audiossl.models.mae, a layer above this one; a test keeps them equal)
NORM_PIX_EPS = 1e-6
GALLERY_STATS_KEYS = (
    "coverage_mean", "freq_min", "freq_max", "edge_ratio", "blocks_per_row", "block_size_mean", "block_size_max",
)


# ---------------------------------------------------------------------------------------- figures
def require_matplotlib(needed_by: str) -> None:
    """Raise ``ImportError`` with the install hint when matplotlib is missing."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{needed_by} needs matplotlib: pip install 'audiossl[viz]'") from err


def new_figure(needed_by: str = "this figure", **kwargs: Any):
    """``matplotlib.figure.Figure(**kwargs)`` on an Agg canvas."""
    require_matplotlib(needed_by)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: PathLike, dpi: Optional[float] = None) -> Path:
    """``fig`` as PNG at ``path`` (``dpi`` None: the figure's), via ``path.partial`` and a rename."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure" if dpi is None else dpi)
    return atomic_write_bytes(path, buf.getvalue())


def draw_spectrogram(ax: Any, spec: Tensor, extent: Sequence[float], vmin: float, vmax: float) -> None:
    """``(T, F)`` log-mel with time along x and mel bins up."""
    ax.imshow(spec.T.numpy(), origin="lower", aspect="auto", cmap="magma", extent=extent, vmin=vmin, vmax=vmax)


def cells_to_frames(cells: Tensor, grid: Tuple[int, int], patch: int = PATCH) -> Tensor:
    """``(N,)`` token flags -> ``(T, F)`` frame/bin flags (each token covers a patch x patch square)."""
    return cells.reshape(grid).repeat_interleave(patch, 0).repeat_interleave(patch, 1)


def overlay_cells(
    ax: Any, cells: Tensor, grid: Tuple[int, int], extent: Sequence[float], alpha: float,
    rgb: Tuple[float, float, float] = (0.0, 0.0, 0.0), patch: int = PATCH,
) -> None:
    """Tint the patches where ``cells`` (``(N,)`` bool, time-major) is set."""
    frames = cells_to_frames(cells, grid, patch).T.numpy()
    tint = np.zeros((*frames.shape, 4), dtype=np.float32)
    tint[..., 0], tint[..., 1], tint[..., 2] = rgb
    tint[..., 3] = alpha * frames
    ax.imshow(tint, origin="lower", aspect="auto", extent=extent, interpolation="nearest")


def heat_map(ax: Any, freq: Tensor, extent: Sequence[float]) -> Any:
    """Per-position probability in [0, 1] (``(T', F')``, time along x); returns the image for a colorbar."""
    return ax.imshow(
        freq.T.numpy(), origin="lower", aspect="auto", cmap="viridis", extent=extent,
        vmin=0.0, vmax=1.0, interpolation="nearest",
    )


# ---------------------------------------------------------------------------------------- spectrogram
def demo_signal(seconds: float = DEMO_FRAMES / FRAMES_PER_SECOND, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic clip with structure on both axes: a rising chirp, a harmonic voice-like
    stack pulsing on and off, and short noise bursts."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0, f1 = 150.0, 6000.0
    chirp = np.sin(2 * np.pi * f0 * seconds / np.log(f1 / f0) * (np.exp(t / seconds * np.log(f1 / f0)) - 1))
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 16)) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    rng = np.random.default_rng(0)
    bursts = rng.standard_normal(t.size) * ((t % 2.0) < 0.15)
    x = 0.3 * chirp + 0.3 * voice + 0.2 * bursts
    return (x / np.abs(x).max() * 0.9).astype(np.float32)


def spectrogram(waveform: Any, target_length: int) -> Tensor:
    """``(target_length, 128)`` AST-preset log-mel fbank, cropped or padded at the end.

    Padding uses the clip's quietest value so that it reads as silence in the plot (the AST
    loaders pad with log-mel 0, which would draw as the loudest thing in the picture).
    """
    wav = torch.as_tensor(waveform, dtype=torch.float32).reshape(-1)
    feats = fbank(wav, FbankConfig.preset("ast"))[0].reshape(-1, N_MELS)
    if feats.shape[0] >= target_length:
        return feats[:target_length]
    floor = float(feats.min()) if feats.numel() else 0.0
    return torch.nn.functional.pad(feats, (0, 0, 0, target_length - feats.shape[0]), value=floor)


def _check_target_length(target_length: Optional[int]) -> None:
    if target_length is not None and target_length < PATCH:
        raise ValueError(f"target_length must be at least {PATCH} frames (one patch), got {target_length}")


def gallery_spectrogram(audio: Optional[PathLike] = None, target_length: Optional[int] = None) -> Tuple[Tensor, str]:
    """The spectrogram the gallery draws on, and what it is of (the file name).

    ``audio`` None: :func:`demo_signal`, 1024 frames unless ``target_length``. A file: its own
    length rounded up to whole patches unless ``target_length`` (so every drawn token is real
    audio). The length is then cut down to whole patches. Raises :class:`AudioError` for a bad file.
    """
    _check_target_length(target_length)
    if audio is not None:
        from audiossl.audio import load  # soundfile and friends: only when a file is drawn

        waveform = load(audio, SAMPLE_RATE)
        source = os.path.basename(audio)
        frames = max(PATCH, 1 + (len(waveform) - 400) // 160)
        target_length = target_length or -(-frames // PATCH) * PATCH
    else:
        target_length = target_length or DEMO_FRAMES
        waveform = demo_signal(target_length / FRAMES_PER_SECOND + 0.02)
        source = "generated test signal"
    target_length -= target_length % PATCH
    return spectrogram(waveform, target_length), source


# ---------------------------------------------------------------------------------------- gallery
@dataclass
class MaskGallery:
    """What :func:`mask_gallery` drew: per layer its statistics and PNG, in family order."""

    grid: Tuple[int, int]
    source: str
    stats_rows: int
    rows: List[Tuple[str, Dict[str, float]]] = field(default_factory=list)
    paths: List[Path] = field(default_factory=list)

    def table(self) -> str:
        """The statistics as printed by ``audiossl show-masks``."""
        head = (f"mask statistics over {self.stats_rows} masks per family, "
                f"grid {self.grid[0]}x{self.grid[1]} (time x frequency)")
        return head + "\n" + format_table(self.rows, list(GALLERY_STATS_KEYS))


def _gallery_figure(layer: GalleryLayer, spec: Tensor, grid: Tuple[int, int], path: Path) -> None:
    hidden, targets, summary = layer.hidden, layer.targets, layer.summary
    n_ex = hidden.shape[0]
    T = spec.shape[0]
    fig = new_figure(
        "show-masks", figsize=(12, 1.9 * (n_ex + 1) + 0.9), layout="constrained",
    )
    axes = fig.subplots(n_ex + 1, 1, gridspec_kw={"height_ratios": [1] * n_ex + [0.9]}, squeeze=False)[:, 0]
    seconds = T / FRAMES_PER_SECOND
    extent = (0, seconds, 0, N_MELS)
    vmin, vmax = np.percentile(spec.numpy(), [2, 99.5])
    for i in range(n_ex):
        ax = axes[i]
        draw_spectrogram(ax, spec, extent, vmin, vmax)
        overlay_cells(ax, hidden[i], grid, extent, alpha=0.72)
        if targets is not None:
            overlay_cells(ax, targets[i], grid, extent, alpha=0.45, rgb=(0.1, 0.8, 1.0))
        ax.set_ylabel("mel bin")
        visible = int((~hidden[i]).sum())
        ax.set_title(f"example {i + 1}: {visible}/{hidden.shape[1]} tokens visible", fontsize=9, loc="left")
        ax.set_xticklabels([])
    ax = axes[-1]
    im = heat_map(ax, layer.freq, extent)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title(
        f"masking frequency per position over {int(summary['rows'])} masks "
        f"(min {summary['freq_min']:.2f}, max {summary['freq_max']:.2f}, edge/interior {summary['edge_ratio']:.2f})",
        fontsize=9, loc="left",
    )
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="P(masked)")
    note = "dark = hidden from the encoder" + ("; cyan = prediction targets" if targets is not None else "")
    head = textwrap.fill(f"{layer.label}  —  {layer.title}", width=140, subsequent_indent="    ")
    fig.suptitle(f"{head}\n{note}", fontsize=9, x=0.01, ha="left")
    save_png(fig, path, dpi=90)


def mask_gallery(
    out: PathLike,
    audio: Optional[PathLike] = None,
    *,
    families: Optional[Sequence[str]] = None,
    target_length: Optional[int] = None,
    examples: int = 3,
    stats_rows: int = 512,
    seed: int = 0,
    device: Any = "cpu",
) -> MaskGallery:
    """Draw every family (``families`` None: all) over the spectrogram of ``audio`` (None: a
    generated test signal) into ``out``: ``<family>.png`` per layer (``hierarchical_0.png``, ...)
    and ``stats.json``. A family that cannot sample the grid is skipped with a warning; when none
    can, nothing but the folder is written and the result has no rows.

    Raises ``ImportError`` without matplotlib, ``ValueError`` for an unknown family or a
    ``target_length`` under one patch, :class:`AudioError` for a bad file.
    """
    require_matplotlib("show-masks")
    names = select_families(families)
    spec, source = gallery_spectrogram(audio, target_length)
    grid = (spec.shape[0] // PATCH, N_MELS // PATCH)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("spectrogram of %s: %d frames, token grid %s", source, spec.shape[0], grid)
    gallery = MaskGallery(grid=grid, source=source, stats_rows=stats_rows)
    for name in names:
        try:
            layers = sample_family(name, spec, grid, examples=examples, rows=stats_rows, seed=seed, device=device)
        except ValueError as exc:  # e.g. faithful I-JEPA on a grid with a side of 1
            logger.warning("skipping family %s: it cannot sample grid %s (%s)", name, grid, exc)
            continue
        for layer in layers:
            path = out / f"{layer.label.replace('[', '_').replace(']', '')}.png"
            _gallery_figure(layer, spec, grid, path)
            gallery.rows.append((layer.label, layer.summary))
            gallery.paths.append(path)
            logger.info("wrote %s", path)
    if gallery.rows:
        stats = {"grid": list(grid), "source": source, "families": dict(gallery.rows)}
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    return gallery


# ---------------------------------------------------------------------------------------- MAE
@torch.no_grad()
def reconstruction_figure(
    x: Tensor, out: Any, path: PathLike, index: int = 0, dpi: int = 100, norm_pix_eps: float = NORM_PIX_EPS
) -> Path:
    """PNG of one example: input, masked input, reconstruction, reconstruction + visible patches.

    ``out`` is an :class:`~audiossl.models.mae.MAEOutput` (``pred``, ``mask``, ``grid``,
    ``patch_size``, ``norm_pix_loss``). With ``norm_pix_loss`` the prediction is in per-patch
    standardised units; it is mapped back with the *true* patch's mean and std (as the MAE demo
    does), which shows the predicted structure but borrows each hidden patch's level from the
    input. Audio ``(1, T, F)`` is drawn with time on the horizontal axis. Written to
    ``path.partial`` and renamed.
    """
    require_matplotlib("reconstruction_figure")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    x = x[index : index + 1].detach().float().cpu()
    pred = out.pred[index : index + 1].detach().float().cpu()
    hidden = out.mask.mask[index : index + 1].cpu()
    channels = x.shape[1]
    patches = patchify(x, out.patch_size)
    if out.norm_pix_loss:
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True, unbiased=True) + norm_pix_eps).sqrt()
        pred = pred * std + mean
    keep = (~hidden).unsqueeze(-1).float()
    panels = {
        "input": patches,
        "masked input": patches * keep,
        "reconstruction": pred,
        "reconstruction + visible": patches * keep + pred * (1 - keep),
    }
    lo, hi = float(x.min()), float(x.max())
    fig = new_figure("reconstruction_figure", figsize=(4 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, tokens) in zip(axes[0], panels.items()):
        img = unpatchify(tokens, out.patch_size, out.grid, channels)[0]
        if channels == 1:
            ax.imshow(img[0].T.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
            ax.set_xlabel("frame")
            ax.set_ylabel("mel bin")
        else:
            rgb = ((img.permute(1, 2, 0) - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
            ax.imshow(rgb.numpy())
            ax.axis("off")
        ax.set_title(title)
    fig.tight_layout()
    path = save_png(fig, path, dpi=dpi)
    logger.info("wrote MAE reconstruction figure to %s", path)
    return path
