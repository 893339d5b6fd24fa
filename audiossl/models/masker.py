"""Adaptive masker training: a :class:`~audiossl.masking.learned.LearnedMasker` learns which
patches to hide from a *frozen*, pretrained MAE.

What the masker optimises
-------------------------
With the MAE frozen there is no game to balance: the only thing that can move is the choice of
hidden patches, and the only signal is the MAE's reconstruction error on them. The masker
maximises it (the **adversarial** direction): at a fixed keep ratio it learns to hide the patches
this MAE finds hardest to fill in from the rest, i.e. the ones that carry information the visible
context does not. The measured effect is the ratio of the MAE's error under the learned mask to
its error under a random mask with the same number of kept patches, both on the same batch
(``rec_error_ratio`` > 1 for an adversary). The opposite sign (**partner**) hides the most
predictable patches instead (ratio < 1); CL-MAE's partner → adversary ramp
(:func:`adversary_weight`) goes from one to the other. Its purpose in CL-MAE is to pace an MAE
that is trained at the same time; with the MAE frozen there is nothing to pace, so the presets run
the adversary from step 0 and the ramp is there for curricula and for a masker later trained
alongside its MAE.

Per step, with ``m`` the straight-through mask (exactly 0/1 forward, the Gumbel-sigmoid's
gradient backward) and ``a(t)`` the adversary weight:

``loss = -a(t) · Σ_n m_n (e_n − ē) / Σ_n m_n + λ_mean · mean(score)² + λ_ent · H(σ(score))``

(``e_n`` the MAE's per-patch error under the mask, ``ē`` its row mean; forward, the first term is
the MAE loss under the learned mask minus the row's mean error.)

* **Fixed budget.** Top-k keeps exactly ``int(N·(1 − mask_ratio))`` patches per row, so the
  all-hidden solution an unconstrained adversary collapses to (ADIOS needed a sparsity penalty
  for it) cannot happen, and the keep fraction is the config's, reported as measured.
* **A centred signal.** The gradient reaching patch ``n``'s score is ``∝ e_n − mean_row(e)``,
  its reconstruction error minus the row's mean. Top-k ignores a shift common to a row, so the
  common part of the raw ``∝ e_n`` gradient (every error is positive) would only push all scores
  up until the sigmoid saturates. For a patch the mask keeps, ``e_n`` is the decoder's output at
  a visible place, which MAE never trains; taking those patches' errors from the random mask
  instead (where it hides them) was tried and measured no better, so the simple form stays.
* **Exploration.** In training, ``explore_fraction`` of each row's hidden patches are drawn
  uniformly from those the masker would keep (the "random-mask fraction" most learned-masking
  papers keep). Without it a confident masker never hides some patches again, so their errors are
  never measured hidden and a bad early choice is never revisited; with it every patch keeps
  being seen hidden. (A guard for long runs: within the tests' 40 steps 0, 0.1 and 0.25 end
  equal.) Evaluation (``eval()``) uses the masker's deterministic top-k only.
* **Regulariser.** ``mean(score)²`` stops the logits drifting together (top-k ignores a per-row
  shift) until the sigmoid saturates and the gradient vanishes; the entropy term with a small
  negative weight keeps scores within reach of the logistic noise, so the Gumbel sampling keeps
  exploring instead of freezing into one mask.

What the masker sees: the frozen MAE's patch embedding plus its position table (one convolution,
no transformer block), so a score can depend on both content and place (which mel band) at the
cost of a conv on the full input; the masker's depthwise convolution over the grid adds the
neighbours.

Caveat of the metric: with ``norm_pix_loss`` (AudioMAE) the error is measured on per-patch
standardised targets, in which a near-silent patch is amplified noise; "hard" then includes
unpredictable noise as well as informative structure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from audiossl.masking.base import GeneratorLike, MaskInfo, resolve_generator
from audiossl.masking.learned import (
    LearnedMasker,
    mean_score_penalty,
    score_entropy,
    straight_through_topk,
)
from audiossl.masking.random import random_mask
from audiossl.models.mae import MAE, MAEConfig, mae_config
from audiossl.checkpoint import CheckpointError, PathLike, load_state_dict

__all__ = [
    "AdaptiveMasker",
    "AdaptiveMaskerConfig",
    "AdaptiveMaskerOutput",
    "MASKER_PRESETS",
    "adversary_weight",
    "masker_config",
]

logger = logging.getLogger(__name__)

# MAEConfig / EncoderConfig fields that do not change what a frozen MAE in eval mode computes:
# its own pretraining mask ratio (the masker has its own) and dropout / stochastic-depth rates
# (off in eval mode). A checkpoint may differ from config.mae in these and still be loaded.
_IGNORED_MAE_FIELDS = ("mask_ratio",)
_IGNORED_ENCODER_FIELDS = ("drop", "attn_drop", "act_drop", "input_drop", "drop_path")


def adversary_weight(step: Optional[int], total_steps: int, *, start: float, end: float, ramp_fraction: float) -> float:
    """The sign and weight ``a`` of the reconstruction term: ``start`` at step 0, linear to
    ``end`` at ``ramp_fraction · total_steps``, then held (CL-MAE's partner → adversary ramp is
    ``start=-1, end=1``). ``+1`` maximises the error (adversary), ``-1`` minimises it (partner).
    ``step=None`` (before any :meth:`AdaptiveMasker.on_step`) gives ``end``."""
    ramp = ramp_fraction * total_steps
    if step is None or step >= ramp:
        return end
    return start + (end - start) * max(step, 0) / ramp


@dataclass
class AdaptiveMaskerConfig:
    """The frozen MAE's config, the masker, its schedule and regulariser. Defaults: an
    AudioMAE-base MAE, the masker at the MAE's own ratio (0.8, 102 of 512 patches kept), the
    learned masker's temperature anneal (1.0 → 0.5 over 2000 steps) and a pure adversary."""

    mae: MAEConfig = field(default_factory=lambda: mae_config("audiomae_base"))
    # None = the MAE's pretraining ratio, so the masker is compared where the MAE was trained.
    mask_ratio: Optional[float] = None
    hidden_dim: int = 128
    kernel_size: int = 3
    temp_start: float = 1.0
    temp_end: float = 0.5
    anneal_steps: int = 2000
    # Weight a(t) of the reconstruction term: +1 adversary, -1 partner; linear from start to end
    # over the first ramp_fraction of the steps (CL-MAE's curriculum is -1 -> +1).
    adversary_start: float = 1.0
    adversary_end: float = 1.0
    ramp_fraction: float = 0.0
    # Share of each row's hidden patches drawn uniformly in training (exploration).
    explore_fraction: float = 0.1
    # Regulariser: mean-score penalty, and binary entropy of the scores (negative = reward exploration).
    lambda_mean: float = 0.1
    lambda_ent: float = -0.01

    def __post_init__(self) -> None:
        if isinstance(self.mae, Mapping):
            self.mae = MAEConfig.from_dict(self.mae)
        if self.mask_ratio is not None and not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.explore_fraction <= 1.0:
            raise ValueError(f"explore_fraction must be in [0, 1], got {self.explore_fraction}")
        if not 0.0 <= self.ramp_fraction <= 1.0:
            raise ValueError(f"ramp_fraction must be in [0, 1], got {self.ramp_fraction}")
        for name in ("adversary_start", "adversary_end"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1] (-1 partner, +1 adversary), got {getattr(self, name)}")

    @property
    def ratio(self) -> float:
        return self.mae.mask_ratio if self.mask_ratio is None else self.mask_ratio

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["mae"] = self.mae.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AdaptiveMaskerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AdaptiveMaskerConfig fields: {unknown}")
        return cls(**dict(d))


