"""Execute a parameterized notebook with papermill into an output folder, committed whole.

An output folder describes exactly one run. ``run_notebook`` (``robustlab run``):

1. locks the folder (``<out>.lock`` beside it, ``flock``, held for the whole run: a second
   run into the same folder is refused with the holder's process id) and puts back a
   folder that an interrupted commit left under ``.<name>.old-*``;
2. runs the notebook into a fresh staging directory beside the folder,
   ``.<name>.staging-<run id>`` (same filesystem);
3. on success seals the staging directory: ``manifest.json`` lists every file, the
   executed notebook included, with the run id;
4. swaps it in for the folder in one step (``renameat2(RENAME_EXCHANGE)`` on Linux, else
   two renames with recovery; :func:`robustlab._io.replace_directory`) and deletes the old
   folder. Nothing of an earlier run survives: not its model, not its ``blessing.json``.

A failed run never touches the folder: the executed notebook is kept *beside* it as
``<out>.failed.ipynb`` (never inside, so it is never sealed into a good folder's manifest)
and :class:`~robustlab.errors.NotebookExecutionError` names the cell. SIGINT and SIGTERM
stop the kernel, keep the partial notebook the same way, delete the staging directory and
the kernel's connection file, and raise :class:`RunInterrupted` (``robustlab run`` exits
130 / 143).
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from robustlab import crypto
from robustlab._io import folder_lock, recover_directory, replace_directory, staging_path
from robustlab.distribute import is_chief
from robustlab.errors import InputTypeError, NotebookExecutionError, ValidationError
from robustlab.manifest import (
    MANIFEST,
    is_output_folder,
    new_run_id,
    read_manifest,
    update_manifest,
)

__all__ = ["run_notebook", "RunInterrupted", "output_folder", "commit_folder",
           "check_parameters", "notebook_parameters", "parse_cli_value"]

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


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM (``signum``). The kernel was stopped, the staging
    directory and the kernel's connection file deleted and the output folder left as it
    was; ``executed_path`` is the partial executed notebook kept beside it, if any."""

    def __init__(self, signum: int, message: str = "", *,
                 executed_path: str | None = None) -> None:
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.executed_path = executed_path


class _Signals:
    """While installed (main thread only: elsewhere Python cannot take signals), SIGINT and
    SIGTERM raise :class:`RunInterrupted`; inside :meth:`deferred` (the commit) they are only
    noted, and :meth:`check` raises afterwards. Later signals, while the run cleans up, are
    ignored. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferring = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        if not self._deferring:
            raise RunInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1


def _stop_process_group(pid: int) -> None:
    """SIGKILL the kernel and whatever it started (jupyter_client starts each kernel in a
    session of its own, so its process group is its own)."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        group = os.getpgid(pid)
        if hasattr(os, "killpg") and group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


