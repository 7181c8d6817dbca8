"""Structured logs a pipeline can ship: one JSON object per line (JSON Lines), written through
Python :mod:`logging`, so Logstash/Filebeat, Fluent Bit, Vector or Promtail/Loki ingest them
with their stock JSON parsers and no parsing code.

A library call that has something to report logs a record with ``extra={"fields": {...}}``;
:class:`JsonLinesFormatter` turns the record into ``{"time": ..., "level": ..., "logger": ...,
"event": <message>, **fields}``. :func:`json_lines_handler` attaches one to a file (or a
stream) without touching the caller's other handlers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["JsonLinesFormatter", "json_lines_handler", "json_lines", "FIELDS_KEY"]

# The attribute of a log record that carries the structured fields (``extra={FIELDS_KEY: ...}``).
FIELDS_KEY = "fields"


def _jsonable(value: Any) -> Any:
    """NumPy scalars and arrays, tuples and non-finite floats as plain JSON values (NaN and
    infinities become null: JSON has no spelling for them and Elasticsearch rejects them)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonLinesFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ``time`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``event`` (the message) and the record's structured ``fields``
    at the top level (names never collide with the four above: fields of those names are
    dropped); an exception, if any, as ``error``."""

    _RESERVED = ("time", "level", "logger", "event")

    def format(self, record: logging.LogRecord) -> str:
        stamp = _dt.datetime.fromtimestamp(record.created, tz=_dt.timezone.utc)
        line: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "event": record.getMessage()}
        fields = getattr(record, FIELDS_KEY, None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in _jsonable(fields).items()
                         if k not in self._RESERVED})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), sort_keys=False, allow_nan=False)


def json_lines_handler(target: str | os.PathLike[str] | IO[str], *,
                       logger: str = "robustlab", level: int | str = "INFO"
                       ) -> logging.Handler:
    """Attach a JSON Lines handler for ``logger`` (default: all of robustlab) writing to
    ``target`` (a file path, appended to, or a text stream) and return it; remove it with
    ``logging.getLogger(logger).removeHandler(handler)`` and ``handler.close()``.

    The logger's level is lowered to ``level`` if it was higher, so the records reach the
    handler; other handlers keep their own levels.

    Example:
        >>> handler = json_lines_handler("monitor.jsonl", logger="robustlab.monitor")
    """
    handler: logging.Handler
    if isinstance(target, (str, os.PathLike)):
        handler = logging.FileHandler(os.fspath(target), encoding="utf-8")
    else:
        handler = logging.StreamHandler(target)
    handler.setFormatter(JsonLinesFormatter())
    handler.setLevel(level)
    log = logging.getLogger(logger)
    log.addHandler(handler)
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    if log.getEffectiveLevel() > wanted:
        log.setLevel(wanted)
    return handler


@contextlib.contextmanager
def json_lines(target: str | os.PathLike[str] | IO[str], *, logger: str = "robustlab",
               level: int | str = "INFO") -> Iterator[logging.Handler]:
    """:func:`json_lines_handler` for a ``with`` block: the handler is removed at the end
    (and closed, unless it writes to a stream it did not open), and the logger's level is
    put back.

    Example:
        >>> with json_lines("monitor.jsonl", logger="robustlab.monitor"):
        ...     monitor.score(batch)
    """
    log = logging.getLogger(logger)
    before = log.level
    handler = json_lines_handler(target, logger=logger, level=level)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        handler.flush()
        if isinstance(target, (str, os.PathLike)):
            handler.close()
        log.setLevel(before)
