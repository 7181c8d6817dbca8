"""GPU check (issue 19): robustlab's PGD engine on a GPU, XLA on vs off, mixed precision on vs
off, native vs CleverHans 4 vs ART, and one epoch of PGD adversarial training, in one run.

Run it through the one-command check from the project root; that script refuses to run
without a GPU (unless ``--quick``), prints ``nvidia-smi`` and stops the run at 5 minutes::

    bash benchmarks/gpu_check.sh                  # writes benchmarks/GPU.md and GPU.json
    bash benchmarks/gpu_check.sh --quick --out /tmp/GPU.md   # tiny sizes, on a CPU too

or directly: ``.venv/bin/python benchmarks/gpu.py [--quick] [--repeats N] [--out PATH]``.

Workloads: the MNIST-8k CNN (:func:`robustlab.build_model` for 28×28×1, trained one epoch on
the first 8,000 images of the MNIST test split beside the project,
``../shared/datasets/mnist-t10k``; attacked on the other 2,000; where that split is absent,
an untrained CNN on uniform random images of the same shape, and the results say so) and the
ResNet (:func:`robustlab.models.build_resnet`, width 32, untrained, 32×32×3 uniform random
images, as ``benchmarks/bench.py`` does). ε = 0.1 (MNIST) and 8/255 (ResNet).

Measured per workload, each the median of ``--repeats`` runs after one untimed warm-up (so
tracing and XLA compilation are excluded for every implementation alike), as ms per PGD step
for the whole batch:

- PGD-40 L∞ with a random start, step 2.5·ε/40, every step on every example: native with XLA
  (``jit_compile=True``) and without, CleverHans' ``projected_gradient_descent``, ART's
  ``ProjectedGradientDescent``; and the floor, the same number of forward+backward passes
  through one compiled input-gradient function (``bench.floor_fn``, without XLA);
- native PGD-40 with the model built in float32 and with Keras' ``mixed_float16`` policy
  (``build_model(..., mixed_precision=True)``: float16 compute, float32 weights and logits;
  same weights), XLA as the device's default;
- one epoch of PGD-AT on the MNIST-8k CNN (8,000 images, batch 128, PGD-10 at ε = 0.3,
  :class:`robustlab.training.AdversarialModel` inside Keras ``fit``, XLA as the device's
  default), after a warm-up epoch over 2 full batches and one of the epoch's last size, so
  the timed epoch compiles nothing.

The ratios compare native PGD with XLA as the device's default (on a GPU: on) against each
peer. Targets (issue 19), judged on a GPU only and not on a ``--quick`` run: native PGD at
least 3× faster than CleverHans on the small CNN and 1.5× on the ResNet. A CPU run writes
"not a GPU: not judged". The exit status is 4 when a judged target fails (the results are
written all the same), else 0.

Sizes and time: on a GPU 2,000 MNIST and 512 ResNet images, 5 repeats; on one H200-class GPU
the whole run is expected to take about 2 minutes (most of it TensorFlow's start, the one
training epoch before the MNIST rows and XLA compilation), well inside the 5 minutes
``gpu_check.sh`` allows. Without a GPU the full run uses 1,000 MNIST and 128 ResNet images,
3 repeats, and takes tens of minutes on a small CPU (it warns); ``--quick`` (32 and 8 images,
a width-8 ResNet, PGD-4, 512 training images, 1 repeat) takes about a minute on 2 CPU cores
and only shows that everything runs.

Where it can run: a GPU host with TensorFlow built for CUDA, i.e. where
``pip install "tensorflow[and-cuda]==<the venv's version>"`` works (``gpu_check.sh`` does
that when ``nvidia-smi`` works and TensorFlow sees no GPU), or an image prepared with it. The
GPU machine lent to this project has no TensorFlow installed and cannot reach PyPI, so the
check cannot run there as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import (  # noqa: E402
    MNIST_DIR,
    art_pgd_fn,
    cleverhans_pgd_fn,
    floor_fn,
    machine,
    median_time,
    native_pgd_fn,
    step_size,
    trained_model,
    write_results,
    written_by,
)

# the targets of issue 19: native PGD's speed-up over CleverHans, per workload
TARGETS = {"mnist": 3.0, "resnet": 1.5}
NOT_GPU = "not a GPU: not judged"
QUICK_RUN = "quick run (tiny sizes): not judged"
TARGET_FAILED = 4  # the exit status when a judged target fails (gpu_check.sh reports it)
EPSILON = {"mnist": 0.1, "resnet": 8 / 255}
# PGD-AT: the epoch of issue 19
AT_BATCH, AT_STEPS, AT_EPSILON = 128, 10, 0.3
IMPLEMENTATIONS = ("floor", "native_xla", "native_no_xla", "cleverhans", "art")


@dataclass(frozen=True)
class Sizes:
    """How big a run is: attacked images per workload, PGD steps, repeats, ResNet width and
    the PGD-AT epoch's training images (None: all 8,000)."""

    mnist_n: int
    resnet_n: int
    resnet_width: int
    steps: int
    repeats: int
    at_n: int | None


