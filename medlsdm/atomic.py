"""Atomic file writes: a file is either the old one or the complete new one, never half.

Everything medlsdm writes (NIfTI, JSON, HDF5, checkpoints, figures) goes through
:func:`atomic_path`: the writer fills a temporary file next to the target, which is then
renamed over it with :func:`os.replace` (atomic on POSIX file systems). Model folders
(``save_pretrained``) are swapped in whole by :func:`save_pretrained_atomic`. The new data and
the rename are flushed to the disk (``fsync``), so a power cut leaves the old file or the new
one, not an empty one; temporary files of writers killed before their rename are removed by
the next write of the same file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import DataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.h5`` …) so libraries
    that choose a format from the file name write the right one. On error the temporary
    file is removed and the target is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    _remove_dead_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent)  # the rename itself
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


#: ``atomic_path``'s temporary names: ``.<name>.<pid>-<8 random characters>.tmp<suffixes>``.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[a-z0-9_]{8}\.tmp.*")


def _remove_dead_temporaries(path: Path) -> None:
    """Remove the temporary files of ``path`` that writers no longer running left (killed
    between creating and renaming them)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        found = _TEMPORARY.fullmatch(tmp.name)
        if found and found["name"] == path.name and not _running(int(found["pid"])):
            tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk, where the system can; a failed
    write-back of a file (EIO, ENOSPC, EDQUOT) raises."""
    fd = None
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.ENOSPC, errno.EDQUOT) and not path.is_dir():
            raise
    finally:
        if fd is not None:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8), atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`~medlsdm.errors.DataError` naming it when unreadable."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with tuples as lists and paths as strings, ready for :func:`write_json`."""
    out = {}
    for k, v in params.items():
        out[k] = list(v) if isinstance(v, tuple) else (str(v) if isinstance(v, os.PathLike) else v)
    return out


def save_pretrained_atomic(model, folder: str | os.PathLike) -> None:
    """``save_pretrained`` into a temporary folder, then swap it in place of ``folder``.

    Readers see the old folder or the complete new one: on Linux the two are exchanged in one
    step (``renameat2(RENAME_EXCHANGE)``); elsewhere the old folder is renamed aside and the new
    one renamed in, and a kill between the two leaves the old one aside, which
    :func:`recover_folder` (called by every save and load) puts back. Processes saving the same
    folder side by side all succeed; the last one wins.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    tmp = _sibling(folder, "new")
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        for root, _, files in os.walk(tmp):
            for name in files + [""]:  # "": the folder itself
                _fsync(Path(root) / name)
        _swap_in(tmp, folder)
        _fsync(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old version after an exchange, a partial one after an error


def recover_folder(folder: str | os.PathLike) -> None:
    """Put back a model folder that a killed :func:`save_pretrained_atomic` left aside, then
    remove what saves of processes no longer running left behind. Creates nothing."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    leftovers = [
        (m["kind"], int(m["pid"]), p)
        for p in folder.parent.iterdir()
        if (m := _LEFTOVER.fullmatch(p.name)) and m["name"] == folder.name
    ]
    if not folder.exists():
        for _, _, aside in sorted((x for x in leftovers if x[0] == "old"), key=_mtime, reverse=True):
            try:
                os.rename(aside, folder)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in _EXISTS:
                    raise
            else:
                log.warning("%s: put back the folder a killed save left as %s", folder, aside.name)
            break
    if folder.exists():
        for _, pid, path in leftovers:
            if not _running(pid):
                shutil.rmtree(path, ignore_errors=True)


_EXISTS = (errno.ENOTEMPTY, errno.EEXIST)
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>new|old)-(?P<pid>\d+)-[0-9a-f]{8}")


def _sibling(folder: Path, kind: str) -> Path:
    """A unique hidden name next to ``folder`` that :func:`recover_folder` recognises."""
    return folder.with_name(f".{folder.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _mtime(leftover: tuple[str, int, Path]) -> float:
    try:
        return leftover[2].stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _running(pid: int) -> bool:
    """Whether process ``pid`` is alive (assumed alive where that cannot be checked)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(new: Path, folder: Path) -> None:
    """Make ``new`` the folder at ``folder``, retrying while other processes do the same."""
    asides = []
    try:
        while True:
            try:
                os.rename(new, folder)  # no folder there yet (or an empty one)
                break
            except OSError as exc:
                if exc.errno not in _EXISTS:
                    raise
            if _exchange(new, folder):  # ``new`` now holds the old folder
                break
            aside = _sibling(folder, "old")
            try:
                os.rename(folder, aside)  # a kill here leaves the old folder aside: recover_folder
                asides.append(aside)
            except FileNotFoundError:  # another process moved it first
                pass
    except BaseException:
        recover_folder(folder)
        raise
    for aside in asides:
        shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``);
    ``False`` where the system or file system cannot, or when ``b`` has just vanished."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
