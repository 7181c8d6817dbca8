"""Distributed evaluation and training (issue 19, "Measure"): what the ``tf.distribute`` path
costs on one device next to the plain path, what one step of its work and of its
communication costs here, and what the design predicts for N GPUs or workers.

Run from the project root::

    .venv/bin/python benchmarks/distributed.py          # writes benchmarks/DISTRIBUTED.md / .json
    .venv/bin/python benchmarks/distributed.py --quick --out /tmp/DISTRIBUTED.md  # digits, ~1 min

Data: MNIST-8k (the MNIST test split beside the project, ``../shared/datasets/mnist-t10k``:
8,000 images train, 2,000 test; digits when it is missing, and the results say so; digits
with ``--quick``). Model: :func:`robustlab.models.build_model` (the small CNN) trained with
:func:`robustlab.training.train`, seed 0 (3 epochs on MNIST-8k, 2 on digits).

Overhead (section ``overhead``): in one process, the plain path (no strategy) vs the
distributed path on one device (``MirroredStrategy(["/cpu:0"])``, 1 replica): (a)
``evaluate(model, data, "pgd", "0, 0.1, 0.3", n=1000, checks=False, seed=0,
batch_size=500)`` and (b) one epoch of ``train_adversarial(method="pgd", steps=10,
epochs=1, batch_size=128)`` on 2,000 training images, a fresh model (seed 0) each time. One
untimed warm-up each, then interleaved runs (plain, 1-replica, 1-replica, plain, ...), median
of 3. The target of issue 19: distributed / plain ≤ 1.05. The per-example outcomes
(``robust_mask``) of every run are compared with the first plain run's. The attack batch is
fixed at 500 (the automatic size on this CPU would hold the 1,000 images in one batch, which
leaves a second replica nothing to do; on a GPU it is larger still).

Costs (section ``costs``): median time of one PGD-40 batch of B = 500 (``rl.pgd``,
``early_stop=False``: every step on every example, an upper bound of an evaluation batch),
the bytes one batch sends to the gather (its adversarial images, float32, and its logits for
the prediction that follows), the steady training step of PGD-10 at global batch 128 (the
median time between two batches of the plain epochs in ``overhead``, after the first, which
traces), the parameter count P and the gradient bytes 4P one step all-reduces.

Cluster (section ``cluster``): 2 worker processes on localhost
(:class:`robustlab.distribute.LocalCluster`, ``MultiWorkerMirroredStrategy``; this script
re-invokes itself with a hidden ``--worker``): median time of (a) ``strategy.gather`` of a
(500, 28, 28, 1) float32 value per replica, (b) ``strategy.reduce("SUM", ..., axis=None)``
of P float32 values per replica, (c) the evaluation of ``overhead`` and (d) one PGD-AT epoch
of ``overhead`` on 2 workers. Both workers share this machine's cores: (c) and (d) measure
the overhead of the path, not a speed-up.

Prediction (section ``prediction``, computed, nothing measured): the speed-up on N replicas
of the evaluation (its batches spread over the replicas, the results gathered once per
attack and ε) and of training (the gradients all-reduced every step, ring all-reduce) from
the costs above; formulas in the results file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import (  # noqa: E402,I001
    MNIST_DIR, machine, median_time, merged, pct, section_args, write_results, written_by)

SECTIONS = ("overhead", "costs", "cluster", "prediction")
EPSILONS = "0, 0.1, 0.3"
MAX_OVERHEAD = 1.05  # the target of issue 19: distributed path on one device vs plain
# sizes: full (MNIST-8k) and --quick (digits)
SIZES = {
    False: {"n_eval": 1000, "batch": 500, "n_train": 2000, "train_batch": 128, "steps": 10,
            "epsilon_train": 0.3, "repeats": 3, "pgd_repeats": 5, "comm_repeats": 20,
            "cluster_repeats": 3, "cluster_train_warmup": True, "train_epochs": 3,
            "timeout": 1800},
    True: {"n_eval": 200, "batch": 100, "n_train": 512, "train_batch": 128, "steps": 10,
           "epsilon_train": 0.1, "repeats": 2, "pgd_repeats": 3, "comm_repeats": 5,
           "cluster_repeats": 1, "cluster_train_warmup": False, "train_epochs": 2,
           "timeout": 240},
}
ATTACK_STEPS = 40  # PGD-40: the "pgd" of evaluate and the costed batch
# the prediction
REPLICAS = (1, 2, 4, 8, 16, 64)
GPU_FACTOR = 100  # a hypothetical GPU step: the measured CPU step / 100
MIN_PER_REPLICA = 32  # below this many examples per replica a step stops getting cheaper
# name -> (bandwidth bytes/s, latency s per message)
NETWORKS = {"NVLink": (450e9, 10e-6), "100 Gb/s": (12.5e9, 50e-6),
            "10 GbE": (1.25e9, 50e-6)}
NETWORK_NOTES = {"NVLink": "H100/H200 NVLink ~900 GB/s, 450 GB/s effective, 10 µs",
                 "100 Gb/s": "100 Gb/s network (12.5 GB/s), 50 µs",
                 "10 GbE": "10 Gb/s Ethernet (1.25 GB/s), 50 µs"}
EVAL_NETWORK = "10 GbE"  # the evaluation's gather is priced on the slowest network
# collectives of one (attack, ε) call on several workers: the attack's all-gather of x_adv,
# the prediction's of the logits, and the all-gather on which the workers agree on the batch
# size (robustlab.distribute.Replicas.map_batches); each pays the latency of N - 1 hops
COLLECTIVES_PER_CALL = 3
IMAGENET = {"n": 50_000, "shape": (224, 224, 3), "classes": 1000}

log = logging.getLogger("benchmarks.distributed")


# ---------------------------------------------------------------------------------------------
# setup


def dataset(quick: bool) -> tuple[Any, str, str | None]:
    """The data, its name, and why MNIST is not used (None when it is)."""
    import robustlab as rl

    if quick:
        return rl.load("digits"), "digits", "skipped by --quick"
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        return rl.load("digits"), "digits", f"MNIST not found at {MNIST_DIR}"
    return rl.load(f"idx:{MNIST_DIR}", split=8000), "mnist-8k", None


def load_named(name: str) -> Any:
    import robustlab as rl

    return rl.load("digits") if name == "digits" else rl.load(f"idx:{MNIST_DIR}", split=8000)


def step_clock() -> Any:
    """A Keras callback recording the time at the end of every training batch."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.ends.append(time.perf_counter())

        def steady(self) -> float | None:
            """Median time between two batch ends (the first batch, which traces, left
            out); None with fewer than two batches."""
            gaps = np.diff(self.ends)
            return float(np.median(gaps)) if len(gaps) else None

    return StepClock()


