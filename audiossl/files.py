"""Files as every reader and writer of the package treats them.

* :func:`atomic_path` (and :func:`atomic_write_text` / :func:`atomic_write_bytes` over it): a
  writer writes ``name.partial`` and renames it over ``name`` only when the write completed, so a
  kill, an exception or a full disk leaves the previous ``name`` as it was and no partial file
  holding the space.
* :class:`OutputError`: an output that cannot be written, with the file and the reason; a full
  disk says so in words ("no space left on device") whatever layer noticed it (Python, h5py,
  PyTorch's zip writer, which reports only "unexpected pos").
* :func:`file_problem`: why a path cannot be read as an input file (missing, a dangling or
  looping link, a directory, a FIFO or device, empty), for the domain errors to report.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NO_SPACE_TEXT = ("no space left on device", "errno = 28", "disk quota exceeded")


class OutputError(Exception):
    """An output file that cannot be written, with the file and the reason."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` or anything in its chain is a full disk (or quota)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        if any(text in str(exc).lower() for text in _NO_SPACE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def no_space_error(path: PathLike, exc: BaseException, *, kept: Optional[str] = None) -> OutputError:
    """The :class:`OutputError` for a write of ``path`` that ran out of space (free space is
    measured after the partial file was removed: what the user has to work with)."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2 ** 20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    tail = f"; {kept}" if kept else ""
    return OutputError(path, f"cannot be written: no space left on device ({free} in {folder}){tail}")


def remove_quietly(path: PathLike) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def partial_of(path: PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


@contextmanager
def atomic_path(path: PathLike, *, partial: Optional[PathLike] = None, fsync: bool = True) -> Iterator[Path]:
    """Yield the path to write (``path.partial`` unless ``partial`` is given); rename it over
    ``path`` when the block completes. On any exception the partial file is removed and ``path``
    is untouched; a full disk becomes an :class:`OutputError` that says so."""
    path = Path(path)
    tmp = partial_of(path) if partial is None else Path(partial)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_quietly(tmp)
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and not isinstance(e, OutputError) and is_no_space(e)
        written = _size(tmp) if full else 0
        remove_quietly(tmp)
        if full:
            notes = [f"{written / 2 ** 20:.1f} MiB had been written"] if written else []
            if path.exists():
                notes.append(f"kept {path.name} as it was before")
            raise no_space_error(path, e, kept="; ".join(notes) or None) from e
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def file_problem(path: PathLike, *, what: str = "file") -> Optional[str]:
    """Why ``path`` cannot be read as a regular input file, or None when it can. Never opens it
    (opening a FIFO blocks, reading /dev/zero never ends)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if os.path.islink(path):
            return f"is a symbolic link to {os.readlink(path)!r}, which does not exist"
        if e.errno == errno.ENOENT:
            return "no such file"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return f"is a directory, not {'an' if what[0] in 'aeiou' else 'a'} {what}"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        return f"is {kind}, not {'an' if what[0] in 'aeiou' else 'a'} {what}"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None
