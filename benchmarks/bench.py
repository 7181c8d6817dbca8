"""robustlab's speed and memory side by side with CleverHans 4, ART and the hardware floor.

Run from the project root (``make bench``)::

    .venv/bin/python benchmarks/bench.py            # full run, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench.py --quick --out /tmp/r.md   # a 1-minute smoke run

Every timing is the median of ``--repeats`` runs after one untimed warm-up run (so tracing
and compilation are excluded for every implementation alike). The floor is the same number
of forward+backward passes (gradient of the loss w.r.t. the input) of the same batch through
one compiled function: no attack can take a gradient step for less. Native PGD is timed with
``early_stop=False`` in the per-step table, so it does all the work the peers do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist-t10k"
CURVE_EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
SECTIONS = ("engine", "curve", "fgsm", "scaling", "training", "budget", "memory")
# where the other benchmark scripts write (RESULTS.md names them)
OTHER_RESULTS = (
    "Also: [DISTRIBUTED.md](DISTRIBUTED.md) (`benchmarks/distributed.py`: the tf.distribute "
    "path's overhead on one device, its communication costs and the predicted scaling to N "
    "GPUs or workers) and [GPU.md](GPU.md) (`bash benchmarks/gpu_check.sh` on a GPU: XLA on "
    "and off, mixed precision, native vs CleverHans vs ART, one PGD-AT epoch; written only "
    "where a GPU ran it), [AUTOATTACK.md](AUTOATTACK.md), [TABULAR.md](TABULAR.md), "
    "[PRIVACY.md](PRIVACY.md), [POISONING.md](POISONING.md), "
    "[MONITORING.md](MONITORING.md).")


def step_size(eps: float, steps: int) -> float:
    """Madry et al.'s 2.5·ε/steps (at most ε), the same for all three implementations."""
    return min(1.0, 2.5 / steps) * eps


