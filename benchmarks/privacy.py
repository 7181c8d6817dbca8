"""DP-SGD at the cost of ordinary training (issue 17): speed against standard training and a
per-example loop, the accuracy-privacy frontier on MNIST-8k, and what a membership audit
finds against a non-private and a DP-SGD model, in one run.

Run from the project root::

    .venv/bin/python benchmarks/privacy.py            # writes benchmarks/PRIVACY.md / .json
    .venv/bin/python benchmarks/privacy.py --sections speed   # rerun one part, keep the rest
    .venv/bin/python benchmarks/privacy.py --quick --out /tmp/PRIVACY.md   # digits, ~1 min

Data: the MNIST test split beside the project (``../shared/datasets/mnist-t10k``: the first
8,000 images train, the last 2,000 test); the model is the benchmarks' small CNN
(``build_small_cnn``, about 420k weights). Without MNIST (and with ``--quick``) everything
runs on scikit-learn's 8x8 digits at tiny sizes.

Speed: seconds per epoch (8,000 examples, batch 256; DP-SGD: Poisson batches of expected
size 256, ``ceil(8000/256)`` = 32 steps) of standard training, DP-SGD with ghost clipping (the
default engine for this model), DP-SGD with ``clipping="vectorized"``, all through
``train_adversarial`` (median over the epochs after the first, which compiles), and two
per-example loops: a compiled function computing one example's gradient, called in a Python
loop over the batch, clipping and summing in NumPy; and the same with the clipping and the
sum inside the compiled function; then noise and an Adam step (a few batches timed after a
warm-up, scaled to an epoch; the target is judged against the faster). No maintained Keras/TF
DP-SGD library installs beside TensorFlow 2.21 (tensorflow-privacy 0.9 pins TensorFlow <=
2.15), so the comparisons are standard training (the cost DP-SGD adds) and the loops (the
naive way).

Frontier: DP-SGD (Adam, learning rate 5e-3, l2_clip 1.0, batch 256, δ = 1e-5, RDP
accountant, σ calibrated so that the whole run spends the target ε) at ε = 1, 2, 4, 8 and the
same recipe without DP; accuracy on the 2,000 test images. The recipe, including the epochs
per ε (fewer at small ε, where noise dominates), was fixed before the run and never tuned on
the test images.

Leakage: members and non-members are two disjoint seeded random draws of 2,000 from the
10,000 images (training and test images pooled; the audited models train on the members
only, so every other image is a non-member). Not the 2,000 test images as non-members: MNIST's
t10k split is ordered (its two halves come from different NIST collections and writers), so
its last 2,000 images differ in distribution from the first 8,000 and an attack can tell them
apart with no membership leak at all. A first run with the test images as non-members showed
it: ART's attack reached AUC 0.685 against the ε = 2 model, whose accuracy was the same on
members and non-members (76.8 and 78.4 %), and the loss attack AUC below 0.5.

A non-private CNN overfit on the members (30 epochs, batch 64, Adam 1e-3) and a DP-SGD CNN at
ε = 2 (δ = 1e-5 < 1/2,000) on the same members are each audited with the loss attack, online
LiRA (16 shadows trained on random halves of members ∪ non-members with the target's own
recipe) and ART's black-box attack.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ROBUSTLAB_PROGRESS", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import MNIST_DIR, machine, merged, pct, section_args, write_results  # noqa: E402

log = logging.getLogger("benchmarks.privacy")

SECTIONS = ("speed", "frontier", "leakage")
DELTA = 1e-5
L2_CLIP = 1.0
DP_LR = 5e-3
BATCH = 256
EPSILONS = (1.0, 2.0, 4.0, 8.0)
# epochs per ε, fixed before the run (never chosen on the test images)
FRONTIER_EPOCHS = {1.0: 10, 2.0: 15, 4.0: 20, 8.0: 20}
NONPRIVATE_EPOCHS = 20
# Abadi et al. 2016 (https://arxiv.org/abs/1607.00133), full 60,000-image MNIST, δ = 1e-5
ABADI = {0.5: 0.90, 2.0: 0.95, 8.0: 0.97}
LEAK_EPSILON = 2.0
LOOP_NUMPY = "per-example loop, clipping in NumPy"
LOOP_COMPILED = "per-example loop, clipping compiled"


def epoch_timer() -> Any:
    """A Keras callback recording each epoch's wall time in ``.seconds``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def cnn(data: Any, seed: int = 0) -> Any:
    from robustlab.models import build_small_cnn

    return build_small_cnn(data.input_shape, data.num_classes, seed=seed)


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    from robustlab.inference import predict_labels

    return float(np.mean(predict_labels(model, x) == y))


