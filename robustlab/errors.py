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
    "ModelNotFoundError",
    "CheckpointError",
    "NotebookExecutionError",
    "DecryptionError",
    "KeyRequiredError",
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


class ModelNotFoundError(RobustlabError, FileNotFoundError):
    """A model file does not exist (it is missing, not unsafe); the message names the path."""


class CheckpointError(ValidationError):
    """A training checkpoint cannot be resumed: it was made with other settings, data or
    architecture, or its files are damaged or missing. The message names the file and the
    problem and says what to do (delete the checkpoint directory to start afresh)."""


class NotebookExecutionError(RobustlabError, RuntimeError):
    """A notebook run failed; ``cell_index`` and ``executed_path`` say where and what was kept."""

    def __init__(self, message: str, *, cell_index: int | None = None,
                 executed_path: str | None = None) -> None:
        super().__init__(message)
        self.cell_index = cell_index
        self.executed_path = executed_path


class DecryptionError(RobustlabError, ValueError):
    """An encrypted file could not be opened: wrong key, or the file is truncated, damaged or
    tampered with (AES-GCM authenticates every byte). The message names the file."""


class KeyRequiredError(DecryptionError):
    """A file is encrypted and no key is configured (or a write needs a key and none is
    configured); the message says how to configure one."""


class RobustlabWarning(UserWarning):
    """Something that may make a robustness number misleading (e.g. a softmax output)."""
