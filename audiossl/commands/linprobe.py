"""Linear probe: the encoder frozen, each clip embedded once (no augmentation), the embeddings
standardised with the training clips' statistics and a BatchNorm(affine=False) + Linear head
trained on them. Same arguments, config and outputs as ``audiossl finetune`` (mode linprobe):

  audiossl linprobe --config recipes/esc50/conf/probe.yaml --checkpoint exp/pt/model.pt --out exp/probe/fold1
  audiossl linprobe --config conf.yaml --init random --model eat_tiny --out exp/probe_random/fold1
"""

from __future__ import annotations

import argparse

from audiossl.commands.finetune import add_arguments as _add_arguments
from audiossl.commands.finetune import run_mode

HELP = "linear probe of a frozen encoder (BatchNorm without affine + Linear on standardised embeddings)"
OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_mode(args, "linprobe")