def parameters(model: Any) -> int:
    """Trainable parameters: the values whose gradients a training step all-reduces."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask, dtype=np.bool_).tobytes()).hexdigest()


def evaluate_once(model: Any, data: Any, s: dict[str, Any], strategy: Any = None) -> Any:
    import robustlab as rl

    return rl.evaluate(model, data, "pgd", EPSILONS, n=s["n_eval"], checks=False, seed=0,
                       batch_size=s["batch"], strategy=strategy)


def train_epoch(data: Any, s: dict[str, Any], strategy: Any = None, *,
                under_scope: bool = False) -> tuple[Any, Any, Any, float]:
    """One PGD-AT epoch of a fresh model (seed 0): (model, TrainingResult, clock, seconds).
    ``under_scope``: the model is made under the strategy's scope, so Keras trains it with
    the strategy's machinery even for one replica (``train_adversarial`` otherwise takes
    the plain path for one replica)."""
    import contextlib

    import robustlab as rl

    with strategy.scope() if under_scope else contextlib.nullcontext():
        model = rl.build_model(data.input_shape, data.num_classes, seed=0)
    clock = step_clock()
    start = time.perf_counter()
    model, info = rl.train_adversarial(model, data, method="pgd", epsilon=s["epsilon_train"],
                                       steps=s["steps"], epochs=1, batch_size=s["train_batch"],
                                       seed=0, strategy=strategy, callbacks=[clock])
    return model, info, clock, time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int
                ) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """One untimed warm-up of each, then ``repeats`` rounds, the order reversed every other
    round (A B, B A, ...): the times and the outputs (warm-up first) of each."""
    outputs: dict[str, list[Any]] = {k: [fn()] for k, fn in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            outputs[k].append(fns[k]())
            times[k].append(time.perf_counter() - start)
    return times, outputs


# ---------------------------------------------------------------------------------------------
# sections


def overhead_section(model: Any, data: Any, s: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    from robustlab.inference import auto_batch_size

    one = tf.distribute.MirroredStrategy(["/cpu:0"])
    print("overhead: evaluate, plain vs 1 replica", flush=True)
    times, results = interleaved({"plain": lambda: evaluate_once(model, data, s),
                                  "one_replica": lambda: evaluate_once(model, data, s, one)},
                                 s["repeats"])
    ref = results["plain"][0]
    identical = all(np.array_equal(ref.robust_mask, r.robust_mask)
                    for runs in results.values() for r in runs)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    evaluation = {
        "n": ref.n_examples, "batch_size": s["batch"],
        "auto_batch_size": auto_batch_size(model, data.input_shape),
        "attack": f"PGD-{ATTACK_STEPS}", "epsilons": list(ref.epsilons),
        "seconds": medians, "times": times,
        "ratio": medians["one_replica"] / medians["plain"],
        "identical_outcomes": bool(identical),
        "robust_mask_sha256": mask_digest(ref.robust_mask),
        "accuracy": [p.accuracy for p in ref.curves[0].points],
        "n_attacked": [p.n_attacked for p in ref.curves[0].points],
        "device": results["one_replica"][0].device.get("strategy")}
    print(f"  evaluate: plain {medians['plain']:.2f} s, 1 replica "
          f"{medians['one_replica']:.2f} s ({evaluation['ratio']:.3f}x)", flush=True)

    print("overhead: one PGD-AT epoch, plain vs 1 replica", flush=True)
    sub = data.subset(n_train=s["n_train"], seed=0)
    times, runs = interleaved({"plain": lambda: train_epoch(sub, s),
                               "one_replica": lambda: train_epoch(sub, s, one),
                               "keras_scope": lambda: train_epoch(sub, s, one,
                                                                  under_scope=True)},
                              s["repeats"])
    medians = {k: float(np.median(v)) for k, v in times.items()}
    steady = {k: float(np.median([c.steady() for _, _, c, _ in v[1:]])) for k, v in runs.items()}
    plain_w, one_w = runs["plain"][-1][0].get_weights(), runs["one_replica"][-1][0].get_weights()
    training = {
        "n_train": len(sub.x_train), "batch_size": s["train_batch"], "steps": s["steps"],
        "epsilon": s["epsilon_train"], "steps_per_epoch": math.ceil(len(sub.x_train)
                                                                    / s["train_batch"]),
        "seconds": medians, "times": times, "ratio": medians["one_replica"] / medians["plain"],
        "steady_step_seconds": steady,
        "steady_ratio": steady["one_replica"] / steady["plain"],
        "keras_scope_ratio": medians["keras_scope"] / medians["plain"],
        "keras_scope_steady_ratio": steady["keras_scope"] / steady["plain"],
        "loss": {k: float(v[-1][1].history["loss"][0]) for k, v in runs.items()},
        "max_weight_difference": float(max(np.abs(a - b).max()
                                           for a, b in zip(plain_w, one_w, strict=True)))}
    print(f"  train epoch: plain {medians['plain']:.2f} s, 1 replica "
          f"{medians['one_replica']:.2f} s ({training['ratio']:.3f}x); steady step "
          f"{1000 * steady['plain']:.0f} vs {1000 * steady['one_replica']:.0f} ms", flush=True)
    return {"evaluate": evaluation, "train": training, "target": MAX_OVERHEAD,
            "passed": bool(evaluation["ratio"] <= MAX_OVERHEAD
                           and training["ratio"] <= MAX_OVERHEAD)}


def costs_section(model: Any, data: Any, s: dict[str, Any],
                  overhead: dict[str, Any] | None) -> dict[str, Any]:
    import robustlab as rl
    from robustlab.inference import num_outputs

    b = s["batch"]
    x, y = data.x_test[:b], data.y_test[:b]
    print(f"costs: PGD-{ATTACK_STEPS} batch of {len(x)}", flush=True)
    t_batch, times = median_time(lambda: rl.pgd(model, x, y, epsilon=0.3, steps=ATTACK_STEPS,
                                                early_stop=False, batch_size=len(x), seed=0),
                                 s["pgd_repeats"])
    classes = num_outputs(model)
    row_bytes = 4 * int(np.prod(data.input_shape)) + 4 * classes
    p = parameters(model)
    if overhead is not None:
        train = overhead["train"]
        t_step, epoch = train["steady_step_seconds"]["plain"], train["seconds"]["plain"]
        steps_per_epoch, source = train["steps_per_epoch"], "overhead (plain epochs)"
    else:
        print("costs: one PGD-AT epoch (overhead not run)", flush=True)
        sub = data.subset(n_train=s["n_train"], seed=0)
        train_epoch(sub, s)  # warm-up
        _, _, clock, epoch = train_epoch(sub, s)
        t_step, steps_per_epoch = clock.steady(), math.ceil(len(sub.x_train) / s["train_batch"])
        source = "its own epoch"
    out = {"batch": len(x), "attack_steps": ATTACK_STEPS, "pgd_batch_seconds": t_batch,
           "pgd_batch_times": times, "classes": classes, "input_shape": list(data.input_shape),
           "bytes_per_row": row_bytes, "gather_bytes_per_batch": row_bytes * len(x),
           "train_batch": s["train_batch"], "train_steps": s["steps"],
           "train_step_seconds": t_step, "epoch_seconds": epoch,
           "epoch_seconds_per_step": epoch / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
           "train_step_source": source, "parameters": p, "gradient_bytes": 4 * p}
    print(f"  PGD-{ATTACK_STEPS} batch {t_batch:.3f} s, step {1000 * t_step:.0f} ms, "
          f"P = {p:,}", flush=True)
    return out


def cluster_section(model: Any, name: str, s: dict[str, Any]) -> dict[str, Any]:
    """2 workers on localhost, each running this script with ``--worker``; the chief's
    measurements."""
    import robustlab as rl
    from robustlab.distribute import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="robustlab-distributed-bench-"))
    try:
        rl.save_model(model, work / "model.keras")
        options = {"data": name, "model": str(work / "model.keras"),
                   "out": str(work / "chief.json"), "sizes": s,
                   "gather_shape": [500, 28, 28, 1], "parameters": parameters(model)}
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(options)]
        print("cluster: 2 workers on localhost", flush=True)
        start = time.perf_counter()
        with LocalCluster(command, 2, log_dir=work / "logs") as cluster:
            codes = cluster.wait(s["timeout"])
        if codes != [0, 0] or not (work / "chief.json").exists():
            tails = "\n".join(f"--- worker {i} ---\n" + _log_tail(work / "logs" /
                                                                 f"worker-{i}.log")
                              for i in range(2))
            raise RuntimeError(f"the 2-worker cluster ended with exit codes {codes} (limit "
                               f"{s['timeout']} s)\n{tails}")
        out = json.loads((work / "chief.json").read_text(encoding="utf-8"))
        out["wall_seconds"] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    epoch = out["train"].get("seconds")
    print(f"  gather {1000 * out['gather']['seconds']:.1f} ms, all-reduce "
          f"{1000 * out['allreduce']['seconds']:.1f} ms, evaluate "
          f"{out['evaluate']['seconds']:.2f} s, epoch "
          + (f"{epoch:.2f} s" if epoch is not None else f"FAILED ({out['train']['error']})"),
          flush=True)
    return out


def _short(message: str) -> str:
    """An error message on one line, the tensor values TensorFlow prints in it left out."""
    text = " ".join(message.split())
    if " numpy=" in text:
        text = text.split(" numpy=")[0] + " … " + text[text.rfind("})") + 2:].strip()
    return text[:300]


def _log_tail(path: Path, lines: int = 40) -> str:
    """The traceback of a worker's log (its lines that name a file or an error, the values
    TensorFlow prints in between left out), else its last lines."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines() \
        if path.exists() else []
    keep = [ln for ln in text if ln.startswith(("Traceback", "  File", "    ")) and
            not ln.lstrip().startswith(("[", "...")) or "Error" in ln]
    return "\n".join((keep or text)[-lines:])


