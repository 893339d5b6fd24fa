"""Draw every masking family over a real spectrogram, with per-position heat maps and statistics.

For each family (random, chunk, faithful SSAST chunk, time/frequency drop, EAT inverse block,
I-JEPA multi-block, hierarchical and learned masks) this writes
``<out>/<family>.png``: a few example masks over the log-mel spectrogram of ``--audio`` (or of a
generated test signal) and the per-position masking frequency over many draws, which exposes edge
bias. A statistics table (coverage, frequency extremes, edge ratio, block sizes) is printed and
saved as ``<out>/stats.json``.

    audiossl show-masks --audio speech.wav --out masks/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import textwrap
from typing import Any, Callable, Dict, List, Tuple

HELP = "plot masks of every masking family over a spectrogram, with statistics"

logger = logging.getLogger(__name__)

PATCH = 16
N_MELS = 128
SAMPLE_RATE = 16000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio", help="wav/flac file to draw on (default: a generated test signal)")
    parser.add_argument("--out", default="masks", help="output folder for the PNGs and stats.json (default: masks)")
    parser.add_argument(
        "--families",
        default="all",
        help="comma-separated families (default: all available): " + ", ".join(FAMILIES),
    )
    parser.add_argument(
        "--target-length",
        type=int,
        default=None,
        help="frames (10 ms) to crop/pad to (default: the clip's own length rounded up to whole patches, "
        "so every drawn token is real audio; 1024 for the generated signal)",
    )
    parser.add_argument("--examples", type=int, default=3, help="example masks drawn per family (default 3)")
    parser.add_argument("--stats-rows", type=int, default=512, help="masks drawn for heat maps and stats (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mask generator (default 0)")
    parser.add_argument("--device", default="cpu", help="device the samplers run on (default cpu)")


# ---------------------------------------------------------------------------------------------
# Family registry. Each entry builds a sampler ``f(batch_size, grid, generator, device) -> out``
# (imports happen in run(), so --help stays fast). ``out`` may be
# a MaskInfo, a (B, N) bool tensor, an object with ``context``/``targets`` (JEPA), or one with
# ``levels`` (hierarchical); :func:`_layers` turns any of them into drawable layers.
# ---------------------------------------------------------------------------------------------


def _config_sampler(module_name: str, factory: str, **kwargs):
    """Sampler from a masking config (``__call__(batch_size, grid, *, generator, device)``) built
    by ``module.<factory>(**kwargs)`` — a dataclass or a preset function, looked up lazily."""

    def build(spec: Any) -> Tuple[Callable, str]:
        import importlib

        config = getattr(importlib.import_module(module_name), factory)(**kwargs)
        return (lambda b, grid, gen, dev: config(b, grid, generator=gen, device=dev)), repr(config)

    return build


def _learned_sampler():
    """An untrained :class:`LearnedMasker` on the patchified spectrogram. Its scores start at
    zero, so its masks are pure Gumbel noise: this shows the mechanics (an exact budget per row,
    drawn from the generator), not a trained policy."""

    def build(spec: Any) -> Tuple[Callable, str]:
        import importlib

        import torch

        from audiossl.tokenizers import patchify

        masker_cls = getattr(importlib.import_module("audiossl.masking.learned"), "LearnedMasker")
        spec = (spec - spec.mean()) / (2 * spec.std().clamp(min=1e-6))
        tokens = patchify(spec.reshape(1, 1, *spec.shape[-2:]), PATCH)  # (1, N, 256)
        masker = masker_cls(tokens.shape[-1]).train()

        def sample(b, grid, gen, dev):
            with torch.no_grad():
                return masker.to(dev)(tokens.to(dev).expand(b, -1, -1), grid, generator=gen)

        return sample, f"untrained {masker_cls.__name__} (zero scores: Gumbel noise only)"

    return build


FAMILIES: Dict[str, Callable[[Any], Tuple[Callable, str]]] = {
    "random": _config_sampler("audiossl.masking.random", "RandomMask", mask_ratio=0.8),
    # SSAST's 400 of 512 as a ratio, so that any --target-length works
    "chunk": _config_sampler("audiossl.masking.chunk", "ChunkMask", num_masked=None, mask_ratio=400 / 512),
    "chunk-ssast-faithful": _config_sampler(
        "audiossl.masking.chunk", "ChunkMask", num_masked=None, mask_ratio=400 / 512, faithful=True
    ),
    "drop": _config_sampler("audiossl.masking.drop", "TimeFreqDrop"),
    # one mask per clip: EAT's 16 clones of a clip are independent draws of the same law
    "inverse-block": _config_sampler("audiossl.masking.block", "InverseBlockMasker", clone_batch=1),
    "multiblock": _config_sampler("audiossl.masking.multiblock", "multiblock_audio"),
    "hierarchical": _config_sampler("audiossl.masking.hierarchical", "HierarchicalMasker"),
    "learned": _learned_sampler(),
}


def _layers(out: Any) -> List[Tuple[str, Any, Any]]:
    """``[(suffix, hidden (B, N) bool, targets (B, N) bool | None)]`` from any sampler output."""
    import torch

    from audiossl.masking.base import MaskInfo

    if isinstance(out, MaskInfo):
        return [("", out.mask.bool(), None)]
    if isinstance(out, torch.Tensor):
        return [("", out.bool(), None)]
    if isinstance(getattr(out, "info", None), MaskInfo):  # learned masker output
        return [("", out.info.mask.bool(), None)]
    if hasattr(out, "levels"):
        layers = []
        for i, level in enumerate(out.levels):
            layers += [(f"[{i}]{s}", h, t) for s, h, t in _layers(level)]
        return layers
    if hasattr(out, "context") and hasattr(out, "targets"):
        context = out.context
        hidden = context.mask.bool() if isinstance(context, MaskInfo) else context.bool()
        targets = None
        for t in out.targets:
            m = t.mask.bool() if isinstance(t, MaskInfo) else t.bool()
            targets = m if targets is None else targets | m
        return [("", hidden, targets)]
    if isinstance(out, (tuple, list)) and out:
        return _layers(out[0])
    raise TypeError(f"cannot draw a sampler output of type {type(out).__name__}")


# ---------------------------------------------------------------------------------------------
# Spectrogram
# ---------------------------------------------------------------------------------------------


def demo_signal(seconds: float = 10.24, sample_rate: int = SAMPLE_RATE):
    """A deterministic clip with structure on both axes: a rising chirp, a harmonic voice-like
    stack pulsing on and off, and short noise bursts."""
    import numpy as np

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


def _load_waveform(path: str):
    from audiossl.audio import load

    return load(path, SAMPLE_RATE)


def spectrogram(waveform, target_length: int):
    """``(target_length, 128)`` AST-preset log-mel fbank, cropped or padded at the end.

    Padding uses the clip's quietest value so that it reads as silence in the plot (the AST
    loaders pad with log-mel 0, which would draw as the loudest thing in the picture).
    """
    import torch

    wav = torch.as_tensor(waveform, dtype=torch.float32).reshape(-1)
    from audiossl.features import FbankConfig, fbank

    feats = fbank(wav, FbankConfig.preset("ast"))[0].reshape(-1, N_MELS)
    if feats.shape[0] >= target_length:
        return feats[:target_length]
    floor = float(feats.min()) if feats.numel() else 0.0
    return torch.nn.functional.pad(feats, (0, 0, 0, target_length - feats.shape[0]), value=floor)


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _cells_to_frames(cells, grid: Tuple[int, int]):
    """``(N,)`` token flags -> ``(T, F)`` frame/bin flags (each token covers a 16 x 16 patch)."""
    return cells.reshape(grid).repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1)


def _draw_family(plt, path: str, name: str, title: str, spec, grid, hidden, targets, freq, summary) -> None:
    import numpy as np

    n_ex = hidden.shape[0]
    T = spec.shape[0]
    fig, axes = plt.subplots(
        n_ex + 1, 1, figsize=(12, 1.9 * (n_ex + 1) + 0.9), gridspec_kw={"height_ratios": [1] * n_ex + [0.9]},
        layout="constrained", squeeze=False,
    )
    axes = axes[:, 0]
    seconds = T / 100.0
    extent = (0, seconds, 0, N_MELS)
    vmin, vmax = np.percentile(spec.numpy(), [2, 99.5])
    for i in range(n_ex):
        ax = axes[i]
        ax.imshow(spec.T.numpy(), origin="lower", aspect="auto", cmap="magma", extent=extent, vmin=vmin, vmax=vmax)
        shade = np.zeros((N_MELS, T, 4), dtype=np.float32)
        shade[..., 3] = 0.72 * _cells_to_frames(hidden[i], grid).T.numpy()
        ax.imshow(shade, origin="lower", aspect="auto", extent=extent, interpolation="nearest")
        if targets is not None:
            tint = np.zeros((N_MELS, T, 4), dtype=np.float32)
            tint[..., 0], tint[..., 1], tint[..., 2] = 0.1, 0.8, 1.0
            tint[..., 3] = 0.45 * _cells_to_frames(targets[i], grid).T.numpy()
            ax.imshow(tint, origin="lower", aspect="auto", extent=extent, interpolation="nearest")
        ax.set_ylabel("mel bin")
        visible = int((~hidden[i]).sum())
        ax.set_title(f"example {i + 1}: {visible}/{hidden.shape[1]} tokens visible", fontsize=9, loc="left")
        ax.set_xticklabels([])
    ax = axes[-1]
    im = ax.imshow(
        freq.T.numpy(), origin="lower", aspect="auto", cmap="viridis", extent=(0, seconds, 0, N_MELS),
        vmin=0.0, vmax=1.0, interpolation="nearest",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title(
        f"masking frequency per position over {int(summary['rows'])} masks "
        f"(min {summary['freq_min']:.2f}, max {summary['freq_max']:.2f}, edge/interior {summary['edge_ratio']:.2f})",
        fontsize=9, loc="left",
    )
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="P(masked)")
    note = "dark = hidden from the encoder" + ("; cyan = prediction targets" if targets is not None else "")
    head = textwrap.fill(f"{name}  —  {title}", width=140, subsequent_indent="    ")
    fig.suptitle(f"{head}\n{note}", fontsize=9, x=0.01, ha="left")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _select_families(spec: str) -> List[str]:
    if spec.strip() == "all":
        return list(FAMILIES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    return names


def run(args: argparse.Namespace) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.error("show-masks needs matplotlib: pip install 'audiossl[viz]'")
        return 1
    import torch

    from audiossl.masking.stats import format_table, mask_summary, overlap, position_frequency

    try:
        families = _select_families(args.families)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    if args.target_length is not None and args.target_length < PATCH:
        logger.error("--target-length must be at least %d frames, got %d", PATCH, args.target_length)
        return 2
    if args.audio:
        try:
            waveform = _load_waveform(args.audio)
        except Exception as exc:  # AudioError / ValueError with the path in the message
            logger.error("%s", exc)
            return 1
        source = os.path.basename(args.audio)
        frames = max(PATCH, 1 + (len(waveform) - 400) // 160)
        target_length = args.target_length or -(-frames // PATCH) * PATCH
    else:
        target_length = args.target_length or 1024
        waveform = demo_signal(target_length / 100.0 + 0.02)
        source = "generated test signal"
    target_length -= target_length % PATCH
    spec = spectrogram(waveform, target_length)
    grid = (target_length // PATCH, N_MELS // PATCH)
    os.makedirs(args.out, exist_ok=True)
    logger.info("spectrogram of %s: %d frames, token grid %s", source, target_length, grid)

    rows: List[Tuple[str, Dict[str, float]]] = []
    written: List[str] = []
    for name in families:
        sampler, title = FAMILIES[name](spec)
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        try:
            examples = _layers(sampler(max(args.examples, 1), grid, gen, args.device))
            many = _layers(sampler(args.stats_rows, grid, gen, args.device))
        except ValueError as exc:  # e.g. faithful I-JEPA on a grid with a side of 1
            logger.warning("skipping family %s: it cannot sample grid %s (%s)", name, grid, exc)
            continue
        for (suffix, hidden, targets), (_, hidden_many, targets_many) in zip(examples, many):
            label = name + suffix
            summary = mask_summary(hidden_many, grid)
            if targets_many is not None:
                summary["target_in_context"] = overlap(~hidden_many, targets_many)["frac_of_b"]
            freq = position_frequency(hidden_many, grid).cpu()
            path = os.path.join(args.out, f"{label.replace('[', '_').replace(']', '')}.png")
            shown = slice(0, max(args.examples, 1))
            _draw_family(
                plt, path, label, title, spec, grid, hidden[shown].cpu(),
                None if targets is None else targets[shown].cpu(), freq, summary,
            )
            rows.append((label, summary))
            written.append(path)
            logger.info("wrote %s", path)
    if not rows:
        logger.error("no masking family could be drawn")
        return 1
    keys = ["coverage_mean", "freq_min", "freq_max", "edge_ratio", "blocks_per_row", "block_size_mean", "block_size_max"]
    print(f"mask statistics over {args.stats_rows} masks per family, grid {grid[0]}x{grid[1]} (time x frequency)")
    print(format_table(rows, keys))
    with open(os.path.join(args.out, "stats.json.partial"), "w") as fh:
        json.dump({"grid": list(grid), "source": source, "families": dict(rows)}, fh, indent=2)
    os.replace(os.path.join(args.out, "stats.json.partial"), os.path.join(args.out, "stats.json"))
    return 0
