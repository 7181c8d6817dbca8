"""The exception hierarchy of robustlab.

Every error robustlab raises on purpose is a :class:`RobustlabError`. The subclasses also
derive from the matching builtin, so ``except ValueError`` keeps working for callers that do
not know robustlab.
"""

from __future__ import annotations

__all__ = [
    "RobustlabError",
    "ValidationError",
    "InputTypeError",
    "DatasetUnavailableError",
    "UnsafeModelError",
    "NotebookExecutionError",
    "RobustlabWarning",
]


class RobustlabError(Exception):
    """Base class of every error robustlab raises deliberately."""


class ValidationError(RobustlabError, ValueError):
    """An argument or an input array has the wrong value (range, shape, NaN, ...)."""


class InputTypeError(RobustlabError, TypeError):
    """An argument has the wrong type."""


class DatasetUnavailableError(RobustlabError, OSError):
    """A dataset cannot be loaded here (offline, missing files); the message says what to do."""


class UnsafeModelError(RobustlabError, ValueError):
    """A model file was refused because loading it could run code or is not a `.keras` archive."""


class NotebookExecutionError(RobustlabError, RuntimeError):
    """A notebook run failed; ``cell_index`` and ``executed_path`` say where and what was kept."""

    def __init__(self, message: str, *, cell_index: int | None = None,
                 executed_path: str | None = None) -> None:
        super().__init__(message)
        self.cell_index = cell_index
        self.executed_path = executed_path


class RobustlabWarning(UserWarning):
    """Something that may make a robustness number misleading (e.g. a softmax output)."""
