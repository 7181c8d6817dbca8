"""Execute a parameterized notebook with papermill into an output directory.

The run happens in a staging directory inside the output directory; only a successful run
moves its files into place, so a failed run never overwrites earlier good outputs. A failed
run keeps its executed notebook as ``<name>.failed.ipynb`` and raises
:class:`~robustlab.errors.NotebookExecutionError` naming the cell.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from robustlab.errors import InputTypeError, NotebookExecutionError, ValidationError
from robustlab.manifest import MANIFEST, update_manifest

log = logging.getLogger(__name__)

_TYPE_NAMES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
    "list": (list, tuple), "dict": (dict,)}


def parse_cli_value(text: str) -> Any:
    """A ``-p name value`` value: JSON (numbers, true/false/null, lists) or else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def notebook_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The notebook's declared parameters: ``{name: {"default": ..., "type": ...}}``."""
    import papermill

    params = papermill.inspect_notebook(str(notebook))
    return {name: {"default": p.get("default"), "type": p.get("inferred_type_name")}
            for name, p in params.items()}


def _allowed_types(declared: dict[str, Any]) -> tuple[type, ...] | None:
    """Types a parameter accepts: from its annotation (``n: int | None = None``) when it has
    one, else from its default literal; None when nothing is known."""
    annotation = str(declared.get("type") or "None")
    if annotation != "None":  # papermill writes "None" for "no annotation"
        names = re.findall(r"[A-Za-z_]+", annotation.replace("Optional", "None"))
    else:
        try:
            default = ast.literal_eval(str(declared.get("default")))
        except (ValueError, SyntaxError):
            return None
        if default is None:
            return None
        names = [type(default).__name__]
    allowed: list[type] = []
    for name in names:
        allowed += _TYPE_NAMES.get(name, (type(None),) if name == "None" else ())
    return tuple(allowed) or None


