"""tf.distribute: the cluster description, the worker launcher, evaluation and training over
2 logical CPU devices (MirroredStrategy) and over 2 worker processes on localhost
(MultiWorkerMirroredStrategy): identical per-example results, chief-only files, a training
run that resumes after a worker is killed. The processes run tests/distributed_job.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from robustlab import distribute
from robustlab.errors import ValidationError

JOB = Path(__file__).with_name("distributed_job.py")
# one bound for every process started here: a hung collective must fail the test, not CI
LIMIT = 240


def cluster_env(index: int, workers: int = 2, chief: bool = False) -> dict[str, str]:
    hosts = [f"localhost:{1000 + i}" for i in range(workers)]
    config: dict = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    if chief:
        config["cluster"]["chief"] = ["localhost:999"]
    return {"TF_CONFIG": json.dumps(config)}


# ------------------------------------------------------------------ the cluster description


def test_without_tf_config_one_process_is_the_chief():
    assert distribute.task({}) is None and distribute.is_chief({})


def test_worker_zero_is_the_chief_unless_the_cluster_names_one():
    assert distribute.task(cluster_env(1)) == ("worker", 1, 2)
    assert distribute.is_chief(cluster_env(0)) and not distribute.is_chief(cluster_env(1))
    assert not distribute.is_chief(cluster_env(0, chief=True))
    chief = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                      "task": {"type": "chief", "index": 0}})}
    assert distribute.is_chief(chief) and distribute.task(chief) == ("chief", 0, 2)


@pytest.mark.parametrize(("raw", "words"), [
    ("{not json", "JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "'cluster'"),
    ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}',
     "host:port"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "task"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "at least one"),
])
def test_a_bad_tf_config_is_named(raw, words):
    with pytest.raises(ValidationError, match="TF_CONFIG") as info:
        distribute.task({"TF_CONFIG": raw})
    assert words in str(info.value)


def test_tf_config_for_a_worker_round_trips():
    config = distribute.tf_config(["h0:2222", "h1:2222", "h2:2222"], 2)
    assert distribute.task({"TF_CONFIG": config}) == ("worker", 2, 3)
    with pytest.raises(ValidationError, match="index"):
        distribute.tf_config(["h0:2222"], 1)
    with pytest.raises(ValidationError, match="host:port"):
        distribute.tf_config(["h0"], 0)


def test_strategy_names_are_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.make_strategy(None) is None and distribute.make_strategy("none") is None
    import tensorflow as tf

    if len(tf.config.list_logical_devices("GPU")) < 2:  # one device: nothing to spread
        assert distribute.make_strategy("auto") is None
    with pytest.raises(ValidationError, match="strategy"):
        distribute.make_strategy("ring")
    with pytest.raises(ValidationError, match="TF_CONFIG"):
        distribute.make_strategy("multiworker")


def test_report_config_takes_a_strategy_name_and_does_not_record_it():
    from robustlab.workflow import ReportConfig

    config = ReportConfig(strategy="Multi-Worker")
    assert config.strategy == "multiworker" and "strategy" not in config.parameters()
    with pytest.raises(ValidationError, match="strategy"):
        ReportConfig(strategy="tpu")


@pytest.mark.parametrize(("n", "replicas"), [(64, 2), (65, 2), (3, 4), (10, 3), (0, 2)])
def test_replica_slices_cover_every_example_once(n, replicas):
    cuts = distribute.replica_slices(n, replicas)
    covered = np.concatenate([np.arange(n)[c] for c in cuts])
    sizes = [c.stop - c.start for c in cuts]
    assert len(cuts) == replicas and np.array_equal(covered, np.arange(n))
    assert max(sizes) - min(sizes) <= 1


def test_the_plain_path_maps_batches_in_order():
    seen = []

    def work(model, rows):
        seen.append(rows.copy())
        return [rows * 2, rows % 2 == 0]

    doubled, even = distribute.map_batches(work, None, np.arange(10, 17), 3,
                                           [((), np.int64), ((), np.bool_)])
    assert [list(r) for r in seen] == [[10, 11, 12], [13, 14, 15], [16]]
    assert list(doubled) == list(range(20, 34, 2)) and even.dtype == bool
    assert distribute.map_batches(work, None, np.arange(0), 3, [((4,), np.float32)])[0].shape \
        == (0, 4)


def test_graph_safe_names_overlap_across_threads():
    """Two threads (the replicas of a strategy) hold one model's safe names at once: each
    sees them while open, and the model's own names come back when the last one closes."""
    import keras

    from robustlab.inference import GraphSafeNames

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="my dense")],
                             name="my model")
    inside, release = threading.Barrier(2), threading.Event()
    names = []

    def hold() -> None:
        with GraphSafeNames(model):
            inside.wait(timeout=10)
            names.append((model.name, model.layers[-1].name))
            release.wait(timeout=10)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(names) < 2:
        assert time.monotonic() < deadline, "the threads did not both open the names"
        time.sleep(0.01)
    assert model.name == "my_model"  # both still open
    release.set()
    for t in threads:
        t.join()
    assert names == [("my_model", "my_dense")] * 2
    assert model.name == "my model" and model.layers[-1].name == "my dense"


