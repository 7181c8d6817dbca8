"""Examples spread over the replicas of a ``tf.distribute`` strategy: several devices of one
machine (``MirroredStrategy``) or several machines (``MultiWorkerMirroredStrategy``, set up
by ``TF_CONFIG``), with results identical to one device's.

Evaluation is data-parallel over examples and needs no communication but its results: every
worker runs the same call, the work comes in batches of ``batch_size`` examples (the very
batches one device would run, so every example is computed exactly as it would be there),
batch ``i`` goes to replica ``i mod R`` (each replica runs on its own device, with its own
copy of the model), and the results are gathered to every worker with the strategy's
all-gather (``strategy.gather``). Only the chief (:func:`is_chief`) writes reports and
manifests. Adversarial training uses Keras ``fit`` under the strategy's scope, each global
batch split by example over the replicas (:func:`replica_slices`).

The scope is explicit: :func:`across` makes a strategy current for robustlab's batched work
(:func:`map_batches`); without one everything runs on the default device, in this thread,
exactly as before. ``evaluate(..., strategy=)`` and ``train_adversarial(..., strategy=)``
open it for their call.

TensorFlow's guide: https://www.tensorflow.org/guide/distributed_training and
https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustlab._validate import check_int
from robustlab.errors import InputTypeError, RobustlabError, ValidationError

__all__ = ["make_strategy", "split_cpu", "across", "current", "map_batches", "each_batch",
           "Replicas",
           "Placement", "is_chief", "task", "replica_slices", "worker_values", "any_worker",
           "use_strategy", "free_ports", "tf_config", "LocalCluster", "STRATEGIES"]

log = logging.getLogger(__name__)

STRATEGIES = ("none", "auto", "mirrored", "multiworker")

# (trailing shape, dtype) of one output of a batch function: what a replica with no batch
# contributes to the gather (an empty array of this kind)
OutputSpec = tuple[tuple[int, ...], Any]
# work(model, rows) -> one array per output, each with len(rows) leading rows
BatchWork = Callable[[Any, np.ndarray], Sequence[np.ndarray]]
# sink(rows, outputs): takes one batch's outputs, in order
Sink = Callable[[np.ndarray, Sequence[np.ndarray]], None]


# ---------------------------------------------------------------------------------------------
# the cluster: TF_CONFIG


def task(environ: Mapping[str, str] | None = None) -> tuple[str, int, int] | None:
    """``(task type, task index, number of workers incl. the chief)`` from ``TF_CONFIG``, or
    None when it is unset (one process). Raises :class:`ValidationError` naming TF_CONFIG
    and what is wrong with it."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"expected TF_CONFIG to be JSON, got {raw[:80]!r} ({exc})") \
            from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValidationError("expected TF_CONFIG to hold a 'cluster' object, e.g. "
                              '{"cluster": {"worker": ["host0:port", "host1:port"]}, '
                              '"task": {"type": "worker", "index": 0}}')
    cluster = config["cluster"]
    sizes = {}
    for kind in ("chief", "worker"):
        hosts = cluster.get(kind, [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and ":" in h
                                                  for h in hosts):
            raise ValidationError(f"expected TF_CONFIG cluster.{kind} to be a list of "
                                  f"'host:port' strings, got {hosts!r}")
        sizes[kind] = len(hosts)
    if sizes["chief"] > 1 or sizes["chief"] + sizes["worker"] == 0:
        raise ValidationError(f"expected TF_CONFIG to list at most one chief and at least one "
                              f"worker in total, got {sizes['chief']} chief(s) and "
                              f"{sizes['worker']} worker(s)")
    me = config.get("task")
    role = me.get("type") if isinstance(me, dict) else None
    index = me.get("index") if isinstance(me, dict) else None
    if role not in ("chief", "worker") or not isinstance(index, int) or isinstance(index, bool) \
            or not 0 <= index < sizes[role]:
        raise ValidationError(f"expected TF_CONFIG task to be {{'type': 'chief'|'worker', "
                              f"'index': i}} naming one of the cluster's tasks, got {me!r}")
    return role, index, sizes["chief"] + sizes["worker"]


def is_chief(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes the run's files: True without ``TF_CONFIG``; else the
    ``chief`` task, or worker 0 of a cluster that has no chief (Keras' convention)."""
    me = task(environ)
    if me is None:
        return True
    kind, index, _ = me
    if kind == "chief":
        return True
    raw = json.loads((os.environ if environ is None else environ)["TF_CONFIG"])
    return index == 0 and not raw["cluster"].get("chief")


# ---------------------------------------------------------------------------------------------
# strategies


def split_cpu(n: int) -> list[str]:
    """Split the host CPU into ``n`` logical devices (to try ``MirroredStrategy`` without
    GPUs, as the tests do) and return their names. Call it before TensorFlow runs anything:
    devices cannot change once TensorFlow has started (the error then says so)."""
    import tensorflow as tf

    n = check_int("n", n, low=1)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as exc:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == n:
            return [f"/cpu:{i}" for i in range(n)]
        raise ValidationError(f"could not split the CPU into n={n} devices: TensorFlow has "
                              f"started already with {have} ({exc}); call split_cpu first "
                              f"thing in the process") from None
    return [f"/cpu:{i}" for i in range(n)]


def make_strategy(strategy: Any = "auto") -> Any:
    """A ``tf.distribute`` strategy (or None: one device) from a name or a strategy.

    - ``None`` / ``"none"``: None.
    - ``"auto"``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set; else
      ``MirroredStrategy`` over the local GPUs when there are several, or over the logical
      CPUs when the CPU was split (:func:`split_cpu`); else None.
    - ``"mirrored"``: ``MirroredStrategy`` over all local GPUs (else the logical CPUs).
    - ``"multiworker"``: ``MultiWorkerMirroredStrategy`` (``TF_CONFIG`` must be set and valid).
    - a ``tf.distribute.Strategy``: itself.
    """
    import tensorflow as tf

    if strategy is None or isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if not isinstance(strategy, str):
        raise InputTypeError(f"expected strategy to be one of {list(STRATEGIES)}, a "
                             f"tf.distribute.Strategy or None, got {type(strategy).__name__}")
    name = strategy.strip().lower().replace("-", "").replace("_", "")
    if name not in STRATEGIES:
        raise ValidationError(f"expected strategy to be one of {list(STRATEGIES)}, got "
                              f"{strategy!r}")
    if name == "none":
        return None
    if name == "multiworker" or (name == "auto" and task() is not None):
        if task() is None:
            raise ValidationError("expected TF_CONFIG to describe the cluster for "
                                  "strategy='multiworker' (see `robustlab worker --help`), "
                                  "but it is unset")
        return tf.distribute.MultiWorkerMirroredStrategy()
    local = _local_devices()
    if name == "auto" and len(local) < 2:
        return None
    return tf.distribute.MirroredStrategy(local)


def _is_default(strategy: Any) -> bool:
    """Whether ``strategy`` is TensorFlow's default (no distribution): what
    ``tf.distribute.get_strategy()`` and a Keras model's ``distribute_strategy`` give
    outside any scope."""
    import tensorflow as tf

    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def _local_devices() -> list[str]:
    """The GPUs, else the logical CPUs, of this process."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    chosen = gpus or tf.config.list_logical_devices("CPU")
    return [d.name for d in chosen]


# ---------------------------------------------------------------------------------------------
# where this process stands, and its replicas


@dataclass(frozen=True)
class Placement:
    """This process's share of a strategy: ``replicas`` in sync over all workers, this
    process's ``devices`` and the global ids of their replicas (``ids``, the order of the
    strategy's gather), and the number of ``workers``."""

    replicas: int
    devices: tuple[str, ...]
    ids: tuple[int, ...]
    workers: int


class Replicas:
    """A strategy's replicas as robustlab's batched work sees them (see the module doc).

    ``strategy=None`` is one replica on the default device, run in the caller's thread
    without any copy or gather: the plain path."""

    def __init__(self, strategy: Any = None) -> None:
        if strategy is not None and _is_default(strategy):
            strategy = None
        self.strategy = strategy
        if strategy is None:
            self.placement = Placement(1, ("",), (0,), 1)
        else:
            import tensorflow as tf

            ids: list[int] = []

            def record(ctx: Any) -> Any:
                ids.append(int(ctx.replica_id_in_sync_group))
                return tf.constant(0)

            strategy.experimental_distribute_values_from_function(record)
            devices = tuple(str(d) for d in strategy.extended.worker_devices)
            replicas = int(strategy.num_replicas_in_sync)
            self.placement = Placement(replicas, devices, tuple(ids),
                                       max(1, replicas // max(1, len(devices))))

    def describe(self) -> dict[str, Any]:
        """What a result records: the strategy's class, replicas and workers."""
        p = self.placement
        name = None if self.strategy is None else type(self.strategy).__name__
        if name == "CollectiveAllReduceStrategy":  # TensorFlow's class for the public name
            name = "MultiWorkerMirroredStrategy"
        return {"strategy": name,
                "replicas": p.replicas, "workers": p.workers}

    def models(self, model: Any) -> list[Any]:
        """``model`` for each local replica: the model itself on the first, a copy on each
        other device (``keras.models.clone_model``, made once per model and device and
        kept as long as the model lives) given the model's current weights at every call,
        so no replica reads its weights across devices and none holds stale ones. A model
        that cannot be cloned (a subclassed one without ``get_config``) is shared, with a
        warning: correct, but every step then reads the weights from the first device."""
        devices = self.placement.devices
        if len(devices) == 1:
            return [model]
        with _COPIES_LOCK:
            try:
                known = _COPIES.setdefault(model, {})
            except TypeError:  # not weak-referenceable: copies for this call only
                known = {}
            try:
                import keras
                import tensorflow as tf

                fresh = [d for d in devices[1:] if d not in known]
                for device in fresh:
                    with tf.device(device):
                        known[device] = keras.models.clone_model(model)
                weights = model.get_weights()
                for device in devices[1:]:
                    known[device].set_weights(weights)
            except Exception as exc:  # noqa: BLE001 - Keras raises many types for clone_model
                log.warning("could not copy model %r to each device (%s: %s); the replicas "
                            "share it", getattr(model, "name", "?"), type(exc).__name__, exc)
                return [model] * len(devices)
            return [model, *(known[d] for d in devices[1:])]

    def map_batches(self, work: BatchWork, model: Any, rows: np.ndarray, batch_size: int,
                    outputs: Sequence[OutputSpec]) -> list[np.ndarray]:
        """:meth:`each_batch`, returning the outputs for all of ``rows`` (one array per
        output, in order)."""
        rows = np.asarray(rows, np.int64)
        collected = [np.empty((len(rows), *shape), dtype) for shape, dtype in outputs]
        filled = [0]  # the batches arrive in order

        def keep(done: np.ndarray, values: Sequence[np.ndarray]) -> None:
            at = filled[0]
            for array, value in zip(collected, values, strict=True):
                array[at:at + len(done)] = value
            filled[0] = at + len(done)

        self.each_batch(work, model, rows, batch_size, outputs, keep)
        return collected

    def each_batch(self, work: BatchWork, model: Any, rows: np.ndarray, batch_size: int,
                   outputs: Sequence[OutputSpec], sink: Sink) -> None:
        """``work(model, rows[batch])`` over the batches of ``batch_size`` consecutive
        entries of ``rows``, batch ``i`` on replica ``i mod R``, on every worker; each
        batch's outputs go to ``sink(batch_rows, outputs)``, in order, on every worker.

        The batches run in rounds of R (one per replica); after each round the results are
        all-gathered over the workers (on the host), so memory holds a round, not the
        whole set. ``outputs`` gives each output's trailing shape and dtype (what a replica
        without a batch sends). Work inside a replica runs on its device with no strategy
        current (a nested call stays there). An error on any worker is raised on every
        worker before the next gather (none is left waiting in a collective)."""
        rows = np.asarray(rows, np.int64)
        batch_size = check_int("batch_size", batch_size, low=1)
        p = self.placement
        if p.workers > 1:  # sized from each host's free memory: take the least
            batch_size = min(worker_values(self.strategy, batch_size))
        batches = [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
        if self.strategy is None:  # the plain path: this thread, the default device
            for batch in batches:
                sink(batch, work(model, batch))
            return
        copies = self.models(model)
        pool = ThreadPoolExecutor(len(p.devices), thread_name_prefix="replica") \
            if len(p.devices) > 1 else None
        try:
            for first in range(0, len(batches), p.replicas):
                this = batches[first:first + p.replicas]  # batch j of the round: replica j
                done: Mapping[int, Sequence[np.ndarray]] = self._round(work, copies, this, pool)
                if p.workers > 1:
                    done = self._gather(done, this, outputs)
                for j, batch in enumerate(this):
                    sink(batch, done[j])
        finally:
            if pool is not None:
                pool.shutdown()

    def _round(self, work: BatchWork, copies: list[Any], batches: list[np.ndarray],
               pool: ThreadPoolExecutor | None) -> dict[int, Sequence[np.ndarray]]:
        """This worker's replicas' batches of one round (replica ``j`` runs ``batches[j]``):
        ``{j: outputs}``. With several workers, whether any failed is agreed first."""
        p = self.placement

        def run(local: int) -> tuple[int, Sequence[np.ndarray]] | None:
            import tensorflow as tf

            rid = p.ids[local]
            if rid >= len(batches):
                return None
            token = _CURRENT.set(_PLAIN)  # nested batched work stays on this replica
            try:
                with tf.device(p.devices[local]):
                    return rid, work(copies[local], batches[rid])
            finally:
                _CURRENT.reset(token)

        error: BaseException | None = None
        done: dict[int, Sequence[np.ndarray]] = {}
        futures = [pool.submit(run, j) for j in range(len(p.devices))] if pool else None
        for j in range(len(p.devices)):
            try:
                got = futures[j].result() if futures else run(j)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the agreement
                error = error or exc
                continue
            if got is not None:
                done[got[0]] = got[1]
        if p.workers > 1 and any_worker(self.strategy, error is not None) and error is None:
            raise RobustlabError("another worker failed in this batched work (see its log); "
                                 "this worker stops too")
        if error is not None:
            raise error
        return done

    def _gather(self, done: Mapping[int, Sequence[np.ndarray]], batches: list[np.ndarray],
                outputs: Sequence[OutputSpec]) -> dict[int, list[np.ndarray]]:
        """All-gather one round's outputs over the workers (``strategy.gather``, on the
        host): each replica sends its batch padded to the round's longest; every worker
        knows which replica ran which batch."""
        import tensorflow as tf

        p = self.placement
        pad = max(len(b) for b in batches)
        result: dict[int, list[np.ndarray]] = {j: [] for j in range(len(batches))}
        for k, (shape, dtype) in enumerate(outputs):
            wire = np.int32 if np.dtype(dtype) == np.bool_ else dtype
            local = {}
            for rid in p.ids:
                block = np.asarray(done[rid][k]).astype(wire, copy=False) if rid in done \
                    else np.empty((0, *shape), wire)
                local[rid] = np.concatenate([block, np.zeros((pad - len(block), *shape), wire)])
            with tf.device("/cpu:0"):
                value = self.strategy.experimental_distribute_values_from_function(
                    lambda ctx, local=local: tf.constant(local[ctx.replica_id_in_sync_group]))
                every = np.asarray(self.strategy.gather(value, axis=0))
            for j, batch in enumerate(batches):
                result[j].append(every[j * pad:j * pad + len(batch)].astype(dtype, copy=False))
        return result


# ---------------------------------------------------------------------------------------------
# the current replicas


# each model's copies on other devices, by device, for as long as the model lives
_COPIES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()

_PLAIN = Replicas(None)
_DEFAULT = [_PLAIN]  # what use_strategy() set: current() outside any across() block
_CURRENT: contextvars.ContextVar[Replicas | None] = contextvars.ContextVar(
    "robustlab_replicas", default=None)


def use_strategy(strategy: Any) -> Replicas:
    """Make ``strategy`` (a name or a strategy, :func:`make_strategy`; None: one device)
    current for the rest of the process, outside any :func:`across` block: a notebook's
    first cell, so every later ``evaluate`` and ``train_adversarial`` runs on it. With
    ``TF_CONFIG`` set, call it before anything else runs TensorFlow (a
    ``MultiWorkerMirroredStrategy`` must be made at the program's start). Returns its
    :class:`Replicas`."""
    made = make_strategy(strategy)
    if made is _DEFAULT[0].strategy:
        return _DEFAULT[0]
    _DEFAULT[0] = Replicas(made)
    if made is not None:
        log.info("distributing over %s", _DEFAULT[0].describe())
    return _DEFAULT[0]


@contextlib.contextmanager
def across(strategy: Any) -> Iterator[Replicas]:
    """Make ``strategy`` (a name or a strategy, :func:`make_strategy`; None: one device)
    current for robustlab's batched work in this block; yields its :class:`Replicas`.
    The replicas' threads run without it: work inside a replica stays on its device."""
    replicas = Replicas(make_strategy(strategy))
    token = _CURRENT.set(replicas)
    try:
        yield replicas
    finally:
        _CURRENT.reset(token)


def current() -> Replicas:
    """The replicas of the current :func:`across` block, else those :func:`use_strategy`
    set, else one device."""
    active = _CURRENT.get()
    return _DEFAULT[0] if active is None else active


def map_batches(work: BatchWork, model: Any, rows: np.ndarray, batch_size: int,
                outputs: Sequence[OutputSpec]) -> list[np.ndarray]:
    """:meth:`Replicas.map_batches` on the current replicas."""
    return current().map_batches(work, model, rows, batch_size, outputs)


def each_batch(work: BatchWork, model: Any, rows: np.ndarray, batch_size: int,
               outputs: Sequence[OutputSpec], sink: Sink) -> None:
    """:meth:`Replicas.each_batch` on the current replicas."""
    current().each_batch(work, model, rows, batch_size, outputs, sink)


def worker_values(strategy: Any, value: int) -> list[int]:
    """``value`` as each replica of ``strategy`` holds it on its worker (a collective every
    worker must call: one all-gather); ``[value]`` without a strategy."""
    if strategy is None or _is_default(strategy):
        return [int(value)]
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)
    if replicas == len(strategy.extended.worker_devices):  # one worker: nothing to ask
        return [int(value)] * replicas
    gathered = strategy.gather(strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([int(value)], tf.int64)), axis=0)
    return [int(v) for v in np.asarray(gathered)]


def any_worker(strategy: Any, flag: bool) -> bool:
    """True on every worker when ``flag`` is True on any (every worker must call it)."""
    return any(worker_values(strategy, int(bool(flag))))


# ---------------------------------------------------------------------------------------------
# starting the workers


def free_ports(n: int, host: str = "localhost") -> list[int]:
    """``n`` TCP ports the OS reports free on ``host`` now (bound to port 0, then released)."""
    import socket

    sockets, ports = [], []
    try:
        for _ in range(check_int("n", n, low=1)):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
            ports.append(int(sock.getsockname()[1]))
    finally:
        for sock in sockets:
            sock.close()
    return ports


def tf_config(hosts: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of a cluster of ``hosts`` (``"host:port"``
    each; worker 0 is the chief), as JSON."""
    hosts = [str(h).strip() for h in hosts]
    if not hosts or not all(":" in h and h.rsplit(":", 1)[1].isdigit() for h in hosts):
        raise ValidationError(f"expected hosts to be 'host:port' entries, got {list(hosts)}")
    index = check_int("index", index, low=0, high=len(hosts) - 1)
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


class LocalCluster:
    """``workers`` processes of ``command`` on this host, each with the ``TF_CONFIG`` of its
    index (ports from the OS): a ``MultiWorkerMirroredStrategy`` cluster on one machine, for
    trying a multi-machine run (and for the tests). Each process leads its own process
    group, so stopping it stops what it started in that group (a notebook's kernel starts
    its own session and ends when its parent does).

    Use it as a context manager: leaving the block stops every process still running.
    """

    def __init__(self, command: Sequence[str], workers: int, *,
                 env: Mapping[str, str] | None = None,
                 log_dir: str | os.PathLike[str] | None = None) -> None:
        self.command = [str(c) for c in command]
        if not self.command:
            raise ValidationError("expected a command to run on each worker, got none")
        self.workers = check_int("workers", workers, low=1)
        self.env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self.processes: list[Any] = []
        self.first_failure: int | None = None  # the index of the first worker seen failing
        self._logs: list[Any] = []

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Start the workers (worker 0, the chief, first)."""
        import subprocess
        from pathlib import Path

        hosts = [f"localhost:{port}" for port in free_ports(self.workers)]
        for index in range(self.workers):
            env = {**self.env, "TF_CONFIG": tf_config(hosts, index)}
            out = None
            if self.log_dir is not None:
                Path(self.log_dir).mkdir(parents=True, exist_ok=True)
                out = open(Path(self.log_dir) / f"worker-{index}.log", "ab")  # noqa: SIM115
                self._logs.append(out)
            self.processes.append(subprocess.Popen(  # noqa: S603 - the user's own command
                self.command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                start_new_session=True))
        log.info("started %d workers on localhost (%s)", self.workers, ", ".join(hosts))

    def kill(self, index: int, sig: int | None = None) -> None:
        """Send ``sig`` (default SIGKILL) to worker ``index``'s process group."""
        import signal

        process = self.processes[index]
        # the group outlives its leader when the worker started children (a kernel)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL if sig is None else sig)

    def wait(self, timeout: float | None = None) -> list[int]:
        """Wait for every worker; the moment one fails (a non-zero exit, or killed), stop
        the others, as a job restarts all its workers (the others cannot go on without
        it); after ``timeout`` seconds stop all. Returns the exit codes (negative: the
        signal that ended it)."""
        import signal
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while any(p.poll() is None for p in self.processes):
            failed = [i for i, p in enumerate(self.processes) if p.poll() not in (None, 0)]
            late = end is not None and time.monotonic() > end
            if failed and self.first_failure is None:
                self.first_failure = failed[0]
            if failed or late:
                why = "timed out" if late else f"worker {failed[0]} failed"
                log.warning("%s: stopping the other workers", why)
                self.stop(signal.SIGTERM)
                break
            time.sleep(0.2)
        codes = [int(p.wait()) for p in self.processes]
        if self.first_failure is None:
            self.first_failure = next((i for i, c in enumerate(codes) if c != 0), None)
        return codes

    def stop(self, sig: int | None = None, grace: float = 10.0) -> None:
        """Stop every worker still running (``sig``, default SIGTERM, then SIGKILL after
        ``grace`` seconds) and close the logs."""
        import signal
        import subprocess

        for index in range(len(self.processes)):
            self.kill(index, signal.SIGTERM if sig is None else sig)
        for index, process in enumerate(self.processes):
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill(index)
                process.wait()
        for out in self._logs:
            out.close()
        self._logs.clear()


def replica_slices(n: int, replicas: int) -> list[slice]:
    """How a global batch of ``n`` examples splits over ``replicas``: consecutive slices
    whose sizes differ by at most one (the first ``n mod replicas`` one longer), so every
    example goes to exactly one replica."""
    n, replicas = check_int("n", n, low=0), check_int("replicas", replicas, low=1)
    base, extra = divmod(n, replicas)
    bounds = np.cumsum([0] + [base + (r < extra) for r in range(replicas)])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