def check_parameters(notebook: Path, parameters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check names and value types against the notebook's parameters cell before any kernel
    starts: unknown names, names that are not identifiers and wrong types are refused.
    Returns the declared parameters."""
    declared = notebook_parameters(notebook)
    if not declared:
        raise ValidationError(f"expected {notebook} to have a cell tagged 'parameters'")
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValidationError(f"expected parameter names to be Python identifiers, "
                                  f"got {name!r}")
        if name not in declared:
            raise ValidationError(f"unknown parameter {name!r} for {notebook.name}; it takes "
                                  f"{', '.join(sorted(declared))}")
        allowed = _allowed_types(declared[name])
        if allowed is None:
            continue
        is_bool = isinstance(value, bool)
        if not isinstance(value, allowed) or (is_bool and bool not in allowed):
            names = " or ".join(sorted({t.__name__ for t in allowed}))
            raise InputTypeError(f"expected parameter {name} to be {names}, "
                                 f"got {type(value).__name__} {value!r}")
    return declared


# Lines TensorFlow and the Jupyter kernel print at every start-up, which say nothing about why
# a run failed: left out of the log excerpt in an error message (the log file keeps them).
_STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|cuInit|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"TF-TRT Warning|This TensorFlow binary is optimized|To enable the following instructions|"
    r"Kernel is running over TCP without encryption")
_LOG_EXCERPT_LINES = 12
_LOG_EXCERPT_BYTES = 64 * 1024


def _quiet_kernel_manager(log: Any) -> type:
    """An nbclient kernel manager class whose kernel writes its own stdout and stderr to the
    open binary file ``log`` instead of inheriting this process's terminal.

    Why: ipykernel puts everything a cell writes into the executed notebook (C++ libraries'
    output included) and *also* echoes it to the kernel process's own streams, inherited from
    ``robustlab run``: TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, absl; printed
    before ``TF_CPP_MIN_LOG_LEVEL`` applies) and ipykernel's TCP transport warning reached the
    terminal before every result. ``start_kernel``'s keyword arguments are jupyter_client's
    documented way to set the kernel's Popen arguments; papermill passes none, so this class
    (given to papermill as nbclient's ``kernel_manager_class``) adds them.
    """
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        # AsyncKernelManager's start_kernel is a coroutine; jupyter_client's annotations
        # describe the synchronous KernelManager's.
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            await super().start_kernel(**kw)

    return QuietKernelManager


def _kernel_log_excerpt(path: Path | None) -> str:
    """For a failed run's message: the kernel log's last lines that are not routine start-up
    lines (a dying kernel's C++ abort message, say), and where the whole log is kept."""
    if path is None:
        return ""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(max(0, size - _LOG_EXCERPT_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if not text.strip():
        path.unlink(missing_ok=True)
        return ""
    lines = [line.rstrip() for line in text.splitlines()
             if line.strip() and not _STARTUP_NOISE.search(line)][-_LOG_EXCERPT_LINES:]
    lines = [line if len(line) <= 300 else line[:297] + "..." for line in lines]
    if not lines:
        return f"; the kernel's log is kept at {path}"
    return (f"; the kernel's last output (whole log kept at {path}):\n  "
            + "\n  ".join(lines))


def run_notebook(notebook: str | Path, out_dir: str | Path,
                 parameters: dict[str, Any] | None = None, *, kernel_name: str | None = None,
                 output_param: str = "output_dir", timeout: float | None = None,
                 verbose: bool = False) -> Path:
    """Execute ``notebook`` with ``parameters`` and leave the executed copy and everything
    the notebook wrote (via its ``output_dir`` parameter) in ``out_dir``.

    The kernel's own stdout and stderr (TensorFlow's C++ start-up lines, Jupyter's transport
    warning; cell output is in the executed notebook either way) go to a log file in the
    temporary directory, deleted after a successful run and named in the error after a failed
    one, whose message also quotes its last lines; ``verbose`` lets them through to this
    process's terminal instead.

    On success ``out_dir/manifest.json`` lists every file with its SHA-256 (see
    :mod:`robustlab.manifest`). Returns the path of the executed notebook. Raises
    NotebookExecutionError on failure.
    """
    import contextlib

    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook)
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        raise ValidationError(f"expected notebook to be an existing .ipynb file, "
                              f"got {str(notebook)!r}")
    params = dict(parameters or {})
    declared = check_parameters(notebook, params)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    executed = staging / notebook.name
    if output_param in declared:
        params[output_param] = str(staging)
    os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")  # no widget bars in executed notebooks
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel inherits this
    log_path = None
    if not verbose:  # private (0600), outside out_dir: never an artifact of the run
        fd, name = tempfile.mkstemp(prefix=f"robustlab-kernel-{notebook.stem}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    try:
        with open(log_path, "ab") if log_path else contextlib.nullcontext() as log:
            engine = {} if log is None else {"kernel_manager_class": _quiet_kernel_manager(log)}
            papermill.execute_notebook(str(notebook), str(executed), parameters=params,
                                       kernel_name=kernel_name, progress_bar=False,
                                       log_output=False, cwd=os.getcwd(),
                                       execution_timeout=timeout, **engine)
    except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
        kept = out / f"{notebook.stem}.failed.ipynb"
        if executed.exists():
            os.replace(executed, kept)
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, PapermillExecutionError):
            first_line = next((ln for ln in (exc.source or "").splitlines() if ln.strip()), "")
            message = (f"cell {exc.cell_index} (execution count {exc.exec_count}, starting "
                       f"{first_line.strip()[:60]!r}) of {notebook.name} failed: "
                       f"{exc.ename}: {exc.evalue}")
            cell = exc.cell_index
        else:
            message = f"running {notebook.name} failed: {type(exc).__name__}: {exc}"
            cell = None
        if executed.exists() or kept.exists():
            message += f"; the executed notebook is kept at {kept}"
        message += _kernel_log_excerpt(log_path)
        raise NotebookExecutionError(message, cell_index=cell,
                                     executed_path=str(kept) if kept.exists() else None) \
            from exc
    if log_path is not None:
        log_path.unlink(missing_ok=True)
    staged_manifest = staging / MANIFEST  # the notebook's own (over staging); merged below
    old = json.loads(staged_manifest.read_text("utf-8")) if staged_manifest.is_file() else {}
    staged_manifest.unlink(missing_ok=True)
    for item in staging.iterdir():
        if item.is_file():  # papermill wrote it in place: make it durable before the rename
            with open(item, "rb+") as handle:
                os.fsync(handle.fileno())
        target = out / item.name
        if target.is_dir() and not item.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
    run_params = {k: v for k, v in params.items() if k != output_param}
    # The device is the one the notebook recorded (its kernel computed the results), else
    # "not recorded": finding this process's would import TensorFlow here for nothing.
    device = old.get("device") or {"type": "not recorded", "name": "the notebook wrote no "
                                   "manifest of its own", "count": 0}
    update_manifest(out, parameters={**old.get("parameters", {}), **run_params,
                                     "notebook": notebook.name}, seed=old.get("seed"),
                    device=device)
    return out / notebook.name