class _Execution:
    """papermill in a worker thread, so that the calling thread keeps its signal handlers
    (nbclient would otherwise install its own) and can stop the kernel: the kernel manager
    class given to nbclient records each kernel it starts (and stops one that starts after
    :meth:`stop`)."""

    def __init__(self, log_file: Any) -> None:
        self.error: BaseException | None = None
        self._log_file = log_file
        self._lock = threading.Lock()
        self._stopping = False
        self._pids: list[int] = []
        self._connection_files: list[str] = []
        self._thread: threading.Thread | None = None

    def manager_class(self) -> type:
        """An nbclient kernel manager class whose kernels write their own stdout and stderr
        to the log file (when there is one) and are recorded for :meth:`stop`.

        Why the log file: ipykernel puts everything a cell writes into the executed notebook
        (C++ libraries' output included) and *also* echoes it to the kernel process's own
        streams, inherited from ``robustlab run``: TensorFlow's C++ start-up lines (oneDNN,
        CUDA drivers, absl; printed before ``TF_CPP_MIN_LOG_LEVEL`` applies) and ipykernel's
        TCP transport warning reached the terminal before every result. ``start_kernel``'s
        keyword arguments are jupyter_client's documented way to set the kernel's Popen
        arguments; papermill passes none, so this class adds them.
        """
        from jupyter_client.manager import AsyncKernelManager

        execution = self

        class RecordedKernelManager(AsyncKernelManager):
            # AsyncKernelManager's start_kernel is a coroutine; jupyter_client's annotations
            # describe the synchronous KernelManager's.
            async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
                if execution._log_file is not None:
                    kw.setdefault("stdout", execution._log_file)
                    kw.setdefault("stderr", execution._log_file)
                await super().start_kernel(**kw)
                execution._started(self)

        return RecordedKernelManager

    def _started(self, manager: Any) -> None:
        pid = getattr(getattr(manager, "provisioner", None), "pid", None)
        with self._lock:
            if isinstance(pid, int):
                self._pids.append(pid)
            if getattr(manager, "connection_file", None):
                self._connection_files.append(str(manager.connection_file))
            stopping = self._stopping
        if stopping and isinstance(pid, int):  # started after stop(): stop it now
            _stop_process_group(pid)

    def start(self, **papermill_kwargs: Any) -> None:
        import papermill

        def target() -> None:
            try:
                papermill.execute_notebook(**papermill_kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                self.error = exc

        self._thread = threading.Thread(target=target, name="robustlab-papermill",
                                        daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until papermill is done (in short joins, so that signals are handled at once)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        """Kill the kernel, give nbclient ``timeout`` seconds to notice and clean up (it saves
        the partial notebook and deletes the connection file), then delete any connection
        file it left."""
        with self._lock:
            self._stopping = True
            pids = list(self._pids)
        for pid in pids:
            _stop_process_group(pid)
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            files = list(self._connection_files)
        for name in files:
            Path(name).unlink(missing_ok=True)


def _check_output_folder(out: Path) -> None:
    """``out`` may be replaced by a run: it does not exist, is empty, or is a folder
    robustlab wrote (it has a manifest). Anything else would be deleted by the commit."""
    if out == out.parent:
        raise ValidationError(f"expected out_dir to be a folder below a parent, got {out}")
    if os.path.lexists(out) and not out.is_dir():
        raise ValidationError(f"expected out_dir to be a folder, got the existing file {out}")
    if not out.is_dir() or is_output_folder(out):
        return
    names = sorted(p.name for p in out.iterdir())
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ValidationError(
            f"expected out_dir to be a new or empty folder, or one robustlab wrote (it has "
            f"{MANIFEST}): a successful run replaces the whole folder, and {out} holds other "
            f"files ({shown}); choose another folder or empty this one")


@contextlib.contextmanager
def output_folder(out_dir: str | Path, run_id: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold the output folder ``out_dir`` for one run and yield a new, empty staging
    directory beside it to build the run's folder in (commit it with
    :func:`commit_folder`).

    Takes the folder's lock (``wait`` False: a folder another run holds is refused with a
    ValidationError naming that process), puts back a folder an interrupted commit left
    aside, checks that the folder may be replaced (new, empty or written by robustlab), and
    deletes the staging directory when the block ends without a commit.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, wait=wait):
        for line in recover_directory(out):
            log.warning("%s", line)
        _check_output_folder(out)
        staging = staging_path(out, run_id)
        staging.mkdir()  # the usual permissions (not mkdtemp's 0700): it becomes the folder
        try:
            yield staging
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


_NOT_RECORDED_DEVICE = {"type": "not recorded", "name": "the notebook wrote no manifest of "
                        "its own", "count": 0}


