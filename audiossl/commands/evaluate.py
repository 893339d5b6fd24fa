"""Representation benchmark: probe frozen embeddings on labelled tasks, baselines in the same run.

Each task is a manifest with a split column (train / valid / test, optionally test_* extras) and
one label per clip. Every representation is embedded once per task (cached under OUT/cache, so a
re-run or a killed run resumes), standardised with train's statistics and probed; the probe's
hyper-parameter (logreg: C; linear: weight decay and epoch) is chosen on valid accuracy, and test
accuracy is reported as mean ± std over seeds.

  audiossl evaluate --task lid=tasks/lid/manifest.csv --task drums=tasks/drums/manifest.csv \\
      --checkpoint eat=exp/eat/model.pt --out exp/eval
  audiossl evaluate --task lid=tasks/lid/manifest.csv --checkpoint eat=exp/eat/model.pt \\
      --layers all --layers top2-mean --pooling cls,mean --knn --out exp/eval_layers
  audiossl evaluate --task lid=tasks/lid/manifest.csv --hear official=audiossl.hear:exp/eat_base.pt \\
      --baselines fbank --out exp/eval_hear

Rows: each checkpoint with the defaults `audiossl embed` uses, its --pooling/--layers variants,
the same encoder randomly initialised with each seed (--baselines random), pooled log-mel mean+std
on the first checkpoint's front end (--baselines fbank) and each --hear module. Writes
OUT/<task>/results.{md,csv,json}, OUT/<task>/chart.png and OUT/summary.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import logging
from typing import Dict, List, Optional, Tuple

HELP = "representation benchmark: probes on frozen embeddings vs random-init and fbank baselines"

logger = logging.getLogger(__name__)


def _pair(text: str, what: str) -> Tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{what} must be NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _named(values: Optional[List[str]], what: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for text in values or []:
        name, value = _pair(text, what)
        if name in out:
            raise argparse.ArgumentTypeError(f"{what} name {name!r} given twice")
        out[name] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", action="append", metavar="NAME=MANIFEST", required=True,
                        help="a task: manifest with split train/valid/test and one label per clip (repeatable)")
    parser.add_argument("--checkpoint", action="append", metavar="NAME=CKPT",
                        help="a native audiossl checkpoint to evaluate (repeatable)")
    parser.add_argument("--baselines", default="random,fbank", metavar="LIST",
                        help="comma list of random,fbank, or 'none' (default: %(default)s)")
    parser.add_argument("--layers", action="append", metavar="SPEC",
                        help="extra rows per checkpoint: 'all' (one row per block), 'topK-mean' (mean of the "
                             "last K blocks), a block index or a comma list of indices (repeatable)")
    parser.add_argument("--pooling", default=None, metavar="cls,mean,bands",
                        help="extra rows with this clip pooling (comma list of cls, mean, bands); default rows "
                             "use the checkpoint's")
    parser.add_argument("--hear", action="append", metavar="NAME=MODULE[:MODEL_FILE]",
                        help="a HEAR 2021 module and its model file, e.g. official=audiossl.hear:eat.pt (repeatable)")
    parser.add_argument("--probe", choices=["logreg", "linear"], default="logreg",
                        help="logreg: L2 logistic regression (L-BFGS, C on valid); linear: softmax layer with "
                             "AdamW (weight decay and epoch on valid) (default: %(default)s)")
    parser.add_argument("--knn", action="store_true", help="also a cosine k-NN probe (k chosen on valid)")
    parser.add_argument("--seeds", type=int, default=3, help="probe / random-init seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--max-per-split", type=int, default=None, metavar="N",
                        help="at most N clips per split, balanced over classes (quick runs)")
    parser.add_argument("--out", required=True, help="output folder (tables, charts, cache)")
    parser.add_argument("--device", default="cpu", help="torch device for the encoders (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per encoder call (default: %(default)s)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG charts")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _hear_entries(values: Optional[List[str]]) -> Dict[str, Tuple[str, Optional[str]]]:
    out = {}
    for name, value in _named(values, "--hear").items():
        module, _, path = value.partition(":")
        out[name] = (module.strip(), path.strip() or None)
    return out


def run(args: argparse.Namespace) -> int:
    from audiossl.audio import AudioError
    from audiossl.data.manifest import ManifestError
    from audiossl.evaluate import EvaluateError, evaluate, standard_representations
    from audiossl.checkpoint import CheckpointError

    try:
        tasks = _named(args.task, "--task")
        checkpoints = _named(args.checkpoint, "--checkpoint")
        hear = _hear_entries(args.hear)
    except argparse.ArgumentTypeError as exc:
        logger.error("%s", exc)
        return 2
    baselines = [] if args.baselines.strip().lower() == "none" else [b.strip() for b in args.baselines.split(",") if b.strip()]
    poolings = [p.strip() for p in (args.pooling or "").split(",") if p.strip()]
    if args.seeds < 3:
        logger.warning("--seeds %d: the protocol reports mean ± std over at least 3 seeds", args.seeds)
    try:
        specs = standard_representations(checkpoints, baselines=baselines, layers=args.layers or [],
                                         poolings=poolings, hear=hear)
        if not specs:
            raise ValueError("nothing to evaluate: give --checkpoint, --hear or --baselines fbank")
        results = evaluate(tasks, specs, probe=args.probe, seeds=args.seeds, out=args.out, knn=args.knn,
                           max_per_split=args.max_per_split, device=args.device, batch_size=args.batch_size,
                           progress=not args.quiet, chart=not args.no_chart)
    except (EvaluateError, ManifestError, CheckpointError, AudioError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    from audiossl.evaluate.report import summary_markdown

    print(summary_markdown(results))
    print(f"tables and charts in {args.out}")
    return 0
