"""Smoke test of benchmarks/distributed.py (issue 19): a quick run ends to end, with a
2-worker cluster on localhost, and writes tables whose numbers hang together. (Timings are
never asserted; benchmarks/DISTRIBUTED.md holds them.)"""

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_distributed_benchmark_quick_run_writes_its_tables(tmp_path):
    out = tmp_path / "D.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distributed.py"),
                           "--quick", "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    for heading in ("## Overhead of the distributed path on one device",
                    "## Measured per-step costs", "## Two workers on localhost",
                    "## Prediction for N replicas", "## What this means"):
        assert heading in text
    # the markdown names the verdict against the target
    assert "≤ 1.05" in text and ("**Verdict: PASS**" in text or "**Verdict: FAIL**" in text)
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))

    over = res["overhead"]
    for part in ("evaluate", "train"):
        assert 0 < over[part]["ratio"] < math.inf
        assert all(t > 0 for times in over[part]["times"].values() for t in times)
    assert over["passed"] == (over["evaluate"]["ratio"] <= 1.05
                              and over["train"]["ratio"] <= 1.05)
    # one replica gives every example the plain path's outcome
    assert over["evaluate"]["identical_outcomes"] is True
    assert over["evaluate"]["device"] == "MirroredStrategy"

    costs = res["costs"]
    assert costs["pgd_batch_seconds"] > 0 and costs["train_step_seconds"] > 0
    assert costs["gradient_bytes"] == 4 * costs["parameters"] > 0

    cluster = res["cluster"]
    assert cluster["workers"] == 2 and cluster["replicas"] == 2
    for part in ("gather", "allreduce"):
        assert cluster[part]["seconds"] > 0 and cluster[part]["correct"] is True
    assert cluster["evaluate"]["seconds"] > 0
    # two workers give every example the outcome of one device
    assert cluster["evaluate"]["robust_mask_sha256"] == over["evaluate"]["robust_mask_sha256"]
    assert "error" not in cluster["train"] and cluster["train"]["seconds"] > 0

    pred = res["prediction"]
    assert [r["replicas"] for r in pred["evaluation"]] == [1, 2, 4, 8, 16, 64]
    for row in pred["evaluation"]:
        n = row["replicas"]
        for label in ("CPU (measured)", "GPU (CPU / 100)"):
            assert 0 < row[label]["speedup"] <= n + 1e-9
        if n == 1:
            assert row["CPU (measured)"]["speedup"] == pytest.approx(1.0)
    # past N_max no replica has a second batch: the speed-up cannot grow any more
    past = [r["CPU (measured)"]["speedup"] for r in pred["evaluation"]
            if r["replicas"] >= pred["n_max"]]
    assert past == sorted(past, reverse=True)
    assert pred["imagenet"]["n_max"] == math.ceil(50_000 / costs["batch"])
    for row in pred["training"]:
        n, speedup = row["replicas"], row["speedup"]
        for device in ("CPU (measured)", "GPU (CPU / 100)"):
            fast, mid, slow = (speedup[f"{device} / {net}"]
                               for net in ("NVLink", "100 Gb/s", "10 GbE"))
            assert 0 < slow <= mid <= fast <= n + 1e-9
            if n > 1:  # the slower network costs more
                assert slow < mid < fast
        # the faster device loses more of its speed-up to the same all-reduce
        assert speedup["GPU (CPU / 100) / 10 GbE"] <= speedup["CPU (measured) / 10 GbE"]
    assert pred["replicas_at_min_batch"] == 4  # global batch 128 at 32 per replica
