"""Facts about the running environment (device, package versions) and per-device choices."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

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


@contextlib.contextmanager
def seeded_globals(seed: int, *, tensorflow: bool = False) -> Iterator[None]:
    """Seed the global generators that third-party code draws from, for the ``with`` block
    only, and give the caller's state back afterwards.

    robustlab itself draws from local generators (NumPy ``default_rng``, Keras
    ``SeedGenerator``, seeded initializers). CleverHans, ART and Keras' ``fit`` shuffle draw
    from global ones (Python's ``random``, NumPy's legacy generator and, with ``tensorflow``,
    TensorFlow's global seed and Keras' global ``SeedGenerator``): this scope seeds them
    (as ``keras.utils.set_random_seed`` does) so those calls repeat, without leaving a
    reseeded global state behind for the user's own code.
    """
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    restore_tf = None
    if tensorflow:
        restore_tf = _tensorflow_seed_state()
        import keras

        keras.utils.set_random_seed(seed)
    else:
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002 - the point: the caller's legacy global RNG
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        if restore_tf is not None:
            restore_tf()


def _tensorflow_seed_state() -> Any:
    """A function that puts TensorFlow's global seed and Keras' global seed generator back
    as they are now."""
    import tensorflow as tf
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    seed = context.global_seed()
    generator = global_state.get_global_attribute("global_seed_generator")

    def restore() -> None:
        tf.random.set_seed(seed)
        global_state.set_global_attribute("global_seed_generator", generator)

    return restore
