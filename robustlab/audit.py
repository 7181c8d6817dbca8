"""Audit trail: an append-only, hash-chained JSON-lines log of what robustlab did.

Every ``robustlab run``, ``gate``, ``verify``, ``verify-blessing`` and ``signing-keygen``, and
every :func:`~robustlab.training.train` / :func:`~robustlab.training.train_adversarial`
call, appends one record: one line of sorted-key compact JSON::

    {"audit": 1,                      # record format
     "seq": 12,                       # 1 for the first record, then +1
     "time": "2025-05-01T12:00:00.123+00:00",           # UTC
     "user": "alice", "host": "ci-7", "pid": 4242, "cwd": "/repo",
     "command": "gate",
     "parameters": {...},             # the command's arguments (JSON values)
     "inputs": {"/repo/out/report.json": "<sha256>", ...},   # files read (or "missing")
     "outputs": {"/repo/out/blessing.json": "<sha256>"},     # files written
     "code": {"robustlab": "0.1.0", "git_commit": "<commit of cwd's checkout>|unknown"},
     "outcome": "blessed", "exit_status": 0,
     "prev": "<hash of the previous record>",
     "hash": "<SHA-256 of this record's canonical JSON without the hash field>"}

The chain: ``hash`` is the SHA-256 of the record's canonical serialisation (sorted keys,
compact separators, ASCII, no NaN) without its ``hash`` field; ``prev`` is the previous
record's ``hash``, or :data:`GENESIS` (64 zeros) for the first record. ``seq`` numbers the
records. Each hash covers ``prev``, so it commits to the whole history before it.
:func:`verify_log` (``robustlab audit verify``) names the first record that breaks the chain
and why: edited (its content no longer matches its hash, or it was replaced with a
recomputed hash), deleted (a gap in ``seq``), reordered, inserted, or a truncated last line.

Appending is safe across processes: :func:`append` opens the log with ``O_APPEND``, takes an
exclusive ``flock`` on it, reads the last record's hash under the lock and writes the new
line with one ``os.write`` followed by ``fsync``.

What the chain cannot show: someone who can write the file can drop records from its end,
or rewrite the whole chain from some record on. Keep the head that ``robustlab audit
verify`` prints somewhere else (a CI log), or ship the log to append-only storage.

Where: ``ROBUSTLAB_AUDIT_LOG`` if set (``off`` disables the log), else
``$XDG_STATE_HOME/robustlab/audit.jsonl`` (``~/.local/state/robustlab/audit.jsonl``); the
log and its folder are created private to the user (0600 / 0700).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import numbers
import os
import re
import socket
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab._io import sha256_file
from robustlab.errors import RobustlabWarning, ValidationError

__all__ = ["GENESIS", "FORMAT", "ENV", "log_path", "append", "record", "digests",
           "code_version", "git_commit", "record_hash", "verify_log", "LogCheck",
           "read_records", "format_record"]

GENESIS = "0" * 64
FORMAT = 1
ENV = "ROBUSTLAB_AUDIT_LOG"
_OFF = "off"
_BLOCK = 1 << 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def log_path() -> Path | None:
    """The audit log's path: ``ROBUSTLAB_AUDIT_LOG``, else ``$XDG_STATE_HOME`` (or
    ``~/.local/state``) ``/robustlab/audit.jsonl``; None when ``ROBUSTLAB_AUDIT_LOG=off``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() == _OFF:
        return None
    if value:
        return Path(value).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "robustlab" / "audit.jsonl"


# --------------------------------------------------------------------------- the record

