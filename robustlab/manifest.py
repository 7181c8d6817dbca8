"""Artifact integrity: a ``manifest.json`` in each output directory and ``robustlab verify``.

The manifest lists files in the directory with their size and SHA-256, plus the run's id,
parameters, seed, package versions and device. ``verify(dir)`` recomputes the digests and
names every file that changed, went missing or appeared since.

Who seals what:

* ``robustlab run`` (:func:`robustlab.runner.run_notebook`) seals the *whole* folder, the
  executed notebook included, before it commits the folder in one step
  (``notebooks_sealed: true``): any file that is not listed fails ``verify``.
* A notebook's own :func:`robustlab.write_report` (or any :func:`update_manifest` call
  without ``notebooks=True``) seals the artifacts now in the folder but no ``*.ipynb``
  (``notebooks_sealed: false``): plain ``papermill`` writes the executed notebook into the
  folder *after* the notebook sealed it, so such a notebook cannot be covered. ``verify``
  names it as "not in the manifest (written after the run sealed the folder)" and does not
  fail on it; every sealed artifact is still checked.
* The gate adds its own ``blessing.json`` with :func:`record_file`, which changes that one
  entry and nothing else: a file changed before the gate ran stays changed.
"""

from __future__ import annotations

import datetime
import json
import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from robustlab._io import sha256_file, write_json
from robustlab.errors import ValidationError

__all__ = ["MANIFEST", "update_manifest", "record_file", "verify", "Verification",
           "new_run_id", "read_manifest", "is_output_folder"]

MANIFEST = "manifest.json"
# Left out of the manifest: itself and hidden files (temporary files of atomic writes).
_SKIP_PREFIXES = (".",)
_NOTEBOOK = ".ipynb"


def new_run_id() -> str:
    """A run's id: UTC time (sortable) and 8 random hex digits, e.g.
    ``20250101T120000Z-1a2b3c4d``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _artifacts(out: Path, *, notebooks: bool = True) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not path.is_file() or rel.as_posix() == MANIFEST or any(
                part.startswith(_SKIP_PREFIXES) for part in rel.parts):
            continue
        if not notebooks and path.suffix == _NOTEBOOK:
            continue
        files[rel.as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


# The run id of what this process writes when none is given: a report and a comparison written
# by one notebook (one process) belong to one run; a later process writing into the same
# folder is another run and inherits nothing from the earlier one's manifest.
_PROCESS_RUN_ID = new_run_id()


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``out_dir/manifest.json`` as a dict; a ValidationError when it is missing or is not a
    robustlab manifest."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ValidationError(f"expected {str(path)!r} (written with the outputs); it does "
                              f"not exist")
    try:
        manifest = json.loads(path.read_text("utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest["files"], dict) \
                or manifest.get("robustlab_manifest") != 1:
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise ValidationError(f"expected {str(path)!r} to be a robustlab manifest") from None
    return manifest


def is_output_folder(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` is a folder robustlab wrote (it holds a robustlab manifest)."""
    try:
        read_manifest(out_dir)
    except ValidationError:
        return False
    return True


def update_manifest(out_dir: str | Path, *, parameters: dict[str, Any] | None = None,
                    seed: int | None = None, device: dict[str, Any] | None = None,
                    run_id: str | None = None, notebooks: bool = False) -> Path:
    """(Re)write ``out_dir/manifest.json`` over the files now in ``out_dir``, atomically.

    ``run_id`` (default: this process's) is recorded. ``parameters``, ``seed`` and the
    device are merged into what an earlier manifest recorded only when that manifest is of
    the same run (a report and a comparison written by one notebook); a manifest of another
    run passes nothing on. Versions are those of this process; so is the device unless
    ``device`` says where the results were computed (``robustlab run`` passes the notebook
    kernel's: looking up this process's own would import TensorFlow into the command line).

    ``*.ipynb`` files are sealed only with ``notebooks`` (``robustlab run`` seals the
    finished executed notebook): a notebook in the folder may still be being written by
    papermill while the notebook itself seals its outputs.
    """
    from robustlab._env import device_info, package_versions

    out = Path(out_dir)
    if not out.is_dir():
        raise ValidationError(f"expected out_dir to be a directory, got {str(out)!r}")
    old: dict[str, Any] = {}
    if (out / MANIFEST).is_file():
        try:
            old = json.loads((out / MANIFEST).read_text("utf-8"))
        except (OSError, ValueError):
            old = {}
        if not isinstance(old, dict):
            old = {}
    run = run_id or _PROCESS_RUN_ID
    if old.get("run_id") != run:  # another run's manifest: it passes nothing on
        old = {}
    params = {**old.get("parameters", {}), **_jsonable(parameters or {})}
    manifest = {
        "robustlab_manifest": 1,
        "run_id": run,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameters": params,
        "seed": seed if seed is not None else old.get("seed"),
        "versions": package_versions(),
        # where the numbers were computed: as given, else as recorded, else this process
        "device": dict(device if device is not None else old.get("device") or device_info()),
        "notebooks_sealed": bool(notebooks),
        "files": _artifacts(out, notebooks=notebooks),
    }
    return write_json(out / MANIFEST, manifest)


def record_file(out_dir: str | Path, name: str) -> Path:
    """Set the manifest entry of the one file ``name`` (a path relative to ``out_dir``) to
    its digest and size now, or remove the entry when the file is gone; every other entry
    is left exactly as it was (nothing is rescanned). For a file written into a sealed
    folder afterwards, such as the gate's ``blessing.json``."""
    out = Path(out_dir)
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.as_posix() == MANIFEST:
        raise ValidationError(f"expected name to be a file path inside {str(out)!r}, got "
                              f"{name!r}")
    manifest = read_manifest(out)
    files = dict(manifest["files"])
    path = out / rel
    if path.is_file():
        files[rel.as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    else:
        files.pop(rel.as_posix(), None)
    return write_json(out / MANIFEST, {**manifest, "files": files})


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values (anything else as its string)."""
    out = {}
    for key, value in params.items():
        try:
            json.dumps(value, allow_nan=False)
            out[str(key)] = value
        except (TypeError, ValueError):
            out[str(key)] = str(value)
    return out


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: files whose bytes changed, that are missing, that are new.

    ``unsealed`` are notebooks in a folder whose manifest does not seal notebooks (written
    from inside a notebook run; see the module's docstring): named, not verified, and not a
    failure.
    """

    directory: str
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    checked: int
    unsealed: tuple[str, ...] = ()
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added)

    def problems(self) -> list[str]:
        """One line per file that fails verification: ``"changed: report.json"``."""
        return [f"{kind}: {name}" for kind, names in (
            ("changed", self.changed), ("missing", self.missing),
            ("not in the manifest", self.added)) for name in names]


def verify(out_dir: str | Path) -> Verification:
    """Check every file listed in ``out_dir/manifest.json`` against its size and SHA-256."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    listed = manifest["files"]
    now = _artifacts(out)
    changed = tuple(sorted(name for name, info in listed.items() if name in now and (
        now[name]["sha256"] != info.get("sha256") or now[name]["size"] != info.get("size"))))
    missing = tuple(sorted(set(listed) - set(now)))
    new = set(now) - set(listed)
    # manifests written before this field existed sealed every file, notebooks included
    unsealed = set() if manifest.get("notebooks_sealed", True) else {
        name for name in new if name.endswith(_NOTEBOOK)}
    return Verification(str(out), changed, missing, tuple(sorted(new - unsealed)),
                        len(listed), tuple(sorted(unsealed)), manifest.get("run_id"))