@dataclass
class AdaptiveMaskerOutput:
    """``loss``: the masker's loss (only the masker has gradients). ``rec_error_learned`` /
    ``rec_error_random``: the frozen MAE's loss (mean per-patch MSE over hidden patches, its own
    target) under the learned mask and under a random mask keeping as many patches, same batch.
    ``mask`` / ``random_mask``: those masks; ``scores``: the masker's ``(B, N)`` logits."""

    loss: Tensor
    rec_error_learned: Tensor
    rec_error_random: Tensor
    mean_penalty: Tensor
    entropy: Tensor
    mask: MaskInfo
    random_mask: MaskInfo
    scores: Tensor
    temperature: float
    adversary_weight: float
    grid: Tuple[int, int]

    @property
    def keep_fraction(self) -> float:
        return self.mask.num_keep / self.mask.num_tokens

    def logs(self) -> Dict[str, Union[float, Tensor]]:
        """Scalars for the training log. ``rec_error_ratio`` > 1: the learned mask hides patches
        the MAE reconstructs worse than random ones; ``score_std`` far above the logistic noise's
        1.8 means the sampling has become deterministic."""
        learned, rand = self.rec_error_learned.detach(), self.rec_error_random.detach()
        return {
            "loss": self.loss.detach(),
            "keep_fraction": self.keep_fraction,
            "rec_error_learned": learned,
            "rec_error_random": rand,
            "rec_error_ratio": learned / rand.clamp_min(torch.finfo(rand.dtype).tiny),
            "reg_mean": self.mean_penalty.detach(),
            "reg_entropy": self.entropy.detach(),
            "score_std": self.scores.detach().float().std(),
            "temperature": self.temperature,
            "adversary_weight": self.adversary_weight,
        }