def worker(options: dict[str, Any]) -> None:
    """One process of the 2-worker cluster (``--worker``): the strategy first, then the
    collectives, the evaluation and the epoch, every worker alike; the chief writes."""
    import robustlab as rl

    replicas = rl.use_strategy("multiworker")  # first: before anything else starts TensorFlow
    import tensorflow as tf

    strategy, s = replicas.strategy, options["sizes"]
    out: dict[str, Any] = {"replicas": int(strategy.num_replicas_in_sync),
                           "workers": replicas.placement.workers}
    block = np.random.default_rng(0).random(tuple(options["gather_shape"]), dtype=np.float32)
    value = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(block))
    seconds, times = median_time(lambda: np.asarray(strategy.gather(value, axis=0)),
                                 s["comm_repeats"])
    got = np.asarray(strategy.gather(value, axis=0))
    out["gather"] = {"shape": list(block.shape), "bytes_per_replica": int(block.nbytes),
                     "seconds": seconds, "times": times,
                     "correct": bool(got.shape[0] == out["replicas"] * len(block)
                                     and np.array_equal(got[:len(block)], block))}
    vector = np.full(int(options["parameters"]), 0.5, np.float32)
    grads = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(vector))
    seconds, times = median_time(lambda: np.asarray(strategy.reduce("SUM", grads, axis=None)),
                                 s["comm_repeats"])
    total = np.asarray(strategy.reduce("SUM", grads, axis=None))
    out["allreduce"] = {"values": len(vector), "bytes": int(vector.nbytes), "seconds": seconds,
                        "times": times,
                        "correct": bool(np.allclose(total, 0.5 * out["replicas"]))}
    data = load_named(options["data"])
    model = rl.load_model(options["model"])
    seconds, times = median_time(lambda: evaluate_once(model, data, s), s["cluster_repeats"])
    result = evaluate_once(model, data, s)
    out["evaluate"] = {"seconds": seconds, "times": times, "n": result.n_examples,
                       "robust_mask_sha256": mask_digest(result.robust_mask),
                       "device": result.device.get("strategy"),
                       "accuracy": [p.accuracy for p in result.curves[0].points]}
    sub = data.subset(n_train=s["n_train"], seed=0)
    try:  # both workers fail alike (at tracing) when they fail: nothing waits on a peer
        if s["cluster_train_warmup"]:
            train_epoch(sub, s)  # warm-up
        _, info, clock, seconds = train_epoch(sub, s)
        out["train"] = {"seconds": seconds, "steady_step_seconds": clock.steady(),
                        "loss": float(info.history["loss"][0])}
    except Exception as exc:  # noqa: BLE001 - recorded and reported, whatever it is
        out["train"] = {"error": f"{type(exc).__name__}: {_short(str(exc))}"}
    if rl.is_chief():
        Path(options["out"]).write_text(json.dumps(out), encoding="utf-8")