# ------------------------------------------------------------------ robustlab worker


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustlab.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_worker_sets_tf_config_for_each_local_worker(tmp_path):
    script = ("import os, pathlib, json; c = json.loads(os.environ['TF_CONFIG']); "
              f"pathlib.Path(r'{tmp_path}', str(c['task']['index'])).write_text("
              "json.dumps(c))")
    done = run_cli("worker", "--local", "3", "--", sys.executable, "-c", script)
    assert done.returncode == 0, done.stderr
    configs = [json.loads((tmp_path / str(i)).read_text()) for i in range(3)]
    hosts = configs[0]["cluster"]["worker"]
    assert len(set(hosts)) == 3 and all(c["cluster"]["worker"] == hosts for c in configs)
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]


def test_one_failed_worker_stops_the_others(tmp_path):
    script = ("import os, json, sys, time; i = json.loads(os.environ['TF_CONFIG'])"
              "['task']['index']; time.sleep(120) if i else sys.exit(3)")
    start = time.monotonic()
    done = run_cli("worker", "--local", "2", "--", sys.executable, "-c", script, timeout=100)
    assert done.returncode == 3 and time.monotonic() - start < 60
    assert "worker 0 exited with 3" in done.stderr and "worker 1 exited with -15" in done.stderr


def test_worker_for_one_host_runs_the_command_with_its_tf_config():
    code = "import os, json; print(json.loads(os.environ['TF_CONFIG'])['task']['index'])"
    done = run_cli("worker", "--hosts", "a:1,b:2", "--index", "1", "--", sys.executable, "-c",
                   code)
    assert done.returncode == 0 and done.stdout.strip() == "1"


@pytest.mark.parametrize(("args", "words"), [
    (["--hosts", "a:1,b:2", "--", "true"], "JOB_COMPLETION_INDEX"),
    (["--hosts", "a:1,b:2", "--index", "2", "--", "true"], "index"),
    (["--hosts", "a,b", "--index", "0", "--", "true"], "host:port"),
    (["--local", "2"], "expected a command"),
    (["--local", "2", "--index", "1", "--", "true"], "--index only with --hosts"),
])
def test_worker_refuses_a_bad_cluster(args, words):
    done = run_cli("worker", *args)
    assert done.returncode == 2 and words in done.stderr


# ------------------------------------------------------------------ chief-only files


def test_only_the_chief_writes_report_pages(digits_result, tmp_path, monkeypatch):
    from robustlab.report import write_report

    monkeypatch.setenv("TF_CONFIG", cluster_env(1)["TF_CONFIG"])
    paths = write_report(digits_result, tmp_path / "worker")
    assert paths["html"] == tmp_path / "worker" / "report.html"
    assert not (tmp_path / "worker").exists()
    monkeypatch.setenv("TF_CONFIG", cluster_env(0)["TF_CONFIG"])
    write_report(digits_result, tmp_path / "chief")
    assert (tmp_path / "chief" / "report.html").is_file()


