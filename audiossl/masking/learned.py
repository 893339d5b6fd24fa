"""Learned content-adaptive masker: a small scorer picks which patches to hide.

The scorer maps patch tokens ``(B, N, D)`` (patchified spectrogram or token features) to one
logit per token, ``(B, N)``; a higher logit means "hide this token". Selection is a
Gumbel-sigmoid (binary Concrete) relaxation made discrete by a straight-through top-k:

* ``perturbed = logits + logistic noise`` (logistic = difference of two Gumbels, drawn from the
  caller's generator), ``soft = sigmoid(perturbed / tau)``;
* forward: the ``N - K`` largest perturbed logits of each row are hidden, so every row keeps
  exactly ``K = int(N * (1 - mask_ratio))`` tokens (encoders need equal lengths);
* backward: ``mask = hard + (soft - soft.detach())`` passes the gradient of the relaxation.

``tau`` is annealed from 1.0 to 0.5 by a half cosine over the first 2000 steps and then held
(:func:`temperature`). In eval mode there is no noise: the top-k of the logits, deterministic.
The final layer starts at zero, so an untrained masker is exactly MAE random masking.

Only the masker lives here; training it around a frozen MAE (partner/adversary schedule, mixing
with random masks) belongs to the models. The loss terms it will use are functions below:
:func:`composite_mse`, :func:`mean_score_penalty`, :func:`score_entropy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiossl.masking.base import MaskInfo, resolve_generator
from audiossl.masking.multiblock import GeneratorLike

# Keeps log(u) and log(1 - u) finite in float32.
_UNIFORM_EPS = 1e-6


def temperature(step: Optional[int], *, start: float = 1.0, end: float = 0.5, anneal_steps: int = 2000) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (``anneal_steps`` and after); None = end."""
    if step is None or step >= anneal_steps:
        return end
    if step <= 0:
        return start
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * step / anneal_steps))


def logistic_noise(shape: Sequence[int], *, generator: torch.Generator, device: torch.device) -> Tensor:
    """Logistic(0, 1) samples, ``log u - log(1 - u)``, drawn on the generator's device."""
    u = torch.rand(tuple(shape), generator=generator, device=generator.device)
    u = u.clamp_(_UNIFORM_EPS, 1.0 - _UNIFORM_EPS)
    return (torch.log(u) - torch.log1p(-u)).to(device)


def gumbel_sigmoid(
    logits: Tensor, tau: float, *, noise: bool = True, generator: GeneratorLike = None
) -> tuple[Tensor, Tensor]:
    """Binary Concrete sample: returns ``(perturbed logits, sigmoid(perturbed / tau))``."""
    if tau <= 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    perturbed = logits
    if noise:
        g = resolve_generator(generator, logits.device)
        perturbed = logits + logistic_noise(logits.shape, generator=g, device=logits.device).to(logits.dtype)
    return perturbed, torch.sigmoid(perturbed / tau)


def straight_through_topk(perturbed: Tensor, soft: Tensor, num_masked: int) -> tuple[Tensor, Tensor]:
    """Hide the ``num_masked`` largest entries per row.

    Returns the hard bool mask and the straight-through float mask: exactly 0/1 forward (the
    ``soft - soft.detach()`` term is an exact zero), ``d soft`` backward.
    """
    B, N = perturbed.shape
    if not 0 <= num_masked <= N:
        raise ValueError(f"num_masked must be in [0, {N}], got {num_masked}")
    idx = perturbed.detach().topk(num_masked, dim=1).indices
    hard = torch.zeros(B, N, dtype=torch.bool, device=perturbed.device).scatter_(1, idx, True)
    return hard, hard.to(soft.dtype) + (soft - soft.detach())


class GumbelSigmoid(nn.Module):
    """Gumbel-sigmoid relaxation with the annealed temperature; noise-free in eval mode."""

    def __init__(self, start: float = 1.0, end: float = 0.5, anneal_steps: int = 2000) -> None:
        super().__init__()
        self.start, self.end, self.anneal_steps = start, end, anneal_steps

    def temperature(self, step: Optional[int]) -> float:
        return temperature(step, start=self.start, end=self.end, anneal_steps=self.anneal_steps)

    def forward(
        self, logits: Tensor, *, step: Optional[int] = None, generator: GeneratorLike = None
    ) -> tuple[Tensor, Tensor]:
        return gumbel_sigmoid(logits, self.temperature(step), noise=self.training, generator=generator)

    def extra_repr(self) -> str:
        return f"start={self.start}, end={self.end}, anneal_steps={self.anneal_steps}"


@dataclass
class LearnedMask:
    """A learned mask: the discrete ``info`` plus what the masker's losses need.

    ``mask`` (B, N) float is the straight-through mask (1 = hidden) to weight losses with;
    ``soft`` the relaxation itself; ``scores`` the scorer's logits (for the regularisers).
    """

    info: MaskInfo
    mask: Tensor
    soft: Tensor
    scores: Tensor
    temperature: float


