"""Reports: ``report.json`` and a self-contained ``report.html`` rendered from an
:class:`~robustlab.evaluate.EvaluationResult` through an autoescaped Jinja2 template.

The HTML has no JavaScript and no external URL: plots are PNG data URIs, the style sheet is
inline and allowed by its hash in a Content-Security-Policy that forbids everything else.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

from robustlab._io import write_json, write_text
from robustlab.manifest import update_manifest
from robustlab.report.plots import (
    comparison_png,
    convergence_png,
    curves_png,
    examples_png,
    gained_png,
)

__all__ = ["render_html", "render_summary_html", "write_report", "render_comparison_html",
           "render_comparison_summary_html", "write_comparison", "CSS"]

CSS = (resources.files(__package__) / "templates" / "report.css").read_text("utf-8")


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("robustlab.report", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
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


def write_report(result: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (atomically) and update the
    directory's ``manifest.json`` (see :mod:`robustlab.manifest`).

    Returns ``{"json": path, "html": path, "manifest": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(out / "report.json", result.to_dict()),
             "html": write_text(out / "report.html", render_html(result))}
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


def write_comparison(comparison: Any, out_dir: str | Path, x: Any = None, y: Any = None
                     ) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.html`` into ``out_dir`` (atomically) and
    update its ``manifest.json``.

    Returns ``{"json": path, "html": path, "manifest": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(out / "comparison.json", comparison.to_dict()),
             "html": write_text(out / "comparison.html",
                                render_comparison_html(comparison, x, y))}
    first = comparison.results[0]
    paths["manifest"] = update_manifest(out, parameters=first.parameters, seed=first.seed)
    return paths
