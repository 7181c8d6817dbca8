"""The Kubernetes Job in deploy/ is wired consistently: the hosts that `robustlab worker` is
given are the pods the Indexed Job and its headless Service create, the ports agree, the
shared volume holds the checkpoint and the outputs, and the command runs a notebook with
parameters it declares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "kubernetes" / "robustlab-job.yaml"


def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def worker_args() -> list[str]:
    container = documents()["Job"]["spec"]["template"]["spec"]["containers"][0]
    return [str(a) for a in container["args"]]


def test_the_hosts_are_the_jobs_pods_behind_the_headless_service():
    docs = documents()
    job, service = docs["Job"], docs["Service"]
    pod = job["spec"]["template"]["spec"]
    args = worker_args()
    hosts = args[args.index("--hosts") + 1].split(",")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == len(hosts)
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    port = service["spec"]["ports"][0]["port"]
    assert pod["containers"][0]["ports"][0]["containerPort"] == port
    assert hosts == [f"{job['metadata']['name']}-{i}.{service['metadata']['name']}:{port}"
                     for i in range(len(hosts))]
    assert pod["restartPolicy"] == "OnFailure" and args[0] == "worker"
    assert "--index" not in args  # each pod's JOB_COMPLETION_INDEX


def test_the_checkpoint_and_outputs_live_on_the_shared_volume():
    docs = documents()
    pod = docs["Job"]["spec"]["template"]["spec"]
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount["name"] == pod["volumes"][0]["name"]
    args = worker_args()
    params = dict(zip(args[args.index("-p") + 1::3], args[args.index("-p") + 2::3],
                      strict=False))
    out = args[args.index("--out") + 1]
    for path in (out, params["checkpoint_dir"]):
        assert path.startswith(mount["mountPath"] + "/")


def test_the_command_runs_a_notebook_with_parameters_it_declares():
    from robustlab.runner import notebook_parameters

    args = worker_args()
    command = args[args.index("--") + 1:]
    assert command[:2] == ["robustlab", "run"]
    notebook = ROOT / command[2]
    declared = notebook_parameters(notebook)
    given = [command[i + 1] for i, a in enumerate(command) if a == "-p"]
    assert given and set(given) <= set(declared)
    assert command[command.index("strategy") + 1] == "multiworker"


def test_each_pod_gets_the_tf_config_of_its_index():
    args = worker_args()
    cut = args.index("--")
    show = [sys.executable, "-c", "import os; print(os.environ['TF_CONFIG'])"]
    env = {**os.environ, "JOB_COMPLETION_INDEX": "1"}
    done = subprocess.run([sys.executable, "-m", "robustlab.cli", *args[:cut + 1], *show],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config["task"] == {"type": "worker", "index": 1}
    assert config["cluster"]["worker"] == args[args.index("--hosts") + 1].split(",")


def test_the_image_copies_what_exists():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = [line.split()[1:-1] for line in dockerfile.splitlines()
              if line.startswith("COPY ")]
    for sources in copied:
        for source in sources:
            assert (ROOT / source).exists(), source
    assert 'ENTRYPOINT ["robustlab"]' in dockerfile