def commit_folder(staging: str | Path, out_dir: str | Path, *, run_id: str,
                  parameters: dict[str, Any] | None = None) -> Path:
    """Seal ``staging`` (every file, notebooks included, with ``run_id``; parameters merged
    into what the notebook's own manifest recorded) and swap it in for ``out_dir`` in one
    step; the old folder is deleted. Call it inside :func:`output_folder`. Returns the
    manifest's path."""
    staging, out = Path(staging), Path(out_dir)
    old: dict[str, Any] = {}
    if (staging / MANIFEST).is_file():  # the notebook's own (write_report's)
        with contextlib.suppress(ValidationError):
            old = read_manifest(staging)
    # The device is the one the notebook recorded (its kernel computed the results), else
    # "not recorded": finding this process's would import TensorFlow here for nothing.
    device = old.get("device") or _NOT_RECORDED_DEVICE
    update_manifest(staging, parameters={**old.get("parameters", {}), **(parameters or {})},
                    seed=old.get("seed"), device=device, run_id=run_id, notebooks=True)
    replace_directory(staging, out)
    return out / MANIFEST


def _untouched(out: Path) -> str:
    return (f"{out} is as it was before the run" if os.path.lexists(out)
            else f"nothing was written to {out}")


def _encrypt_notebook(executed: Path) -> None:
    """With a key configured (:mod:`robustlab.crypto`) the executed notebook is encrypted in
    place like the report: its outputs show the same numbers. ``robustlab decrypt`` opens
    it."""
    if executed.is_file() and crypto.resolve_key() is not None \
            and not crypto.looks_encrypted(executed.read_bytes()[:16]):
        crypto.encrypt_file(executed)