def median_time(fn: Callable[[], Any], repeats: int, warmup: bool = True
                ) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` runs, after one untimed warm-up run."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# ---------------------------------------------------------------------------------------------
# the implementations, called directly (the peers without robustlab's adapters around them)


def floor_fn(model: Any, x: np.ndarray, y: np.ndarray, steps: int) -> Callable[[], Any]:
    """``steps`` forward+backward passes of the batch through one compiled function."""
    import tensorflow as tf

    from robustlab.attacks import input_gradient
    from robustlab.types import Loss

    @tf.function(reduce_retracing=True)
    def grad(xb: Any, yb: Any) -> Any:
        return input_gradient(model, xb, yb, Loss.CE, False)[0]

    xt, yt = tf.constant(x), tf.constant(y)

    def run() -> None:
        for _ in range(steps):
            g = grad(xt, yt)
        g.numpy()
    return run


def native_pgd_fn(model: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int,
                  early_stop: bool = False) -> Callable[[], np.ndarray]:
    from robustlab import pgd

    return lambda: pgd(model, x, y, epsilon=eps, steps=steps, step_size=step_size(eps, steps),
                       seed=0, batch_size=len(x), early_stop=early_stop)


def cleverhans_pgd_fn(model: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int
                      ) -> Callable[[], np.ndarray]:
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    def run() -> np.ndarray:
        return np.asarray(projected_gradient_descent(
            model, x, eps, step_size(eps, steps), steps, np.inf, clip_min=0.0, clip_max=1.0, y=y,
            rand_init=True, rand_minmax=eps, sanity_checks=False))
    return run


def art_classifier(model: Any, x: np.ndarray) -> Any:
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=model, nb_classes=int(model.output_shape[-1]), input_shape=x.shape[1:],
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0))


def art_pgd_fn(model: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int
               ) -> Callable[[], np.ndarray]:
    from art.attacks.evasion import ProjectedGradientDescent

    clf = art_classifier(model, x)
    attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step_size(eps, steps),
                                      max_iter=steps, num_random_init=1, batch_size=len(x),
                                      verbose=False)
    onehot = np.eye(clf.nb_classes, dtype=np.float32)[y]
    return lambda: attack.generate(x, onehot)


def fgsm_fns(model: Any, x: np.ndarray, y: np.ndarray, eps: float
             ) -> dict[str, Callable[[], Any]]:
    from art.attacks.evasion import FastGradientMethod
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

    from robustlab import fgsm

    clf = art_classifier(model, x)
    art = FastGradientMethod(clf, norm=np.inf, eps=eps, batch_size=len(x))
    onehot = np.eye(clf.nb_classes, dtype=np.float32)[y]
    return {
        "native": lambda: fgsm(model, x, y, epsilon=eps, batch_size=len(x)),
        "cleverhans": lambda: np.asarray(fast_gradient_method(
            model, x, eps, np.inf, clip_min=0.0, clip_max=1.0, y=y, sanity_checks=False)),
        "art": lambda: art.generate(x, onehot),
    }


# ---------------------------------------------------------------------------------------------
# workloads


def trained_model(name: str, data: Any, epochs: int | None) -> Any:
    from robustlab.models import build_model
    from robustlab.training import train

    model = build_model(data.input_shape, data.num_classes, seed=0)
    info = train(model, data, epochs=epochs, seed=0)
    print(f"  trained {name}: test accuracy {info['test_accuracy']:.4f} "
          f"in {info['seconds']:.1f} s", flush=True)
    return model


def workloads(quick: bool) -> tuple[list[dict[str, Any]], str | None]:
    """Models and inputs for the per-step table; the second value says why MNIST is absent."""
    from robustlab import load
    from robustlab.models import build_resnet

    out = []
    digits = load("digits")
    n = 32 if quick else len(digits.x_test)
    out.append(dict(name="digits CNN (8x8)", model=trained_model(
        "digits", digits, 2 if quick else None), x=digits.x_test[:n], y=digits.y_test[:n],
        eps=0.1, steps=4 if quick else 40, data=digits))
    why = None
    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        mnist = load(f"idx:{MNIST_DIR}", split=8000)
        n = 64 if quick else 1000
        out.append(dict(name="MNIST-8k CNN (28x28)", model=trained_model(
            "mnist", mnist, 1 if quick else None), x=mnist.x_test[:n], y=mnist.y_test[:n],
            eps=0.1, steps=4 if quick else 40, data=mnist))
    else:
        why = f"MNIST test split not found at {MNIST_DIR}"
    rng = np.random.default_rng(0)
    n, width = (8, 8) if quick else (256, 32)
    out.append(dict(name=f"ResNet w{width} (32x32x3, synthetic, untrained)",
                    model=build_resnet((32, 32, 3), 10, width=width, seed=0),
                    x=rng.uniform(size=(n, 32, 32, 3)).astype(np.float32),
                    y=rng.integers(0, 10, size=n), eps=8 / 255, steps=2 if quick else 10,
                    data=None))
    return out, why


def per_step_table(loads: list[dict[str, Any]], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for w in loads:
        m, x, y, eps, steps = w["model"], w["x"], w["y"].astype(np.int64), w["eps"], w["steps"]
        fns = {"floor": floor_fn(m, x, y, steps),
               "native": native_pgd_fn(m, x, y, eps, steps),
               "cleverhans": cleverhans_pgd_fn(m, x, y, eps, steps),
               "art": art_pgd_fn(m, x, y, eps, steps),
               "native_default": native_pgd_fn(m, x, y, eps, steps, early_stop=True)}
        times = {k: median_time(f, repeats)[0] for k, f in fns.items()}
        fooled = np.mean(np.argmax(np.asarray(m(fns["native_default"](), training=False)), 1)
                         != y)
        rows.append(dict(workload=w["name"], n=len(x), steps=steps, eps=eps,
                         ms_per_step={k: 1000 * t / steps for k, t in times.items()},
                         vs_floor={k: times[k] / times["floor"] for k in times},
                         native_speedup={k: times[k] / times["native"]
                                         for k in ("cleverhans", "art")},
                         default_speedup={k: times[k] / times["native_default"]
                                          for k in ("cleverhans", "art")},
                         fooled=float(fooled)))
        print(f"  per-step {w['name']}: " + ", ".join(
            f"{k} {v:.3f}x floor" for k, v in rows[-1]["vs_floor"].items()), flush=True)
    return rows


def curve_table(w: dict[str, Any], epsilons: tuple[float, ...], steps: int, n: int,
                repeats: int) -> dict[str, Any]:
    """Native robustness curve (reuse across ε, early stop) vs CleverHans run per ε.

    Each timed repeat draws new random starts (native: seed = repeat number; CleverHans:
    TensorFlow's generator moves on), so the accuracies are reported as mean and range."""
    from robustlab import AttackSpec, evaluate

    model = w["model"]
    spec = AttackSpec("pgd", steps=steps, restarts=1)
    acc: dict[str, list[list[float]]] = {"native": [], "independent": [], "cleverhans": []}
    attacked: list[int] = []

    def run_native(reuse: bool) -> list[float]:
        seed = len(acc["native" if reuse else "independent"])
        res = evaluate(model, (x, y), [spec], epsilons, seed=seed, n_show=0, reuse=reuse)
        if reuse:
            attacked[:] = [p.n_attacked for p in res.curves[0].points]
        return [p.accuracy for p in res.curves[0].points]

    def run_cleverhans() -> list[float]:
        out = []
        for eps in epsilons:
            x_adv = cleverhans_pgd_fn(model, x, y, eps, steps)()
            pred = np.argmax(np.asarray(model.predict(x_adv, verbose=0, batch_size=500)), 1)
            out.append(float(np.mean(pred == y)))
        return out

    runs = {"native": lambda: acc["native"].append(run_native(True)),
            "independent": lambda: acc["independent"].append(run_native(False)),
            "cleverhans": lambda: acc["cleverhans"].append(run_cleverhans())}
    x, y = w["data"].x_test[:64], w["data"].y_test[:64].astype(np.int64)
    for fn in runs.values():  # warm-up (tracing, compilation) on 64 images: full runs are long
        fn()
    for values in acc.values():
        values.clear()
    x, y = w["data"].x_test[-n:], w["data"].y_test[-n:].astype(np.int64)
    times = {k: median_time(fn, repeats, warmup=False)[0] for k, fn in runs.items()}
    floor_run = median_time(floor_fn(model, x, y, steps), repeats)[0]  # one PGD run's floor
    mean = {k: np.mean(v, axis=0) for k, v in acc.items()}
    points = [dict(epsilon=eps, attacked=attacked[i],
                   **{k: float(mean[k][i]) for k in acc},
                   **{f"{k}_range": [float(np.min(np.array(acc[k])[:, i])),
                                     float(np.max(np.array(acc[k])[:, i]))] for k in acc})
              for i, eps in enumerate(epsilons)]
    # No exact curve can skip an example that stays robust at an epsilon: it costs all `steps`
    # steps there. At the floor's speed that alone takes floor_run * sum(robust fractions),
    # which bounds the speed-up any exact curve can have over CleverHans.
    bound_seconds = floor_run * sum(p["native"] for p in points)
    out = dict(workload=w["name"], n=n, steps=steps, seconds=times, points=points,
               clean=float(np.mean(np.argmax(np.asarray(model.predict(x, verbose=0)), 1) == y)),
               speedup_vs_cleverhans=times["cleverhans"] / times["native"],
               speedup_vs_independent=times["independent"] / times["native"],
               floor_run_seconds=floor_run, exact_bound_seconds=bound_seconds,
               exact_bound_vs_cleverhans=times["cleverhans"] / max(bound_seconds, 1e-9),
               never_above_cleverhans=all(p["native"] <= p["cleverhans"] for p in points),
               never_above_independent=all(
                   a <= b for ra, rb in zip(acc["native"], acc["independent"], strict=True)
                   for a, b in zip(ra, rb, strict=True)))
    print(f"  curve: native {times['native']:.1f} s, independent {times['independent']:.1f} s,"
          f" CleverHans {times['cleverhans']:.1f} s", flush=True)
    return out


def fgsm_table(loads: list[dict[str, Any]], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for w in loads[:2]:
        fns = fgsm_fns(w["model"], w["x"], w["y"].astype(np.int64), w["eps"])
        times = {k: median_time(f, repeats)[0] for k, f in fns.items()}
        rows.append(dict(workload=w["name"], n=len(w["x"]),
                         images_per_s={k: len(w["x"]) / t for k, t in times.items()}))
    return rows


def scaling_table(w: dict[str, Any], quick: bool, repeats: int) -> list[dict[str, Any]]:
    """Native PGD (all steps) time vs number of examples and vs steps."""
    data = w["data"]
    x_all, y_all = data.x_test, data.y_test.astype(np.int64)
    sizes = (8, 16, 32) if quick else (250, 500, 1000, 2000)
    step_counts = (2, 4) if quick else (10, 20, 40, 80)
    base_n, base_steps = sizes[-2], step_counts[-2]
    rows = []
    for n in sizes:
        t = median_time(native_pgd_fn(w["model"], x_all[:n], y_all[:n], 0.1, base_steps),
                        repeats)[0]
        rows.append(dict(n=n, steps=base_steps, seconds=t,
                         us_per_example_step=1e6 * t / (n * base_steps)))
    for steps in step_counts:
        t = median_time(native_pgd_fn(w["model"], x_all[:base_n], y_all[:base_n], 0.1, steps),
                        repeats)[0]
        rows.append(dict(n=base_n, steps=steps, seconds=t,
                         us_per_example_step=1e6 * t / (base_n * steps)))
    return rows


def training_table(data: Any, quick: bool, repeats: int) -> dict[str, Any]:
    """Epoch time of standard, FGSM-RS and PGD-10 training (robustlab, inside Keras fit) vs
    ART's AdversarialTrainerMadryPGD, same model, data, batch size and ε."""
    import keras
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import TensorFlowV2Classifier

    from robustlab.models import build_model
    from robustlab.training import AdversarialModel, TrainingConfig, training_dataset

    x, y = data.x_train, data.y_train.astype(np.int64)
    if quick:
        x, y = x[:512], y[:512]
    eps, steps, batch = 0.3, 10, 128
    warm = slice(0, 256)

    def model() -> Any:
        return build_model(data.input_shape, data.num_classes, seed=0)

    full, part = training_dataset(x, y, batch), training_dataset(x[warm], y[warm], batch)

    def keras_epoch(m: Any) -> Callable[[], Any]:
        m.fit(part, epochs=1, verbose=0, shuffle=False)  # trace and compile
        return lambda: m.fit(full, epochs=1, verbose=0, shuffle=False)

    plain = model()
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    times = {"standard": median_time(keras_epoch(plain), repeats, warmup=False)[0]}
    for name, method in (("fgsm_rs", "fgsm_rs"), ("pgd10", "pgd")):
        trainer = AdversarialModel(model(), TrainingConfig(method, epsilon=eps, steps=steps))
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        times[name] = median_time(keras_epoch(trainer), repeats, warmup=False)[0]
    net = model()
    clf = TensorFlowV2Classifier(
        model=net, nb_classes=data.num_classes, input_shape=data.input_shape,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.Adam(1e-3), clip_values=(0.0, 1.0))
    onehot = np.eye(data.num_classes, dtype=np.float32)[y]
    art = AdversarialTrainerMadryPGD(clf, nb_epochs=1, batch_size=batch, eps=eps,
                                     eps_step=2.5 * eps / steps, max_iter=steps)
    art.fit(x[warm], onehot[warm])  # trace
    # ART epochs are slow (about a minute on 2 cores): timed once
    times["art_pgd10"] = median_time(lambda: art.fit(x, onehot), 1, warmup=False)[0]
    print("  training epochs: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()),
          flush=True)
    return dict(n=len(x), batch_size=batch, epsilon=eps, steps=steps, seconds=times,
                pgd10_vs_art=times["art_pgd10"] / times["pgd10"],
                pgd10_vs_standard=times["pgd10"] / times["standard"])


def budget_table(data: Any, quick: bool) -> dict[str, Any]:
    """PGD-AT on MNIST-8k for a fixed training time, then clean and PGD-100 x 10 restarts
    accuracy at ε = 0.3 on the 2,000 test images."""
    from robustlab import AttackSpec, evaluate
    from robustlab.models import build_model
    from robustlab.training import train_adversarial

    budget, eps = (5.0, 0.3) if quick else (300.0, 0.3)
    model = build_model(data.input_shape, data.num_classes, seed=0)
    sub = data.subset(n_train=512, n_test=64, seed=0) if quick else data
    model, info = train_adversarial(model, sub, method="pgd", epsilon=eps, steps=10,
                                    ramp_epochs=3, epochs=200, batch_size=64, seed=0,
                                    max_seconds=budget)
    steps, restarts = (10, 2) if quick else (100, 10)
    res = evaluate(model, sub, [AttackSpec("pgd", steps=steps, restarts=restarts)],
                   f"0, {eps}", seed=0, n_show=0)
    out = dict(budget_seconds=budget, trained_seconds=info.seconds,
               epochs=len(info.history["loss"]), epsilon=eps, attack=f"PGD-{steps}×{restarts}",
               n_test=res.n_examples, clean=res.clean_accuracy,
               robust=res.worst_case.points[-1].accuracy,
               robust_ci=[res.worst_case.points[-1].ci_low, res.worst_case.points[-1].ci_high],
               eval_seconds=res.seconds)
    print(f"  budget: {out['epochs']} epochs, clean {out['clean']:.4f}, robust "
          f"{out['robust']:.4f}", flush=True)
    return out


def _rss(field: str) -> int:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``), bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_probe(n: int, steps: int) -> None:
    """Child process: train briefly, then evaluate ``n`` MNIST images (train and test images
    together when ``n`` exceeds the test split; only memory is measured); print the resident
    memory before the evaluation and its peak during it (the peak is reset first)."""
    from robustlab import AttackSpec, evaluate, load
    from robustlab.models import build_model
    from robustlab.training import train

    data = load(f"idx:{MNIST_DIR}", split=8000)
    model = build_model(data.input_shape, data.num_classes, seed=0)
    train(model, data, epochs=1, seed=0)
    x = np.concatenate([data.x_test, data.x_train])[:n]
    y = np.concatenate([data.y_test, data.y_train])[:n]
    before = _rss("VmRSS")
    try:  # Linux >= 4.0: writing 5 resets the peak (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass
    result = evaluate(model, (x, y), [AttackSpec("fgsm"), AttackSpec("pgd", steps=steps)],
                      "0, 0.1, 0.3", seed=0)
    print(json.dumps({"n": result.n_examples, "rss_before_bytes": before,
                      "peak_rss_bytes": _rss("VmHWM"), "steps": steps,
                      "process_peak_bytes": resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "seconds": result.seconds}))


def memory_table(quick: bool) -> dict[str, Any]:
    n, steps = (500, 4) if quick else (10_000, 40)
    proc = subprocess.run([sys.executable, __file__, "--memory-probe", str(n), str(steps)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the report


def indented_json(res: dict[str, Any]) -> str:
    """The JSON text of tabular.py's and autoattack.py's results (indent 1, in insertion
    order, ``str`` for anything JSON has no type for)."""
    return json.dumps(res, indent=1, default=str)


def write_results(out: Path, markdown: str, res: dict[str, Any], *,
                  dumps: Callable[[dict[str, Any]], str] | None = None) -> Path:
    """Write a benchmark's ``markdown`` to ``out`` and its ``res`` to ``out`` with the suffix
    ``.json``, each atomically (``robustlab._io``: a reader never sees half a file). The JSON
    is ``robustlab._io.write_json``'s (sorted keys, indent 2, NaN refused) unless ``dumps``
    gives the text. Returns the JSON's path."""
    from robustlab._io import write_json, write_text

    json_path = out.with_suffix(".json")
    write_text(out, markdown)
    if dumps is None:
        write_json(json_path, res)
    else:
        write_text(json_path, dumps(res))
    return json_path


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal (0.1234 -> "12.3")."""
    return f"{100 * value:.1f}"


def written_by(script: str, res: dict[str, Any]) -> str:
    """The first line under a results file's title: which script wrote it, when and where."""
    m = res["machine"]
    device = m["device"]
    shown = f"{device['type']} ({device['name']})" if isinstance(device, dict) else device
    return (f"Written by `benchmarks/{script}` on {m['date']} ({m['cpus']} CPUs, "
            f"{m['processor'] or m['platform']}, device {shown})."
            f"{' Quick run (tiny sizes).' if res['quick'] else ''}")


def section_args(description: str, sections: tuple[str, ...], out: Path,
                 argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The command line of a benchmark run in sections: ``--quick``, ``--sections`` (checked
    against ``sections``) and ``--out`` (default ``out``). Returns the arguments and the
    sections wanted."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="digits, tiny sizes (a smoke run)")
    parser.add_argument("--sections", default=",".join(sections),
                        help=f"comma-separated subset of {','.join(sections)} (default: all)")
    parser.add_argument("--out", type=Path, default=out)
    args = parser.parse_args(argv)
    want = [s for s in args.sections.split(",") if s]
    unknown = set(want) - set(sections)
    if unknown:
        parser.error(f"unknown --sections {sorted(unknown)}; expected some of {sections}")
    return args, want


def merged(previous: Path, res: dict[str, Any], want: list[str], sections: tuple[str, ...],
           same: str) -> dict[str, Any]:
    """A partial rerun (``--sections``) on top of the results already in ``previous``: its
    sections replace theirs, the rest is kept (only when ``quick`` and the field ``same``,
    the data, agree), and ``reruns`` records what was rerun when. Without such a file (or
    with every section rerun): ``res`` itself."""
    if set(want) == set(sections) or not previous.exists():
        return res
    old = json.loads(previous.read_text(encoding="utf-8"))
    if old.get("quick") != res["quick"] or old.get(same) != res[same]:
        logging.getLogger("benchmarks").info("not merging into %s: other data or mode",
                                             previous)
        return res
    logging.getLogger("benchmarks").info("keeping the sections not rerun from %s", previous)
    out = {**old, **{k: res[k] for k in want}}
    # an earlier rerun of only these sections is superseded
    earlier = [r for r in old.get("reruns", []) if not set(r["sections"].split(",")) <= set(want)]
    out["reruns"] = [*earlier, {"sections": ",".join(want), "date": res["machine"]["date"],
                                "seconds": res["seconds"]}]
    out["sections"] = old.get("sections") if set(sections) - set(want) <= set(old) \
        else res["sections"]
    return out


def machine() -> dict[str, Any]:
    from robustlab._env import device_info, package_versions

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "device": device_info(), "versions": package_versions(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# robustlab benchmarks", "",
             f"Written by `benchmarks/bench.py{' --quick' if res['quick'] else ''}"
             f"{' --sections ' + res['sections'] if res.get('sections') else ''}` on "
             f"{m['date']} (median of {res['repeats']} runs after a warm-up).", "",
             "## Machine", "",
             f"- {m['platform']}, {m['cpus']} CPUs, {m['memory_gib']} GiB; device: "
             f"{m['device']['type']} ({m['device']['name']})",
             "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    if res["device_note"]:
        lines += [f"**{res['device_note']}**", ""]
    lines += [OTHER_RESULTS, ""]
    lines += distributed_summary(ROOT / "benchmarks" / "DISTRIBUTED.json")
    if res["mnist_missing"]:
        lines += [f"**MNIST rows skipped: {res['mnist_missing']}.**", ""]
    if res.get("per_step"):
        lines += _engine_lines(res["per_step"])
    lines += _rest_lines(res)
    return "\n".join(lines) + "\n"


