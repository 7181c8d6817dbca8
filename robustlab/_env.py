"""Facts about the running environment (device, package versions) and per-device choices."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from typing import Any

_PACKAGES = ("robustlab", "tensorflow", "keras", "numpy", "cleverhans",
             "adversarial-robustness-toolbox", "scikit-learn", "papermill")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that determine a result ("missing" if absent)."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


@functools.cache
def device_info() -> dict[str, Any]:
    """The device TensorFlow computes on: ``{"type": "GPU"|"CPU", "name": ..., "count": n}``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        except (RuntimeError, ValueError):
            name = "GPU"
        return {"type": "GPU", "name": str(name), "count": len(gpus)}
    return {"type": "CPU", "name": platform.processor() or platform.machine(),
            "count": os.cpu_count() or 1}


def default_jit_compile() -> bool:
    """XLA wins on GPUs and loses on CPUs (PGD ran 2.4x slower with XLA on a 2-core CPU).

    ``ROBUSTLAB_JIT=0/1`` overrides the automatic choice.
    """
    forced = os.environ.get("ROBUSTLAB_JIT", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    return device_info()["type"] == "GPU"


def determinism_info() -> dict[str, Any]:
    """Whether results repeat exactly: TensorFlow op determinism, the device, and the verdict.

    On a CPU robustlab's numbers repeat exactly for the same seed and inputs (tested); on a
    GPU only with op determinism on (:func:`enable_determinism`), since cuDNN picks
    non-deterministic kernels otherwise.
    """
    import tensorflow as tf

    try:
        ops = bool(tf.config.experimental.is_op_determinism_enabled())
    except AttributeError:  # very old TensorFlow
        ops = False
    device = device_info()["type"]
    return {"op_determinism": ops, "device": device, "deterministic": ops or device == "CPU"}


def enable_determinism() -> None:
    """Turn on TensorFlow op determinism (slower on GPUs; every op then repeats exactly)."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
