"""What encryption at rest costs when loading: the MNIST-8k model and data, plain vs encrypted.

Run from the project root::

    .venv/bin/python benchmarks/crypto_overhead.py                 # writes benchmarks/CRYPTO.md
    .venv/bin/python benchmarks/crypto_overhead.py --repeats 3 --out /tmp/CRYPTO.md

It times ``robustlab.models.load_model`` and ``robustlab.data.load("npz:...")`` on the same
content stored plain and encrypted (the key read from a key file at every load, as with
``ROBUSTLAB_KEY_FILE``), the median of ``--repeats`` loads after one untimed warm-up each, the
plain and encrypted loads interleaved so that drift of the machine hits both alike (the
overhead is the median of the ratios of adjacent pairs); and
AES-256-GCM decryption alone. The model is robustlab's default CNN for 28x28x1 images
(``build_model((28, 28, 1), 10)``; loading does not depend on the weights' values, so it is
not trained); the data are the 10,000 MNIST test images as uint8, the first 8,000 to train
(``../shared/datasets/mnist-t10k``; random images of the same shape when it is absent, which
the table then says). The target is at most 10 % overhead.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import statistics
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
from bench import median_time  # noqa: E402  (one timing helper for every benchmark)

MNIST_DIR = ROOT.parent / "shared" / "datasets" / "mnist-t10k"
TARGET = 0.10


def interleaved(plain: Callable[[], Any], encrypted: Callable[[], Any], repeats: int
                ) -> dict[str, list[float]]:
    """Seconds of each of ``repeats`` alternating runs of ``plain`` and ``encrypted``, after
    one untimed warm-up run of each."""
    plain()
    encrypted()
    times: dict[str, list[float]] = {"plain": [], "encrypted": []}
    for i in range(repeats):
        order = [("plain", plain), ("encrypted", encrypted)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def mnist_uint8() -> tuple[np.ndarray, np.ndarray, str]:
    """The 10,000 MNIST test images (N, 28, 28) uint8 and labels, or random stand-ins."""
    if (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        from robustlab.data import load

        data = load(f"idx:{MNIST_DIR}", split=8000)
        x = np.concatenate([data.x_train, data.x_test])[..., 0]
        y = np.concatenate([data.y_train, data.y_test])
        return np.rint(x * 255).astype(np.uint8), y.astype(np.uint8), "MNIST t10k"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, 10000, dtype=np.uint8),
            "random uint8 (MNIST not found at ../shared/datasets/mnist-t10k)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=101)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "CRYPTO.md"))
    args = parser.parse_args(argv)

    import cryptography
    import keras
    from cryptography.hazmat.backends.openssl import backend

    from robustlab import crypto
    from robustlab.data import load
    from robustlab.models import build_model, load_model, save_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key_file = tmp / "bench.key"
        crypto.write_key_file(key_file)
        provider = crypto.KeyFileProvider(key_file)

        model = build_model((28, 28, 1), 10, seed=0)
        plain_model = save_model(model, tmp / "plain.keras")
        enc_model = save_model(model, tmp / "encrypted.keras", key=key_file)
        times = interleaved(lambda: load_model(plain_model),
                            lambda: load_model(enc_model, key=key_file), args.repeats)
        blob = enc_model.read_bytes()
        d = median_time(lambda: crypto.decrypt(blob, provider), args.repeats)[0]
        rows.append((f"model (.keras, small CNN 28x28x1, {model.count_params():,} params)",
                     plain_model.stat().st_size, times, d))

        x, y, source = mnist_uint8()
        buffer = io.BytesIO()
        np.savez(buffer, x_train=x[:8000], y_train=y[:8000], x_test=x[8000:],
                 y_test=y[8000:])
        plain_npz = tmp / "plain.npz"
        plain_npz.write_bytes(buffer.getvalue())
        enc_npz = crypto.write_bytes(tmp / "encrypted.npz", buffer.getvalue(), key_file)
        times = interleaved(lambda: load(f"npz:{plain_npz}"),
                            lambda: load(f"npz:{enc_npz}", key=key_file), args.repeats)
        blob = enc_npz.read_bytes()
        d = median_time(lambda: crypto.decrypt(blob, provider), args.repeats)[0]
        rows.append((f"npz (8,000 + 2,000 images 28x28 uint8, {source})",
                     plain_npz.stat().st_size, times, d))

    header = ("| artifact | size (MB) | plain load, median (min) ms | encrypted load, median "
              "(min) ms | overhead: paired | of the medians | of the minima | decrypt alone "
              "(ms) |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    worst = 0.0
    for name, size, times, d in rows:
        p, e = statistics.median(times["plain"]), statistics.median(times["encrypted"])
        p_min, e_min = min(times["plain"]), min(times["encrypted"])
        paired = statistics.median(b / a for a, b in zip(times["plain"], times["encrypted"],
                                                          strict=True)) - 1
        worst = max(worst, paired)
        lines.append(f"| {name} | {size / 1e6:.2f} | {p * 1e3:.1f} ({p_min * 1e3:.1f}) | "
                     f"{e * 1e3:.1f} ({e_min * 1e3:.1f}) | {paired * 100:+.1f} % | "
                     f"{(e / p - 1) * 100:+.1f} % | {(e_min / p_min - 1) * 100:+.1f} % | "
                     f"{d * 1e3:.2f} |")
    table = "\n".join(lines)
    print(table)
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"target <= {TARGET:.0%} overhead: {verdict} (worst {worst * 100:+.1f} %)")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
               f"{platform.release()}; Python {platform.python_version()}, cryptography "
               f"{cryptography.__version__} ({backend.openssl_version_text()}), Keras "
               f"{keras.__version__}, NumPy {np.__version__}; load average "
               f"{os.getloadavg()[0]:.1f} at the end (a shared machine)")
    text = f"""# What encryption at rest costs when loading

Written by `benchmarks/crypto_overhead.py` on {datetime.date.today().isoformat()}
({args.repeats} repeats; median of interleaved loads after one warm-up each).

Machine: {machine}.

Each artifact is stored twice, plain and encrypted (robustlab's format: a random 256-bit data
key per file, AES-256-GCM, the data key wrapped by a key-file key). "Load" is the whole
public call: `load_model(path)` (read, decrypt in memory, the safe-loading checks, Keras) and
`rl.load("npz:path")` (read, decrypt in memory, NumPy, scaling to [0, 1], validation); the
encrypted loads also read the key file. "Decrypt alone" is `crypto.decrypt` of the file's
bytes (unwrap and AES-GCM).

{table}

"Paired" is the median over the repeats of (encrypted load / the plain load timed next to
it) - 1: each pair ran back to back, so a busy moment of the machine slows both alike; it is
the number held to the target. The overheads of the medians and of the minima are shown
for comparison: on a shared machine they move by several per cent from run to run either
way. What encryption itself adds is the last column (plus reading the key file, about
0.02 ms).

Target: at most {TARGET:.0%} overhead. Result: {verdict} (worst {worst * 100:+.1f} %).
"""
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
