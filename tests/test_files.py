"""audiossl/files.py: atomic writes, the full-disk error, and the reasons a path is not a file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from audiossl.files import OutputError, atomic_path, atomic_write_text, file_problem, is_no_space


def test_an_interrupted_write_keeps_the_previous_file_and_leaves_no_partial(tmp_path: Path) -> None:
    out = atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as partial:
            partial.write_text("half")
            raise KeyboardInterrupt
    assert out.read_text() == "old" and list(tmp_path.iterdir()) == [out]


def test_a_completed_write_replaces_the_file(tmp_path: Path) -> None:
    out = atomic_write_text(tmp_path / "sub" / "a.txt", "one")
    atomic_write_text(out, "two")
    assert out.read_text() == "two" and sorted(p.name for p in out.parent.iterdir()) == ["a.txt"]


def test_no_space_is_found_anywhere_in_the_exception_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as e:
        assert is_no_space(e)
    assert not is_no_space(RuntimeError("unexpected pos 1 vs 2"))
    assert is_no_space(OSError("Can't write data (errno = 28, error message = 'No space left on device')"))


def test_a_full_disk_says_so_and_removes_the_partial_file(small_disk) -> None:
    disk = small_disk(64)
    out = atomic_write_text(disk / "x.bin", "previous")
    with pytest.raises(OutputError, match=r"x\.bin: cannot be written: no space left on device .*kept x\.bin"):
        with atomic_path(out) as partial, open(partial, "wb") as f:
            f.write(os.urandom(256 * 1024))
    assert out.read_text() == "previous" and sorted(p.name for p in disk.iterdir()) == ["x.bin"]


def test_file_problem_names_every_kind_of_non_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink("loop", tmp_path / "loop")
    os.symlink("absent.wav", tmp_path / "dangling")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "ok.wav").write_bytes(b"RIFF")
    assert file_problem(tmp_path / "absent.wav") == "no such file"
    assert file_problem(tmp_path / "dir", what="audio file") == "is a directory, not an audio file"
    assert file_problem(tmp_path / "fifo", what="checkpoint file") == "is a FIFO, not a checkpoint file"
    assert file_problem("/dev/zero", what="audio file") == "is a character device, not an audio file"
    assert file_problem(tmp_path / "loop") == "is a symbolic link loop"
    assert file_problem(tmp_path / "dangling") == "is a symbolic link to 'absent.wav', which does not exist"
    assert file_problem(tmp_path / "empty.wav") == "empty file (0 bytes)"
    assert file_problem(tmp_path / "ok.wav") is None
