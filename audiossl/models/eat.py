"""EAT (Efficient Audio Transformer, Chen et al., IJCAI 2024): the utterance-frame objective.

A data2vec 2.0 style student-teacher around the shared :class:`~audiossl.models.encoder.Encoder`:

* **student** (``self.encoder``): the EAT encoder on the *visible* tokens of ``clone_batch``
  inverse-block masks per clip. The conv and positions run once per clip; the encoder
  repeat-interleaves the tokens to the ``clone_batch·B`` mask rows.
* **teacher** (``self.teacher``): a copy of the student encoder, always in eval mode, never
  trained by gradients, moved by an exponential moving average (:meth:`EAT.update_teacher`,
  schedule :func:`ema_decay`). It sees the full spectrogram once per clip.
* **targets** (:meth:`EAT.make_targets`): the mean over the top-k blocks' FFN outputs (cls row
  dropped), each instance-normalised over tokens, then a LayerNorm over channels, both without
  affine parameters.
* **decoder** (:class:`Decoder2d`): the student's tokens back on the full grid with small Gaussian
  noise in the hidden slots, grouped 3×3 convolutions, a Linear back to the encoder width.
* **loss** (:meth:`EAT.forward_loss`): frame loss on the hidden tokens plus the utterance loss
  between the student's cls output and the mean target.

Laid out like :mod:`audiossl.models.mae` (``forward_encoder``, ``forward_decoder``,
``forward_loss``). Deviations from upstream are listed in :class:`EATConfig` and :class:`EAT`.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.masking.base import GeneratorLike, MaskInfo, resolve_generator
from audiossl.masking.block import InverseBlockMasker
from audiossl.models.encoder import Encoder, EncoderConfig, family_config, feature_variance, preset_config

__all__ = [
    "Decoder2d",
    "EAT",
    "EATConfig",
    "EATOutput",
    "EAT_PRESETS",
    "eat_base",
    "eat_config",
    "eat_large",
    "eat_tiny",
    "ema_decay",
    "run_scaled_ema",
]

logger = logging.getLogger(__name__)

# fairseq's LayerNorm / F.instance_norm default, used by data2vec 2.0 for targets and decoder.
TARGET_EPS = 1e-5
TARGET_NORMS = ("instance", "batch")


def ema_decay(step: int, start: float = 0.9998, end: float = 0.99999, anneal_end_step: int = 100_000) -> float:
    """EMA coefficient τ after ``step`` optimizer updates: linear ``start → end`` over
    ``anneal_end_step`` updates, then constant (data2vec 2.0's ``get_annealed_rate``)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if anneal_end_step <= 0 or step >= anneal_end_step:
        return end
    return end - (end - start) * (1.0 - step / anneal_end_step)


def run_scaled_ema(
    start: float, end: float, anneal_end_step: int, reference_steps: Optional[int], total_steps: Optional[int]
) -> Tuple[float, float, int]:
    """``(start, end, anneal_end_step)`` of an EMA schedule written for a run of
    ``reference_steps`` updates, reshaped for a run of ``total_steps``.

    A teacher that keeps ``τ`` per update keeps ``τ^n`` of itself over ``n`` updates, so the run
    of ``T`` updates that moves its teacher as far per *fraction of the run* as the reference run
    does uses ``τ^(R/T)``, and ends its anneal at the same fraction ``anneal_end_step·T/R``.
    ``T = R`` (or either None) is the schedule as written. Example: EAT's 0.9998 → 0.99999 over
    100k of 400k updates becomes 0.961 → 0.998 over 500 of 2 000: the teacher's time constant is
    1.25 % of the run at the start and 25 % at the end, in both."""
    if reference_steps is None or total_steps is None or total_steps == reference_steps:
        return start, end, anneal_end_step
    if reference_steps <= 0 or total_steps <= 0:
        raise ValueError(f"reference_steps and total_steps must be positive, got {reference_steps}, {total_steps}")
    ratio = reference_steps / total_steps
    anneal = max(1, int(round(anneal_end_step / ratio))) if anneal_end_step > 0 else anneal_end_step
    return start**ratio, end**ratio, anneal


@dataclass
class EATConfig:
    """Encoder, decoder, masking, teacher and loss of EAT; the defaults are EAT-base
    (``pretraining_AS2M.yaml``).

    ``faithful_utterance_weight``: upstream returns *summed* losses, multiplies the utterance
    loss by ``sample_size`` (the number of hidden tokens) and lets the trainer divide everything
    by ``sample_size``. The frame loss thus becomes a mean over hidden tokens, but the utterance
    loss a *sum over the local clones*, i.e. ``B_local · clone_batch`` times its mean (×192 for the
    paper's 12 clips per GPU). With True (default) :attr:`EATOutput.loss` reproduces that
    effective weighting so the published recipe trains as published; note the weight then
    depends on the per-device batch. With False the utterance term is a plain mean over clones
    times ``cls_loss`` (the paper's written λ).
    """

    encoder: EncoderConfig = field(default_factory=lambda: family_config("eat"))
    decoder_dim: int = 768
    decoder_depth: int = 6
    decoder_kernel: int = 3
    decoder_groups: int = 16
    # Std of the noise tokens put in the hidden slots of the decoder input (not a learned token).
    decoder_noise_std: float = 0.01
    clone_batch: int = 16
    mask_prob: float = 0.8
    mask_prob_adjust: float = 0.07
    mask_length: int = 5
    # Blocks whose FFN outputs are averaged into the target; None = all.
    average_top_k_layers: Optional[int] = 12
    # How each block's FFN output is normalised before averaging: "instance" (data2vec 2.0/EAT:
    # per clip and channel over its tokens) or "batch" (per channel over every token of the
    # batch). Instance norm takes each clip's mean out of every target channel, so the frame
    # targets hold only within-clip contrasts and the utterance target (their mean over tokens)
    # is nearly the same vector for every clip; "batch" keeps what tells clips apart.
    target_norm: str = "instance"
    cls_loss: float = 1.0
    faithful_utterance_weight: bool = True
    ema_decay: float = 0.9998
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 100_000
    # Set it (the AS-2M recipes' 400_000 updates) to shape the three EMA numbers above to the run
    # length (:func:`run_scaled_ema`): a 2 000-update run then moves its teacher per fraction of
    # the run as the 400k one does, instead of ~20 % of the way from its random initialisation.
    # None (default, upstream's code): the numbers are absolute. Measured at CPU scale the shaped
    # teacher did not help: on the five real-audio tasks (recipes/probe, eat_tiny, 5 000 updates)
    # shaped minus absolute was -3.6..+6.9 probe points, neither more than 4.3 above random init,
    # and the demo's 600-update ESC-50-style run fell from 46.9 to 23.1 % (probe) and 44.4 to
    # 29.4 % (fine-tuning): a teacher with an 8-update time constant tracks a student trained on
    # 128 clips too closely.
    ema_reference_steps: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        enc = self.encoder
        if enc.tokenizer != "patch" or enc.stride != enc.patch_size:
            raise ValueError(
                "EAT decodes on the non-overlapping patch grid: the encoder needs tokenizer='patch' and "
                f"patch_stride == patch_size, got {enc.tokenizer!r} with stride {enc.stride}"
            )
        if enc.num_prefix_tokens != 1:
            raise ValueError(f"EAT's utterance loss needs exactly one cls token, got num_prefix_tokens={enc.num_prefix_tokens}")
        if self.decoder_depth < 1:
            raise ValueError(f"decoder_depth must be >= 1, got {self.decoder_depth}")
        for name, dim in (("embed_dim", enc.embed_dim), ("decoder_dim", self.decoder_dim)):
            if dim % self.decoder_groups:
                raise ValueError(f"{name} {dim} is not divisible by decoder_groups {self.decoder_groups}")
        if self.decoder_kernel < 1:
            raise ValueError(f"decoder_kernel must be >= 1, got {self.decoder_kernel}")
        if self.clone_batch < 1:
            raise ValueError(f"clone_batch must be >= 1, got {self.clone_batch}")
        if self.target_norm not in TARGET_NORMS:
            raise ValueError(f"target_norm must be one of {TARGET_NORMS}, got {self.target_norm!r}")
        if self.average_top_k_layers is not None and not 1 <= self.average_top_k_layers <= enc.depth:
            raise ValueError(f"average_top_k_layers must lie in [1, depth={enc.depth}], got {self.average_top_k_layers}")
        for name in ("ema_decay", "ema_end_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.ema_reference_steps is not None and self.ema_reference_steps <= 0:
            raise ValueError(f"ema_reference_steps must be positive or None, got {self.ema_reference_steps}")

    @property
    def top_k(self) -> int:
        return self.encoder.depth if self.average_top_k_layers is None else self.average_top_k_layers

    def masker(self) -> InverseBlockMasker:
        """The inverse-block clone masker these fields describe."""
        return InverseBlockMasker(
            mask_prob=self.mask_prob, mask_prob_adjust=self.mask_prob_adjust, mask_length=self.mask_length,
            clone_batch=self.clone_batch,
        )

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder"] = self.encoder.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EATConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EATConfig fields: {unknown}")
        return cls(**dict(d))


@dataclass
class EATOutput:
    """``loss``: the scalar to back-propagate, ``frame_loss + utterance_weight · utterance_loss``.
    ``frame_loss``: mean over hidden tokens of ``‖ŷ − y‖²/√D``. ``utterance_loss``: mean over
    clones of ``‖cls − ȳ‖²/√D`` (unweighted). ``pred``: ``(k·B, N, D)`` decoder output on the
    whole grid; ``targets``: ``(B, N, D)`` teacher targets (once per clip); ``cls``: ``(k·B, D)``
    student cls outputs; ``mask``: the ``k·B``-row mask used."""

    loss: Tensor
    frame_loss: Tensor
    utterance_loss: Tensor
    utterance_weight: float
    pred: Tensor
    targets: Tensor
    cls: Tensor
    mask: MaskInfo
    grid: Tuple[int, int]

    def logs(self) -> Dict[str, Tensor]:
        """``pred_var``/``target_var``: per-channel variance over hidden tokens (predictions) and
        all tokens (teacher targets); both near 0 is the collapse data2vec-style training risks."""
        return {"loss": self.loss.detach(), "frame_loss": self.frame_loss.detach(),
                "utterance_loss": self.utterance_loss.detach(),
                "pred_var": feature_variance(self.mask.gather_masked(self.pred)),
                "target_var": feature_variance(self.targets)}


class Decoder2d(nn.Module):
    """EAT's light CNN decoder on the token grid (data2vec 2.0 ``Decoder2d``).

    Each block is ``Conv2d(groups) → channel LayerNorm (no affine) → GELU`` plus a residual
    from the block input whenever the channel counts agree, then ``proj`` maps back to the
    encoder width. No positions: the convolutions see where each token sits. Unlike upstream the
    grid is taken from the input, so any clip length decodes (upstream fixes it to the
    configured ``target_length``).
    """

    def __init__(self, in_dim: int, dim: int = 768, depth: int = 6, kernel: int = 3, groups: int = 16) -> None:
        super().__init__()
        self.kernel = kernel
        self.blocks = nn.ModuleList(
            nn.Conv2d(in_dim if i == 0 else dim, dim, kernel, padding=kernel // 2, groups=groups)
            for i in range(depth)
        )
        self.proj = nn.Linear(dim, in_dim)

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """``(B, H·W, D_in)`` time-major tokens → ``(B, H·W, D_in)`` predictions."""
        B, N, C = x.shape
        H, W = grid
        if H * W != N:
            raise ValueError(f"grid {tuple(grid)} holds {H * W} tokens but the input has {N}")
        x = x.transpose(1, 2).reshape(B, C, H, W)
        for conv in self.blocks:
            y = conv(x)
            if self.kernel % 2 == 0:  # upstream's SamePad2d: padding k//2 grows even kernels by one
                y = y[:, :, :-1, :-1]
            y = F.gelu(_channel_layer_norm(y))
            x = y + x if y.shape[1] == x.shape[1] else y
        return self.proj(x.flatten(2).transpose(1, 2))


def _channel_layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=TARGET_EPS).permute(0, 3, 1, 2)


class EAT(nn.Module):
    """Student encoder + EMA teacher + CNN decoder, trained with the utterance-frame loss.

    The teacher is a registered submodule (it is saved and loaded with the model, so training
    resumes exactly) whose parameters never require grad; optimizers built from
    ``model.parameters()`` skip it because it never gets a ``.grad``. Keep the model in fp32 and
    train under autocast: the teacher's parameters are then the fp32 EMA copy upstream keeps
    (``ema_fp32``). Call :meth:`update_teacher` after every optimizer step.

    Deviations: the EMA step is not skipped on the first call after resuming (the trainer
    decides); the decoder accepts any grid; the teacher's fixed position table is the student's
    (both are rebuilt from the formula, never stored).
    """

    def __init__(self, config: Optional[EATConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else EATConfig()
        enc = cfg.encoder
        self.encoder = Encoder(enc)
        self.decoder = Decoder2d(enc.embed_dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_kernel, cfg.decoder_groups)
        # No BERT init here: upstream applies init_bert_params to the whole model and then
        # resets the decoder's proj, so convs and proj both end with PyTorch's default init.
        self.teacher = copy.deepcopy(self.encoder)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.masker = cfg.masker()

    def train(self, mode: bool = True) -> "EAT":
        super().train(mode)
        self.teacher.eval()  # upstream runs the teacher in eval mode always (no dropout in targets)
        return self

    @property
    def patch_size(self) -> Tuple[int, int]:
        return self.config.encoder.patch_size

    # ------------------------------------------------------------------ teacher
    def ema_decay(self, step: int, total_steps: Optional[int] = None) -> float:
        """τ after ``step`` updates of a run of ``total_steps`` (None: the schedule as written,
        see :attr:`EATConfig.ema_reference_steps`)."""
        cfg = self.config
        start, end, anneal = run_scaled_ema(cfg.ema_decay, cfg.ema_end_decay, cfg.ema_anneal_end_step,
                                            cfg.ema_reference_steps, total_steps)
        return ema_decay(step, start, end, anneal)

    @torch.no_grad()
    def update_teacher(self, step: int, total_steps: Optional[int] = None) -> float:
        """θ_t ← τ·θ_t + (1 − τ)·θ_s with τ = :meth:`ema_decay` (``step`` = optimizer updates
        so far, ``total_steps`` = the run's length). Frozen student parameters and buffers are
        copied, as upstream. Returns τ."""
        tau = self.ema_decay(step, total_steps)
        student = dict(self.encoder.named_parameters())
        ema_t: List[Tensor] = []
        ema_s: List[Tensor] = []
        for name, p_t in self.teacher.named_parameters():
            p_s = student[name]
            if p_s.requires_grad:
                ema_t.append(p_t)
                ema_s.append(p_s.detach().to(p_t.dtype))
            else:
                p_t.copy_(p_s)
        if ema_t:
            torch._foreach_lerp_(ema_t, ema_s, 1.0 - tau)
        for (_, b_t), (_, b_s) in zip(self.teacher.named_buffers(), self.encoder.named_buffers()):
            b_t.copy_(b_s)
        return tau

    @torch.no_grad()
    def make_targets(self, x: Tensor) -> Tensor:
        """``(B, N, D)`` targets of the full, unmasked clips: mean over the top-k blocks of the
        teacher's FFN outputs, each instance-normalised over tokens, then channel-LayerNormed.
        Computed in fp32 (upstream casts before normalising)."""
        out = self.teacher(x, return_ffn=True)
        P = out.num_prefix
        layers = out.ffn[-self.config.top_k :]
        norm = _instance_norm if self.config.target_norm == "instance" else _batch_norm
        y = sum(norm(_at_least_fp32(f[:, P:])) for f in layers) / len(layers)
        return F.layer_norm(y, y.shape[-1:], eps=TARGET_EPS)

    # ------------------------------------------------------------------ forward pieces
    def forward_encoder(self, x: Tensor, mask: MaskInfo) -> Tuple[Tensor, Tensor]:
        """Student on the visible tokens: ``(k·B, D)`` cls and ``(k·B, K, D)`` tokens."""
        out = self.encoder(x, mask=mask)
        return out.prefix[:, 0], out.tokens

    def forward_decoder(self, tokens: Tensor, mask: MaskInfo, grid: Tuple[int, int], generator: torch.Generator) -> Tensor:
        """``(k·B, N, D)`` predictions for every grid slot; hidden slots start as N(0, σ²) noise."""
        B, _, D = tokens.shape
        noise = torch.randn(B, mask.num_masked, D, generator=_on_device(generator, tokens.device),
                            device=tokens.device, dtype=tokens.dtype)
        return self.decoder(mask.restore(tokens, noise * self.config.decoder_noise_std), grid)

    def utterance_weight(self, num_rows: int) -> float:
        """Weight of the mean-over-clones utterance loss (see :class:`EATConfig`)."""
        cfg = self.config
        return cfg.cls_loss * (num_rows if cfg.faithful_utterance_weight else 1)

    def forward_loss(self, pred: Tensor, cls: Tensor, targets: Tensor, mask: MaskInfo) -> Tuple[Tensor, Tensor]:
        """``(frame, utterance)``: mean over hidden tokens, and over clones, of ``‖·‖²/√D``.

        Targets stay ``(B, N, D)``: each clone row indexes its clip's row instead of a 16× copy."""
        rows, D = cls.shape
        clones = rows // targets.shape[0]
        clip = torch.arange(rows, device=targets.device).div(clones, rounding_mode="floor")
        scale = 1.0 / math.sqrt(D)
        hidden_target = targets[clip.unsqueeze(1), mask.ids_masked]
        frame = (_at_least_fp32(mask.gather_masked(pred)) - hidden_target).pow(2).sum(-1).mean() * scale
        utterance = (_at_least_fp32(cls) - targets.mean(1)[clip]).pow(2).sum(-1).mean() * scale
        return frame, utterance

    def forward(
        self,
        x: Tensor,
        mask: Optional[MaskInfo] = None,
        generator: GeneratorLike = None,
    ) -> EATOutput:
        """``x`` ``(B, 1, T, F)`` (or ``(B, T, F)``) with T, F multiples of the patch. Without
        ``mask`` the config's clone masks are drawn from ``generator``, which also drives the
        decoder's noise tokens (same seed, same loss)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        ph, pw = self.patch_size
        if x.dim() != 4 or x.shape[2] % ph or x.shape[3] % pw:
            raise ValueError(
                f"EAT needs (B, 1, T, F) input with T, F multiples of the patch {self.patch_size}; "
                f"got shape {tuple(x.shape)} (crop or pad with features.pad_or_crop first)"
            )
        grid = (x.shape[2] // ph, x.shape[3] // pw)
        gen = resolve_generator(generator)
        if mask is None:
            mask = self.masker(x.shape[0], grid, generator=gen, device=x.device)
        if mask.batch_size % x.shape[0]:
            raise ValueError(f"mask has {mask.batch_size} rows, not a multiple of the batch size {x.shape[0]}")
        targets = self.make_targets(x)
        cls, tokens = self.forward_encoder(x, mask)
        pred = self.forward_decoder(tokens, mask, grid, gen)
        frame, utterance = self.forward_loss(pred, cls, targets, mask)
        weight = self.utterance_weight(mask.batch_size)
        return EATOutput(frame + weight * utterance, frame, utterance, weight, pred, targets, cls, mask, grid)

    def no_weight_decay(self) -> set:
        """Empty: upstream exempts only 1-D parameters and biases; the 3-D cls token is decayed."""
        return set()


def _instance_norm(f: Tensor) -> Tensor:
    """``(B, N, D)`` normalised per clip and channel over the N tokens (``F.instance_norm``)."""
    return F.instance_norm(f.transpose(1, 2), eps=TARGET_EPS).transpose(1, 2)


def _batch_norm(f: Tensor) -> Tensor:
    """``(B, N, D)`` normalised per channel over all B·N tokens (biased variance, as instance norm)."""
    mean = f.mean(dim=(0, 1), keepdim=True)
    var = f.var(dim=(0, 1), keepdim=True, unbiased=False)
    return (f - mean) / torch.sqrt(var + TARGET_EPS)


def _at_least_fp32(x: Tensor) -> Tensor:
    """fp16/bf16 activations (autocast) are normalised and compared in fp32; fp64 stays fp64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device``: the given one, or one seeded by a draw from it, so a CPU seed
    drives GPU noise without drawing (and copying) the whole tensor on the host."""
    if generator.device.type == torch.device(device).type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------------------------------- presets
def _eat_base_config() -> EATConfig:
    return EATConfig(family_config("eat", embed_dim=768, depth=12, num_heads=12))


def _eat_large_config() -> EATConfig:
    # pretraining_AS2M_large.yaml: all 24 blocks averaged, EMA annealed over 150k updates.
    return EATConfig(
        family_config("eat", embed_dim=1024, depth=24, num_heads=16), decoder_dim=1024, decoder_depth=3,
        decoder_kernel=5, mask_prob=0.75, mask_prob_adjust=0.10, average_top_k_layers=24,
        ema_anneal_end_step=150_000,
    )


def _eat_tiny_config() -> EATConfig:
    return EATConfig(
        family_config("eat", embed_dim=64, depth=2, num_heads=4), decoder_dim=64, decoder_depth=2,
        clone_batch=4, average_top_k_layers=2,
    )


EAT_PRESETS: Dict[str, Callable[[], EATConfig]] = {
    "eat_base": _eat_base_config,
    "eat_large": _eat_large_config,
    "eat_tiny": _eat_tiny_config,
}


def eat_config(name: str, **overrides: Any) -> EATConfig:
    """A preset's config with fields replaced; ``encoder={...}`` overrides encoder fields."""
    return preset_config("EAT", EAT_PRESETS, EATConfig, name, overrides)


def eat_base(**overrides: Any) -> EAT:
    """EAT-base: ViT-B/16 post-LN (768/12/12), 6-block grouped-conv decoder, 16 clones at 80%."""
    return EAT(eat_config("eat_base", **overrides))


def eat_large(**overrides: Any) -> EAT:
    """EAT-large: ViT-L/16 (1024/24/16), 3-block 5×5 decoder, 16 clones at 75%."""
    return EAT(eat_config("eat_large", **overrides))


def eat_tiny(**overrides: Any) -> EAT:
    """A two-block EAT (64 wide, 4 clones) for tests and the demo."""
    return EAT(eat_config("eat_tiny", **overrides))
