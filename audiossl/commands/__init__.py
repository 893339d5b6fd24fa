"""One module per ``audiossl`` subcommand (see ``audiossl/cli.py``)."""
