"""Atomic file writes: a temporary file in the same directory, fsync, then rename, so a
crash never leaves a half-written artifact where a good one was; and whole output folders
committed in one step (a staging directory swapped in under a lock; see below)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from robustlab.errors import ValidationError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    ``suffix`` lets writers that care about the extension (Keras wants ``.keras``) have it.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix,
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN refused: JSON has no NaN) atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


# ------------------------------------------------------------------ whole-folder commits
#
# An output folder is committed in one step: a run builds it complete (files and manifest) in
# a staging directory beside it, ``.<name>.staging-<run id>`` (same parent, so the same
# filesystem), and :func:`replace_directory` swaps that in. On Linux the swap is one
# ``renameat2(RENAME_EXCHANGE)``: at every instant the folder is the complete old one or the
# complete new one. Elsewhere (or on filesystems without the flag) the old folder is renamed
# to ``.<name>.old-<id>``, the new one renamed in and the old one deleted; a crash between the
# two renames leaves no folder and the complete old one under the ``.old-`` name, which
# :func:`recover_directory` (the next run, under the lock) puts back. A sibling lock file,
# ``<name>.lock``, held with ``flock`` for a whole run (:func:`folder_lock`), keeps two runs
# from interleaving.

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap the directory entries ``a`` and ``b`` atomically (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``). False when this system or filesystem cannot; OSError otherwise."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError, TypeError):  # not glibc >= 2.28 (musl, macOS, Windows)
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                     ctypes.c_uint]
    func.restype = ctypes.c_int
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


# The swap, as a module attribute so that tests can simulate a crash at exactly this step.
exchange_directories = _renameat2_exchange


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make the entries of directory ``path`` (renames into it) durable; a no-op where
    directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """fsync every file and directory under ``path`` (files written in place, e.g. by
    papermill, before the folder is committed)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            if os.path.islink(file):
                continue
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(root)


def staging_path(target: str | os.PathLike[str], run_id: str) -> Path:
    """Where a run builds the folder ``target``: ``.<name>.staging-<run_id>`` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}.staging-{run_id}"


def _leftovers(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}.{kind}-"
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix))


def recover_directory(target: str | os.PathLike[str]) -> list[str]:
    """Finish what an interrupted commit of ``target`` left behind (call it holding
    :func:`folder_lock`): when the folder is missing and a complete old one waits under its
    ``.old-`` name, it is put back; other ``.old-`` and ``.staging-`` leftovers of
    ``target`` are deleted. Returns what was done, one line each."""
    target = Path(target)
    done = []
    olds = _leftovers(target, "old")
    if not os.path.lexists(target) and olds:
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(newest, target)
        fsync_directory(target.parent)
        olds.remove(newest)
        done.append(f"restored {target} from {newest.name} (a commit was interrupted)")
    for leftover in olds + _leftovers(target, "staging"):
        shutil.rmtree(leftover, ignore_errors=True)
        done.append(f"deleted {leftover.name} (left by an interrupted run)")
    return done


def replace_directory(staging: str | os.PathLike[str], target: str | os.PathLike[str]
                      ) -> None:
    """Put the complete directory ``staging`` at ``target`` in one step and delete the
    folder that was there (call it holding :func:`folder_lock` on ``target``).

    Both must be on the same filesystem (``staging`` beside ``target``: see
    :func:`staging_path`). A failure at any step leaves ``target`` as it was.
    """
    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    if not os.path.lexists(target):
        os.rename(staging, target)
        fsync_directory(target.parent)
        return
    if exchange_directories(staging, target):  # staging now holds the old folder
        fsync_directory(target.parent)
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = target.parent / f".{target.name}.old-{staging.name.split('.staging-', 1)[-1]}"
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)  # put the old folder back before reporting the failure
        raise
    fsync_directory(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of the folder ``target``: ``<name>.lock`` beside it."""
    target = Path(target)
    return target.parent / f"{target.name}.lock"


@contextlib.contextmanager
def folder_lock(target: str | os.PathLike[str], *, wait: bool = False,
                on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<target>.lock`` for the ``with`` block.

    When another process (or thread) holds it: with ``wait`` False raise a
    :class:`~robustlab.errors.ValidationError` naming the holder's process id; with ``wait``
    True call ``on_wait`` with a line saying so, then wait. The lock is released when the
    block ends or the process dies. Where ``fcntl`` does not exist (Windows) nothing is
    locked.
    """
    path = lock_path(target)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ValidationError(f"expected to be able to create the lock file {path} beside "
                              f"{target}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            message = (f"{target} is being written by another robustlab process "
                       f"(pid {holder}, holding {path})")
            if not wait:
                raise ValidationError(f"{message}; wait for it to finish or choose another "
                                      f"output folder") from None
            if on_wait is not None:
                on_wait(f"waiting: {message}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def write_secret(target: str | os.PathLike[str], data: bytes, mode: int = 0o600, *,
                 overwrite: bool = False) -> Path:
    """Write ``data`` to ``target`` with ``mode`` from the start (keys: never readable by
    others, not even briefly): a temporary file (mkstemp makes it 0600), fsync, chmod, then a
    hard link, which raises FileExistsError if the name exists (never clobbers), or with
    ``overwrite`` a rename over it."""
    path = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
