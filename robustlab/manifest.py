"""Artifact integrity: a ``manifest.json`` in each output directory and ``robustlab verify``.

The manifest lists every file robustlab left in the directory with its size and SHA-256,
plus the run's parameters, seed, package versions and device. ``verify(dir)`` recomputes the
digests and names every file that changed, went missing or appeared since.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab._io import sha256_file, write_json
from robustlab.errors import ValidationError

__all__ = ["MANIFEST", "update_manifest", "verify", "Verification"]

MANIFEST = "manifest.json"
# Left out of the manifest: itself, staging folders of runs in progress, and hidden files.
_SKIP_PREFIXES = (".",)


def _artifacts(out: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not path.is_file() or rel.as_posix() == MANIFEST or any(
                part.startswith(_SKIP_PREFIXES) for part in rel.parts):
            continue
        files[rel.as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def update_manifest(out_dir: str | Path, *, parameters: dict[str, Any] | None = None,
                    seed: int | None = None, device: dict[str, Any] | None = None) -> Path:
    """(Re)write ``out_dir/manifest.json`` over the files now in ``out_dir``, atomically.

    ``parameters`` and ``seed`` are merged into what an earlier manifest recorded (a report
    written inside a notebook run keeps the notebook's parameters and vice versa). Versions
    are those of this process; so is the device unless ``device`` says where the results
    were computed (``robustlab run`` passes the notebook kernel's: looking up this process's
    own would import TensorFlow into the command line only to record the wrong process).
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
    params = {**old.get("parameters", {}), **_jsonable(parameters or {})}
    manifest = {
        "robustlab_manifest": 1,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "parameters": params,
        "seed": seed if seed is not None else old.get("seed"),
        "versions": package_versions(),
        # where the numbers were computed: as given, else as recorded, else this process
        "device": dict(device if device is not None else old.get("device") or device_info()),
        "files": _artifacts(out),
    }
    return write_json(out / MANIFEST, manifest)


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
    """What :func:`verify` found: files whose bytes changed, that are missing, that are new."""

    directory: str
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]
    checked: int

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added)


def verify(out_dir: str | Path) -> Verification:
    """Check every file listed in ``out_dir/manifest.json`` against its size and SHA-256."""
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise ValidationError(f"expected {str(path)!r} (written with the outputs); it does "
                              f"not exist")
    try:
        manifest = json.loads(path.read_text("utf-8"))
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValidationError(f"expected {str(path)!r} to be a robustlab manifest") from None
    now = _artifacts(out)
    changed = tuple(sorted(name for name, info in listed.items() if name in now and (
        now[name]["sha256"] != info.get("sha256") or now[name]["size"] != info.get("size"))))
    missing = tuple(sorted(set(listed) - set(now)))
    added = tuple(sorted(set(now) - set(listed)))
    return Verification(str(out), changed, missing, added, len(listed))