# ------------------------------------------------------------------ across processes


def run_job(*args: str) -> None:
    done = subprocess.run([sys.executable, str(JOB), *args], capture_output=True, text=True,
                          timeout=LIMIT)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def model_file(digits_model, tmp_path_factory):
    from robustlab.models import save_model

    out = tmp_path_factory.mktemp("distributed")
    save_model(digits_model, out / "model.keras")
    return out


@pytest.fixture(scope="module")
def plain_masks(digits_model, digits):
    from robustlab.evaluate import evaluate

    sys.path.insert(0, str(JOB.parent))
    from distributed_job import ATTACK, masks

    data = digits.subset(n_test=200, seed=0)
    return masks(evaluate(digits_model, data, **ATTACK))


@pytest.mark.slow
def test_mirrored_evaluation_gives_every_example_the_one_device_result(model_file):
    """Two logical CPU devices: evaluate, PGD with restarts and CleverHans' PGD give the same
    per-example outcome, and the same adversarial examples, on 1 device and on 1 and 2
    replicas."""
    run_job("mirrored-evaluate", str(model_file))
    plain, *runs = (np.load(model_file / f"mirrored-{n}.npz") for n in ("plain", "one", "two"))
    assert [int(r["replicas"]) for r in runs] == [1, 2]
    for run in runs:
        for key in plain.files:
            if key != "replicas":
                assert np.array_equal(plain[key], run[key]), key
    assert 0 < plain["robust"][:, -1].mean() < plain["robust"][:, 0].mean()  # a real curve


@pytest.mark.slow
def test_mirrored_training_makes_the_one_device_update(tmp_path):
    """Standard training of a dropout-free model for one epoch: 2 replicas, each on half of
    every batch, end where one device ends (up to float round-off of the gradient sum)."""
    run_job("mirrored-train", str(tmp_path))
    plain, two = np.load(tmp_path / "train-plain.npz"), np.load(tmp_path / "train-two.npz")
    weights = [k for k in plain.files if k.startswith("arr_")]
    moved = max(float(np.abs(plain[k]).max()) for k in weights)
    diff = max(float(np.abs(plain[k] - two[k]).max()) for k in weights)
    assert moved > 0.1 and diff < 1e-4, diff
    assert abs(float(plain["loss"][0]) - float(two["loss"][0])) < 1e-4


@pytest.mark.slow
def test_two_workers_evaluate_as_one_and_only_the_chief_writes(model_file, plain_masks):
    with distribute.LocalCluster([sys.executable, str(JOB), "evaluate", str(model_file)], 2,
                                 log_dir=model_file / "logs") as cluster:
        codes = cluster.wait(LIMIT)
    assert codes == [0, 0], (model_file / "logs" / "worker-1.log").read_text()[-3000:]
    for index in (0, 1):
        got = np.load(model_file / f"masks-{index}.npz")
        for key, value in plain_masks.items():
            assert np.array_equal(value, got[key]), (index, key)
    report = json.loads((model_file / "report" / "report.json").read_text())
    assert report["device"]["workers"] == 2 and report["device"]["replicas"] == 2
    assert report["device"]["strategy"] == "MultiWorkerMirroredStrategy"


def wait_for_epoch(checkpoint: Path, epochs: int, cluster: distribute.LocalCluster) -> int:
    """Block until the chief's checkpoint holds ``epochs`` completed epochs."""
    end = time.monotonic() + LIMIT
    while time.monotonic() < end:
        record = checkpoint / "checkpoint.json"
        if record.exists():
            try:
                done = json.loads(record.read_text())["completed_epochs"]
            except (ValueError, KeyError):
                done = 0
            if done >= epochs:
                return done
        assert any(p.poll() is None for p in cluster.processes), "the workers ended early"
        time.sleep(0.2)
    raise AssertionError("no checkpoint in time")