def _keep_notebook(executed: Path, kept: Path) -> bool:
    """Move the executed notebook out of the staging directory to ``kept`` (beside the
    output folder), encrypted when a key is configured; whether there was one."""
    if not executed.is_file():
        return False
    _encrypt_notebook(executed)
    with open(executed, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(executed, kept)
    return True


def run_notebook(notebook: str | Path, out_dir: str | Path,
                 parameters: dict[str, Any] | None = None, *, kernel_name: str | None = None,
                 output_param: str = "output_dir", timeout: float | None = None,
                 verbose: bool = False) -> Path:
    """Execute ``notebook`` with ``parameters`` and leave the executed copy and everything
    the notebook wrote (via its ``output_dir`` parameter) in ``out_dir``, and nothing else:
    the folder is built beside ``out_dir`` and swapped in whole (see the module's
    docstring). ``out_dir`` must be new, empty or a folder robustlab wrote.

    The kernel's own stdout and stderr (TensorFlow's C++ start-up lines, Jupyter's transport
    warning; cell output is in the executed notebook either way) go to a log file in the
    temporary directory, deleted after a successful run and named in the error after a failed
    one, whose message also quotes its last lines; ``verbose`` lets them through to this
    process's terminal instead.

    On success ``out_dir/manifest.json`` lists every file with its SHA-256 and the run id
    (see :mod:`robustlab.manifest`). On a worker of a ``TF_CONFIG`` cluster that is not the
    chief (:func:`robustlab.distribute.is_chief`) the notebook runs in full, as every worker
    must, into a scratch folder that is then deleted: the chief alone writes ``out_dir``.
    Returns the path of the executed notebook. Raises
    NotebookExecutionError when the notebook fails (the executed notebook is kept as
    ``<out_dir>.failed.ipynb``), ValidationError when another run holds ``out_dir``, and
    :class:`RunInterrupted` on SIGINT / SIGTERM (when called from the main thread).
    """
    notebook = Path(notebook)
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        raise ValidationError(f"expected notebook to be an existing .ipynb file, "
                              f"got {str(notebook)!r}")
    if not is_chief():  # a worker of a cluster: it runs every cell, the chief keeps the files
        with tempfile.TemporaryDirectory(prefix="robustlab-worker-") as scratch:
            log.info("not the chief of the TF_CONFIG cluster: running %s with its outputs in "
                     "a scratch folder; the chief writes %s", notebook.name, out_dir)
            _run_notebook(notebook, Path(scratch) / "out", parameters,
                          kernel_name=kernel_name, output_param=output_param, timeout=timeout,
                          verbose=verbose)
        return Path(out_dir).resolve() / notebook.name
    return _run_notebook(notebook, out_dir, parameters, kernel_name=kernel_name,
                         output_param=output_param, timeout=timeout, verbose=verbose)


def _run_notebook(notebook: Path, out_dir: str | Path, parameters: dict[str, Any] | None, *,
                  kernel_name: str | None, output_param: str, timeout: float | None,
                  verbose: bool) -> Path:
    """:func:`run_notebook` once the notebook is known to exist."""
    params = dict(parameters or {})
    declared = check_parameters(notebook, params)
    out = Path(out_dir).resolve()
    _check_output_folder(out)  # before a kernel starts; again under the lock
    kept = out.parent / f"{out.name}.failed.ipynb"
    run_id = new_run_id()
    os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")  # no widget bars in executed notebooks
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernel inherits this
    with _Signals() as signals, output_folder(out, run_id) as staging:
        executed = staging / notebook.name
        run_params = {k: v for k, v in params.items() if k != output_param}
        if output_param in declared:
            params[output_param] = str(staging)
        log_path = None
        if not verbose:  # private (0600), outside out_dir: never an artifact of the run
            fd, name = tempfile.mkstemp(prefix=f"robustlab-kernel-{notebook.stem}-",
                                        suffix=".log")
            os.close(fd)
            log_path = Path(name)
        with open(log_path, "ab") if log_path else contextlib.nullcontext() as log_file:
            execution = _Execution(log_file)
            try:
                execution.start(
                    input_path=str(notebook), output_path=str(executed), parameters=params,
                    kernel_name=kernel_name, progress_bar=False, log_output=False,
                    cwd=os.getcwd(), execution_timeout=timeout,
                    kernel_manager_class=execution.manager_class())
                execution.wait()
            except RunInterrupted as stop:
                execution.stop()
                if log_path is not None:
                    log_path.unlink(missing_ok=True)
                message = (f"interrupted by {signal.Signals(stop.signum).name}: stopped the "
                           f"kernel")
                if _keep_notebook(executed, kept):
                    message += f"; the partial executed notebook is kept at {kept}"
                message += f"; {_untouched(out)}"
                raise RunInterrupted(stop.signum, message,
                                     executed_path=str(kept) if kept.exists() else None
                                     ) from None
        with signals.deferred():  # from here on a signal waits: nothing is cut in half
            _finish(execution.error, notebook, executed, kept, out, log_path)
            _encrypt_notebook(executed)
            commit_folder(staging, out, run_id=run_id,
                          parameters={**run_params, "notebook": notebook.name})
            kept.unlink(missing_ok=True)  # an earlier failure's notebook: superseded
        if signals.signum is not None:
            raise RunInterrupted(signals.signum, f"interrupted by "
                                 f"{signal.Signals(signals.signum).name} while committing; "
                                 f"the run completed and {out} holds its outputs")
    return out / notebook.name


def _finish(exc: BaseException | None, notebook: Path, executed: Path, kept: Path, out: Path,
            log_path: Path | None) -> None:
    """After papermill: on failure keep the executed notebook beside ``out`` and raise
    NotebookExecutionError naming the cell (and quoting the kernel's log); on success
    delete the kernel's log."""
    from papermill.exceptions import PapermillExecutionError

    if exc is None:
        if log_path is not None:
            log_path.unlink(missing_ok=True)
        return
    _keep_notebook(executed, kept)
    if isinstance(exc, PapermillExecutionError):
        first_line = next((ln for ln in (exc.source or "").splitlines() if ln.strip()), "")
        message = (f"cell {exc.cell_index} (execution count {exc.exec_count}, starting "
                   f"{first_line.strip()[:60]!r}) of {notebook.name} failed: "
                   f"{exc.ename}: {exc.evalue}")
        cell = exc.cell_index
    else:
        message = f"running {notebook.name} failed: {type(exc).__name__}: {exc}"
        cell = None
    if kept.exists():
        message += f"; the executed notebook is kept at {kept}"
    message += f"; {_untouched(out)}"
    message += _kernel_log_excerpt(log_path)
    raise NotebookExecutionError(message, cell_index=cell,
                                 executed_path=str(kept) if kept.exists() else None) from exc