def distributed_summary(path: Path) -> list[str]:
    """The headline of ``benchmarks/distributed.py``'s latest results (its file has the
    method and the tables): the path's overhead on one device and the predicted scaling."""
    if not path.exists():
        return []
    d = json.loads(path.read_text(encoding="utf-8"))
    o, p = d.get("overhead"), d.get("prediction")
    if not o or not p:
        return []
    train4 = next((row["speedup"] for row in p["training"] if row["replicas"] == 4), {})
    return ["## tf.distribute (from DISTRIBUTED.md)", "",
            f"- overhead of the distributed path on one device (target ≤ {o['target']:.2f}): "
            f"`evaluate` {o['evaluate']['ratio']:.3f}×, a PGD-AT epoch "
            f"{o['train']['ratio']:.3f}×; per-example outcomes identical: "
            f"{'yes' if o['evaluate']['identical_outcomes'] else 'NO'} "
            f"({d['machine']['date']})",
            f"- evaluation scales with the attack batches of a call: N_max = {p['n_max']} for "
            f"the measured workload, {p['imagenet']['n_max']} for a "
            f"{p['imagenet']['n']:,}-image evaluation in batches of {p['imagenet']['batch']}",
            "- training, 4 replicas at global batch 128 (predicted): "
            + ", ".join(f"{k} {v:.1f}×" for k, v in train4.items())
            + "; efficiency below 50 % at "
            + ", ".join(f"{k} N = {v}" for k, v in p["half_efficiency_at"].items() if v), ""]