def fit(data: Any, *, epochs: int, lr: float, batch: int, dp: Any = None, seed: int = 0
        ) -> tuple[Any, Any, list[float]]:
    """(model, TrainingResult, seconds per epoch) of the small CNN trained on ``data``."""
    from robustlab.training import train_adversarial

    timer = epoch_timer()
    model, info = train_adversarial(cnn(data, seed), data, method="standard", epochs=epochs,
                                    batch_size=min(batch, len(data.x_train)), learning_rate=lr,
                                    seed=seed, dp=dp, callbacks=[timer])
    return model, info, list(timer.seconds)


def dp_config(epsilon: float, clipping: str = "auto") -> Any:
    from robustlab.privacy import DPConfig

    return DPConfig(target_epsilon=epsilon, delta=DELTA, l2_clip=L2_CLIP, clipping=clipping)


# ---------------------------------------------------------------------------------------------
# speed


def loop_seconds_per_step(data: Any, *, batch: int, sigma: float, steps: int,
                          compiled: bool) -> float:
    """Median seconds of one DP-SGD step done the naive way: a compiled function computing one
    example's gradient, called in a Python loop over the batch; clipping and summing in NumPy
    (``compiled=False``) or inside that function, into running sums (``compiled=True``: no
    Python arithmetic per example); then Gaussian noise and an Adam step."""
    import keras
    import tensorflow as tf

    model = cnn(data)
    variables = model.trainable_variables
    sums = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in variables]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def gradient(xi: Any, yi: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = ce(yi, model(xi, training=True))
        return tape.gradient(loss, variables)

    @tf.function(reduce_retracing=True)
    def clip_and_add(xi: Any, yi: Any) -> None:
        grads = gradient(xi, yi)
        factor = tf.minimum(1.0, L2_CLIP / (tf.linalg.global_norm(grads) + 1e-12))
        for total, g in zip(sums, grads, strict=True):
            total.assign_add(factor * g)

    one = tf.function(gradient, reduce_retracing=True)
    opt = keras.optimizers.Adam(DP_LR)
    opt.build(variables)
    rng = np.random.default_rng(0)
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    n = len(data.x_train)

    def step() -> None:
        idx = rng.choice(n, size=batch, replace=False)
        if compiled:
            for total in sums:
                total.assign(tf.zeros_like(total))
            for i in idx:
                clip_and_add(x[i:i + 1], y[i:i + 1])
            totals = [total.numpy() for total in sums]
        else:
            totals = [np.zeros(v.shape, np.float32) for v in variables]
            for i in idx:
                grads = [g.numpy() for g in one(x[i:i + 1], y[i:i + 1])]
                norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
                factor = min(1.0, L2_CLIP / (norm + 1e-12))
                for total, g in zip(totals, grads, strict=True):
                    total += factor * g
        noisy = [tf.constant((t + rng.normal(0.0, sigma * L2_CLIP, t.shape)) / batch,
                             tf.float32) for t in totals]
        opt.apply(noisy, variables)
        float(tf.reduce_sum(variables[0]))  # wait for the step to finish

    step()  # warm-up: tracing
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(data: Any, quick: bool) -> dict[str, Any]:
    """Seconds per epoch of standard training, DP-SGD (ghost, vectorized) and the loop."""
    from robustlab.privacy import Clipping, ghost_supported

    batch = 64 if quick else BATCH
    epochs = 2 if quick else 4
    steps_per_epoch = math.ceil(len(data.x_train) / batch)
    rows: dict[str, Any] = {}
    sigma = None
    for name, dp in (("standard", None), ("DP-SGD ghost", dp_config(8.0, "ghost")),
                     ("DP-SGD vectorized", dp_config(8.0, "vectorized"))):
        log.info("speed: %s, %d epochs", name, epochs)
        _, info, secs = fit(data, epochs=epochs, lr=DP_LR, batch=batch, dp=dp)
        rows[name] = {"epoch_seconds": secs, "seconds_per_epoch": statistics.median(secs[1:]),
                      "epochs": epochs}
        if dp is not None:
            sigma = info.privacy["noise_multiplier"]
    loop_steps = 1 if quick else 3
    for name, compiled in ((LOOP_NUMPY, False), (LOOP_COMPILED, True)):
        log.info("speed: %s, %d steps of %d examples", name, loop_steps, batch)
        per_step = loop_seconds_per_step(data, batch=batch, sigma=float(sigma or 1.0),
                                         steps=loop_steps, compiled=compiled)
        rows[name] = {"seconds_per_step": per_step, "steps_timed": loop_steps,
                      "seconds_per_epoch": per_step * steps_per_epoch}
    std = rows["standard"]["seconds_per_epoch"]
    ghost = rows["DP-SGD ghost"]["seconds_per_epoch"]
    return {"n": len(data.x_train), "batch": batch, "steps_per_epoch": steps_per_epoch,
            "ghost_supported": ghost_supported(cnn(data)), "default_engine": Clipping.AUTO.value,
            "rows": rows, "dp_over_standard": ghost / std,
            # the target is judged against the faster loop
            "loop_over_dp": rows[LOOP_COMPILED]["seconds_per_epoch"] / ghost,
            "numpy_loop_over_dp": rows[LOOP_NUMPY]["seconds_per_epoch"] / ghost,
            "vectorized_over_ghost": rows["DP-SGD vectorized"]["seconds_per_epoch"] / ghost}


# ---------------------------------------------------------------------------------------------
# frontier


def frontier(data: Any, quick: bool) -> dict[str, Any]:
    rows = []
    for eps in EPSILONS:
        epochs = 1 if quick else FRONTIER_EPOCHS[eps]
        log.info("frontier: ε = %g, %d epochs", eps, epochs)
        model, info, secs = fit(data, epochs=epochs, lr=DP_LR, batch=BATCH, dp=dp_config(eps))
        p = info.privacy
        rows.append({"target_epsilon": eps, "epsilon": p["epsilon"], "delta": p["delta"],
                     "noise_multiplier": p["noise_multiplier"], "epochs": p["epochs_trained"],
                     "sample_rate": p["sample_rate"], "steps": p["steps"],
                     "accuracy": accuracy(model, data.x_test, data.y_test),
                     "seconds": info.seconds})
        log.info("frontier: ε = %.3f spent, σ = %.3f, accuracy %.4f", p["epsilon"],
                 p["noise_multiplier"], rows[-1]["accuracy"])
    epochs = 2 if quick else NONPRIVATE_EPOCHS
    log.info("frontier: non-private, %d epochs", epochs)
    model, info, _ = fit(data, epochs=epochs, lr=DP_LR, batch=BATCH)
    nonprivate = {"epochs": epochs, "accuracy": accuracy(model, data.x_test, data.y_test),
                  "seconds": info.seconds}
    return {"n_train": len(data.x_train), "n_test": len(data.x_test), "batch": BATCH,
            "learning_rate": DP_LR, "l2_clip": L2_CLIP, "delta": DELTA, "accountant": "rdp",
            "rows": rows, "nonprivate": nonprivate,
            "abadi_2016": {str(k): v for k, v in ABADI.items()}}


# ---------------------------------------------------------------------------------------------
# leakage


def attack_rows(audit: Any) -> list[dict[str, Any]]:
    out = []
    for a in audit.attacks:
        row = {"name": a.name, "auc": a.auc, "auc_interval": list(a.auc_interval),
               "advantage": a.advantage, "n_members": a.n_members,
               "n_nonmembers": a.n_nonmembers}
        for fpr, key in ((0.01, "at_1pct"), (0.001, "at_01pct")):
            pt = a.at(fpr)
            row[key] = {"tpr": pt.tpr, "tpr_interval": list(pt.tpr_interval), "fpr": pt.fpr,
                        "fpr_interval": list(pt.fpr_interval),
                        "below_resolution": pt.below_resolution}
        out.append(row)
    return out


def leakage(data: Any, quick: bool) -> dict[str, Any]:
    from robustlab.membership import membership_audit

    # members and non-members: disjoint seeded draws from all the images pooled, so that
    # they share one distribution (see the module doc on why not the test images as they are)
    n_members = 200 if quick else 2000
    pool_x = np.concatenate([data.x_train, data.x_test])
    pool_y = np.concatenate([data.y_train, data.y_test])
    order = np.random.default_rng(1).permutation(len(pool_x))
    mi, ni = order[:n_members], order[n_members:2 * n_members]
    members = replace(data, x_train=pool_x[mi], y_train=pool_y[mi], x_test=pool_x[ni],
                      y_test=pool_y[ni])
    shadows = 2 if quick else 16
    overfit = {"epochs": 2 if quick else 30, "batch": 64, "lr": 1e-3}
    private = {"epochs": 1 if quick else 15, "batch": BATCH, "lr": DP_LR}

    def recipe(settings: dict[str, Any], dp_eps: float | None) -> Any:
        def train_shadow(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
            shadow_data = replace(members, x_train=x, y_train=y)
            model, _, _ = fit(shadow_data, epochs=settings["epochs"], lr=settings["lr"],
                              batch=settings["batch"], seed=seed,
                              dp=None if dp_eps is None else dp_config(dp_eps))
            return model
        return train_shadow

    out: dict[str, Any] = {"n_members": len(members.x_train),
                           "n_nonmembers": len(members.x_test), "shadows": shadows,
                           "delta": DELTA, "epsilon": LEAK_EPSILON}
    for key, settings, dp_eps in (("nonprivate", overfit, None),
                                  ("dp", private, LEAK_EPSILON)):
        log.info("leakage: training the %s target (%d epochs)", key, settings["epochs"])
        model, info, _ = fit(members, epochs=settings["epochs"], lr=settings["lr"],
                             batch=settings["batch"],
                             dp=None if dp_eps is None else dp_config(dp_eps))
        log.info("leakage: auditing the %s target with %d shadows", key, shadows)
        audit = membership_audit(model, members, shadows=shadows,
                                 train_shadow=recipe(settings, dp_eps), seed=0)
        log.info("leakage: %r", audit)
        block: dict[str, Any] = {
            **settings, "train_accuracy": accuracy(model, members.x_train, members.y_train),
            "test_accuracy": accuracy(model, members.x_test, members.y_test),
            "train_seconds": info.seconds, "audit_seconds": audit.seconds,
            "attacks": attack_rows(audit), "notes": list(audit.notes)}
        if dp_eps is not None:
            p = info.privacy
            block.update(epsilon=p["epsilon"], delta=p["delta"],
                         noise_multiplier=p["noise_multiplier"], sample_rate=p["sample_rate"],
                         bound_at_01pct=audit.dp_bound(p["epsilon"], p["delta"], 0.001),
                         bound_at_1pct=audit.dp_bound(p["epsilon"], p["delta"], 0.01),
                         consistent=audit.consistent_with(p["epsilon"], p["delta"]))
            for row in block["attacks"]:  # what consistent_with compares, point by point
                for point in ("at_1pct", "at_01pct"):
                    pt = row[point]
                    pt["bound_at_fpr_upper"] = audit.dp_bound(p["epsilon"], p["delta"],
                                                              pt["fpr_interval"][1])
                    pt["consistent"] = pt["tpr_interval"][0] <= pt["bound_at_fpr_upper"]
        out[key] = block
    return out


# ---------------------------------------------------------------------------------------------
# the report


def interval(lo_hi: list[float], scale: float = 100.0, fmt: str = ".1f") -> str:
    return f"[{scale * lo_hi[0]:{fmt}}, {scale * lo_hi[1]:{fmt}}]"


def command(res: dict[str, Any]) -> str:
    parts = ["benchmarks/privacy.py"]
    if res["quick"]:
        parts.append("--quick")
    if res.get("sections"):
        parts.append(f"--sections {res['sections']}")
    return " ".join(parts)


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# DP-SGD: speed, the accuracy–privacy frontier and measured leakage", "",
             f"Written by `{command(res)}` on {m['date']} ({m['cpus']} CPUs, "
             f"{m['processor'] or m['platform']}, device {m['device']['type']}) in "
             f"{res['seconds'] / 60:.1f} minutes, on {res['dataset']}."
             + (" Quick run (tiny sizes): the numbers mean nothing." if res["quick"] else "")
             + "".join(f" Rerun with `--sections {r['sections']}` on {r['date']} "
                       f"({r['seconds'] / 60:.1f} minutes): {r['sections'].replace(',', ', ')};"
                       " the rest is from the first run." for r in res.get("reruns", [])),
             "", "Rerun from the project root with `.venv/bin/python benchmarks/privacy.py` "
             "(`--sections speed,frontier,leakage` reruns a part and keeps the rest of an "
             "existing PRIVACY.json; `--quick` is a smoke run on digits). DP-SGD here is "
             "robustlab's: Poisson-sampled batches, per-example "
             "clipping to L2 norm C, Gaussian noise σ·C, the RDP accountant of Google's "
             "dp-accounting; σ is calibrated so that the whole run spends the target ε at δ.",
             ""]
    if res.get("mnist_missing"):
        lines += [f"**MNIST rows replaced by digits: {res['mnist_missing']}.**", ""]
    targets: list[str] = []
    if "speed" in res:
        lines += speed_lines(res["speed"], targets)
    if "frontier" in res:
        lines += frontier_lines(res["frontier"], targets)
    if "leakage" in res:
        lines += leakage_lines(res["leakage"], targets)
    if targets:
        lines += ["## Targets", ""] + targets + [""]
    return "\n".join(lines) + "\n"


def met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def speed_lines(s: dict[str, Any], targets: list[str]) -> list[str]:
    rows = s["rows"]
    std = rows["standard"]["seconds_per_epoch"]
    lines = [f"## Speed: seconds per epoch ({s['n']:,} examples, batch {s['batch']}, "
             f"{s['steps_per_epoch']} steps)", "",
             "Training epochs: median over the epochs after the first (which compiles); the "
             f"loops: median of {rows[LOOP_COMPILED]['steps_timed']} timed steps after a "
             f"warm-up, × {s['steps_per_epoch']} steps.", "",
             "| run | s / epoch | × standard | epochs timed (s) |", "|---|---|---|---|"]
    for name, row in rows.items():
        timed = ", ".join(f"{t:.2f}" for t in row["epoch_seconds"][1:]) \
            if "epoch_seconds" in row else f"{row['seconds_per_step']:.2f} s / step"
        lines.append(f"| {name} | {row['seconds_per_epoch']:.2f} | "
                     f"{row['seconds_per_epoch'] / std:.2f} | {timed} |")
    lines += ["", f"The CNN's weights all sit in Conv2D/Dense layers, so `clipping=\"auto\"` "
              f"(the default) runs the ghost engine (ghost supported: {s['ghost_supported']}). "
              f"Vectorized clipping (`tf.vectorized_map`) takes "
              f"{s['vectorized_over_ghost']:.2f}× ghost's time.", ""]
    targets.append(f"- DP-SGD epoch ≤ 3× a standard epoch: {s['dp_over_standard']:.2f}× — "
                   f"{met(s['dp_over_standard'] <= 3)}.")
    targets.append(f"- DP-SGD ≥ 10× faster than the per-example loop: "
                   f"{s['loop_over_dp']:.1f}× the loop with compiled clipping — "
                   f"{met(s['loop_over_dp'] >= 10)} ({s['numpy_loop_over_dp']:.1f}× the loop "
                   f"clipping in NumPy).")
    return lines


def frontier_lines(f: dict[str, Any], targets: list[str]) -> list[str]:
    lines = [f"## Frontier: test accuracy vs ε ({f['n_train']:,} training images, "
             f"{f['n_test']:,} test images)", "",
             f"Adam (learning rate {f['learning_rate']:g}), batch {f['batch']}, l2_clip "
             f"{f['l2_clip']:g}, δ = {f['delta']:g}, {f['accountant'].upper()} accountant. The "
             "recipe and the epochs per ε were fixed before the run (no tuning on the test "
             "images, no validation search).", "",
             "| target ε | ε spent | σ | epochs | accuracy % | seconds | Abadi et al. 2016 "
             "(60,000 images) |", "|---|---|---|---|---|---|---|"]
    for row in f["rows"]:
        anchor = f["abadi_2016"].get(str(row["target_epsilon"]))
        lines.append(f"| {row['target_epsilon']:g} | {row['epsilon']:.3f} | "
                     f"{row['noise_multiplier']:.3f} | {row['epochs']} | {pct(row['accuracy'])}"
                     f" | {row['seconds']:.0f} | {pct(anchor) if anchor else '–'} |")
    npv = f["nonprivate"]
    lines.append(f"| ∞ (no DP) | – | 0 | {npv['epochs']} | {pct(npv['accuracy'])} | "
                 f"{npv['seconds']:.0f} | – |")
    lines += ["", "Abadi et al. 2016 (https://arxiv.org/abs/1607.00133) report about "
              + ", ".join(f"{pct(v)} % at ε = {k}" for k, v in f["abadi_2016"].items())
              + " on the full 60,000-image MNIST training set (δ = 1e-5); ours trains on "
              f"{f['n_train']:,} images, so the sampling rate q = batch / n is "
              f"{60000 / f['n_train']:.1f}× theirs at the same batch and the same ε buys "
              "fewer, noisier steps.", ""]
    top = max(f["rows"], key=lambda r: r["target_epsilon"])
    targets.append(f"- ≥ 95 % test accuracy at ε = {top['target_epsilon']:g}: "
                   f"{pct(top['accuracy'])} % — {met(top['accuracy'] >= 0.95)}.")
    worst = max(r["epsilon"] - r["target_epsilon"] for r in f["rows"])
    targets.append(f"- ε spent ≤ target in every frontier run: largest excess {worst:+.2g} — "
                   f"{met(worst <= 1e-6)}.")
    return lines


def leakage_lines(lk: dict[str, Any], targets: list[str]) -> list[str]:
    npv, dp = lk["nonprivate"], lk["dp"]
    lines = [f"## Leakage: membership audits ({lk['n_members']:,} members, "
             f"{lk['n_nonmembers']:,} non-members)", "",
             "Members and non-members: two disjoint seeded random draws from all the images "
             "(training and test pooled), so that they share one distribution: MNIST's t10k "
             "split is ordered (its halves come from different NIST collections), and with "
             "the last 2,000 images as non-members a first run let ART's attack reach AUC "
             "0.685 against the ε = 2 model with no gap between its member and non-member "
             "accuracy (76.8 / 78.4 %): a distribution shift, not membership leakage. "
             f"LiRA: {lk['shadows']} shadows per target, each trained with the target's own "
             "recipe on a random half of members ∪ non-members (pooled variance). Intervals "
             "are 95% (AUC: Hanley–McNeil; TPR: Wilson over the members). TPR in %.", "",
             f"- non-private: {npv['epochs']} epochs, batch {npv['batch']}, Adam {npv['lr']:g}"
             f"; train accuracy {pct(npv['train_accuracy'])} %, test "
             f"{pct(npv['test_accuracy'])} %; audit {npv['audit_seconds']:.0f} s.",
             f"- DP-SGD: ε = {dp['epsilon']:.3f} spent at δ = {dp['delta']:g} (< 1/"
             f"{lk['n_members']:,}), σ = {dp['noise_multiplier']:.3f}, q = "
             f"{dp['sample_rate']:.3f}, {dp['epochs']} epochs, Adam {dp['lr']:g}, l2_clip "
             f"{L2_CLIP:g}; train accuracy {pct(dp['train_accuracy'])} %, test "
             f"{pct(dp['test_accuracy'])} %; audit {dp['audit_seconds']:.0f} s.", "",
             "| model | attack | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | advantage |",
             "|---|---|---|---|---|---|"]
    for label, block in (("non-private (overfit)", npv), (f"DP-SGD ε = {dp['epsilon']:.2f}",
                                                          dp)):
        for a in block["attacks"]:
            lines.append(
                f"| {label} | {a['name']} | {a['auc']:.3f} {interval(a['auc_interval'], 1, '.3f')}"
                f" | {pct(a['at_1pct']['tpr'])} {interval(a['at_1pct']['tpr_interval'])} | "
                f"{pct(a['at_01pct']['tpr'])} {interval(a['at_01pct']['tpr_interval'], 100, '.2f')}"
                f" | {a['advantage']:.3f} |")
    lines.append(f"| DP bound (any attack) at ε = {dp['epsilon']:.2f}, δ = {dp['delta']:g} | – "
                 f"| – | {pct(dp['bound_at_1pct'])} | {pct(dp['bound_at_01pct'])} | – |")
    notes = sorted(set(npv["notes"]) | set(dp["notes"]))
    lines += [""] + [f"Note: {n}" for n in notes] + ([""] if notes else [])
    lines += [f"### The DP-SGD model against its bound (ε = {dp['epsilon']:.3f}, δ = "
              f"{dp['delta']:g})", "",
              "Any attack on an (ε, δ)-DP training algorithm has TPR ≤ "
              "min(e^ε·FPR + δ, 1 − e^−ε(1 − δ − FPR)) (Kairouz et al. 2015). "
              "`audit.consistent_with(ε, δ)` checks, at each operating point, the lower 95% "
              "end of the measured TPR against the bound at the upper 95% end of the measured "
              "FPR (a threshold with no false positive among a few thousand non-members does "
              "not show an FPR of 0). ART's attack scores only held-out halves, so its FPR "
              "is coarser. TPR and FPR in %.", "",
              "| attack | target FPR | TPR [95%] | FPR [95%] | bound at target FPR | "
              "bound at FPR's upper end | consistent |", "|---|---|---|---|---|---|---|"]
    for a in dp["attacks"]:
        for key, target in (("at_1pct", 0.01), ("at_01pct", 0.001)):
            pt = a[key]
            nominal = dp["bound_at_1pct"] if key == "at_1pct" else dp["bound_at_01pct"]
            lines.append(f"| {a['name']} | {100 * target:g} | {pct(pt['tpr'])} "
                         f"{interval(pt['tpr_interval'])} | {100 * pt['fpr']:.2f} "
                         f"{interval(pt['fpr_interval'], 100, '.2f')} | {pct(nominal)} | "
                         f"{pct(pt['bound_at_fpr_upper'])} | {pt['consistent']} |")
    lines += ["", f"`audit.consistent_with({dp['epsilon']:.3f}, {dp['delta']:g})` = "
              f"{dp['consistent']}. An audit of this size measures a lower bound on leakage, "
              "not ε itself: consistency is what it can show.", ""]
    detecting = [a for a in npv["attacks"] if a["auc_interval"][0] > 0.5
                 and a["at_01pct"]["tpr_interval"][0] > 0.001]
    best = max(npv["attacks"], key=lambda a: a["at_01pct"]["tpr"])
    targets.append(f"- The audit detects membership in the overfit non-private model (AUC "
                   f"interval above 0.5 and TPR @ 0.1% FPR interval above 0.1 %): best "
                   f"{best['name']}, AUC {best['auc']:.3f} "
                   f"{interval(best['auc_interval'], 1, '.3f')}, TPR @ 0.1% FPR "
                   f"{pct(best['at_01pct']['tpr'])} % "
                   f"{interval(best['at_01pct']['tpr_interval'], 100, '.2f')}; detecting: "
                   f"{', '.join(a['name'] for a in detecting) or 'none'} — "
                   f"{met(bool(detecting))}.")
    main_attacks = [a for a in dp["attacks"] if a["name"] != "art-blackbox"] or dp["attacks"]
    worst = max(main_attacks, key=lambda a: a["at_01pct"]["tpr"])
    targets.append(f"- The DP-SGD model's measured leakage within its (ε, δ) bound: highest "
                   f"TPR @ 0.1% FPR of the loss/LiRA attacks {pct(worst['at_01pct']['tpr'])} % "
                   f"({worst['name']}) vs the bound {pct(dp['bound_at_01pct'])} %; "
                   f"consistent_with(ε, δ) over all attacks and points = {dp['consistent']} — "
                   f"{met(dp['consistent'])}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    args, want = section_args(__doc__.splitlines()[0], SECTIONS,
                              ROOT / "benchmarks" / "PRIVACY.md", argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # dp-accounting's RDP notes each order it drops while calibrating σ: noise, not progress
    logging.getLogger("absl").setLevel(logging.ERROR)
    from robustlab import load

    started = time.perf_counter()
    res: dict[str, Any] = {"machine": machine(), "quick": args.quick,
                           "sections": None if set(want) == set(SECTIONS) else args.sections}
    if args.quick:
        data, res["mnist_missing"] = load("digits"), "quick run"
    elif (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        data, res["mnist_missing"] = load(f"idx:{MNIST_DIR}", split=8000), None
    else:
        data = load("digits")
        res["mnist_missing"] = f"MNIST test split not found at {MNIST_DIR}"
    res["dataset"] = (f"{data.name} ({len(data.x_train):,} train / {len(data.x_test):,} test, "
                      f"{'x'.join(map(str, data.input_shape))})")
    for name, fn in (("speed", speed), ("frontier", frontier), ("leakage", leakage)):
        if name in want:
            res[name] = fn(data, args.quick)
    res["seconds"] = time.perf_counter() - started
    res = merged(args.out.with_suffix(".json"), res, want, SECTIONS, "dataset")
    json_path = write_results(args.out, markdown(res), res)
    print(f"wrote {args.out} and {json_path}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
