"""Pretrain a model from an fbank store with a YAML config; any config key can be overridden on
the command line as ``--section.key value``:

  audiossl pretrain --config recipes/esc50/conf/eat_tiny.yaml --data.train exp/train.h5 --steps 200
  audiossl pretrain --config conf.yaml --resume          # continue from the newest checkpoint
  audiossl pretrain --config conf.yaml --overwrite       # remove the run in --out first, then train
  torchrun --nproc_per_node 4 -m audiossl pretrain --config conf.yaml

Optimiser defaults come from the model family's paper (see audiossl/train/pretrain.py,
FAMILY_OPTIM); the YAML and the command line override them. Writes config.yaml,
checkpoint-<step>.pt, metrics.jsonl and the final model.pt into --out (config key `out`); a
folder that already holds a run needs --resume or --overwrite.
"""

from __future__ import annotations

import argparse
import logging

from audiossl.commands._training import add_run_arguments, print_config, run_engine

HELP = "pretrain a model (EAT, MAE-AST, SSAST, MAE, JEPA, masker) from an fbank store"
OVERRIDES = True

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (keys as in PretrainConfig)")
    add_run_arguments(parser, resume="continue from the newest checkpoint in out",
                      overwrite="remove the run already in out (its checkpoints, metrics, config, model) first")


def run(args: argparse.Namespace) -> int:
    from audiossl.train.pretrain import load_config, pretrain

    verbose = getattr(args, "verbose", False)  # -v: the traceback too
    try:
        cfg = load_config(args.config, args.overrides)
    except (OSError, ValueError, TypeError) as e:
        logger.error("config: %s", e, exc_info=verbose)
        return 2
    if args.print_config:
        print_config(cfg)
        return 0
    code, path = run_engine(lambda: pretrain(cfg, resume=args.resume, overwrite=args.overwrite), logger, verbose)
    if code is not None:
        return code
    logger.info("wrote %s", path)
    return 0
