"""Summarise fine-tuning / linear-probe runs: one CSV row per run and a Markdown table with
mean ± std per group (e.g. the 5 ESC-50 folds):

  audiossl report exp/esc50/*/fold*/results.json -o exp/esc50/summary
  audiossl report exp/*/results.json -o exp/summary --group-by init,task

Writes OUT_PREFIX.csv and OUT_PREFIX.md. Runs selected on the test split are grouped apart
and labelled "test-selected (optimistic)".
"""

from __future__ import annotations

import argparse
import logging

HELP = "tabulate results.json files: CSV per run, Markdown mean ± std per group"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results.json files (or the folders holding them)")
    parser.add_argument("-o", "--out", required=True, help="output prefix: writes PREFIX.csv and PREFIX.md")
    parser.add_argument("--group-by", default="model,init,task",
                        help="comma-separated keys among model,init,task,selected_on,split,source,loss")


def run(args: argparse.Namespace) -> int:
    from audiossl.train.report import write_report

    keys = [k.strip() for k in args.group_by.split(",") if k.strip()]
    try:
        csv_path, md_path, groups = write_report(args.results, args.out, keys)
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    for g in groups:
        print(f"{g['label']}: {100 * g['mean']:.1f} ± {100 * g['std']:.1f} ({g['metric']}, {g['n']} runs)")
    logger.info("wrote %s and %s", csv_path, md_path)
    return 0