def _engine_lines(per_step: list[dict[str, Any]]) -> list[str]:
    lines = ["## PGD step cost vs the forward+backward floor", "",
              "L∞ PGD with a random start, every step on every example (native with "
              "`early_stop=False`, so it does the peers' work). ms per step for the whole "
              "batch; in brackets the ratio to the floor (the same number of separate calls "
              "of one compiled input-gradient function; on tiny inputs their dispatch shows, "
              "which native's multi-step calls avoid).", "",
              "| workload | N | steps | floor ms | native | CleverHans | ART | "
              "native vs CH | native vs ART |", "|---|---|---|---|---|---|---|---|---|"]
    for r in per_step:
        ms, vf, sp = r["ms_per_step"], r["vs_floor"], r["native_speedup"]
        lines.append(
            f"| {r['workload']} | {r['n']} | {r['steps']} | {ms['floor']:.1f} | "
            f"{ms['native']:.1f} ({vf['native']:.3f}×) | {ms['cleverhans']:.1f} "
            f"({vf['cleverhans']:.3f}×) | {ms['art']:.1f} ({vf['art']:.3f}×) | "
            f"{sp['cleverhans']:.2f}× faster | {sp['art']:.2f}× faster |")
    lines += ["", "The same attacks end to end, native with its defaults (early stop: examples "
              "leave the batch once fooled; the output is identical, see tests/test_engine.py)"
              ":", "", "| workload | ε | fooled | native s | native vs CH | native vs ART |",
              "|---|---|---|---|---|---|"]
    for r in per_step:
        sp = r["default_speedup"]
        lines.append(f"| {r['workload']} | {r['eps']:.3g} | {r['fooled']:.0%} | "
                     f"{r['ms_per_step']['native_default'] * r['steps'] / 1000:.2f} | "
                     f"{sp['cleverhans']:.2f}× faster | {sp['art']:.2f}× faster |")
    return lines


