"""The ``audiossl`` command.

Each subcommand lives in ``audiossl/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; the module is a thin layer over library functions. Heavy imports
(torch, h5py) happen inside ``run`` so that ``audiossl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# subcommand name -> module under audiossl.commands
COMMANDS = {
    "fbank": "fbank",
    "fbank-merge": "fbank_merge",
    "stats": "stats",
    "show-masks": "show_masks",
    "pretrain": "pretrain",
    "convert": "convert",
    "embed": "embed",
    "finetune": "finetune",
    "linprobe": "linprobe",
    "report": "report",
    "evaluate": "evaluate",
}


def build_parser() -> argparse.ArgumentParser:
    from audiossl import __version__

    parser = argparse.ArgumentParser(
        prog="audiossl",
        description="Self-supervised learning on audio spectrograms (EAT, MAE-AST, SSAST, MAE, JEPA).",
    )
    parser.add_argument("--version", action="version", version=f"audiossl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"audiossl.commands.{module_name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=(module.__doc__ or module.HELP).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        # -v after the command too (`audiossl pretrain ... -v`); SUPPRESS keeps one given before it.
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging, and the traceback of an error")
        p.set_defaults(_run=module.run, _overrides_ok=getattr(module, "OVERRIDES", False), overrides=[])
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    # Commands with OVERRIDES = True take free ``--section.key value`` pairs (config overrides).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not getattr(args, "_overrides_ok", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from audiossl.files import OutputError

    try:
        return int(args._run(args) or 0)
    except OutputError as e:  # a full disk or an unwritable output: one line, whatever the command
        if args.verbose:
            raise
        logging.getLogger("audiossl").error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
