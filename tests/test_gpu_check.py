"""The GPU check of issue 19 (benchmarks/gpu_check.sh, benchmarks/gpu.py) on this machine:
without a GPU the check refuses to run, and its quick mode runs end to end on the CPU and
writes every number the GPU run will. (Timings are never asserted; the targets are judged
on a GPU only.)"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def check_env(**extra):
    """The environment of a gpu_check.sh run: this interpreter's venv, no CPU allowance."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROBUSTLAB_GPU_CHECK_ALLOW_CPU", "ROBUSTLAB_GPU_CHECK_INSTALL")}
    env["VENV"] = sys.prefix
    env.update(extra)
    return env


def no_gpu():
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    if not no_gpu():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "GPU.md"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out)], capture_output=True,
                          text=True, cwd=tmp_path, env=check_env(), timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no GPU visible to TensorFlow" in proc.stderr
    assert "ROBUSTLAB_GPU_CHECK_ALLOW_CPU=1" in proc.stderr
    assert "running benchmarks/gpu.py" not in proc.stdout  # refused before any heavy work
    assert not out.exists()


def finite_positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_check_quick_run_writes_every_number(tmp_path):
    out = tmp_path / "GPU.md"
    proc = subprocess.run(["bash", str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, env=check_env(),
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"results in {out}" in proc.stdout
    text = out.read_text(encoding="utf-8")
    for heading in ("## Verdict", "## PGD step cost", "## Mixed precision (native PGD)",
                    "## One epoch of PGD-AT"):
        assert heading in text
    res = json.loads(Path(out).with_suffix(".json").read_text(encoding="utf-8"))
    assert res["quick"] is True
    assert res["machine"]["versions"]["cleverhans"] != "missing"
    assert isinstance(res["xla_default"], bool)
    assert [r["key"] for r in res["pgd"]] == ["mnist", "resnet"]
    for row in res["pgd"]:
        ms = row["ms_per_step"]
        assert set(ms) == {"floor", "native_xla", "native_no_xla", "cleverhans", "art"}
        assert all(finite_positive(v) for v in ms.values()), ms
        # the ratios are the timings' quotients, native with XLA as the device's default
        assert row["native"] == ("native_xla" if res["xla_default"] else "native_no_xla")
        for peer in ("cleverhans", "art"):
            assert row["speedup"][peer] == pytest.approx(ms[peer] / ms[row["native"]])
            assert row["vs_floor"][peer] == pytest.approx(ms[peer] / ms["floor"])
        assert row["xla_speedup"] == pytest.approx(ms["native_no_xla"] / ms["native_xla"])
        mp = row["mixed_precision"]
        assert mp["xla"] == res["xla_default"]
        assert set(mp["ms_per_step"]) == {"float32", "mixed_float16"}
        assert all(finite_positive(v) for v in mp["ms_per_step"].values())
        assert mp["ms_per_step"]["float32"] == pytest.approx(ms[row["native"]])
        assert mp["speedup"] == pytest.approx(
            mp["ms_per_step"]["float32"] / mp["ms_per_step"]["mixed_float16"])
        assert row["target"] == {"mnist": 3.0, "resnet": 1.5}[row["key"]]
    assert res["pgd"][1]["workload"].startswith("ResNet")
    dist = res["distributed"]  # the tf.distribute path on the device: same outcomes
    assert dist["identical"] is True and "## The tf.distribute path on this device" in text
    assert dist["ratio"] == pytest.approx(dist["one_replica_seconds"] / dist["plain_seconds"])
    at = res["pgd_at"]
    assert finite_positive(at["seconds_per_epoch"])
    assert (at["batch_size"], at["steps"], at["epsilon"]) == (128, 10, 0.3)
    assert at["images_per_s"] == pytest.approx(at["n"] / at["seconds_per_epoch"])
    if no_gpu():
        verdict = res["verdict"]
        assert verdict == {"judged": False, "status": "not a GPU: not judged",
                           "workloads": {"mnist": "not a GPU: not judged",
                                         "resnet": "not a GPU: not judged"}}
        assert res["machine"]["device"]["type"] == "CPU"
        assert "**not a GPU: not judged**" in text
        assert "verdict: not a GPU: not judged" in proc.stdout
