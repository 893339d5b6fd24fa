"""Seeded randomness for the data code: no draw here reads the global RNG.

Every dataset item, augmentation and sampler draws from a ``torch.Generator`` it is given (or
builds from an integer seed); :func:`item_generator` gives each dataset item its own stream.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor

_MAX_SEED = 2**63 - 1


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, epoch, index)``.

    ``SeedSequence`` hashes the triple, so neighbouring indices and epochs get unrelated
    streams (``seed + index`` would make epoch ``e`` index ``i+1`` replay index ``i``).
    """
    if seed < 0 or epoch < 0 or index < 0:
        raise ValueError(f"seed, epoch and index must be >= 0, got {seed}, {epoch}, {index}")
    words = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return g


def _as_generator(generator: Union[torch.Generator, int, None], owner: str) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        raise ValueError(
            f"{owner} needs a torch.Generator or an integer seed (no global RNG is used)"
        )
    g = torch.Generator()
    g.manual_seed(int(generator))
    return g


def _rand(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) drawn on the generator's device, then moved to where the data is."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def sample_beta(
    alpha: float, beta: float, shape: Sequence[int], generator: torch.Generator
) -> Tensor:
    """Beta(alpha, beta) float32 samples on the CPU, reproducible from ``generator``.

    torch's Beta/Gamma samplers only read the global RNG, so one 63-bit draw from
    ``generator`` seeds a NumPy generator that does the sampling (exact Beta, any alpha).
    """
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"Beta parameters must be > 0, got {alpha}, {beta}")
    seed = int(torch.randint(0, _MAX_SEED, (1,), generator=generator, device=generator.device))
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.beta(alpha, beta, size=tuple(shape)).astype(np.float32))