def _ring_allreduce(n: int, gradient_bytes: float, bandwidth: float, latency: float) -> float:
    """Ring all-reduce of ``gradient_bytes`` over ``n`` replicas: 2(n-1) messages, each
    replica sending and receiving 2(n-1)/n of the data."""
    if n == 1:
        return 0.0
    return 2 * (n - 1) * latency + 2 * (n - 1) / n * gradient_bytes / bandwidth


def _gather(n: int, rows_per_replica: int, row_bytes: float, bandwidth: float,
            latency: float) -> float:
    """The evaluation's gathers of one call: n x (rows per replica x bytes per row) moved
    once, and ``COLLECTIVES_PER_CALL`` latencies of n - 1 hops."""
    if n == 1:
        return 0.0
    return COLLECTIVES_PER_CALL * (n - 1) * latency \
        + n * rows_per_replica * row_bytes / bandwidth


def eval_time(n: int, calls: list[int], batch: int, t_batch: float, row_bytes: float,
              network: str) -> float:
    """T(N): each (attack, ε) call runs ceil(batches / N) batches on the busiest replica,
    then gathers."""
    bandwidth, latency = NETWORKS[network]
    total = 0.0
    for attacked in calls:
        batches = math.ceil(attacked / batch)
        per = math.ceil(batches / n)
        total += per * t_batch + _gather(n, per * batch, row_bytes, bandwidth, latency)
    return total


