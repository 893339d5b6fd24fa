"""Fine-tune a pretrained encoder (or a randomly initialised one) on a labelled fbank store;
any config key can be overridden on the command line as ``--section.key value``:

  audiossl finetune --config recipes/esc50/conf/ft_eat.yaml --checkpoint exp/pt/model.pt --out exp/ft/fold1 \\
      --data.test_values '[1]'
  audiossl finetune --config conf.yaml --init random --model eat_tiny --out exp/ft_random/fold1
  audiossl finetune --config conf.yaml --checkpoint CKPT --out DIR --resume   # after the last finished epoch

Defaults come from the encoder's family (audiossl/train/finetune.py, FAMILY_FINETUNE). Model
selection uses a validation split taken from the training clips (data.val_fraction);
``--select_on_test true`` is upstream's optimistic best-epoch-on-test protocol and is labelled so.
Writes results.json, test_clips.txt, metrics.jsonl, checkpoint.pt and model.pt into --out; a
folder that already holds a run needs --resume or --overwrite.
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional

from audiossl.commands._training import add_run_arguments, print_config, run_engine

HELP = "fine-tune a pretrained (or random-init) encoder on a labelled fbank store"
OVERRIDES = True

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (keys as in FinetuneConfig)")
    parser.add_argument("--checkpoint", help="native checkpoint to start from (pretrained, encoder or fine-tuned)")
    parser.add_argument("--init", choices=("pretrained", "random"), help="random: the random-init baseline (needs --model)")
    parser.add_argument("--model", help="preset of the random-init encoder, e.g. eat_tiny")
    parser.add_argument("--out", help="output directory (config key `out`)")
    add_run_arguments(parser, resume="continue after the last finished epoch in --out",
                      overwrite="remove the run already in --out (results, checkpoints, metrics, config) first")


def run_mode(args: argparse.Namespace, mode: Optional[str]) -> int:
    """Shared by ``finetune`` and ``linprobe`` (which passes ``mode="linprobe"``)."""
    from audiossl.checkpoint import CheckpointError
    from audiossl.train.finetune import finetune, load_config

    overrides = list(args.overrides)
    for flag, key in ((args.checkpoint, "model.checkpoint"), (args.init, "model.init"), (args.model, "model.preset"),
                      (args.out, "out")):
        if flag is not None:
            overrides += [f"--{key}", str(flag)]
    if args.model is not None and args.init is None:
        overrides += ["--model.init", "random"]
    verbose = getattr(args, "verbose", False)  # -v: the traceback too
    try:
        cfg = load_config(args.config, overrides, mode=mode)
    except (OSError, ValueError, TypeError, CheckpointError) as e:
        logger.error("config: %s", e, exc_info=verbose)
        return 2
    if args.print_config:
        print_config(cfg)
        return 0
    code, results = run_engine(lambda: finetune(cfg, resume=args.resume, overwrite=args.overwrite), logger, verbose,
                               failures=(ValueError,))
    if code is not None:
        return code
    test = results["metrics"]["test"] or {}
    logger.info("%s (%s, selected on %s, epoch %s): test %s = %.4f on %d clips; wrote %s/results.json",
                results["task"], results["init"], results["selected_on"], results["selected_epoch"],
                results["select_metric"], test.get(results["select_metric"]) or float("nan"), results["num_test_clips"],
                cfg.out)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_mode(args, None)
