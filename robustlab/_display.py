"""Rich display in Jupyter without upward imports.

Result types live in the analysis layer and their ``_repr_html_`` calls
:func:`render_html`; the presentation layer (:mod:`robustlab.report`) registers how each
type is rendered when it is imported (``import robustlab`` arranges that). A type with no
renderer returns None, and Jupyter then shows its text ``__repr__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_html", "render_html"]

_RENDERERS: dict[type, Callable[[Any], str]] = {}


def register_html(kind: type, render: Callable[[Any], str]) -> None:
    """Render instances of ``kind`` (and subclasses) with ``render`` in Jupyter."""
    _RENDERERS[kind] = render


def render_html(obj: Any) -> str | None:
    """HTML for ``obj`` from its registered renderer, or None if there is none."""
    for kind in type(obj).__mro__:
        if kind in _RENDERERS:
            return _RENDERERS[kind](obj)
    return None
