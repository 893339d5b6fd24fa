"""What the training commands (pretrain, finetune, linprobe) share: the flags that say what to do
with a folder that holds a run, and the engine's errors as exit codes (2: the command line must
change; 1: the run failed). Imports nothing heavy at ``--help``."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Optional, Sequence, Tuple, Type


def add_run_arguments(parser: argparse.ArgumentParser, *, resume: str, overwrite: str) -> None:
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help=resume)
    again.add_argument("--overwrite", action="store_true", help=overwrite)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def print_config(cfg: Any) -> None:
    import yaml

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def run_engine(call: Callable[[], Any], logger: logging.Logger, verbose: bool,
               failures: Sequence[Type[BaseException]] = ()) -> Tuple[Optional[int], Any]:
    """``(None, result)`` of ``call()``, or ``(exit code, None)`` with the error logged in one line
    (the traceback too with ``-v``)."""
    from audiossl.checkpoint import CheckpointError
    from audiossl.train.config import ConfigError
    from audiossl.train.loop import RunFolderError, TrainingError

    try:
        return None, call()
    except ConfigError as e:  # a value that fails once used (a store that does not open)
        logger.error("config: %s", e, exc_info=verbose)
        return 2, None
    except RunFolderError as e:  # the command line must change: like a usage error
        logger.error("%s", e, exc_info=verbose)
        return 2, None
    except (TrainingError, CheckpointError, *failures) as e:
        logger.error("%s", e, exc_info=verbose)
        return 1, None
