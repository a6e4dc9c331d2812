"""Folders and files: those people pass (`--storage`, `--cache-dir`, `--out`, `--export`), checked before any work
starts, and the file lock that processes sharing a folder take (`file_lock`).

Writability is tried, not inferred from permission bits: root passes every `os.access` check, yet cannot write into
/proc or onto a read-only mount.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shrinktune.errors import UserError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, required: bool = True) -> Iterator[None]:
    """An exclusive (or `shared`) `flock` on the file `path`, made (with its folder) if missing, held for the block:
    how processes on one machine, or on a shared file system that supports it, take turns.

    Args:
        required: when False, a lock file that cannot be made is not an error: the block runs without the lock.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a")
    except OSError:
        if required:
            raise
        logger.debug("no lock file %s: going on without it", path)
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def can_write_in(folder: Path) -> bool:
    """Whether a file can be made (and removed) in `folder`."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".shrinktune-probe-"):
            return True
    except OSError:
        return False


def check_folder(path: str | Path, flag: str, private: bool = False) -> Path:
    """Makes the folder `path` (owner-only, 0700, with `private`) if it is not there, and checks files can be written
    in it; else one UserError line naming the flag."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
    except OSError as error:
        raise UserError(f"{flag} {folder} cannot be made a folder ({error.strerror}); pass a writable folder."
                        ) from None
    if not can_write_in(folder):
        raise UserError(f"{flag} {folder} is not writable by this user; pass a writable folder.")
    return folder


def check_writable_file(path: Path, flag: str) -> None:
    """Refuses a file path that cannot be written — a folder, or a place whose folder is missing or read-only — in
    one line naming the flag."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass a file path, e.g. {path / 'teacher.safetensors'}.")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: {folder} is not a folder (missing, or a file); make it first or pass "
                        "another path.")
    if not can_write_in(folder):
        raise UserError(f"{flag} {path}: its folder {folder} is not writable by this user; pass a writable path.")