def _rest_lines(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    c = res.get("curve")
    if c:
        s = c["seconds"]
        pts = c["points"]
        above = [p for p in pts if p["native"] > p["cleverhans"]]
        lines += ["", "## Robustness curve", "",
                  f"{len(pts)} ε values × PGD-{c['steps']} (1 random start) on the last "
                  f"{c['n']} images of {c['workload']} (clean accuracy {c['clean']:.2%}). "
                  "Native: `evaluate` (ε in increasing order, examples already fooled not "
                  "attacked again, early stop); native independent: the same with "
                  "`reuse=False`; CleverHans: `projected_gradient_descent` on all images at "
                  f"each ε. Accuracies are means over the {res['repeats']} timed runs, each "
                  "with new random starts (range in brackets).", "",
                  f"- native curve **{s['native']:.1f} s**; native independent per ε "
                  f"{s['independent']:.1f} s; CleverHans per ε {s['cleverhans']:.1f} s",
                  f"- native curve is **{c['speedup_vs_cleverhans']:.2f}× faster than "
                  f"CleverHans** ({c['speedup_vs_independent']:.2f}× from reuse alone)",
                  f"- bound for any exact curve: the examples that stay robust cost "
                  f"{c['exact_bound_seconds']:.1f} s at the floor (one full PGD run: "
                  f"{c['floor_run_seconds']:.2f} s × Σ robust fraction), so no exact curve "
                  f"can be more than **{c['exact_bound_vs_cleverhans']:.2f}×** faster than "
                  "CleverHans on this model and grid",
                  f"- reuse never above the independent native runs (same seeds): "
                  f"**{'yes' if c['never_above_independent'] else 'NO'}**",
                  "- native mean robust accuracy ≤ CleverHans mean at every ε: "
                  + ("**yes**" if not above else "**no** at ε " + ", ".join(
                      f"{p['epsilon']:g} (+{100 * (p['native'] - p['cleverhans']):.2f} pt)"
                      for p in above)), "",
                  "| ε | native | native independent | CleverHans | examples attacked |",
                  "|---|---|---|---|---|"]

        def cell(p: dict[str, Any], k: str) -> str:
            lo, hi = p[f"{k}_range"]
            return f"{p[k]:.2%} [{lo:.2%}, {hi:.2%}]"

        for p in pts:
            lines.append(f"| {p['epsilon']:g} | {cell(p, 'native')} | "
                         f"{cell(p, 'independent')} | {cell(p, 'cleverhans')} | "
                         f"{p['attacked']} |")
    if res.get("fgsm"):
        lines += ["", "## FGSM throughput (images/s)", "",
                  "| workload | N | native | CleverHans | ART |", "|---|---|---|---|---|"]
        for r in res["fgsm"]:
            ips = r["images_per_s"]
            lines.append(f"| {r['workload']} | {r['n']} | {ips['native']:,.0f} | "
                         f"{ips['cleverhans']:,.0f} | {ips['art']:,.0f} |")
    if res.get("scaling"):
        lines += ["", f"## Scaling (native PGD, all steps, {res['scaling_workload']})", "",
                  "| N | steps | seconds | µs per example-step |", "|---|---|---|---|"]
        for r in res["scaling"]:
            lines.append(f"| {r['n']} | {r['steps']} | {r['seconds']:.2f} | "
                         f"{r['us_per_example_step']:.1f} |")
    tr = res.get("training")
    if tr:
        t = tr["seconds"]
        lines += ["", "## Adversarial training epochs", "",
                  f"One epoch over {tr['n']:,} MNIST images, batch {tr['batch_size']}, "
                  f"ε = {tr['epsilon']}, same model; robustlab inside Keras `fit` (the standard "
                  "epoch too, over the same `training_dataset` pipeline), ART's "
                  "`AdversarialTrainerMadryPGD` (timed once: its epochs are long).", "",
                  "| standard (Keras fit) | FGSM-RS | PGD-10 | ART PGD-10 | PGD-10 vs ART | "
                  "PGD-10 vs standard |", "|---|---|---|---|---|---|",
                  f"| {t['standard']:.1f} s | {t['fgsm_rs']:.1f} s | {t['pgd10']:.1f} s | "
                  f"{t['art_pgd10']:.1f} s | {tr['pgd10_vs_art']:.2f}× faster | "
                  f"{tr['pgd10_vs_standard']:.2f}× the time |"]
    bud = res.get("budget")
    if bud:
        lo, hi = bud["robust_ci"]
        lines += ["", "## A hardened MNIST-8k model in a fixed training time", "",
                  f"PGD-AT (PGD-10, ε ramped over 3 epochs to {bud['epsilon']}) for "
                  f"{bud['budget_seconds']:.0f} s of training: {bud['epochs']} epochs in "
                  f"{bud['trained_seconds']:.0f} s. On {bud['n_test']:,} test images: clean "
                  f"**{bud['clean']:.2%}**, {bud['attack']} at ε = {bud['epsilon']}: "
                  f"**{bud['robust']:.2%}** [{lo:.2%}, {hi:.2%}] (evaluation "
                  f"{bud['eval_seconds']:.0f} s)."]
    mem = res.get("memory")
    if mem:
        lines += ["", "## Peak memory", "",
                  f"`evaluate` of FGSM + PGD-{mem['steps']} at ε 0.1 and 0.3 on {mem['n']:,} "
                  f"MNIST images "
                  f"with the automatic batch size, in a fresh process: peak resident memory "
                  f"during the evaluation **{mem['peak_rss_bytes'] / 2**30:.2f} GiB**, of "
                  f"which {mem['rss_before_bytes'] / 2**30:.2f} GiB was resident before it "
                  f"(Python, TensorFlow, the data, the model); the process's peak including "
                  f"the one-epoch training before: {mem['process_peak_bytes'] / 2**30:.2f} "
                  f"GiB. {mem['seconds']:.0f} s."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 3)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; "
                             "benchmarks/RESULTS.md is always written by a full run)")
    parser.add_argument("--memory-probe", type=int, nargs=2, default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        memory_probe(*args.memory_probe)
        return 0

    repeats = args.repeats or (1 if args.quick else 3)
    res: dict[str, Any] = {"quick": args.quick, "repeats": repeats, "machine": machine()}
    res["device_note"] = None if res["machine"]["device"]["type"] == "GPU" else \
        "No GPU on this machine: GPU figures (target: ≥3× faster than CleverHans on the small " \
        "models) were not measured."
    want = set(args.sections.split(","))
    res["sections"] = None if want == set(SECTIONS) else args.sections
    unknown = want - set(SECTIONS)
    if unknown:
        parser.error(f"unknown --sections {sorted(unknown)}; expected some of {SECTIONS}")
    print("training / building models", flush=True)
    loads, res["mnist_missing"] = workloads(args.quick)
    curve_load = loads[1] if not res["mnist_missing"] else loads[0]
    if "engine" in want:
        print("per-step cost", flush=True)
        res["per_step"] = per_step_table(loads, repeats)
    if "curve" in want:
        print("robustness curve", flush=True)
        res["curve"] = curve_table(
            curve_load, CURVE_EPSILONS[:3] if args.quick else CURVE_EPSILONS,
            steps=4 if args.quick else 40, n=64 if args.quick else 2000, repeats=repeats)
    if "fgsm" in want:
        print("FGSM throughput", flush=True)
        res["fgsm"] = fgsm_table(loads, repeats)
    if "scaling" in want:
        print("scaling", flush=True)
        res["scaling_workload"] = curve_load["name"]
        res["scaling"] = scaling_table(curve_load, args.quick, repeats)
    if not res["mnist_missing"]:
        if "training" in want:
            print("adversarial training", flush=True)
            res["training"] = training_table(loads[1]["data"], args.quick, repeats)
        if "budget" in want:
            res["budget"] = budget_table(loads[1]["data"], args.quick)
        if "memory" in want:
            print("peak memory", flush=True)
            res["memory"] = memory_table(args.quick)
    out = Path(args.out)
    write_results(out, markdown(res), res)
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
