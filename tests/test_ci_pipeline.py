"""The example CI pipeline (ci/robustness.yml): its report, signing and gate commands, run
here in the same order with smaller parameters, produce a report that the shipped policy
blesses (signed with a key made here), and a stricter policy refuses; its deploy job's
check lets exactly the blessed model through."""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "ci" / "robustness.yml"
SMALL = ["-p", "n_test", "120", "-p", "pgd_steps", "10", "-p", "pgd_restarts", "1",
         "-p", "n_check", "60"]


def _steps(job="robustness"):
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return {s["name"]: s for s in jobs[job]["steps"] if "name" in s}


def test_workflow_installs_runs_gates_and_keeps_the_report():
    steps = _steps()
    assert list(steps) == ["Install", "Robustness report", "Signing key", "Gate",
                           "Forget the signing key", "Keep the report"]
    assert steps["Keep the report"]["if"] == "always()"
    assert steps["Forget the signing key"]["if"] == "always()"
    # the folder, and the executed notebook a failed run keeps beside it
    assert steps["Keep the report"]["with"]["path"].split() == [
        "out/robustness/", "out/robustness.failed.ipynb"]
    assert "--signing-key" in steps["Gate"]["run"]
    assert (ROOT / "ci" / "policy.yaml").exists()


def test_deploy_job_verifies_the_blessing_without_the_private_key():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["deploy"]["needs"] == "robustness"
    steps = _steps("deploy")
    assert list(steps)[-2:] == ["Verify the blessing", "Deploy"]
    assert steps["Verify the blessing"]["run"].startswith("robustlab verify-blessing ")
    assert "secrets." not in yaml.safe_dump(jobs["deploy"])  # only the public key there
    assert steps["Fetch the report"]["with"]["name"] == \
        _steps()["Keep the report"]["with"]["name"]


@pytest.mark.slow
def test_pipeline_commands_bless_and_refuse(tmp_path):
    out = tmp_path / "robustness"
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2",
           "RUNNER_TEMP": str(runner_temp)}
    # the repository's secret and variable: a key pair made here
    keys = tmp_path / "keys"
    made = subprocess.run(["robustlab", "signing-keygen", str(keys / "signing.pem"),
                           str(keys / "signing.pub")], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    context = {"secrets.ROBUSTLAB_SIGNING_KEY": (keys / "signing.pem").read_text(),
               "vars.ROBUSTLAB_SIGNING_PUBLIC_KEY": (keys / "signing.pub").read_text()}

    def run(step, extra=(), job="robustness", folder=out):
        """One step's `run` as GitHub runs it (bash, the step's env with ${{ }} filled in),
        on ``folder`` instead of out/robustness."""
        spec = _steps(job)[step]
        text = spec["run"].replace("out/robustness", str(folder))
        if text.startswith("robustlab"):
            assert shlex.split(text)[0] == "robustlab"
        step_env = {**env, **{name: re.sub(r"\$\{\{\s*([\w.]+)\s*\}\}",
                                           lambda m: context[m.group(1)], str(value))
                              for name, value in spec.get("env", {}).items()}}
        return subprocess.run(["bash", "-e", "-c", " ".join([text, *map(shlex.quote, extra)])],
                              cwd=ROOT, env=step_env, capture_output=True, text=True,
                              timeout=900)

    report = run("Robustness report", SMALL)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "report.html").exists()
    written = run("Signing key")
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE((runner_temp / "signing.pem").stat().st_mode) == 0o600
    gate = run("Gate")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    blessing = json.loads((out / "blessing.json").read_text())
    assert blessing["blessed"] is True and blessing["signed"] is True
    assert blessing["model"].endswith("model.keras")
    assert run("Forget the signing key").returncode == 0
    assert not (runner_temp / "signing.pem").exists()
    verified = subprocess.run(["robustlab", "verify", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr  # the manifest covers the verdict too
    manifest = (out / "manifest.json").read_text()
    assert all(f'"{name}"' in manifest for name in ("report.html", "report.json",
                                                     "blessing.json", "model.keras",
                                                     "robustness_report.ipynb"))
    # the deploy job: the public key only, then the check
    assert run("Public key", job="deploy").returncode == 0
    deploy = run("Verify the blessing", job="deploy")
    assert deploy.returncode == 0, deploy.stderr
    assert "ok:" in deploy.stdout
    # a model changed after blessing is refused
    changed = tmp_path / "changed" / "robustness"
    shutil.copytree(out, changed)
    (changed / "model.keras").write_bytes((changed / "model.keras").read_bytes() + b"\0")
    refused = run("Verify the blessing", job="deploy", folder=changed)
    assert refused.returncode == 1 and "refused: digest mismatch:" in refused.stderr
    # so is a blessing edited by hand (here: its model digest set to the changed model's)
    edited = tmp_path / "edited" / "robustness"
    shutil.copytree(changed, edited)
    data = json.loads((edited / "blessing.json").read_text())
    data["model_sha256"] = subprocess.run(
        ["sha256sum", str(edited / "model.keras")], capture_output=True, text=True,
        check=True).stdout.split()[0]
    (edited / "blessing.json").write_text(json.dumps(data, indent=2))
    refused = run("Verify the blessing", job="deploy", folder=edited)
    assert refused.returncode == 1 and "refused: bad signature:" in refused.stderr
    assert refused.stderr.count("\n") == 1  # one line naming why

    strict = tmp_path / "strict.yaml"
    strict.write_text("min_robust_accuracy:\n  0.3: 0.5\n")
    refused = subprocess.run(["robustlab", "gate", str(out / "report.json"), "--policy",
                              str(strict)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "REFUSED" in refused.stderr
    assert '"blessed": false' in (out / "blessing.json").read_text()
    assert run("Verify the blessing", job="deploy").returncode == 1  # unsigned, refused
    again = subprocess.run(["robustlab", "verify", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the gate re-recorded only its own verdict
    # an edited report is refused, not blessed and resealed
    report_json = out / "report.json"
    report_json.write_text(report_json.read_text().replace('"clean_accuracy": ',
                                                           '"clean_accuracy": 1.0, "x": ', 1))
    assert run("Signing key").returncode == 0
    tampered = run("Gate")
    assert tampered.returncode == 1 and "changed: report.json" in tampered.stderr
    assert '"blessed": false' in (out / "blessing.json").read_text()
    assert run("Verify the blessing", job="deploy").returncode == 1  # signed, not blessed
    verified = subprocess.run(["robustlab", "verify", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
    assert verified.returncode == 1 and "changed: report.json" in verified.stderr
