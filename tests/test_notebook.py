"""The report notebook, executed through papermill by `robustlab run`, with tiny parameters."""

import json
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest
from conftest import ROOT, without_seconds

from robustlab.errors import InputTypeError, NotebookExecutionError, ValidationError
from robustlab.runner import run_notebook

NOTEBOOK = ROOT / "notebooks" / "robustness_report.ipynb"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "robustlab.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=env)


def cli_run(notebook, out, **params):
    """``robustlab run notebook --out out -p name value ...`` (values not str as JSON)."""
    args = ["run", str(notebook), "--out", str(out)]
    for name, value in params.items():
        args += ["-p", name, value if isinstance(value, str) else json.dumps(value)]
    return cli(*args)


def test_notebook_is_clean_and_parameterized():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    # papermill must read every parameter line (a "=" in a comment hides the whole cell)
    import dataclasses

    from papermill.translators import PythonTranslator

    from robustlab.workflow import ReportConfig

    names = {p.name for p in PythonTranslator.inspect(tagged[0])}
    assert names == {f.name for f in dataclasses.fields(ReportConfig)}


def _numbers(report):
    """report.json without what differs per machine or run: the package versions and the
    device (top level), and every wall-clock ``seconds``."""
    return {k: without_seconds(v) for k, v in report.items()
            if k not in ("versions", "device", "seconds")}


@pytest.mark.slow
def test_make_demo_report_matches_the_golden_file(tmp_path):
    """`make demo`'s command, and its report.json equal to the one committed before the
    restructure into layers (apart from times, versions and the device): nothing
    observable changed."""
    proc = cli("run", str(NOTEBOOK), "--out", str(tmp_path), "-p", "dataset", "digits")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report.html" in proc.stdout
    for name in ("report.html", "report.json", "model.keras", "robustness_report.ipynb",
                 "manifest.json"):
        assert (tmp_path / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]
    report = json.loads((tmp_path / "report.json").read_text())
    golden = json.loads((ROOT / "tests" / "golden" / "demo_report.json").read_text())
    assert _numbers(report) == golden