class AdaptiveMasker(nn.Module):
    """A frozen MAE (``self.mae``: no gradients, always in eval mode) and the trained
    :class:`LearnedMasker` (``self.masker``). Fits the pretraining engine: :meth:`on_step`
    before each forward, :meth:`trainable_parameters` for the optimizer, :meth:`load_pretrained`
    for ``init_from``."""

    def __init__(self, config: Optional[AdaptiveMaskerConfig] = None) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else AdaptiveMaskerConfig()
        self.mae = MAE(cfg.mae)
        self.mae.requires_grad_(False)
        self.mae.eval()
        self.masker = LearnedMasker(
            cfg.mae.encoder.embed_dim, mask_ratio=cfg.ratio, hidden_dim=cfg.hidden_dim, kernel_size=cfg.kernel_size,
            temp_start=cfg.temp_start, temp_end=cfg.temp_end, anneal_steps=cfg.anneal_steps,
        )
        self.step: Optional[int] = None
        self.total_steps: int = 1

    def train(self, mode: bool = True) -> "AdaptiveMasker":  # type: ignore[override]
        # The MAE is a fixed measuring instrument: its dropout / drop-path stay off.
        super().train(mode)
        self.mae.eval()
        return self

    # ------------------------------------------------------------------ engine protocol
    def on_step(self, step: int, total_steps: int) -> None:
        """Record the optimizer step for the temperature anneal and the adversary ramp."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.step, self.total_steps = int(step), int(total_steps)

    def adversary_weight(self) -> float:
        cfg = self.config
        return adversary_weight(self.step, self.total_steps, start=cfg.adversary_start, end=cfg.adversary_end,
                                ramp_fraction=cfg.ramp_fraction)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The masker's parameters only; the MAE never gets an optimizer."""
        return list(self.masker.parameters())

    def no_weight_decay(self) -> set:
        """Empty: the masker has only Linear/conv weights, biases and a LayerNorm (excluded by shape)."""
        return set()

    def load_pretrained(self, ckpt: Mapping[str, Any], *, path: Optional[PathLike] = None) -> None:
        """Load a native ``mae`` checkpoint dict into the frozen MAE.

        The MAE is built from ``config.mae``, not from the checkpoint (the masker's width and the
        saved config of this model depend on it), so the checkpoint's config must equal it up to
        fields that do not change a frozen MAE's output (``mask_ratio``, dropout and drop-path
        rates, ``pos_grid`` of fixed sin-cos tables). Anything else raises
        :class:`CheckpointError` naming the fields (and ``path``, when given), as do a wrong family
        and missing, unexpected or mis-shaped weights."""
        family = ckpt.get("family")
        if family != "mae":
            raise CheckpointError(path, f"init_from of a masker needs a 'mae' checkpoint, got family {family!r}")
        try:
            theirs = MAEConfig.from_dict(ckpt["config"])
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(path, f"its config does not build an MAE: {e}") from e
        diff = _config_differences(theirs, self.config.mae)
        if diff:
            raise CheckpointError(
                path, "its MAE config differs from this masker's config.mae in " + "; ".join(diff)
                + " (set mae: {...} in the masker's config to the checkpoint's)",
            )
        load_state_dict(self.mae, ckpt["model"], path=path, what="frozen MAE")
        self.mae.requires_grad_(False)
        self.mae.eval()
        logger.info("loaded the frozen MAE of the masker (%d tensors)", len(ckpt["model"]))

    # ------------------------------------------------------------------ forward pieces
    @torch.no_grad()
    def masker_input(self, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """``(B, N, D)`` frozen patch embeddings plus positions, and the token grid."""
        tokens, _, grid = self.mae.encoder.tokenize(x)
        return tokens, grid

    def select(
        self, tokens: Tensor, grid: Tuple[int, int], generator: torch.Generator
    ) -> Tuple[MaskInfo, Tensor, Tensor, float]:
        """Learned mask: ``(info, straight-through mask, scores, temperature)``.

        Training: Gumbel-perturbed top-k for all but ``explore_fraction`` of the hidden patches,
        the rest uniformly from the patches it would keep. Eval: top-k of the scores."""
        B, N, _ = tokens.shape
        num_masked = N - self.masker.num_keep(N)
        scores = self.masker.score(tokens, grid)
        tau = self.masker.relax.temperature(self.step)
        perturbed, soft = self.masker.relax(scores, step=self.step, generator=generator)
        explore = round(num_masked * self.config.explore_fraction) if self.training else 0
        hard, st = straight_through_topk(perturbed, soft, num_masked - explore)
        if explore:
            noise = torch.rand(B, N, generator=generator, device=generator.device).to(tokens.device)
            picked = noise.masked_fill(hard, -1.0).topk(explore, dim=1).indices
            extra = torch.zeros_like(hard).scatter_(1, picked, True)
            hard = hard | extra
            st = st + extra.to(st.dtype)
        return MaskInfo.from_mask(hard, num_masked), st, scores, tau

    @torch.no_grad()
    def reconstruct(self, x: Tensor, learned: MaskInfo, rand: MaskInfo, grid: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """Per-patch errors ``(B, N)`` of the frozen MAE under both masks, in one forward of
        ``2B`` rows (the encoder's clone-batch path tokenizes each clip once)."""
        both = MaskInfo(*(torch.stack([getattr(learned, f), getattr(rand, f)], 1).flatten(0, 1)
                          for f in ("mask", "ids_keep", "ids_restore", "ids_masked")))
        latent = self.mae.forward_encoder(x, both)
        pred = self.mae.forward_decoder(latent, both, grid).float()
        target = self.mae.target(x).float().repeat_interleave(2, dim=0)
        err = (pred - target).pow(2).mean(-1).view(x.shape[0], 2, -1)
        return err[:, 0], err[:, 1]

    @staticmethod
    def hidden_mean(err: Tensor, mask: MaskInfo) -> Tensor:
        """The MAE loss: mean per-patch error over the hidden patches."""
        hidden = mask.mask.to(err.dtype)
        return (err * hidden).sum() / hidden.sum()

    def forward_loss(self, st: Tensor, scores: Tensor, err: Tensor, adversary: float) -> Tuple[Tensor, Tensor, Tensor]:
        """``(loss, mean penalty, entropy)``. ``err``: ``(B, N)`` per-patch errors of the frozen
        MAE under the learned mask; they reach the scores only through the straight-through
        mask ``st``. The term is ``composite_mse`` with ``visible_weight=0`` on centred errors."""
        advantage = err - err.mean(dim=1, keepdim=True)
        rec = (st * advantage).sum() / st.sum().detach()
        cfg = self.config
        mean_pen, ent = mean_score_penalty(scores), score_entropy(scores)
        return -adversary * rec + cfg.lambda_mean * mean_pen + cfg.lambda_ent * ent, mean_pen, ent

    def forward(self, x: Tensor, generator: GeneratorLike = None) -> AdaptiveMaskerOutput:
        """``x`` ``(B, C, H, W)`` (``(B, T, F)`` for one-channel audio), H and W multiples of the
        patch. ``generator`` drives the Gumbel noise, exploration and the random comparison mask."""
        if x.dim() == 3 and self.config.mae.encoder.in_chans == 1:
            x = x.unsqueeze(1)
        ph, pw = self.mae.patch_size
        if x.dim() != 4 or x.shape[2] % ph or x.shape[3] % pw:
            raise ValueError(
                f"the masker's MAE needs (B, C, H, W) input with H, W multiples of the patch {(ph, pw)}; "
                f"got shape {tuple(x.shape)}"
            )
        gen = resolve_generator(generator)
        tokens, grid = self.masker_input(x)
        learned, st, scores, tau = self.select(tokens, grid, gen)
        rand = random_mask(x.shape[0], learned.num_tokens, num_masked=learned.num_masked, generator=gen,
                           device=x.device)
        err_learned, err_random = self.reconstruct(x, learned, rand, grid)
        a = self.adversary_weight()
        loss, mean_pen, ent = self.forward_loss(st, scores, err_learned, a)
        return AdaptiveMaskerOutput(
            loss, self.hidden_mean(err_learned, learned), self.hidden_mean(err_random, rand), mean_pen, ent,
            learned, rand, scores, tau, a, grid,
        )


def _config_differences(theirs: MAEConfig, ours: MAEConfig) -> List[str]:
    a, b = theirs.to_dict(), ours.to_dict()
    enc_a, enc_b = a.pop("encoder"), b.pop("encoder")
    ignored_enc = set(_IGNORED_ENCODER_FIELDS)
    if "learned" not in (enc_a["pos_embed"], enc_b["pos_embed"]):
        ignored_enc.add("pos_grid")  # fixed tables are rebuilt for each input's grid
    out = [f"{k}: checkpoint {a[k]!r} vs {b[k]!r}" for k in a if k not in _IGNORED_MAE_FIELDS and a[k] != b[k]]
    out += [f"encoder.{k}: checkpoint {enc_a[k]!r} vs {enc_b[k]!r}" for k in enc_a
            if k not in ignored_enc and enc_a[k] != enc_b[k]]
    return out


# ---------------------------------------------------------------------------------------- presets
def _masker_audiomae_base_config() -> AdaptiveMaskerConfig:
    return AdaptiveMaskerConfig(mae_config("audiomae_base"))


def _masker_mae_vit_base_config() -> AdaptiveMaskerConfig:
    return AdaptiveMaskerConfig(mae_config("mae_vit_base"))


def _masker_audiomae_tiny_config() -> AdaptiveMaskerConfig:
    # Tiny presets anneal the temperature within a test's few dozen steps.
    return AdaptiveMaskerConfig(mae_config("audiomae_tiny"), hidden_dim=32, anneal_steps=50)


def _masker_mae_tiny_config() -> AdaptiveMaskerConfig:
    return AdaptiveMaskerConfig(mae_config("mae_tiny"), hidden_dim=32, anneal_steps=50)


MASKER_PRESETS: Dict[str, Callable[[], AdaptiveMaskerConfig]] = {
    "masker_audiomae_base": _masker_audiomae_base_config,
    "masker_mae_vit_base": _masker_mae_vit_base_config,
    "masker_audiomae_tiny": _masker_audiomae_tiny_config,
    "masker_mae_tiny": _masker_mae_tiny_config,
}


def masker_config(name: str, **overrides: Any) -> AdaptiveMaskerConfig:
    """A preset's config with fields replaced; ``mae={...}`` replaces MAE fields and
    ``mae={"encoder": {...}}`` encoder fields (the nested form of the other families' override)."""
    if name not in MASKER_PRESETS:
        raise ValueError(f"unknown masker preset {name!r}; choose from {sorted(MASKER_PRESETS)}")
    d = MASKER_PRESETS[name]().to_dict()
    mae_overrides = overrides.pop("mae", None) or {}
    if isinstance(mae_overrides, MAEConfig):
        mae_overrides = mae_overrides.to_dict()
    mae_overrides = dict(mae_overrides)
    enc_overrides = mae_overrides.pop("encoder", None) or {}
    d["mae"] = {**d["mae"], **mae_overrides, "encoder": {**d["mae"]["encoder"], **dict(enc_overrides)}}
    return AdaptiveMaskerConfig.from_dict({**d, **overrides})