class LearnedMasker(nn.Module):
    """Scorer (LayerNorm -> Linear -> GELU -> depthwise conv over the grid -> GELU -> Linear)
    plus Gumbel-sigmoid straight-through top-k.

    The per-token MLP sees a patch's content; the ``kernel_size`` depthwise convolution over the
    patch grid lets a score depend on its neighbours (``kernel_size=1`` is a pure MLP). Both are
    cheap next to an encoder forward, as a masker that runs on every full input must be.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        mask_ratio: float = 0.75,
        hidden_dim: int = 128,
        kernel_size: int = 3,
        temp_start: float = 1.0,
        temp_end: float = 0.5,
        anneal_steps: int = 2000,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.mask_ratio = mask_ratio
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.conv = (
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=kernel_size // 2, groups=hidden_dim)
            if kernel_size > 1
            else None
        )
        self.fc2 = nn.Linear(hidden_dim, 1)
        self.relax = GumbelSigmoid(temp_start, temp_end, anneal_steps)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def num_keep(self, num_tokens: int) -> int:
        """MAE's count, ``int(N * (1 - mask_ratio))``, so the masker is a drop-in for random masks."""
        return int(num_tokens * (1.0 - self.mask_ratio))

    def score(self, tokens: Tensor, grid: Optional[Sequence[int]] = None) -> Tensor:
        """``(B, N, D)`` tokens -> ``(B, N)`` logits; ``grid`` (H, W) with H*W = N, None = 1-D."""
        B, N, _ = tokens.shape
        H, W = (N, 1) if grid is None else (int(grid[0]), int(grid[1]))
        if H * W != N:
            raise ValueError(f"grid {tuple(grid)} has {H * W} cells for {N} tokens")
        h = F.gelu(self.fc1(self.norm(tokens)))
        if self.conv is not None:
            spatial = h.transpose(1, 2).reshape(B, -1, H, W)
            h = F.gelu(h + self.conv(spatial).flatten(2).transpose(1, 2))
        return self.fc2(h).squeeze(-1)

    def forward(
        self,
        tokens: Tensor,
        grid: Optional[Sequence[int]] = None,
        *,
        step: Optional[int] = None,
        generator: GeneratorLike = None,
    ) -> LearnedMask:
        """Score, relax and select; ``step`` drives the temperature (None = annealed end value)."""
        scores = self.score(tokens, grid)
        tau = self.relax.temperature(step)
        perturbed, soft = self.relax(scores, step=step, generator=generator)
        N = scores.shape[1]
        hard, mask = straight_through_topk(perturbed, soft, N - self.num_keep(N))
        return LearnedMask(MaskInfo.from_mask(hard), mask, soft, scores, tau)


def composite_mse(pred: Tensor, target: Tensor, mask: Tensor, *, visible_weight: float = 0.1) -> Tensor:
    """Weighted mean of per-token squared error over the whole (masked + visible) grid.

    Token ``n`` with error ``e_n = mean_d (pred - target)^2`` gets weight
    ``w_n = m_n + visible_weight * (1 - m_n)``; the loss is ``sum(w e) / sum(w)`` with the
    denominator detached. With a hard mask the value is the MAE masked-patch loss when
    ``visible_weight = 0`` and the plain all-token MSE when it is 1. Through a straight-through
    ``mask`` the gradient to ``m_n`` is ``(1 - visible_weight) * e_n / sum(w)``: the same sign
    for every token and proportional to its error, so a masker maximising this moves mass to
    hard tokens and one minimising it to easy tokens, whatever the group sizes (normalising
    each group by its own soft size instead mixes signs through the group means).
    """
    if pred.shape != target.shape or pred.shape[:2] != mask.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)} disagree")
    err = (pred - target).pow(2).mean(-1)
    m = mask.to(err.dtype)
    w = m + visible_weight * (1.0 - m)
    return (w * err).sum() / w.sum().detach().clamp_min(torch.finfo(err.dtype).tiny)


def mean_score_penalty(scores: Tensor) -> Tensor:
    """``mean_b (mean_n scores)^2``.

    Top-k is blind to a per-row shift of the logits, so without this the logits can drift until
    the sigmoid saturates and the relaxation stops passing gradient.
    """
    return scores.mean(-1).pow(2).mean()


def score_entropy(scores: Tensor) -> Tensor:
    """Mean binary entropy (nats) of ``sigmoid(scores)``, ``softplus(s) - s * sigmoid(s)``.

    Added with a positive weight it pushes scores to confident keep/hide decisions, so the soft
    mask agrees with the hard one; a negative weight rewards exploration.
    """
    return (F.softplus(scores) - scores * torch.sigmoid(scores)).mean()


def masker_regularizer(scores: Tensor, *, lambda_mean: float, lambda_ent: float) -> Tensor:
    """``lambda_mean * mean_score_penalty + lambda_ent * score_entropy``."""
    return lambda_mean * mean_score_penalty(scores) + lambda_ent * score_entropy(scores)