@pytest.mark.slow
def test_failing_cell_keeps_notebook_and_previous_outputs(tmp_path):
    import os

    from robustlab.manifest import update_manifest, verify

    out = tmp_path / "out"  # an earlier good run's folder
    out.mkdir()
    (out / "report.html").write_text("previous good report")
    update_manifest(out, device={"type": "CPU", "name": "test", "count": 1})
    (tmp_path / "tmp").mkdir()  # where the failed run keeps its kernel log
    proc = cli("run", str(NOTEBOOK), "--out", str(out), "-p", "dataset", "npz:/nope.npz",
               env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    assert proc.returncode == 1
    assert "cell 3 (execution count 3, starting 'import robustlab as rl')" in proc.stderr
    assert "DatasetUnavailableError" in proc.stderr and "nope.npz" in proc.stderr
    # kept beside the folder, never inside it (it would not be part of the sealed run)
    assert (tmp_path / "out.failed.ipynb").is_file() and "out.failed.ipynb" in proc.stderr
    assert (out / "report.html").read_text() == "previous good report"
    assert verify(out).ok


def test_parameters_are_checked_before_the_kernel_starts(tmp_path):
    with pytest.raises(ValidationError, match="unknown parameter 'epsilon'.*epsilons"):
        run_notebook(NOTEBOOK, tmp_path, {"epsilon": 0.1})
    with pytest.raises(InputTypeError, match="pgd_steps to be int, got str"):
        run_notebook(NOTEBOOK, tmp_path, {"pgd_steps": "many"})
    with pytest.raises(ValidationError, match="identifiers"):
        run_notebook(NOTEBOOK, tmp_path, {"not valid": 1})
    proc = cli("run", str(NOTEBOOK), "--out", str(tmp_path), "-p", "bogus", "1")
    assert proc.returncode == 2 and "unknown parameter 'bogus'" in proc.stderr


def test_optional_parameters_accept_none_and_int(tmp_path):
    from robustlab.runner import check_parameters

    check_parameters(NOTEBOOK, {"n_test": None, "split": 8000, "epochs": 3, "seed": 1})
    with pytest.raises(InputTypeError, match="n_test to be NoneType or int, got str"):
        check_parameters(NOTEBOOK, {"n_test": "all"})
    with pytest.raises(InputTypeError, match="seed to be int, got bool"):
        check_parameters(NOTEBOOK, {"seed": True})
    check_parameters(NOTEBOOK, {"epsilons": [0, 0.1], "attacks": "pgd"})
    with pytest.raises(InputTypeError, match="epsilons"):
        check_parameters(NOTEBOOK, {"epsilons": {"a": 1}})


AT_NOTEBOOK = ROOT / "notebooks" / "adversarial_training.ipynb"


@pytest.mark.slow
def test_cli_runs_the_adversarial_training_notebook(tmp_path):
    tiny = {"n_train": 300, "n_test": 40, "epochs": 2, "train_steps": 2, "ramp_epochs": 1,
            "pgd_steps": 3, "pgd_restarts": 1, "epsilons": "0, 0.1, 0.2"}
    ckpt = tmp_path.parent / f"{tmp_path.name}-checkpoints"
    proc = cli_run(AT_NOTEBOOK, tmp_path, checkpoint_dir=str(ckpt), **tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("comparison.html", "comparison.json", "baseline.keras", "hardened.keras"):
        assert (tmp_path / name).is_file(), name
    assert not (ckpt / "hardened").exists()  # removed once the model is saved
    summary = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert summary["names"] == ["baseline", "pgd ε=0.2"]
    assert all(s > 0 for s in summary["training_seconds"])
    executed = nbformat.read(tmp_path / "adversarial_training.ipynb", as_version=4)
    text = "".join(out.get("text", "") for cell in executed.cells
                   for out in cell.get("outputs", []))
    assert text.count("epoch 2/2") == 2 and text.count("epoch 1/2") == 2  # a line an epoch


# ------------------------------------------------- the kernel's own output stays off the terminal

# What a kernel that imports TensorFlow prints on its own stderr at start-up, whatever
# TF_CPP_MIN_LOG_LEVEL says, and ipykernel's transport warning.
STARTUP_NOISE = ("oneDNN", "cuda drivers", "cuInit", "absl::InitializeLog",
                 "Kernel is running over TCP")


def tf_notebook(tmp_path, cells=("x = tf.constant([1.0]) * 2",)):
    """A small notebook whose parameters cell imports TensorFlow (cheaper than the report)."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("import tensorflow as tf\nfail = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells),
                nbformat.v4.new_code_cell("if fail:\n    raise RuntimeError('asked to fail')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "tf.ipynb"
    nbformat.write(nb, path)
    return path


def noise_in(text):
    return [marker for marker in STARTUP_NOISE if marker in text]


@pytest.mark.slow
def test_run_keeps_kernel_startup_lines_off_the_terminal(tmp_path):
    """Default `robustlab run`: stderr is empty, and the command line itself never imports
    TensorFlow (its start-up lines would come from this process then)."""
    import os

    code = ("import sys; from robustlab.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'the CLI imported TensorFlow'; "
            "sys.exit(rc)")
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-c", code, "run", str(tf_notebook(tmp_path)),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=ROOT, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "" and "executed notebook" in proc.stdout
    assert not noise_in(proc.stdout)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"tf.ipynb"}  # no log among the artifacts
    assert not list((tmp_path / "tmp").glob("robustlab-kernel-*"))  # deleted after success


@pytest.mark.slow
def test_run_verbose_lets_the_kernel_stderr_through(tmp_path, capfd):
    from robustlab.cli import main

    assert main(["run", str(tf_notebook(tmp_path)), "--out", str(tmp_path / "out"),
                 "--verbose"]) == 0
    assert noise_in(capfd.readouterr().err)  # the kernel inherited this process's stderr


@pytest.mark.slow
def test_failing_run_names_the_cell_without_startup_lines(tmp_path, capfd, monkeypatch):
    import tempfile

    from robustlab.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the kernel log goes

    assert main(["run", str(tf_notebook(tmp_path)), "--out", str(tmp_path / "out"),
                 "-p", "fail", "true"]) == 1
    err = capfd.readouterr().err
    # cell 3: papermill inserts the injected-parameters cell after the tagged one
    assert "cell 3 (execution count" in err and "starting 'if fail:'" in err
    assert "RuntimeError: asked to fail" in err and not noise_in(err)
    assert (tmp_path / "out.failed.ipynb").is_file()  # beside the output folder
    logs = list(tmp_path.glob("robustlab-kernel-tf-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err  # kept, named, outside the output directory
    assert noise_in(logs[0].read_text())  # where the start-up lines went


@pytest.mark.slow
def test_dead_kernel_error_quotes_its_last_words(tmp_path, monkeypatch):
    """A kernel that dies takes its reason with it: the error quotes the end of its log."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    last_words = ("import os, sys, time\nos.write(2, b'fatal: out of cheese\\n')\n"
                  "time.sleep(1)  # let ipykernel forward it\nos._exit(3)")
    with pytest.raises(NotebookExecutionError,
                       match=r"(?s)tf\.ipynb failed: DeadKernelError.*kernel's last output"
                             r".*fatal: out of cheese") as info:
        run_notebook(tf_notebook(tmp_path, cells=(last_words,)), tmp_path / "out")
    assert not noise_in(str(info.value))


# ------------------------------------------------------------ tables: breast_cancer and csv: data


def run_report(tmp_path, **params):
    proc = cli_run(NOTEBOOK, tmp_path, **params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text(encoding="utf-8")), \
        (tmp_path / "report.html").read_text(encoding="utf-8")


TABLE_RUN = {"n_test": 60, "epochs": 30, "pgd_steps": 10, "pgd_restarts": 1,
             "epsilons": "0, 0.25, 0.5, 1", "n_check": 40}


@pytest.mark.slow
def test_report_notebook_runs_on_breast_cancer_with_immutable_features(tmp_path):
    report, html = run_report(tmp_path, dataset="breast_cancer",
                              immutable="mean radius, worst area", **TABLE_RUN)
    assert report["dataset"]["name"] == "breast_cancer"
    assert report["clean_accuracy"] > 0.85
    assert report["constraints"]["immutable"] == ["mean radius", "worst area"]
    moved = {s["name"]: s["moved"] for s in report["feature_shifts"]}
    assert len(moved) == 30 and moved["mean radius"] == moved["worst area"] == 0
    assert max(moved.values()) > 0
    assert "worst area" in html and "cannot be changed" in html


@pytest.mark.slow
def test_report_notebook_runs_on_a_csv_table(tmp_path):
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.iloc[:, :8].copy()
    rng = np.random.default_rng(0)
    frame["visits"] = rng.integers(0, 6, len(frame))
    frame["site"] = rng.choice(["north", "south", "west"], len(frame))
    frame["diagnosis"] = np.where(bunch.target == 0, "malignant", "benign")
    path = tmp_path / "patients.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "out"
    report, html = run_report(
        out, dataset=f"csv:{path}?target=diagnosis&integer=visits&categorical=site"
                     f"&immutable=site", **TABLE_RUN)
    record = report["constraints"]
    assert record["integer"] == ["visits"]
    assert record["categorical"] == [["site=north", "site=south", "site=west"]]
    assert set(record["immutable"]) == {"site=north", "site=south", "site=west"}
    assert report["dataset"]["class_names"] == ["benign", "malignant"]
    assert "visits" in html


@pytest.mark.slow
def test_report_notebook_adds_cross_validation_when_asked(tmp_path):
    report, html = run_report(tmp_path, dataset="breast_cancer", cv_folds=3,
                              **{**TABLE_RUN, "epochs": 10, "epsilons": "0, 0.5"})
    crossval = json.loads((tmp_path / "crossval.json").read_text(encoding="utf-8"))
    assert crossval["k"] == 3 and len(crossval["folds"]) == 3
    # every example of the loaded data (455 training rows + the n_test=60 subset) tested once
    assert sum(f["n_test"] for f in crossval["folds"]) == 455 + 60
    assert report["parameters"]["cv_folds"] == 3
    assert "crossval" not in report  # the folds live in crossval.json
    assert "3-fold" in html or "fold" in html.lower()


@pytest.mark.slow
def test_adversarial_training_notebook_runs_on_breast_cancer(tmp_path):
    tiny = {"dataset": "breast_cancer", "n_test": 60, "epochs": 8, "train_steps": 3,
            "ramp_epochs": 2, "train_epsilon": 0.5, "pgd_steps": 5, "pgd_restarts": 1,
            "epsilons": "0, 0.25, 0.5"}
    ckpt = tmp_path.parent / f"{tmp_path.name}-checkpoints"
    proc = cli_run(AT_NOTEBOOK, tmp_path, checkpoint_dir=str(ckpt), **tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert summary["names"] == ["baseline", "pgd ε=0.5"]
    for result in summary["results"].values():
        assert result["dataset"]["name"] == "breast_cancer" and "constraints" in result
    html = (tmp_path / "comparison.html").read_text(encoding="utf-8")
    assert "in units of that feature" in html  # the threat model in words
    assert "examples gained" in html or "No example the baseline" in html  # not an image grid


PRIVACY_NOTEBOOK = ROOT / "notebooks" / "privacy_audit.ipynb"


@pytest.mark.slow
def test_cli_runs_the_privacy_audit_notebook(tmp_path):
    """Standard vs DP-SGD on 300 digits: ε in the log after every DP epoch, an audit per
    model, and one comparison of accuracy, robustness and privacy."""
    tiny = {"n_train": 300, "n_test": 100, "models": "standard, dp", "epochs": 3,
            "shadows": 2, "attacks": "fgsm", "epsilons": "0, 0.1", "target_epsilon": 3.0}
    proc = cli_run(PRIVACY_NOTEBOOK, tmp_path, **tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("comparison.html", "comparison.json", "standard.keras", "dp.keras"):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert summary["names"] == ["standard", "dp"]
    assert summary["privacy"]["standard"]["epsilon"] is None
    dp = summary["privacy"]["dp"]
    assert dp["epsilon"] == pytest.approx(3.0, rel=0.01) and dp["epsilon"] <= 3.0
    assert dp["training"]["sampling"] == "poisson" and dp["audit"]["shadows"] == 2
    assert {a["name"] for a in dp["audit"]["attacks"]} == {"loss", "lira", "art-blackbox"}
    html = (tmp_path / "comparison.html").read_text(encoding="utf-8")
    assert "Privacy per model" in html and "DP ε (δ)" in html and "Verdict" in html
    executed = nbformat.read(tmp_path / "privacy_audit.ipynb", as_version=4)
    text = "".join(out.get("text", "") for cell in executed.cells
                   for out in cell.get("outputs", []))
    # ε after every epoch of the DP model (the shadows log theirs too)
    assert re.search(r"epoch 1/3: .*epsilon [0-9.]+", text)
    assert re.search(r"epoch 3/3: .*epsilon 3\.0000|epoch 3/3: .*epsilon 2\.99", text)


POISONING_NOTEBOOK = ROOT / "notebooks" / "poisoning_lab.ipynb"


@pytest.mark.slow
def test_cli_runs_the_poisoning_lab_notebook(tmp_path):
    """Label flips into class 0 on 400 digits: poison -> train -> inspect -> sanitise ->
    retrain, with two detectors side by side on one page."""
    tiny = {"n_train": 400, "attack": "label-flip", "rate": 0.1, "epochs": 5,
            "detectors": "spectre, art-spectral", "clean_reference": False}
    proc = cli_run(POISONING_NOTEBOOK, tmp_path, **tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "poisoning.json").read_text(encoding="utf-8"))
    assert record["attack"]["attack"] == "label-flip-targeted"
    assert record["parameters"]["epochs"] == 5
    spectre, art = record["inspections"]
    assert spectre["detector"] == "spectre" and art["detector"] == "art-spectral"
    assert spectre["flagged_classes"] == [0]  # the flipped labels are inconsistent
    assert spectre["metrics"]["precision"] >= 0.8 and spectre["metrics"]["recall"] >= 0.7
    assert [m["name"] for m in record["models"]] == ["poisoned", "sanitised"]
    assert record["models"][1]["n_train"] == 400 - spectre["n_flagged"]
    html = (tmp_path / "poisoning.html").read_text(encoding="utf-8")
    assert "art-spectral" in html and "spectre" in html


MONITORING_NOTEBOOK = ROOT / "notebooks" / "monitoring.ipynb"


@pytest.mark.slow
def test_cli_runs_the_monitoring_notebook(tmp_path):
    """Fit a monitor on 400 digits, evaluate it (FGSM, PGD, one shift, the adaptive attacker)
    on a small budget, save it, and log three scored batches as JSON lines."""
    tiny = {"n_train": 400, "epochs": 5, "steps": 5, "targets": 1, "detectors":
            "mahalanobis, msp", "shifts": "blur", "drift_batch": 40, "drift_batches": 5}
    proc = cli_run(MONITORING_NOTEBOOK, tmp_path, **tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "monitoring.json").read_text(encoding="utf-8"))
    assert record["detectors"] == ["mahalanobis", "msp"]
    assert {d["condition"] for d in record["detections"]} == {"fgsm", "pgd", "adaptive",
                                                              "blur"}
    assert {c["name"] for c in record["checks"]} == {"adaptive-mahalanobis", "adaptive-msp"}
    assert (tmp_path / "monitor" / "monitor.npz").is_file()
    assert (tmp_path / "model.keras").is_file()
    lines = [json.loads(x) for x in
             (tmp_path / "monitor.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["batch_id"] for x in lines] == ["clean", "noise", "contrast"]
    assert lines[0]["drift"] is False  # unseen clean digits, not the calibration ones
    assert lines[2]["drift"] is True  # low-contrast digits are a different distribution
    html = (tmp_path / "monitoring.html").read_text(encoding="utf-8")
    for d in ("mahalanobis", "msp"):  # every claim beside its adaptive outcome
        line = next(x for x in html.split("<li>") if f"{d} against PGD at ε = 0.2" in x)
        assert "against adaptive PGD" in line
    assert "monitoring detection" in html and "monitoring defended" in html
    assert "histograms of detector scores per condition" in html