SIZES = {"gpu": Sizes(2000, 512, 32, 40, 5, None),
         "cpu": Sizes(1000, 128, 32, 40, 3, None),
         "quick": Sizes(32, 8, 8, 4, 1, 512)}


@contextlib.contextmanager
def xla(on: bool) -> Iterator[None]:
    """``ROBUSTLAB_JIT`` set to ``on`` for the block (robustlab reads it at every attack call;
    ``bench.native_pgd_fn`` has no ``jit_compile`` argument), restored afterwards."""
    before = os.environ.get("ROBUSTLAB_JIT")
    os.environ["ROBUSTLAB_JIT"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["ROBUSTLAB_JIT"]
        else:
            os.environ["ROBUSTLAB_JIT"] = before


def with_xla(fn: Callable[[], Any], on: bool) -> Callable[[], Any]:
    """``fn`` run with XLA ``on`` (see :func:`xla`)."""
    def run() -> Any:
        with xla(on):
            return fn()
    return run


# ---------------------------------------------------------------------------------------------
# workloads


def mnist_data(quick: bool) -> tuple[Any, str | None]:
    """MNIST-8k (8,000 train / 2,000 test images), or uniform random images of its shape and
    the reason why when the MNIST test split is not beside the project."""
    from robustlab import load
    from robustlab.data import Dataset

    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        data = load(f"idx:{MNIST_DIR}", split=8000)
        return (data.subset(n_train=512, seed=0) if quick else data), None
    rng = np.random.default_rng(0)
    n_train = 512 if quick else 8000
    data = Dataset(name="synthetic 28x28x1", source="uniform random, seed 0",
                   x_train=rng.uniform(size=(n_train, 28, 28, 1)).astype(np.float32),
                   y_train=rng.integers(0, 10, size=n_train),
                   x_test=rng.uniform(size=(2000, 28, 28, 1)).astype(np.float32),
                   y_test=rng.integers(0, 10, size=2000),
                   class_names=tuple(str(k) for k in range(10)))
    return data, (f"MNIST test split not found at {MNIST_DIR}: the small-CNN rows use an "
                  "untrained CNN on uniform random images of MNIST's shape (28x28x1), and "
                  "the PGD-AT epoch trains on them")


def workloads(data: Any, synthetic: bool, sizes: Sizes) -> list[dict[str, Any]]:
    """The two workloads: key, name, model, a builder of the same architecture with or
    without mixed precision (:func:`pgd_row` copies the weights over), the attacked images
    and labels."""
    from robustlab.models import build_model, build_resnet

    if synthetic:
        cnn = build_model(data.input_shape, data.num_classes, seed=0)
    else:
        cnn = trained_model("MNIST-8k CNN", data, 1)

    def cnn_like(mixed: bool) -> Any:
        return build_model(data.input_shape, data.num_classes, seed=0, mixed_precision=mixed)

    def resnet_like(mixed: bool) -> Any:
        return build_resnet((32, 32, 3), 10, width=sizes.resnet_width, seed=0,
                            mixed_precision=mixed)

    rng = np.random.default_rng(0)
    n, width = sizes.resnet_n, sizes.resnet_width
    name = "MNIST-8k CNN (28x28x1)" if not synthetic else \
        "small CNN (28x28x1, synthetic, untrained)"
    return [
        dict(key="mnist", name=name, model=cnn, like=cnn_like, synthetic=synthetic,
             x=data.x_test[:sizes.mnist_n], y=data.y_test[:sizes.mnist_n].astype(np.int64)),
        dict(key="resnet", name=f"ResNet w{width} (32x32x3, synthetic, untrained)",
             model=resnet_like(False), like=resnet_like, synthetic=True,
             x=rng.uniform(size=(n, 32, 32, 3)).astype(np.float32),
             y=rng.integers(0, 10, size=n).astype(np.int64)),
    ]


# ---------------------------------------------------------------------------------------------
# measurements


def pgd_row(w: dict[str, Any], steps: int, repeats: int, jit_default: bool) -> dict[str, Any]:
    """Per-step cost of PGD-``steps`` for every implementation on one workload, the ratios
    of native (XLA as the device's default) to the peers, XLA's own speed-up, and native PGD
    in float32 vs ``mixed_float16``."""
    m, x, y, eps = w["model"], w["x"], w["y"], EPSILON[w["key"]]
    fns = {"floor": floor_fn(m, x, y, steps),
           "native_xla": with_xla(native_pgd_fn(m, x, y, eps, steps), True),
           "native_no_xla": with_xla(native_pgd_fn(m, x, y, eps, steps), False),
           "cleverhans": cleverhans_pgd_fn(m, x, y, eps, steps),
           "art": art_pgd_fn(m, x, y, eps, steps)}
    seconds = {}
    for k, fn in fns.items():
        seconds[k] = median_time(fn, repeats)[0]
        print(f"  {w['key']} {k}: {1000 * seconds[k] / steps:.2f} ms/step", flush=True)
    native = "native_xla" if jit_default else "native_no_xla"

    mixed = w["like"](True)
    mixed.set_weights(m.get_weights())
    mp_seconds = median_time(with_xla(native_pgd_fn(mixed, x, y, eps, steps), jit_default),
                             repeats)[0]
    print(f"  {w['key']} native mixed_float16: {1000 * mp_seconds / steps:.2f} ms/step",
          flush=True)
    return dict(
        workload=w["name"], key=w["key"], synthetic=w["synthetic"], n=len(x), steps=steps,
        eps=eps, step_size=step_size(eps, steps),
        ms_per_step={k: 1000 * t / steps for k, t in seconds.items()},
        vs_floor={k: t / seconds["floor"] for k, t in seconds.items()},
        native=native,
        speedup={k: seconds[k] / seconds[native] for k in ("cleverhans", "art")},
        xla_speedup=seconds["native_no_xla"] / seconds["native_xla"],
        mixed_precision=dict(
            xla=jit_default,
            ms_per_step={"float32": 1000 * seconds[native] / steps,
                         "mixed_float16": 1000 * mp_seconds / steps},
            speedup=seconds[native] / mp_seconds),
        target=TARGETS[w["key"]])


def pgd_at_epoch(data: Any, n: int | None, repeats: int, jit_default: bool) -> dict[str, Any]:
    """Seconds per epoch of PGD-AT (PGD-10, ε 0.3, batch 128) on the small CNN, inside
    Keras ``fit`` over robustlab's ``training_dataset``, as ``bench.training_table`` does."""
    import keras

    from robustlab.models import build_model
    from robustlab.training import AdversarialModel, Method, TrainingConfig, training_dataset

    x, y = data.x_train[:n], data.y_train[:n].astype(np.int64)
    # the warm-up compiles both batch shapes the timed epoch has: full and the last one
    warm = slice(0, 2 * AT_BATCH + len(x) % AT_BATCH)
    trainer = AdversarialModel(build_model(data.input_shape, data.num_classes, seed=0),
                               TrainingConfig(Method.PGD, epsilon=AT_EPSILON, steps=AT_STEPS))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(training_dataset(x[warm], y[warm], AT_BATCH), epochs=1, verbose=0,
                shuffle=False)
    full = training_dataset(x, y, AT_BATCH)
    seconds = median_time(lambda: trainer.fit(full, epochs=1, verbose=0, shuffle=False),
                          repeats, warmup=False)[0]
    print(f"  PGD-AT epoch: {seconds:.2f} s", flush=True)
    return dict(n=len(x), batch_size=AT_BATCH, steps=AT_STEPS, epsilon=AT_EPSILON,
                xla=jit_default, seconds_per_epoch=seconds,
                images_per_s=len(x) / seconds)


def distributed_row(w: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The tf.distribute path on this device: ``evaluate`` (PGD-40 at two ε) plain vs under
    ``MirroredStrategy`` of the one first device (its model copies, threads and gathers
    included): the per-example outcomes must be identical, and the time ratio is the path's
    overhead (target ≤ 1.05)."""
    import tensorflow as tf

    import robustlab as rl

    device = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0]
    one = tf.distribute.MirroredStrategy([device.name])
    x, y = w["x"], w["y"]

    def run(strategy: Any) -> Any:
        return rl.evaluate(w["model"], (x, y), "pgd", "0, 0.05, 0.1", checks=False, seed=0,
                           strategy=strategy)

    plain, mirrored = run(None), run(one)  # warm-up (traces), and the outcomes compared
    same = bool(np.array_equal(plain.robust_mask, mirrored.robust_mask))
    t_plain = median_time(lambda: run(None), repeats, warmup=False)[0]
    t_one = median_time(lambda: run(one), repeats, warmup=False)[0]
    print(f"  distributed path: plain {t_plain:.2f} s, 1 replica {t_one:.2f} s, identical "
          f"outcomes {same}", flush=True)
    return dict(workload=w["name"], n=len(x), device=device.name, plain_seconds=t_plain,
                one_replica_seconds=t_one, ratio=t_one / t_plain, identical=same)


def verdict(rows: list[dict[str, Any]], device: str, quick: bool) -> dict[str, Any]:
    """PASS / FAIL per workload against issue 19's targets, judged on a GPU only (and not on
    a quick run); the overall status is the worst."""
    reason = NOT_GPU if device != "GPU" else QUICK_RUN if quick else None
    per = {}
    for r in rows:
        ok = r["speedup"]["cleverhans"] >= r["target"]
        per[r["key"]] = reason or ("PASS" if ok else "FAIL")
    status = reason or ("PASS" if all(v == "PASS" for v in per.values()) else "FAIL")
    return {"judged": reason is None, "status": status, "workloads": per}


# ---------------------------------------------------------------------------------------------
# the report

NAMES = {"native_xla": "native, XLA", "native_no_xla": "native, no XLA",
         "cleverhans": "CleverHans", "art": "ART"}


def markdown(res: dict[str, Any]) -> str:
    m, v = res["machine"], res["verdict"]
    dev = m["device"]
    lines = ["# GPU check: XLA, mixed precision, native vs CleverHans vs ART, PGD-AT", "",
             written_by("gpu.py", res).rstrip(), "",
             f"- device: **{dev['type']}** ({dev['name']}, {dev['count']}); XLA by default: "
             f"**{'on' if res['xla_default'] else 'off'}**; median of {res['repeats']} runs "
             f"after a warm-up; whole run {res['seconds']:.0f} s",
             "- " + ", ".join(f"{k} {val}" for k, val in m["versions"].items()), ""]
    if res["device_warning"]:
        lines += [f"**{res['device_warning']}**", ""]
    if res["mnist_missing"]:
        lines += [f"**{res['mnist_missing']}.**", ""]
    lines += ["## Verdict", "",
              f"Targets (issue 19): native PGD ≥ {TARGETS['mnist']:g}× faster than CleverHans "
              f"on the small CNN, ≥ {TARGETS['resnet']:g}× on the ResNet. "
              f"**{v['status']}**", ""]
    for r in res["pgd"]:
        lines.append(f"- {r['workload']}: {r['speedup']['cleverhans']:.2f}× vs CleverHans "
                     f"(target {r['target']:g}×): **{v['workloads'][r['key']]}**")
    lines += ["", "## PGD step cost", "",
              "L∞ PGD with a random start, every step on every example (native with "
              "`early_stop=False`). ms per step for the whole batch; in brackets the ratio to "
              "the floor (separate calls of one compiled input-gradient function, without "
              "XLA). The speed-ups compare native with XLA as the device's default.", "",
              "| workload | N | steps | floor ms | "
              + " | ".join(NAMES[k] for k in IMPLEMENTATIONS[1:])
              + " | XLA speed-up | native vs CH | native vs ART |",
              "|---|---|---|" + "---|" * (len(IMPLEMENTATIONS) + 3)]
    for r in res["pgd"]:
        ms, vf = r["ms_per_step"], r["vs_floor"]
        cells = [f"{ms['floor']:.2f}"] + [f"{ms[k]:.2f} ({vf[k]:.2f}×)"
                                          for k in IMPLEMENTATIONS[1:]]
        lines.append(f"| {r['workload']} | {r['n']} | {r['steps']} | " + " | ".join(cells)
                     + f" | {r['xla_speedup']:.2f}× | {r['speedup']['cleverhans']:.2f}× | "
                       f"{r['speedup']['art']:.2f}× |")
    lines += ["", "## Mixed precision (native PGD)", "",
              "The same model and weights built with Keras' `mixed_float16` policy (float16 "
              "compute, float32 weights and logits); XLA as the device's default.", "",
              "| workload | XLA | float32 ms/step | mixed_float16 ms/step | speed-up |",
              "|---|---|---|---|---|"]
    for r in res["pgd"]:
        mp = r["mixed_precision"]
        lines.append(f"| {r['workload']} | {'on' if mp['xla'] else 'off'} | "
                     f"{mp['ms_per_step']['float32']:.2f} | "
                     f"{mp['ms_per_step']['mixed_float16']:.2f} | {mp['speedup']:.2f}× |")
    d = res.get("distributed")
    if d:
        lines += ["", "## The tf.distribute path on this device", "",
                  f"`evaluate` (PGD-40, ε 0, 0.05, 0.1) of the {d['workload']} on {d['n']:,} "
                  f"images, plain vs `MirroredStrategy([\"{d['device']}\"])`: "
                  f"{d['plain_seconds']:.2f} s vs {d['one_replica_seconds']:.2f} s "
                  f"(**{d['ratio']:.3f}×**, target ≤ 1.05); per-example outcomes identical: "
                  f"**{'yes' if d['identical'] else 'NO'}**."]
    at = res["pgd_at"]
    lines += ["", "## One epoch of PGD-AT", "",
              f"{at['n']:,} images of the small CNN's training split, batch {at['batch_size']}, "
              f"PGD-{at['steps']} at ε = {at['epsilon']}, `AdversarialModel` inside Keras "
              f"`fit`, XLA {'on' if at['xla'] else 'off'}: **{at['seconds_per_epoch']:.2f} s "
              f"per epoch** ({at['images_per_s']:,.0f} images/s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: shows that everything runs (about a minute on a CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement (default: 5 on a GPU, 3 on a CPU, "
                             "1 with --quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "GPU.md")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"expected --repeats >= 1, got {args.repeats}")
    started = time.perf_counter()

    from robustlab._env import default_jit_compile

    res: dict[str, Any] = {"quick": args.quick, "machine": machine()}
    device = res["machine"]["device"]["type"]
    sizes = SIZES["quick" if args.quick else "gpu" if device == "GPU" else "cpu"]
    repeats = args.repeats or sizes.repeats
    res["repeats"] = repeats
    res["xla_default"] = default_jit_compile()
    res["device_warning"] = None if device == "GPU" else \
        "No GPU: this check is meant for a GPU; the targets are GPU targets and are not " \
        "judged here."
    if res["device_warning"]:
        print(f"WARNING: {res['device_warning']}"
              + ("" if args.quick else " The full sizes take long on a CPU."), flush=True)
    data, res["mnist_missing"] = mnist_data(args.quick)
    print("building models", flush=True)
    loads = workloads(data, res["mnist_missing"] is not None, sizes)
    res["pgd"] = []
    for w in loads:
        print(f"PGD-{sizes.steps}: {w['name']}, {len(w['x'])} images", flush=True)
        res["pgd"].append(pgd_row(w, sizes.steps, repeats, res["xla_default"]))
    print("the tf.distribute path", flush=True)
    res["distributed"] = distributed_row(loads[0], repeats)
    print("PGD-AT epoch", flush=True)
    res["pgd_at"] = pgd_at_epoch(data, sizes.at_n, repeats, res["xla_default"])
    res["verdict"] = verdict(res["pgd"], device, args.quick)
    res["seconds"] = time.perf_counter() - started
    bad = [k for r in res["pgd"] for k, t in r["ms_per_step"].items()
           if not (math.isfinite(t) and t > 0)]
    if bad:
        raise RuntimeError(f"expected positive finite timings, got others for {bad}")
    json_path = write_results(args.out, markdown(res), res)
    print(f"verdict: {res['verdict']['status']}", flush=True)
    print(f"wrote {args.out} and {json_path}", flush=True)
    return TARGET_FAILED if res["verdict"]["status"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
