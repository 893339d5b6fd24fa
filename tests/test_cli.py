"""The `audiossl` command: every subcommand is registered and answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from audiossl.cli import COMMANDS, build_parser, main


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: audiossl " + name in capsys.readouterr().out


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_console_script_is_installed():
    # `python -m audiossl` and the entry point share main(); the module form needs no PATH.
    proc = subprocess.run([sys.executable, "-m", "audiossl", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("audiossl ")


def test_parser_builds_without_importing_torch():
    # --help must answer at once: command modules import torch/h5py only inside run().
    code = "import sys; from audiossl.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
