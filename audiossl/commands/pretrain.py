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

HELP = "pretrain a model (EAT, MAE-AST, SSAST, MAE, JEPA, masker) from an fbank store"
OVERRIDES = True

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (keys as in PretrainConfig)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out")
    again.add_argument("--overwrite", action="store_true",
                       help="remove the run already in out (its checkpoints, metrics, config, model) first")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    import yaml

    from audiossl.checkpoint import CheckpointError
    from audiossl.train.config import ConfigError
    from audiossl.train.loop import RunFolderError
    from audiossl.train.pretrain import TrainingError, load_config, pretrain

    verbose = getattr(args, "verbose", False)  # -v: the traceback too
    try:
        cfg = load_config(args.config, args.overrides)
    except (OSError, ValueError, TypeError) as e:
        logger.error("config: %s", e, exc_info=verbose)
        return 2
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    try:
        path = pretrain(cfg, resume=args.resume, overwrite=getattr(args, "overwrite", False))
    except ConfigError as e:  # a value that fails once used (a store that does not open)
        logger.error("config: %s", e, exc_info=verbose)
        return 2
    except RunFolderError as e:  # the command line must change: like a usage error
        logger.error("%s", e, exc_info=verbose)
        return 2
    except (TrainingError, CheckpointError) as e:
        logger.error("%s", e, exc_info=verbose)
        return 1
    logger.info("wrote %s", path)
    return 0
