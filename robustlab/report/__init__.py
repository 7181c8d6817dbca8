"""Reports: ``report.json`` and a self-contained ``report.html`` rendered from an
:class:`~robustlab.evaluate.EvaluationResult` through an autoescaped Jinja2 template.

The HTML has no JavaScript and no external URL: plots are PNG data URIs, the style sheet is
inline and allowed by its hash in a Content-Security-Policy that forbids everything else.
"""

from __future__ import annotations

import base64
import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

from robustlab import crypto
from robustlab._display import register_html
from robustlab.errors import InputTypeError, ValidationError
from robustlab.manifest import update_manifest
from robustlab.report.plots import (
    comparison_png,
    convergence_png,
    curves_png,
    examples_png,
    gained_png,
    visible_text,
)
from robustlab.results import Comparison, EvaluationResult

__all__ = ["render_html", "render_summary_html", "write_report", "render_comparison_html",
           "render_comparison_summary_html", "write_comparison", "CSS"]

CSS = (resources.files(__package__) / "templates" / "report.css").read_text("utf-8")


def _finalize(value: Any) -> Any:
    """Jinja2's ``finalize``: every ``{{ expression }}`` of every template passes through it
    before autoescaping. Names come from users, models and datasets, and a RIGHT-TO-LEFT
    OVERRIDE, NUL or zero-width space in them would reverse or hide text on the page; they
    are shown as ``\\u202e`` etc. instead (see :func:`robustlab.report.plots.visible_text`).
    Markup (the style sheet, the CSP) is robustlab's own and passes untouched; other values
    (lists, dicts) are shown as their ``str()``, escaped the same way."""
    if hasattr(value, "__html__"):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return visible_text(value if isinstance(value, str) else str(value))


def _output_dir(out_dir: Any, files: tuple[str, str]) -> Path:
    """Check that ``out_dir`` names a directory (existing, or to be created) and create it.

    The writers take a folder, not a file: ``write_report(result, "out/report.html")`` used
    to create a *directory* named ``report.html``, and an existing file gave a bare
    ``FileExistsError``. Each misuse is refused before anything is rendered or created, with
    a message that names ``out_dir``, what was expected and what was given.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InputTypeError(f"expected out_dir to be a directory path (str or os.PathLike), "
                             f"got {type(out_dir).__name__} {out_dir!r}")
    if isinstance(out_dir, str) and not out_dir.strip():
        raise ValidationError(f"expected out_dir to be a directory path, got {out_dir!r}")
    out = Path(out_dir)
    if out.is_dir():
        return out
    if os.path.lexists(out):
        what = "file" if out.exists() else "broken symbolic link"
        raise ValidationError(f"expected out_dir to be a directory, got the existing {what} "
                              f"'{out}'")
    if out.suffix.lower() in (".html", ".htm", ".json"):
        raise ValidationError(
            f"expected out_dir to be a directory to write {files[0]} and {files[1]} into, got "
            f"'{out}' (a file name); pass its folder '{out.parent}'")
    above = next((p for p in out.parents if os.path.lexists(p)), None)
    if above is not None and not above.is_dir():
        raise ValidationError(f"expected out_dir to be a directory, got '{out}' inside the "
                              f"existing file '{above}'")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("robustlab.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, finalize=_finalize)
    env.filters["pct"] = lambda v: f"{100 * float(v):.1f}"
    env.filters["num"] = lambda v: f"{float(v):.4g}"
    return env


def _data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; img-src data:; style-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


def _page() -> dict[str, Any]:
    # CSS and CSP are robustlab's own constants (no user data), so they go in unescaped.
    return {"css": Markup(CSS), "csp": Markup(_csp())}  # noqa: S704  # nosec B704


def _class_names(result: Any) -> list[str]:
    return result.dataset.get("class_names") or [
        str(i) for i in range(result.model["num_classes"])]


def _context(result: Any) -> dict[str, Any]:
    return {"r": result, "class_names": _class_names(result), **_page(),
            "params": sorted(result.parameters.items()),
            "versions": sorted(result.versions.items())}


def render_html(result: Any) -> str:
    """The full, self-contained report page as a string."""
    ctx = _context(result)
    ctx["curves_uri"] = _data_uri(curves_png(result))
    ctx["examples_uri"] = _data_uri(examples_png(result, ctx["class_names"]))
    ctx["convergence_uri"] = _data_uri(convergence_png(result))
    return _environment().get_template("report.html.j2").render(**ctx)


def render_summary_html(result: Any) -> str:
    """A compact HTML table of the result, for Jupyter's rich display."""
    return _environment().get_template("summary.html.j2").render(**_context(result))


def write_report(result: Any, out_dir: str | Path, *,
                 key: crypto.Key | None = None) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into the directory ``out_dir`` (created if
    missing; atomically) and update its ``manifest.json`` (see :mod:`robustlab.manifest`).
    A file, or a file name such as ``"out/report.html"``, is refused with a
    :class:`~robustlab.errors.ValidationError`. With a key (``key``, or the configured one:
    :mod:`robustlab.crypto`) both files are encrypted; ``manifest.json`` stays plaintext.

    Returns ``{"json": path, "html": path, "manifest": path}``.
    """
    out = _output_dir(out_dir, ("report.html", "report.json"))
    provider = crypto.resolve_key(key)
    paths = {"json": crypto.write_json(out / "report.json", result.to_dict(), provider),
             "html": crypto.write_text(out / "report.html", render_html(result), provider)}
    paths["manifest"] = update_manifest(out, parameters=result.parameters, seed=result.seed)
    return paths


def render_comparison_summary_html(comparison: Any) -> str:
    """The comparison's table, for Jupyter's rich display."""
    return _environment().get_template("compare_summary.html.j2").render(c=comparison)


def render_comparison_html(comparison: Any, x: Any = None, y: Any = None) -> str:
    """The self-contained comparison page; ``x``, ``y`` (the evaluated test examples) add
    the images of what hardening bought."""
    import numpy as np

    gained = None
    if x is not None and y is not None:
        gained = gained_png(comparison, np.asarray(x), np.asarray(y),
                            _class_names(comparison.results[0]))
    return _environment().get_template("compare.html.j2").render(
        c=comparison, curves_uri=_data_uri(comparison_png(comparison)),
        gained_uri=_data_uri(gained), **_page())


def write_comparison(comparison: Any, out_dir: str | Path, x: Any = None, y: Any = None, *,
                     key: crypto.Key | None = None) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.html`` into the directory ``out_dir``
    (created if missing; atomically) and update its ``manifest.json``. A file, or a file
    name such as ``"out/comparison.html"``, is refused with a
    :class:`~robustlab.errors.ValidationError`. With a key (``key``, or the configured one)
    both files are encrypted, as in :func:`write_report`.

    Returns ``{"json": path, "html": path, "manifest": path}``.
    """
    out = _output_dir(out_dir, ("comparison.html", "comparison.json"))
    provider = crypto.resolve_key(key)
    paths = {"json": crypto.write_json(out / "comparison.json", comparison.to_dict(),
                                       provider),
             "html": crypto.write_text(out / "comparison.html",
                                       render_comparison_html(comparison, x, y), provider)}
    first = comparison.results[0]
    paths["manifest"] = update_manifest(out, parameters=first.parameters, seed=first.seed)
    return paths


# Jupyter shows results through these (robustlab.results asks robustlab._display).
register_html(EvaluationResult, render_summary_html)
register_html(Comparison, render_comparison_summary_html)
