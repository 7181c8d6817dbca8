"""The example CI pipeline (ci/robustness.yml): its report and gate commands, run here in the
same order with smaller parameters, produce a report that the shipped policy blesses, and a
stricter policy refuses."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "ci" / "robustness.yml"
SMALL = ["-p", "n_test", "120", "-p", "pgd_steps", "10", "-p", "pgd_restarts", "1",
         "-p", "n_check", "60"]


def _steps():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return {s["name"]: s for s in jobs["robustness"]["steps"] if "name" in s}


def test_workflow_installs_runs_gates_and_keeps_the_report():
    steps = _steps()
    assert list(steps) == ["Install", "Robustness report", "Gate", "Keep the report"]
    assert steps["Keep the report"]["if"] == "always()"
    # the folder, and the executed notebook a failed run keeps beside it
    assert steps["Keep the report"]["with"]["path"].split() == [
        "out/robustness/", "out/robustness.failed.ipynb"]
    assert (ROOT / "ci" / "policy.yaml").exists()


@pytest.mark.slow
def test_pipeline_commands_bless_and_refuse(tmp_path):
    steps = _steps()
    out = tmp_path / "robustness"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(step, extra=()):
        cmd = shlex.split(steps[step]["run"].replace("out/robustness", str(out)))
        assert cmd[0] == "robustlab"
        return subprocess.run([*cmd, *extra], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)

    report = run("Robustness report", SMALL)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "report.html").exists()
    gate = run("Gate")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert '"blessed": true' in (out / "blessing.json").read_text()
    verified = subprocess.run(["robustlab", "verify", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr  # the manifest covers the verdict too
    manifest = (out / "manifest.json").read_text()
    assert all(f'"{name}"' in manifest for name in ("report.html", "report.json",
                                                     "blessing.json", "model.keras",
                                                     "robustness_report.ipynb"))
    strict = tmp_path / "strict.yaml"
    strict.write_text("min_robust_accuracy:\n  0.3: 0.5\n")
    refused = subprocess.run(["robustlab", "gate", str(out / "report.json"), "--policy",
                              str(strict)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "REFUSED" in refused.stderr
    assert '"blessed": false' in (out / "blessing.json").read_text()
    again = subprocess.run(["robustlab", "verify", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the gate re-recorded only its own verdict
    # an edited report is refused, not blessed and resealed
    report_json = out / "report.json"
    report_json.write_text(report_json.read_text().replace('"clean_accuracy": ',
                                                           '"clean_accuracy": 1.0, "x": ', 1))
    tampered = run("Gate")
    assert tampered.returncode == 1 and "changed: report.json" in tampered.stderr
    assert '"blessed": false' in (out / "blessing.json").read_text()
    verified = subprocess.run(["robustlab", "verify", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
    assert verified.returncode == 1 and "changed: report.json" in verified.stderr