@pytest.mark.slow
def test_two_worker_training_resumes_after_a_worker_is_killed(tmp_path, digits):
    """PGD-AT on 2 workers: worker 1 is killed after the first checkpoint, the job stops,
    restarts with the same command and resumes from the chief's checkpoint, and ends at
    the accuracy of one-worker runs (within their spread over seeds)."""
    from robustlab.models import build_model
    from robustlab.training import train_adversarial

    epochs = 5
    command = [sys.executable, str(JOB), "train", str(tmp_path),
               json.dumps({"epochs": epochs, "sleep": 1.0})]
    with distribute.LocalCluster(command, 2, log_dir=tmp_path / "logs") as cluster:
        killed_after = wait_for_epoch(tmp_path / "checkpoint", 1, cluster)
        cluster.kill(1)
        codes = cluster.wait(LIMIT)
    # the killed worker failed first; the cluster (as a job controller) then stopped the chief
    assert codes[1] == -9 and cluster.first_failure == 1
    assert not (tmp_path / "trained.keras").exists()
    command[-1] = json.dumps({"epochs": epochs})
    with distribute.LocalCluster(command, 2, log_dir=tmp_path / "logs") as cluster:
        codes = cluster.wait(LIMIT)
    assert codes == [0, 0], (tmp_path / "logs" / "worker-0.log").read_text()[-3000:]
    record = json.loads((tmp_path / "train.json").read_text())
    assert killed_after <= record["initial_epoch"] < epochs
    assert len(record["loss"]) == epochs - record["initial_epoch"]
    assert (tmp_path / "trained.keras").is_file() and not (tmp_path / "checkpoint").exists()
    single = []
    for seed in (0, 1, 2):
        model = build_model(digits.input_shape, digits.num_classes, seed=0)
        model, _ = train_adversarial(model, digits, method="pgd", epsilon=0.1, steps=3,
                                     epochs=epochs, batch_size=64, seed=seed)
        single.append(float(np.mean(np.argmax(model.predict(digits.x_test, verbose=0), 1)
                                    == digits.y_test)))
    spread = max(single) - min(single)
    assert min(single) - spread - 0.01 <= record["accuracy"] <= max(single) + spread + 0.01, \
        (record["accuracy"], single)


@pytest.mark.slow
def test_the_report_notebook_runs_on_two_workers_and_only_the_chief_writes(tmp_path):
    """The documented recipe end to end: `robustlab worker --local 2 -- robustlab run
    notebooks/robustness_report.ipynb -p strategy multiworker`: each kernel gets its
    TF_CONFIG, makes the strategy first, evaluates on 2 workers; the chief alone writes
    the output folder (which verifies), the other worker's scratch folder is gone."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "report"
    cli = [sys.executable, "-m", "robustlab.cli"]
    params = {"strategy": "multiworker", "n_test": "60", "epochs": "1", "attacks": "fgsm",
              "epsilons": "0, 0.1", "checks": "false"}
    command = [*cli, "worker", "--local", "2", "--logs", str(tmp_path / "logs"), "--timeout",
               str(LIMIT), "--", *cli, "run", str(root / "notebooks" / "robustness_report.ipynb"),
               "--out", str(out), *[a for k, v in params.items() for a in ("-p", k, v)]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=LIMIT + 60,
                          cwd=tmp_path)
    logs = "".join(p.read_text()[-2000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert done.returncode == 0, done.stderr[-2000:] + logs
    report = json.loads((out / "report.json").read_text())
    assert report["device"]["workers"] == 2
    assert report["device"]["strategy"] == "MultiWorkerMirroredStrategy"
    # nothing beside the chief's folder (and its run lock): no second copy, no scratch left
    assert {p.name for p in tmp_path.iterdir()} <= {"logs", "report", "report.lock"}
    assert subprocess.run([*cli, "verify", str(out)], capture_output=True,
                          timeout=60).returncode == 0
