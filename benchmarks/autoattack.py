"""The strongest standard evaluation at PGD speed (issue 15): native APGD, Square and the
AutoAttack suite against ART's, against PGD-100 x 10 restarts and against the
forward+backward floor, in one run.

Run from the project root::

    .venv/bin/python benchmarks/autoattack.py            # writes benchmarks/AUTOATTACK.md / .json
    .venv/bin/python benchmarks/autoattack.py --quick --out /tmp/AUTOATTACK.md

Models: robustlab's digits CNN (standard training, the 360 test images, ε = 0.1 L∞) and, when
the MNIST test split is beside the project (``../shared/datasets/mnist-t10k``: the first
8,000 images train, the last 2,000 test), an MNIST-8k CNN adversarially trained with PGD-10
at ε = 0.3 for 5 minutes (the benchmarks' hardened model), evaluated at ε = 0.3 on the first
1,000 test images (ART's AutoAttack on the first 200 of them: it takes about a second an
image here). Every time is the median of ``--repeats`` runs after a warm-up (compilation),
on this machine's CPU unless a GPU is named in the machine line.

Rows: the floor (the same number of forward+backward passes of the whole batch through one
compiled function); native APGD-CE-100 stepping every example all 100 iterations (so its
time compares with the floor) and with its default early stop; ART's APGD-CE-100 and
APGD-DLR-100 against the native ones; Square at 1,000 queries, native and ART; the suites:
native AutoAttack (APGD-CE-100, APGD-T-100 with 9 targets, Square-5000, as a cascade), ART's
AutoAttack (its default ensemble) and PGD-100 x 10 restarts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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
    floor_fn,
    indented_json,
    machine,
    median_time,
    pct,
    trained_model,
    write_results,
    written_by,
)

from robustlab.attacks import AttackSpec, parse_attacks  # noqa: E402
from robustlab.evaluate import evaluate  # noqa: E402
from robustlab.types import ThreatModel  # noqa: E402


def robust(model: Any, x: np.ndarray, y: np.ndarray, attacks: Any, eps: float
           ) -> tuple[float, float]:
    """(worst-case robust accuracy, seconds) of ``attacks`` at ``eps`` on ``(x, y)``."""
    start = time.perf_counter()
    res = evaluate(model, (x, y), attacks, f"0, {eps}", checks=False, progress=False,
                   n_show=0)
    return res.worst_case.points[-1].accuracy, time.perf_counter() - start


def spec_run(model: Any, x: np.ndarray, y: np.ndarray, spec: AttackSpec, eps: float
             ) -> Any:
    def run() -> Any:
        return spec.run(model, x, y, threat=ThreatModel.parse(eps), seed=0,
                        batch_size=len(x), jit=False, ids=np.arange(len(x)))
    return run


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    from robustlab.inference import predict_labels

    return float(np.mean(predict_labels(model, x) == y))


def apgd_rows(model: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int,
              repeats: int) -> dict[str, Any]:
    """Per-step cost of APGD against the floor and ART, and the robust accuracy each finds."""
    from robustlab.attacks._runner import attack_arrays  # the engine itself, for timing
    from robustlab.attacks.apgd import native_apgd
    from robustlab.types import Loss

    threat = ThreatModel.parse(eps)

    def every_step() -> Any:
        return attack_arrays(native_apgd, model, x, y, threat=threat, targeted=False,
                             loss=Loss.CE, restarts=1, random_start=True, seed=0,
                             batch_size=len(x), jit=False, ids=np.arange(len(x)),
                             steps=steps, early_stop=False)

    rows: dict[str, Any] = {}
    seconds, _ = median_time(floor_fn(model, x, y, steps), repeats)
    rows["floor"] = {"seconds": seconds}
    seconds, _ = median_time(every_step, repeats)
    rows["native APGD-CE, every step"] = {"seconds": seconds,
                                          "robust": accuracy(model, every_step(), y)}
    for label, spec in ((f"native APGD-CE-{steps}", AttackSpec("apgd-ce", steps=steps)),
                        (f"ART APGD-CE-{steps}", AttackSpec("apgd-ce", steps=steps,
                                                             backend="art")),
                        (f"native APGD-DLR-{steps}", AttackSpec("apgd-dlr", steps=steps)),
                        (f"ART APGD-DLR-{steps}", AttackSpec("apgd-dlr", steps=steps,
                                                              backend="art"))):
        run = spec_run(model, x, y, spec, eps)
        seconds, _ = median_time(run, repeats)
        rows[label] = {"seconds": seconds, "robust": accuracy(model, run(), y)}
    return rows


def square_rows(model: Any, x: np.ndarray, y: np.ndarray, eps: float, queries: int,
                repeats: int) -> dict[str, Any]:
    rows = {}
    for label, backend in ((f"native Square-{queries}", "native"),
                           (f"ART Square-{queries}", "art")):
        run = spec_run(model, x, y, AttackSpec("square", steps=queries, backend=backend), eps)
        seconds, _ = median_time(run, repeats)
        rows[label] = {"seconds": seconds, "robust": accuracy(model, run(), y)}
    return rows


def suite_rows(model: Any, x: np.ndarray, y: np.ndarray, eps: float, *, art_n: int,
               pgd: tuple[int, int]) -> dict[str, Any]:
    """Native AutoAttack, PGD-steps x restarts on all of ``x``; both and ART's AutoAttack on
    the first ``art_n`` (one run each: minutes)."""
    rows: dict[str, Any] = {"n": len(x), "art_n": art_n}
    steps, restarts = pgd
    acc, sec = robust(model, x, y, "autoattack", eps)
    rows["native AutoAttack"] = {"robust": acc, "seconds": sec}
    acc, sec = robust(model, x, y, [AttackSpec("pgd", steps=steps, restarts=restarts)], eps)
    rows[f"PGD-{steps}×{restarts}"] = {"robust": acc, "seconds": sec}
    if not art_n:  # quick runs: ART's AutoAttack takes minutes even on a few images
        return rows
    xs, ys = x[:art_n], y[:art_n]
    acc, sec = robust(model, xs, ys, "autoattack", eps)
    rows["native AutoAttack (ART's images)"] = {"robust": acc, "seconds": sec}
    acc, sec = robust(model, xs, ys, parse_attacks("autoattack", backend="art"), eps)
    rows["ART AutoAttack (ART's images)"] = {"robust": acc, "seconds": sec}
    return rows


def hardened_mnist(quick: bool) -> tuple[Any, Any] | None:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        return None
    from robustlab import load
    from robustlab.models import build_model
    from robustlab.training import train_adversarial

    data = load(f"idx:{MNIST_DIR}", split=8000)
    sub = data.subset(n_train=512, n_test=64, seed=0) if quick else data
    model = build_model(data.input_shape, data.num_classes, seed=0)
    model, info = train_adversarial(model, sub, method="pgd", epsilon=0.3, steps=10,
                                    ramp_epochs=3, epochs=200, batch_size=64, seed=0,
                                    max_seconds=5.0 if quick else 300.0)
    print(f"  hardened MNIST: {len(info.history['loss'])} epochs in {info.seconds:.0f} s",
          flush=True)
    return model, sub


def markdown(res: dict[str, Any]) -> str:
    lines = ["# AutoAttack at PGD speed: native APGD, Square and the suite vs ART", "",
             written_by("autoattack.py", res), ""]
    d = res["digits"]
    lines += [f"## APGD on the digits CNN ({d['n']} images, ε = {d['epsilon']:g} L∞)", "",
              "| run | seconds | × floor | robust accuracy % |", "|---|---|---|---|"]
    floor = d["apgd"]["floor"]["seconds"]
    for name, row in d["apgd"].items():
        acc = pct(row["robust"]) if "robust" in row else "–"
        lines.append(f"| {name} | {row['seconds']:.2f} | {row['seconds'] / floor:.2f} | "
                     f"{acc} |")
    ce = d["apgd"]
    nat = next(v for k, v in ce.items() if k.startswith("native APGD-CE-"))
    art = next(v for k, v in ce.items() if k.startswith("ART APGD-CE-"))
    every = ce["native APGD-CE, every step"]
    lines += ["", f"Native APGD-CE is {art['seconds'] / nat['seconds']:.1f}× faster than ART's "
              f"(target ≥ 10×); stepping every example it takes "
              f"{every['seconds'] / floor:.2f}× the floor (target ≤ 1.1×).", "",
              f"## Square on the digits CNN ({d['n']} images, ε = {d['epsilon']:g})", "",
              "| run | seconds | robust accuracy % |", "|---|---|---|"]
    for name, row in d["square"].items():
        lines.append(f"| {name} | {row['seconds']:.2f} | {pct(row['robust'])} |")
    sq = list(d["square"].values())
    lines += ["", f"Native Square is {sq[1]['seconds'] / sq[0]['seconds']:.1f}× faster than "
              f"ART's at the same queries (target ≥ 5×).", ""]
    for key, title in (("digits", "digits CNN"), ("mnist", "adversarially trained MNIST-8k")):
        block = res.get(key)
        if not block or "suite" not in block:
            continue
        s = block["suite"]
        lines += [f"## Suites on the {title} (ε = {block['epsilon']:g})", "",
                  "| run | images | robust accuracy % | seconds |", "|---|---|---|---|"]
        for name, row in s.items():
            if not isinstance(row, dict):
                continue
            n = s["art_n"] if "ART's images" in name else s["n"]
            lines.append(f"| {name} | {n} | {pct(row['robust'])} | {row['seconds']:.1f} |")
        if "ART AutoAttack (ART's images)" not in s:
            continue
        nat_s = s["native AutoAttack (ART's images)"]
        art_s = s["ART AutoAttack (ART's images)"]
        lines += ["", f"Native AutoAttack is {art_s['seconds'] / nat_s['seconds']:.1f}× faster "
                  f"than ART's on the same images (target ≥ 10×), robust accuracy "
                  f"{pct(nat_s['robust'])} vs {pct(art_s['robust'])} %.", ""]
    if res.get("mnist_missing"):
        lines += [f"**MNIST rows skipped: {res['mnist_missing']}.**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--art-n", type=int, default=200,
                        help="images for ART's AutoAttack (minutes per hundred)")
    parser.add_argument("--no-mnist", action="store_true", help="digits only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "AUTOATTACK.md")
    args = parser.parse_args(argv)
    quick = args.quick
    repeats = 1 if quick else args.repeats
    from robustlab import load

    started = time.perf_counter()
    digits = load("digits")
    model = trained_model("digits CNN", digits, 2 if quick else None)
    n, steps, queries = (40, 10, 50) if quick else (360, 100, 1000)
    x, y = digits.x_test[:n], digits.y_test[:n]
    res: dict[str, Any] = {"machine": machine(), "quick": quick}
    res["digits"] = {"n": n, "epsilon": 0.1,
                     "apgd": apgd_rows(model, x, y, 0.1, steps, repeats),
                     "square": square_rows(model, x, y, 0.1, queries, repeats)}
    res["digits"]["suite"] = suite_rows(model, x, y, 0.1, art_n=0 if quick else args.art_n,
                                        pgd=(10, 2) if quick else (100, 10))
    hardened = None if args.no_mnist else hardened_mnist(quick)
    if args.no_mnist:
        res["mnist_missing"] = "not run (--no-mnist)"
    elif hardened is None:
        res["mnist_missing"] = f"MNIST test split not found at {MNIST_DIR}"
    else:
        mnist_model, data = hardened
        k = 40 if quick else 1000
        res["mnist"] = {"epsilon": 0.3, "suite": suite_rows(
            mnist_model, data.x_test[:k], data.y_test[:k], 0.3, art_n=0 if quick else args.art_n,
            pgd=(10, 2) if quick else (100, 10))}
    res["seconds"] = time.perf_counter() - started
    write_results(args.out, markdown(res), res, dumps=indented_json)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
