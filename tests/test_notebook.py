"""The report notebook, executed through papermill by `robustlab run`, with tiny parameters."""

import json
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT

from robustlab.errors import InputTypeError, NotebookExecutionError, ValidationError
from robustlab.runner import run_notebook

NOTEBOOK = ROOT / "notebooks" / "robustness_report.ipynb"
TINY = {"n_test": 40, "epochs": 2, "pgd_steps": 3, "pgd_restarts": 1,
        "epsilons": "0, 0.1, 0.3"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "robustlab.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_notebook_is_clean_and_parameterized():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_cli_runs_the_report_notebook(tmp_path):
    args = ["run", str(NOTEBOOK), "--out", str(tmp_path)]
    for name, value in TINY.items():
        args += ["-p", name, json.dumps(value) if not isinstance(value, str) else value]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report.html" in proc.stdout
    for name in ("report.html", "report.json", "model.keras", "robustness_report.ipynb"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n_examples"] == 40 and report["epsilons"] == [0.0, 0.1, 0.3]
    assert report["parameters"]["pgd_steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


@pytest.mark.slow
def test_failing_cell_keeps_notebook_and_previous_outputs(tmp_path):
    (tmp_path / "report.html").write_text("previous good report")
    proc = cli("run", str(NOTEBOOK), "--out", str(tmp_path), "-p", "dataset", "npz:/nope.npz")
    assert proc.returncode == 1
    assert "cell 3 (execution count 3, starting 'import robustlab as rl')" in proc.stderr
    assert "DatasetUnavailableError" in proc.stderr and "nope.npz" in proc.stderr
    assert (tmp_path / "robustness_report.failed.ipynb").is_file()
    assert (tmp_path / "report.html").read_text() == "previous good report"


def test_parameters_are_checked_before_the_kernel_starts(tmp_path):
    with pytest.raises(ValidationError, match="unknown parameter 'epsilon'.*epsilons"):
        run_notebook(NOTEBOOK, tmp_path, {"epsilon": 0.1})
    with pytest.raises(InputTypeError, match="pgd_steps to be int, got str"):
        run_notebook(NOTEBOOK, tmp_path, {"pgd_steps": "many"})
    with pytest.raises(ValidationError, match="identifiers"):
        run_notebook(NOTEBOOK, tmp_path, {"not valid": 1})
    proc = cli("run", str(NOTEBOOK), "--out", str(tmp_path), "-p", "bogus", "1")
    assert proc.returncode == 2 and "unknown parameter 'bogus'" in proc.stderr
    assert issubclass(NotebookExecutionError, RuntimeError)


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
    args = ["run", str(AT_NOTEBOOK), "--out", str(tmp_path)]
    for name, value in tiny.items():
        args += ["-p", name, json.dumps(value) if not isinstance(value, str) else value]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("comparison.html", "comparison.json", "baseline.keras", "hardened.keras"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "checkpoints" / "hardened").exists()  # removed when complete
    summary = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert summary["names"] == ["baseline", "pgd ε=0.2"]
    assert all(s > 0 for s in summary["training_seconds"])
    executed = nbformat.read(tmp_path / "adversarial_training.ipynb", as_version=4)
    text = "".join(out.get("text", "") for cell in executed.cells
                   for out in cell.get("outputs", []))
    assert text.count("epoch 2/2") == 2 and text.count("epoch 1/2") == 2  # a line an epoch