def prediction_section(costs: dict[str, Any], overhead: dict[str, Any] | None,
                       cluster: dict[str, Any] | None, s: dict[str, Any]) -> dict[str, Any]:
    b, row_bytes = costs["batch"], costs["bytes_per_row"]
    if overhead is not None:
        calls = [a for a in overhead["evaluate"]["n_attacked"] if a > 0]
        calls_source = "examples attacked per (attack, ε) in overhead's evaluation"
    else:
        calls = [s["n_eval"]] * 2
        calls_source = "every example attacked at both ε (overhead not run)"
    step = {"CPU (measured)": costs["pgd_batch_seconds"],
            f"GPU (CPU / {GPU_FACTOR})": costs["pgd_batch_seconds"] / GPU_FACTOR}
    evaluation = []
    for n in REPLICAS:
        row: dict[str, Any] = {"replicas": n, "batches_per_replica": max(
            math.ceil(math.ceil(a / b) / n) for a in calls)}
        for label, t in step.items():
            one = eval_time(1, calls, b, t, row_bytes, EVAL_NETWORK)
            here = eval_time(n, calls, b, t, row_bytes, EVAL_NETWORK)
            row[label] = {"seconds": here, "speedup": one / here}
        row["gather_bytes_per_call"] = n * row["batches_per_replica"] * b * row_bytes
        evaluation.append(row)
    n_max = max(math.ceil(a / b) for a in calls)
    image_row = 4 * int(np.prod(IMAGENET["shape"])) + 4 * IMAGENET["classes"]
    imagenet = {"n": IMAGENET["n"], "batch": b, "n_max": math.ceil(IMAGENET["n"] / b),
                "bytes_per_row": image_row, "gather_bytes": IMAGENET["n"] * image_row,
                "gather_seconds": {k: IMAGENET["n"] * image_row / bw
                                   for k, (bw, _) in NETWORKS.items()}}
    p_bytes = costs["gradient_bytes"]
    t_steps = {"CPU (measured)": costs["train_step_seconds"],
               f"GPU (CPU / {GPU_FACTOR})": costs["train_step_seconds"] / GPU_FACTOR}
    training = []
    for n in REPLICAS:
        row = {"replicas": n, "per_replica_batch": costs["train_batch"] / n, "speedup": {}}
        for label, t in t_steps.items():
            for net, (bw, lat) in NETWORKS.items():
                ar = _ring_allreduce(n, p_bytes, bw, lat)
                row["speedup"][f"{label} / {net}"] = t / (t / n + ar)
                row.setdefault("allreduce_seconds", {})[net] = ar
        training.append(row)
    half = {}
    for key in training[0]["speedup"]:
        below = [r["replicas"] for r in training if r["speedup"][key] / r["replicas"] < 0.5]
        half[key] = below[0] if below else None
    measured = {}
    if cluster is not None:
        g, a = cluster["gather"], cluster["allreduce"]
        measured = {"loopback_gather_bytes_per_s": g["bytes_per_replica"] * 2 / g["seconds"],
                    "loopback_allreduce_bytes_per_s": a["bytes"] / a["seconds"],
                    "loopback_allreduce_seconds": a["seconds"],
                    "model_allreduce_2_seconds": {
                        k: _ring_allreduce(2, p_bytes, bw, lat)
                        for k, (bw, lat) in NETWORKS.items()}}
    return {"replicas": list(REPLICAS), "gpu_factor": GPU_FACTOR,
            "networks": {k: {"bandwidth": bw, "latency": lat, "note": NETWORK_NOTES[k]}
                         for k, (bw, lat) in NETWORKS.items()},
            "eval_network": EVAL_NETWORK, "calls": calls, "calls_source": calls_source,
            "evaluation": evaluation, "n_max": n_max, "imagenet": imagenet,
            "training": training, "half_efficiency_at": half,
            "min_per_replica": MIN_PER_REPLICA,
            "replicas_at_min_batch": costs["train_batch"] // MIN_PER_REPLICA,
            "measured": measured}


