"""Regenerate datasets/digits-sample.npz: a 300-image sample of scikit-learn's 8x8 digits
(the first 200 training and 100 test images of robustlab's fixed digits split), float32 in
[0, 1], for notebooks and tests that want data instantly (`load("npz:datasets/digits-sample.npz")`).

Usage: python datasets/make_digits_sample.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlab.data import load


def build() -> dict[str, np.ndarray]:
    data = load("digits")
    return {"x_train": data.x_train[:200], "y_train": data.y_train[:200].astype(np.uint8),
            "x_test": data.x_test[:100], "y_test": data.y_test[:100].astype(np.uint8),
            "class_names": np.array(data.class_names)}


if __name__ == "__main__":
    target = Path(__file__).with_name("digits-sample.npz")
    np.savez_compressed(target, **build())
    print(f"wrote {target}")