def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of ``record``'s canonical JSON without its ``hash`` field."""
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})
                          ).hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` as JSON values: paths as strings, numbers as numbers (non-finite floats
    and anything else as strings)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


def digests(paths: Iterable[str | os.PathLike[str] | None]) -> dict[str, str]:
    """``{absolute path: sha256}`` of each file in ``paths`` (None skipped); a path that is
    not there is ``"missing"``, a folder ``"directory"``, a file that cannot be read
    ``"unreadable"``."""
    out: dict[str, str] = {}
    for item in paths:
        if item is None:
            continue
        path = Path(item)
        name = os.path.abspath(path)
        if path.is_dir():
            out[name] = "directory"
        elif not path.is_file():
            out[name] = "missing"
        else:
            try:
                out[name] = sha256_file(path)
            except OSError:
                out[name] = "unreadable"
    return out


def _safe_read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8", errors="replace").strip()
    except OSError:
        return None


def _resolve_ref(gitdir: Path, ref: str) -> str:
    """The commit that ``ref`` (``refs/heads/main``) names in ``gitdir``: a loose ref file,
    else ``packed-refs``; in a worktree also in the common directory."""
    parts = Path(ref).parts
    if not ref.startswith("refs/") or ".." in parts:
        return "unknown"
    common = gitdir
    commondir = _safe_read(gitdir / "commondir")
    if commondir:
        common = (gitdir / commondir).resolve()
    for base in dict.fromkeys((gitdir, common)):
        value = _safe_read(base / ref)
        if value and _COMMIT.fullmatch(value):
            return value
    packed = _safe_read(common / "packed-refs") or ""
    for line in packed.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1] == ref and _COMMIT.fullmatch(fields[0]):
            return fields[0]
    return "unknown"


def git_commit(directory: str | os.PathLike[str] | None = None) -> str:
    """The commit checked out in the git working tree that holds ``directory`` (default:
    the current directory), read from ``.git/HEAD`` and the refs without running git;
    ``"unknown"`` outside a checkout, on an unborn branch or when the files are unreadable.
    (Uncommitted changes are not detected.)"""
    try:
        start = Path(directory if directory is not None else os.getcwd()).resolve()
    except OSError:
        return "unknown"
    for folder in (start, *start.parents):
        dotgit = folder / ".git"
        if dotgit.is_dir():
            gitdir = dotgit
        elif dotgit.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = _safe_read(dotgit) or ""
            if not text.startswith("gitdir:"):
                return "unknown"
            gitdir = (folder / text.split(":", 1)[1].strip()).resolve()
        else:
            continue
        head = _safe_read(gitdir / "HEAD") or ""
        if _COMMIT.fullmatch(head):  # detached HEAD
            return head
        if head.startswith("ref:"):
            return _resolve_ref(gitdir, head[4:].strip())
        return "unknown"
    return "unknown"


def code_version(directory: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``{"robustlab": installed version, "git_commit": commit of the checkout}``."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("robustlab")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"robustlab": version, "git_commit": git_commit(directory)}


def _user() -> str:
    """The effective user's login name from the system's user database (environment
    variables such as USER can be set to anything), else the uid."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, OSError):
        import getpass

        try:
            return getpass.getuser()
        except Exception:  # noqa: BLE001 - no user database entry and no variables
            return f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "unknown"


# --------------------------------------------------------------------------- appending

def _parse(line: bytes) -> dict[str, Any] | None:
    """The record on ``line``, or None when it is not one (not a JSON object with an
    integer ``seq`` and hex ``prev`` and ``hash``)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    seq, prev, digest = record.get("seq"), record.get("prev"), record.get("hash")
    if not (isinstance(seq, int) and not isinstance(seq, bool) and isinstance(prev, str)
            and isinstance(digest, str) and _HEX64.fullmatch(prev)
            and _HEX64.fullmatch(digest)):
        return None
    return record


def _tail(fd: int) -> tuple[str, int, bool]:
    """``(hash, seq, ends with a newline)`` of the last record in the open log ``fd``,
    read backwards a block at a time; ``(GENESIS, 0, True)`` for an empty log."""
    size = os.fstat(fd).st_size
    if size == 0:
        return GENESIS, 0, True
    ends = os.pread(fd, 1, size - 1) == b"\n"
    pos, carry = size, b""
    while pos > 0:
        take = min(_BLOCK, pos)
        pos -= take
        lines = (os.pread(fd, take, pos) + carry).split(b"\n")
        carry = lines.pop(0) if pos > 0 else b""  # maybe the end of an earlier block's line
        for line in reversed(lines):
            found = _parse(line)
            if found is not None:
                return found["hash"], found["seq"], ends
    return GENESIS, 0, ends


def _lock(fd: int, exclusive: bool) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: appends are not serialised
        return
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def append(command: str, *, parameters: Mapping[str, Any] | None = None,
           inputs: Mapping[str, str] | None = None, outputs: Mapping[str, str] | None = None,
           outcome: str, exit_status: int | None = None,
           log: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Append one record to the audit log (``log``, default :func:`log_path`) and return it;
    None when the log is off. ``inputs`` / ``outputs`` map a file (or a named in-memory
    input such as ``"training data digits"``) to its SHA-256 (see :func:`digests`).

    Safe with other processes appending at once: exclusive ``flock``, last hash read under
    the lock, one ``os.write`` of the whole line, ``fsync``. Raises OSError when the log
    cannot be written (:func:`record` warns instead).
    """
    path = Path(log) if log is not None else log_path()
    if path is None:
        return None
    if not isinstance(command, str) or not command:
        raise ValidationError(f"expected command to be a non-empty string, got {command!r}")
    entry: dict[str, Any] = {
        "audit": FORMAT,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds"),
        "user": _user(), "host": socket.gethostname(), "pid": os.getpid(),
        "cwd": os.getcwd(),
        "command": command,
        "parameters": _jsonable(dict(parameters or {})),
        "inputs": {str(k): str(v) for k, v in (inputs or {}).items()},
        "outputs": {str(k): str(v) for k, v in (outputs or {}).items()},
        "code": code_version(),
        "outcome": str(outcome),
        "exit_status": exit_status,
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        _lock(fd, exclusive=True)
        prev, seq, ends = _tail(fd)
        entry["seq"], entry["prev"] = seq + 1, prev
        entry["hash"] = record_hash(entry)
        # a line cut short by a crash keeps its own line; verify_log reports it
        line = (b"" if ends else b"\n") + _canonical(entry) + b"\n"
        written = os.write(fd, line)
        while written < len(line):  # a regular file takes it whole; this is for odd cases
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    return entry


def record(command: str, *, parameters: Mapping[str, Any] | None = None,
           inputs: Mapping[str, str] | None = None, outputs: Mapping[str, str] | None = None,
           outcome: str, exit_status: int | None = None) -> dict[str, Any] | None:
    """:func:`append` to the configured log that never fails the caller: a log that cannot
    be written is a :class:`~robustlab.errors.RobustlabWarning` naming it."""
    try:
        return append(command, parameters=parameters, inputs=inputs, outputs=outputs,
                      outcome=outcome, exit_status=exit_status)
    except (OSError, ValueError) as exc:
        warnings.warn(f"could not append to the audit log {str(log_path())!r}: {exc}",
                      RobustlabWarning, stacklevel=2)
        return None


# --------------------------------------------------------------------------- checking

@dataclass(frozen=True)
class LogCheck:
    """What :func:`verify_log` found: ``ok``, the number of records, the last record's
    hash (``head``: keep it elsewhere to notice records dropped from the end), and for a
    broken chain the first broken ``line`` (1-based), ``kind`` (edited, deleted,
    reordered, inserted, truncated) and ``problem`` (one line)."""

    path: str
    ok: bool
    records: int
    head: str
    line: int | None = None
    kind: str | None = None
    problem: str | None = None


def _read_locked(path: Path) -> bytes:
    with open(path, "rb") as handle:
        _lock(handle.fileno(), exclusive=False)  # no half-written line from an appender
        return handle.read()


def verify_log(log: str | os.PathLike[str] | None = None) -> LogCheck:
    """Check the hash chain of the audit log (default :func:`log_path`) and name the first
    broken record. Raises OSError when the log cannot be read, ValidationError when the
    log is off and none is given."""
    path = Path(log) if log is not None else log_path()
    if path is None:
        raise ValidationError(f"the audit log is off ({ENV}=off); name a log file")
    data = _read_locked(path)
    lines = data.split(b"\n")
    complete = data.endswith(b"\n") or not data
    if complete:
        lines.pop()
    parsed = [_parse(line) for line in lines]
    where: dict[str, int] = {}  # hash -> first line holding a record with that (valid) hash
    for number, rec in enumerate(parsed, 1):
        if rec is not None and record_hash(rec) == rec["hash"]:
            where.setdefault(rec["hash"], number)
    prev_hash, prev_seq, count = GENESIS, 0, 0

    def broken(line: int, kind: str, problem: str) -> LogCheck:
        return LogCheck(str(path), False, count, prev_hash, line, kind, problem)

    for number, (line, rec) in enumerate(zip(lines, parsed, strict=True), 1):
        if number == len(lines) and not complete:
            return broken(number, "truncated", f"line {number}: the last line is cut short "
                          f"(no newline at its end): a write was interrupted or the file "
                          f"was truncated")
        if rec is None:
            if not line.strip():
                return broken(number, "inserted", f"line {number} is empty: a line was "
                              f"inserted")
            if line.lstrip().startswith(b"{") and not line.rstrip().endswith(b"}"):
                return broken(number, "truncated", f"line {number} is a record cut short "
                              f"(a write was interrupted)")
            return broken(number, "edited", f"line {number} is not an audit record (not a "
                          f"JSON object with seq, prev and hash): edited or inserted")
        seq = rec["seq"]
        if record_hash(rec) != rec["hash"]:
            return broken(number, "edited", f"line {number} (record {seq}) was edited: its "
                          f"content does not match its hash")
        if line != _canonical(rec):  # records are written canonical: the bytes are the record
            return broken(number, "edited", f"line {number} (record {seq}) was edited: it is "
                          f"not the canonical form of its record (a repeated, reordered or "
                          f"re-spaced field), so parsers could read different values")
        if rec["prev"] != prev_hash:
            before = where.get(rec["prev"])
            if before is not None and before > number:
                return broken(number, "reordered", f"line {number} (record {seq}) follows "
                              f"the record on line {before}, which comes after it: records "
                              f"were reordered")
            if before is not None or (rec["prev"] == GENESIS and number > 1):
                after = "the start of the log" if before is None else f"line {before}"
                return broken(number, "inserted", f"line {number} (record {seq}) follows "
                              f"{after}: line(s) {(before or 0) + 1}-{number - 1} were "
                              f"inserted")
            if seq > prev_seq + 1:
                missing = (f"record {prev_seq + 1}" if seq == prev_seq + 2
                           else f"records {prev_seq + 1}-{seq - 1}")
                return broken(number, "deleted", f"{missing} deleted before line {number} "
                              f"(record {seq} names a previous record that is not there)")
            if number == 1:
                return broken(number, "edited", f"line 1 (record {seq}) was edited: it does "
                              f"not start from the genesis hash")
            return broken(number - 1, "edited", f"line {number - 1} (record {prev_seq}) was "
                          f"edited or replaced: its hash was recomputed, but line {number} "
                          f"names a previous record with hash {rec['prev'][:16]}...")
        if seq != prev_seq + 1:
            return broken(number, "edited", f"line {number} is numbered {seq}, expected "
                          f"{prev_seq + 1}: edited (its hash recomputed) or inserted")
        prev_hash, prev_seq, count = rec["hash"], seq, count + 1
    return LogCheck(str(path), True, count, prev_hash)


def read_records(log: str | os.PathLike[str] | None = None
                 ) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line number, record or None)`` for each line of the log (None: not a record)."""
    path = Path(log) if log is not None else log_path()
    if path is None:
        raise ValidationError(f"the audit log is off ({ENV}=off); name a log file")
    for number, line in enumerate(_read_locked(path).splitlines(), 1):
        yield number, _parse(line)


def _short(files: Mapping[str, Any]) -> str:
    return ", ".join(f"{os.path.basename(str(name).rstrip('/')) or name} "
                     f"{str(digest)[:8]}" for name, digest in files.items())


def format_record(rec: Mapping[str, Any]) -> str:
    """One readable line: time, user@host, command, outcome, short digests, record number."""
    status = rec.get("exit_status")
    outcome = str(rec.get("outcome")) + ("" if status is None else f" (exit {status})")
    parts = [str(rec.get("time", "?")), f"{rec.get('user', '?')}@{rec.get('host', '?')}",
             str(rec.get("command", "?")), outcome]
    if rec.get("inputs"):
        parts.append(f"in: {_short(rec['inputs'])}")
    if rec.get("outputs"):
        parts.append(f"out: {_short(rec['outputs'])}")
    commit = (rec.get("code") or {}).get("git_commit", "unknown")
    parts.append(f"[#{rec.get('seq')} robustlab {(rec.get('code') or {}).get('robustlab')}"
                 f"{'' if commit == 'unknown' else ' @' + str(commit)[:10]}]")
    return "  ".join(parts)
