"""Smoke tests of the benchmark scripts: each runs end to end at tiny sizes and writes its
tables. (Timings are never asserted in the test suite; benchmarks/*.md hold them.)"""

import json
import subprocess
import sys

import pytest
from conftest import ROOT


def quick_run(script, out):
    """``benchmarks/<script> --quick --out <out>``; returns the markdown it wrote."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_benchmark_quick_run_writes_the_tables(tmp_path):
    out = tmp_path / "RESULTS.md"
    text = quick_run("bench.py", out)
    for heading in ("## Machine", "## PGD step cost vs the forward+backward floor",
                    "## Robustness curve", "## FGSM throughput", "## Scaling"):
        assert heading in text
    if res_has_mnist := "MNIST rows skipped" not in text:
        for heading in ("## Adversarial training epochs", "## A hardened MNIST-8k model",
                        "## Peak memory"):
            assert heading in text
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    names = [row["workload"] for row in res["per_step"]]
    assert names[0].startswith("digits") and names[-1].startswith("ResNet")
    for row in res["per_step"]:
        assert set(row["vs_floor"]) == {"floor", "native", "native_default", "cleverhans", "art"}
        assert all(v > 0 for v in row["ms_per_step"].values())
    curve = res["curve"]
    assert [p["epsilon"] for p in curve["points"]] == [0.05, 0.1, 0.15]
    # reuse never reports a higher robust accuracy than the independent native runs
    assert all(p["native"] <= p["independent"] for p in curve["points"])
    assert res["machine"]["versions"]["cleverhans"] != "missing"
    if res_has_mnist:
        assert set(res["training"]["seconds"]) == {"standard", "fgsm_rs", "pgd10", "art_pgd10"}
        assert 0 <= res["budget"]["robust"] <= res["budget"]["clean"] <= 1


@pytest.mark.slow
def test_tabular_benchmark_quick_run_writes_its_tables(tmp_path):
    out = tmp_path / "TABULAR.md"
    text = quick_run("tabular.py", out)
    for heading in ("## Robust accuracy, with and without 5 immutable features",
                    "-fold cross-validated robustness", "## Adversarially trained vs standard",
                    "## What constraints cost an attack (MLP 64×32)"):
        assert heading in text
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    free, fixed = (res["robustness"][k]["curve"] for k in ("all features mutable",
                                                            "5 features immutable"))
    # fixing features can only take options away from the attacker
    assert all(b["accuracy"] >= a["accuracy"] for a, b in zip(free, fixed, strict=True))
    assert all(c["output_feasible"] is True for c in res["constraint_cost"])
    assert len(res["cross_validation"]["summary"]) == len(res["epsilons"])


@pytest.mark.slow
def test_autoattack_benchmark_quick_run_writes_its_tables(tmp_path):
    out = tmp_path / "AUTOATTACK.md"
    text = quick_run("autoattack.py", out)
    assert "## APGD on the digits CNN" in text and "## Square on the digits CNN" in text
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    apgd_rows = res["digits"]["apgd"]
    assert {"floor", "native APGD-CE, every step"} <= set(apgd_rows)
    suite = res["digits"]["suite"]
    # the native suite is at least as strong as the short PGD run on the same images
    assert suite["native AutoAttack"]["robust"] <= suite["PGD-10×2"]["robust"] + 0.025
    assert all(row["seconds"] > 0 for row in apgd_rows.values())


@pytest.mark.slow
def test_privacy_benchmark_quick_run_writes_its_tables(tmp_path):
    out = tmp_path / "PRIVACY.md"
    text = quick_run("privacy.py", out)
    for heading in ("## Speed: seconds per epoch", "## Frontier: test accuracy vs ε",
                    "## Leakage: membership audits", "### The DP-SGD model against its bound",
                    "## Targets"):
        assert heading in text
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    speed = res["speed"]
    assert all(row["seconds_per_epoch"] > 0 for row in speed["rows"].values())
    # one compiled call per example cannot beat one pass over the whole batch
    assert min(speed["rows"][k]["seconds_per_epoch"] for k in speed["rows"] if "loop" in k) > \
        speed["rows"]["DP-SGD ghost"]["seconds_per_epoch"]
    assert speed["ghost_supported"] is True
    rows = res["frontier"]["rows"]
    assert [r["target_epsilon"] for r in rows] == [1.0, 2.0, 4.0, 8.0]
    for row in rows:  # σ is calibrated so that the run never overspends
        assert 0 < row["epsilon"] <= row["target_epsilon"] + 1e-6
        assert 0 <= row["accuracy"] <= 1
    # more budget, less noise
    sigmas = [r["noise_multiplier"] for r in rows]
    assert sigmas == sorted(sigmas, reverse=True)
    leak = res["leakage"]
    for block in (leak["nonprivate"], leak["dp"]):
        assert {a["name"] for a in block["attacks"]} == {"loss", "lira", "art-blackbox"}
        for a in block["attacks"]:
            assert 0 <= a["auc_interval"][0] <= a["auc"] <= a["auc_interval"][1] <= 1
            assert 0 <= a["at_01pct"]["tpr"] <= 1
    dp = leak["dp"]
    assert dp["epsilon"] <= leak["epsilon"] + 1e-6 and dp["delta"] < 1 / leak["n_members"]
    assert 0 < dp["bound_at_01pct"] < dp["bound_at_1pct"] <= 1
    assert dp["consistent"] == all(a[k]["consistent"] for a in dp["attacks"]
                                   for k in ("at_1pct", "at_01pct"))


@pytest.mark.slow
def test_poisoning_benchmark_quick_run_writes_its_tables(tmp_path):
    out = tmp_path / "POISONING.md"
    text = quick_run("poisoning.py", out)
    for heading in ("## Summary: targets vs results", "## Backdoor detection on digits",
                    "### Sanitise (spectre's flags) and retrain", "## False alarms on clean data",
                    "## Clean-label backdoor", "## Method notes"):
        assert heading in text
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    detectors = {"spectre", "spectral", "art-activation", "art-spectral"}
    assert set(res["settings"]["detectors"]) == detectors
    rows = res["backdoor"]["digits"]["rows"]
    assert [r["attack"] for r in rows] == ["patch", "blend"]
    for row in [*rows, res["clean_label"]["digits"]]:
        assert set(row["detectors"]) == detectors
        assert 0 < row["n_poison"] <= row["n_target"]
        assert 0 <= row["removed_poison"] <= row["removed"] <= row["n_train"]
        for model in ("poisoned", "sanitised", "clean"):
            m = row[model]
            assert 0 <= m["clean_interval"][0] <= m["clean_accuracy"] <= m["clean_interval"][1] <= 1
            assert 0 <= m["attack_interval"][0] <= m["attack_success"] <= m["attack_interval"][1]
        for d in row["detectors"].values():
            assert d["n_poison"] == row["n_poison"] and d["seconds"] >= 0
            for key in ("precision", "recall", "auroc", "recall_at_80pct_precision"):
                assert d[key] is None or 0 <= d[key] <= 1
        # the verdict in the JSON is the one the targets define
        ours = row["detectors"]["spectre"]
        assert row["targets"]["detection"] == (ours["precision"] is not None and
                                               ours["recall"] >= 0.95 and
                                               ours["precision"] >= 0.8)
    alarms = res["false_alarms"]["digits"]
    assert set(alarms["detectors"]) == detectors and len(alarms["seeds"]) == 2
    for row in alarms["detectors"].values():
        assert len(row["flagged_classes"]) == len(alarms["seeds"])
        assert row["false_alarm_rate"] == sum(map(bool, row["flagged_classes"])) / 2
    # ART's two defences flag examples in every class, poisoned or not
    assert alarms["detectors"]["art-spectral"]["false_alarm_rate"] == 1.0


@pytest.mark.slow
def test_monitoring_benchmark_quick_run_writes_its_tables(tmp_path):
    out = tmp_path / "MONITORING.md"
    text = quick_run("monitoring.py", out)
    for heading in ("## Summary: targets vs results", "## digits: detection",
                    "### digits: adaptive sanity checks", "## digits: scoring cost"):
        assert heading in text
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    ev = res["evaluation"]["digits"]
    assert {d["condition"] for d in ev["detections"]} >= {"fgsm", "pgd", "adaptive", "noise"}
    assert {c["name"] for c in ev["checks"]} == {f"adaptive-{d}" for d in ev["detectors"]}
    cost = res["cost"]["digits"]
    assert cost["seconds"]["forward"] > 0 and all(r > 0 for r in cost["ratio"].values())