# ---------------------------------------------------------------------------------------------
# the report


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.1f}"


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def markdown(res: dict[str, Any]) -> str:
    lines = ["# Distributed evaluation and training (issue 19)", "",
             written_by("distributed.py", res), "",
             "How much the `tf.distribute` path (`robustlab.distribute`) costs next to the plain "
             "path, what one step of its work and communication costs here, and what that "
             "predicts for N GPUs or workers. This machine has "
             f"{res['machine']['cpus']} CPU cores and no GPU: nothing here measures a speed-up; "
             "the scaling rows are predictions from the measured costs. The method is in "
             "the script's docstring.", ""]
    if res.get("mnist_missing"):
        lines += [f"**Data: {res['data']}, not MNIST-8k ({res['mnist_missing']}).**", ""]
    lines += [f"Setup: {res['data']} ({res['dataset']}), the small CNN "
              f"(`build_model`, {res.get('costs', {}).get('parameters', 0):,} parameters) "
              f"trained {res['sizes']['train_epochs']} epochs; PGD-{ATTACK_STEPS} at ε "
              f"{EPSILONS} on the first {res['sizes']['n_eval']:,} test images in batches of "
              f"{res['sizes']['batch']}; PGD-AT (PGD-{res['sizes']['steps']}, ε "
              f"{res['sizes']['epsilon_train']}) on {res['sizes']['n_train']:,} training "
              f"images, global batch {res['sizes']['train_batch']}.", ""]
    o = res.get("overhead")
    if o:
        ev, tr = o["evaluate"], o["train"]
        verdict = "PASS" if o["passed"] else "FAIL"
        lines += ["## Overhead of the distributed path on one device", "",
                  f"Plain path vs `MirroredStrategy([\"/cpu:0\"])` (1 replica), same process, "
                  f"one warm-up each, then {len(ev['times']['plain'])} interleaved runs each "
                  f"(median). Target of issue 19: distributed / plain ≤ {o['target']:.2f} "
                  f"for both. **Verdict: {verdict}** (≤ {o['target']:.2f}: evaluation "
                  f"{ev['ratio']:.3f}, training epoch {tr['ratio']:.3f})"
                  + (" — a quick run, too short to judge" if res["quick"] else "") + ".", "",
                  "| workload | plain s | 1 replica s | ratio | ≤ 1.05 |", "|---|---|---|---|---|",
                  f"| `evaluate` PGD-{ATTACK_STEPS}, {ev['n']:,} images, ε {EPSILONS} | "
                  f"{ev['seconds']['plain']:.2f} | {ev['seconds']['one_replica']:.2f} | "
                  f"{ev['ratio']:.3f} | {'yes' if ev['ratio'] <= o['target'] else 'no'} |",
                  f"| one PGD-AT epoch ({tr['n_train']:,} images, {tr['steps_per_epoch']} "
                  f"steps, incl. tracing) | {tr['seconds']['plain']:.2f} | "
                  f"{tr['seconds']['one_replica']:.2f} | {tr['ratio']:.3f} | "
                  f"{'yes' if tr['ratio'] <= o['target'] else 'no'} |",
                  f"| its steady step (median between batches) | "
                  f"{tr['steady_step_seconds']['plain']:.3f} | "
                  f"{tr['steady_step_seconds']['one_replica']:.3f} | {tr['steady_ratio']:.3f} "
                  f"| {'yes' if tr['steady_ratio'] <= o['target'] else 'no'} |", "",
                  f"With one replica `train_adversarial` trains on the plain path (the same "
                  f"computation). A model made under the strategy's scope is trained by Keras "
                  f"with the strategy's machinery instead: that costs "
                  f"{tr['keras_scope_ratio']:.3f}× the plain epoch "
                  f"({tr['keras_scope_steady_ratio']:.3f}× the steady step) — the price of "
                  f"Keras' `MirroredStrategy` path itself, paid on N replicas too.", "",
                  f"- per-example outcomes (`robust_mask`, {ev['n']:,} × "
                  f"{len(ev['epsilons'])}) identical in every plain and 1-replica run: "
                  f"**{'yes' if ev['identical_outcomes'] else 'NO'}**; robust accuracy "
                  + ", ".join(f"{a:.1%} at ε {e:g}" for a, e in zip(ev["accuracy"],
                                                                      ev["epsilons"],
                                                                      strict=True)),
                  f"- training: first-epoch loss plain {tr['loss']['plain']:.4f}, 1 replica "
                  f"{tr['loss']['one_replica']:.4f}; largest weight difference after the epoch "
                  f"{tr['max_weight_difference']:.2g}",
                  f"- the automatic attack batch on this CPU would be {ev['auto_batch_size']:,}"
                  f" examples; fixed at {ev['batch_size']} here (see the docstring)", ""]
    c = res.get("costs")
    if c:
        lines += ["## Measured per-step costs", "",
                  "| cost | value |", "|---|---|",
                  f"| one PGD-{c['attack_steps']} batch, B = {c['batch']} (`early_stop=False`, "
                  f"median of {len(c['pgd_batch_times'])}) | {c['pgd_batch_seconds']:.3f} s |",
                  f"| bytes gathered per example (x_adv float32 {c['input_shape']} + "
                  f"{c['classes']} logits) | {c['bytes_per_row']:,} B |",
                  f"| bytes gathered per batch | {_bytes(c['gather_bytes_per_batch'])} |",
                  f"| PGD-{c['train_steps']} training step, global batch {c['train_batch']} "
                  f"(steady, {c['train_step_source']}) | {_ms(c['train_step_seconds'])} ms |",
                  f"| the same from the epoch time / {c['steps_per_epoch']} steps (incl. "
                  f"tracing) | {_ms(c['epoch_seconds_per_step'])} ms |",
                  f"| trainable parameters P | {c['parameters']:,} |",
                  f"| gradient bytes per step, 4P | {_bytes(c['gradient_bytes'])} |", ""]
    k = res.get("cluster")
    if k:
        g, a, ev, tr = k["gather"], k["allreduce"], k["evaluate"], k["train"]
        o_ev = (o or {}).get("evaluate", {})
        same = None if not o_ev else ev["robust_mask_sha256"] == o_ev["robust_mask_sha256"]
        plain = (o or {}).get("train", {}).get("seconds", {}).get("plain")
        lines += ["## Two workers on localhost (MultiWorkerMirroredStrategy)", "",
                  f"{k['workers']} worker processes ({k['replicas']} replicas) started by "
                  "`robustlab.distribute.LocalCluster`, talking over loopback gRPC. **Both "
                  "share the same "
                  f"{res['machine']['cpus']} cores**, so the evaluation and the epoch measure "
                  "the overhead of the path (collectives, a second process), not a speed-up.",
                  "", "| what | median | note |", "|---|---|---|",
                  f"| `strategy.gather` of {tuple(g['shape'])} float32 per replica | "
                  f"{_ms(g['seconds'])} ms | {_bytes(g['bytes_per_replica'])} per replica, "
                  f"result correct: {'yes' if g['correct'] else 'NO'} |",
                  f"| all-reduce (`strategy.reduce(\"SUM\")`) of P = {a['values']:,} float32 | "
                  f"{_ms(a['seconds'])} ms | {_bytes(a['bytes'])}, result correct: "
                  f"{'yes' if a['correct'] else 'NO'} |",
                  f"| `evaluate` as in the overhead section | {ev['seconds']:.2f} s | plain "
                  + (f"{o_ev['seconds']['plain']:.2f} s; outcomes identical to plain: "
                     f"{'yes' if same else 'NO'}" if o_ev else "not run") + " |",
                  _cluster_train_row(tr, plain), ""]
        if "error" in tr:
            lines += [f"**The 2-worker PGD-AT epoch failed:** `{tr['error']}`.", ""]
    p = res.get("prediction")
    if p:
        lines += _prediction_lines(p, res.get("costs") or {})
    lines += ["## What this means", ""]
    lines += _meaning(res)
    lines += ["", f"Run took {res.get('seconds', 0) / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _cluster_train_row(tr: dict[str, Any], plain: float | None) -> str:
    if "error" in tr:
        return "| one PGD-AT epoch | failed | see below |"
    return (f"| one PGD-AT epoch | {tr['seconds']:.2f} s | plain "
            + (f"{plain:.2f} s" if plain else "not run") + "; steady step "
            f"{_ms(tr['steady_step_seconds'] or 0)} ms |")


def _prediction_lines(p: dict[str, Any], c: dict[str, Any]) -> list[str]:
    cpu, gpu = "CPU (measured)", f"GPU (CPU / {p['gpu_factor']})"
    net = p["eval_network"]
    lines = ["## Prediction for N replicas (computed, not measured)", "",
             "Evaluation: the batches of each (attack, ε) call go to the replicas (batch i to "
             "replica i mod N), then the results are gathered once:", "",
             "    T(N) = Σ over (attack, ε) calls [ ceil(batches / N) · t_batch + gather(N) ]",
             f"    gather(N) = {COLLECTIVES_PER_CALL} · (N − 1) · latency + N · (ceil(batches / N)"
             " · B) · bytes_per_row / bandwidth",
             "    speed-up S_eval(N) = T(1) / T(N)  ≤ N", "",
             f"with t_batch the PGD-{c.get('attack_steps', ATTACK_STEPS)} batch above, B = "
             f"{c.get('batch')}, the calls of the measured workload ({p['calls_source']}: "
             f"{', '.join(str(a) for a in p['calls'])}) and the gather priced on {net} "
             f"({p['networks'][net]['note']}; {COLLECTIVES_PER_CALL} collectives a call: the "
             "attack's x_adv, the prediction's logits and the workers' agreement on the batch "
             "size). The clean prediction, once per evaluation, is left out. The GPU column "
             "assumes a batch "
             f"{p['gpu_factor']}× faster than this CPU (an assumption, not a measurement: "
             "`benchmarks/gpu_check.sh` measures the GPU numbers when a GPU is available).",
             "", "| N | batches per replica | T(N) CPU s | speed-up CPU | speed-up GPU | "
             "gathered per call |", "|---|---|---|---|---|---|"]
    for r in p["evaluation"]:
        lines.append(f"| {r['replicas']} | {r['batches_per_replica']} | "
                     f"{r[cpu]['seconds']:.2f} | {r[cpu]['speedup']:.2f} | "
                     f"{r[gpu]['speedup']:.2f} | {_bytes(r['gather_bytes_per_call'])} |")
    im = p["imagenet"]
    lines += ["", f"It stops scaling at **N_max = {p['n_max']}** for this workload (the most "
              f"batches in one call; beyond that a replica has no batch and the gather only "
              f"grows). An ImageNet-size evaluation of {im['n']:,} images in batches of "
              f"{im['batch']} has {im['n_max']} batches in its first call: **N_max = "
              f"{im['n_max']}** (fewer with the larger automatic batches of a GPU). Its gather "
              f"would move {_bytes(im['gather_bytes'])} per (attack, ε) (224×224×3 float32 "
              f"images + 1,000 logits each): "
              + ", ".join(f"{s:.2g} s on {k}" for k, s in im["gather_seconds"].items()) + ".",
              "", "Training: every step all-reduces the gradients (4P bytes) with a ring:", "",
              "    t_allreduce(N) = 2(N − 1) · latency + 2(N − 1)/N · 4P / bandwidth",
              "    S_train(N) = t_step / (t_step / N + t_allreduce(N))", "",
              "(the issue's formula counts one latency; a ring sends 2(N − 1) messages in "
              "sequence, so this counts each). The global batch stays "
              f"{c.get('train_batch')}: the step's compute is assumed to divide by N, which "
              f"holds only while each replica has enough examples (about "
              f"{p['min_per_replica']}): at {c.get('train_batch')} that is "
              f"**{p['replicas_at_min_batch']} replicas** at {p['min_per_replica']} each; the "
              "rows beyond (marked *) are an upper bound.", "",
              "| N | per-replica batch | " + " | ".join(p["training"][0]["speedup"]) + " |",
              "|---|---|" + "---|" * len(p["training"][0]["speedup"])]
    for r in p["training"]:
        star = "*" if r["per_replica_batch"] < p["min_per_replica"] else ""
        lines.append(f"| {r['replicas']}{star} | {r['per_replica_batch']:g} | "
                     + " | ".join(f"{v:.2f}" for v in r["speedup"].values()) + " |")
    lines += ["", "Efficiency S/N falls below 50 % at: " + "; ".join(
        f"{k}: {'N = ' + str(v) if v else 'not within 64'}"
        for k, v in p["half_efficiency_at"].items()) + "."]
    m = p.get("measured")
    if m:
        lines += ["", f"For scale, the 2-worker loopback measured here: gather "
                  f"{_bytes(m['loopback_gather_bytes_per_s'])}/s, all-reduce of 4P in "
                  f"{_ms(m['loopback_allreduce_seconds'])} ms (the model: "
                  + ", ".join(f"{_ms(v)} ms on {k}"
                              for k, v in m["model_allreduce_2_seconds"].items()) + ")."]
    return [*lines, ""]


def _meaning(res: dict[str, Any]) -> list[str]:
    out = []
    o, c, p = res.get("overhead"), res.get("costs"), res.get("prediction")
    if o:
        out.append(f"- On one device the distributed path costs "
                   f"{o['evaluate']['ratio']:.3f}× the plain path for the evaluation and "
                   f"{o['train']['ratio']:.3f}× for a training epoch: the target ≤ "
                   f"{o['target']:.2f} is **{'met' if o['passed'] else 'not met'}**"
                   + (" (a quick run: too short to judge)" if res["quick"] else "") + ". The "
                   "evaluation gives every example the plain path's outcome"
                   + ("" if o["evaluate"]["identical_outcomes"] else " — **it did not here**")
                   + ".")
    if c and p:
        cpu, gpu = "CPU (measured)", f"GPU (CPU / {p['gpu_factor']})"
        best = max(r[cpu]["speedup"] for r in p["evaluation"])
        two = p["evaluation"][1]
        share = {k: 1 - two[k]["speedup"] / 2 for k in (cpu, gpu)}
        out.append(f"- Evaluation needs no communication but its results: one batch costs "
                   f"{c['pgd_batch_seconds']:.2f} s of compute here and sends "
                   f"{_bytes(c['gather_bytes_per_batch'])}; on 2 replicas over "
                   f"{p['eval_network']} the gathers cost {pct(max(share[cpu], 0))} % of the "
                   f"ideal speed-up with this CPU's batches and {pct(max(share[gpu], 0))} % "
                   f"with a GPU's 100× faster ones. The speed-up follows the batch count: at "
                   f"most {best:.1f}× for this workload (**N_max = {p['n_max']}**, the most "
                   f"batches in one call); a {p['imagenet']['n']:,}-image evaluation could use "
                   f"up to {p['imagenet']['n_max']} replicas. Past N_max, and on fast devices, "
                   "the gathers' latency only adds. For large images the gather is the thing "
                   f"to watch ({_bytes(p['imagenet']['gather_bytes'])} per call at ImageNet "
                   "size): every worker receives every adversarial image, where the curve "
                   "needs only a few bytes per example.")
        train = p["training"]
        cols = list(train[0]["speedup"])
        at = next((r for r in train if r["replicas"] == p["replicas_at_min_batch"]), train[-1])
        out.append(f"- On this CPU, training is bounded by the batch, not the network: the "
                   f"gradients are "
                   f"{_bytes(c['gradient_bytes'])} a step, which even 10 GbE moves in "
                   f"{_ms(_ring_allreduce(2, c['gradient_bytes'], *NETWORKS['10 GbE']))} ms "
                   f"against a {_ms(c['train_step_seconds'])} ms CPU step. At global batch "
                   f"{c['train_batch']}, {at['replicas']} replicas reach "
                   + ", ".join(f"{at['speedup'][k]:.1f}× ({k})" for k in cols[:3])
                   + "; past that the per-replica batch is below "
                   f"{p['min_per_replica']} and the global batch must grow (which changes the "
                   "optimisation) for more speed-up. On a GPU 100× faster the all-reduce "
                   "weighs as much as the step: " + ", ".join(f"{k} halves efficiency at "
                                              f"{'N = ' + str(v) if v else '> 64'}"
                                              for k, v in p["half_efficiency_at"].items()
                                              if k.startswith("GPU")) + ".")
    k = res.get("cluster")
    if k:
        failed = "error" in k["train"]
        out.append("- The 2-worker run shows the collectives work over loopback"
                   + (" and the evaluation runs on 2 workers, but **the 2-worker training "
                      "epoch failed** (see above)" if failed else
                      " and what a second process costs on shared cores")
                   + "; a real speed-up needs cores (or GPUs) per worker.")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(json.loads(argv[1]))
        return 0
    args, want = section_args(__doc__.splitlines()[0], SECTIONS,
                              ROOT / "benchmarks" / "DISTRIBUTED.md", argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    s = dict(SIZES[args.quick])
    data, name, missing = dataset(args.quick)
    res: dict[str, Any] = {"machine": machine(), "quick": args.quick, "mnist_missing": missing,
                           "data": name, "sizes": s,
                           "dataset": f"{len(data.x_train):,} train / {len(data.x_test):,} test"}
    previous = {}
    if args.out.with_suffix(".json").exists():
        previous = json.loads(args.out.with_suffix(".json").read_text(encoding="utf-8"))
        if previous.get("quick") != args.quick or previous.get("data") != name:
            previous = {}
    model = None
    if set(want) - {"prediction"}:
        import robustlab as rl

        model = rl.build_model(data.input_shape, data.num_classes, seed=0)
        info = rl.train(model, data, epochs=s["train_epochs"], seed=0)
        res["test_accuracy"] = info["test_accuracy"]
        print(f"trained {name}: test accuracy {info['test_accuracy']:.4f}", flush=True)
    if "overhead" in want:
        res["overhead"] = overhead_section(model, data, s)
    if "costs" in want:
        res["costs"] = costs_section(model, data, s, res.get("overhead"))
    if "cluster" in want:
        res["cluster"] = cluster_section(model, name, s)
    if "prediction" in want:
        costs = res.get("costs") or previous.get("costs")
        if costs is None:
            raise SystemExit("the prediction needs the costs section: run it too")
        res["prediction"] = prediction_section(costs, res.get("overhead")
                                               or previous.get("overhead"),
                                               res.get("cluster") or previous.get("cluster"), s)
    res["seconds"] = time.perf_counter() - started
    res = merged(args.out.with_suffix(".json"), res, want, SECTIONS, "data")
    json_path = write_results(args.out, markdown(res), res)
    print(f"wrote {args.out} and {json_path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
