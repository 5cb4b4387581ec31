"""Path checks with one-line errors that name the path and the real problem.

``Path.exists()`` answers False for a symlink loop and ``open`` reports a permission problem as
an OSError that callers tend to word as "corrupt"; these checks look at the errno instead, so the
user reads "symlink loop" or "permission denied". The output checks run before any work and
create nothing, so a bad ``--out`` fails in a second instead of after a long run.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import InputError


def _stat(p: Path, what: str) -> os.stat_result | None:
    """``os.stat`` of ``p``, None if nothing is there; InputError for loops and permissions."""
    try:
        return p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise InputError(f"{what} {str(p)!r} is a broken symlink (its target "
                             f"{os.readlink(p)!r} does not exist)") from None
        return None
    except NotADirectoryError:
        raise InputError(f"{what} {str(p)!r} does not exist (a parent is a file, not a folder)") from None
    except PermissionError:
        raise InputError(f"{what} {str(p)!r}: permission denied (a parent folder is not searchable)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{what} {str(p)!r} is a symlink loop") from None
        raise InputError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None


def readable_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path if it is a regular file this process can open for reading."""
    p = Path(path)
    st = _stat(p, what)
    if st is None:
        raise InputError(f"{what} {str(p)!r} does not exist")
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {str(p)!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {str(p)!r} is not a regular file")
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise InputError(f"{what} {str(p)!r}: permission denied (cannot read it)") from None
    except OSError as exc:
        raise InputError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    return p


def readable_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """``path`` as a Path if it is a folder whose entries this process can list."""
    p = Path(path)
    st = _stat(p, what)
    if st is None:
        raise InputError(f"{what} {str(p)!r} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {str(p)!r} is a file, not a folder")
    try:
        with os.scandir(p):
            pass
    except PermissionError:
        raise InputError(f"{what} {str(p)!r}: permission denied (cannot list it)") from None
    return p


def _writable_ancestor(p: Path, what: str, target: Path) -> None:
    """The nearest existing ancestor of ``p`` must be a folder we can write into (mkdir -p works)."""
    for parent in [p, *p.parents]:
        st = _stat(parent, what)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise InputError(f"{what} {str(target)!r} cannot be created: {str(parent)!r} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{what} {str(target)!r}: permission denied (folder {str(parent)!r} is not writable)")
        return


def output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check that ``path`` is, or can be created as, a writable folder; creates nothing."""
    p = Path(path)
    st = _stat(p, what)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise InputError(f"{what} {str(p)!r} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{what} {str(p)!r}: permission denied (the folder is not writable)")
        return p
    _writable_ancestor(p.parent, what, p)
    return p


def output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written as a file (it is not a folder, its folder is writable or
    can be created); creates nothing."""
    p = Path(path)
    st = _stat(p, what)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{what} {str(p)!r} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {str(p)!r} is not a regular file")
    _writable_ancestor(p.parent, what, p)
    if st is not None and not os.access(p, os.W_OK):
        raise InputError(f"{what} {str(p)!r}: permission denied (the file is read-only)")
    return p
