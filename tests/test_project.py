"""The project's own promises: dependencies agree, README commands exist, no print()."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from conftest import ROOT


def normalise(spec: str) -> str:
    return re.sub(r"\s+", "", spec).lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert {normalise(s) for s in pip_section if s != "-e ."} == \
        {normalise(s) for s in project["dependencies"]}
    assert "-e ." in pip_section
    python = next(d for d in conda if d.startswith("python"))
    assert python == "python=3.11" and ">=3.10" in project["requires-python"]


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == \
        ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_library_never_prints():
    offenders = [str(p) for p in (ROOT / "robustlab").rglob("*.py")
                 if p.name != "cli.py" and re.search(r"^\s*print\(", p.read_text(), re.M)]
    assert offenders == []


def test_lazy_exports_survive_submodule_imports():
    code = ("import robustlab as rl; rl.compare; import robustlab.evaluate; "
            "assert callable(rl.evaluate), rl.evaluate; assert callable(rl.compare)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the other order: the submodule first, then the export of the same name
    code = ("import robustlab.evaluate, robustlab.gate; from robustlab.evaluate import compare; "
            "import robustlab as rl; assert callable(rl.evaluate), rl.evaluate; "
            "assert callable(rl.gate), rl.gate; assert rl.compare is compare")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _lint_imports(*args, cwd=ROOT, env=None):
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_layer_contract_holds():
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("types.py", "import robustlab.report", "robustlab.types is not allowed to import "
                                            "robustlab.report"),
    ("results.py", "from robustlab.evaluate import evaluate", "robustlab.results is not "
                                                              "allowed to import "
                                                              "robustlab.evaluate"),
    ("checks.py", "from robustlab.attacks._core import project", "robustlab.checks is not "
                                                                 "allowed to import "
                                                                 "robustlab.attacks._core"),
])
def test_layer_contract_catches_upward_and_private_imports(tmp_path, module, line, broken):
    """The contract test can fail: a copy of the package with one bad import breaks it."""
    shutil.copytree(ROOT / "robustlab", tmp_path / "robustlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "robustlab" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = _lint_imports("--no-cache", cwd=tmp_path, env=env)
    assert proc.returncode != 0 and broken in proc.stdout, proc.stdout[-3000:]


def test_report_notebook_parameters_are_the_report_config():
    """A new notebook parameter cannot drift out of the report: the parameters cell and
    ReportConfig have the same names and defaults, and the notebook passes them once."""
    import ast
    import dataclasses

    from robustlab.runner import notebook_parameters
    from robustlab.workflow import ReportConfig

    notebook = ROOT / "notebooks" / "robustness_report.ipynb"
    declared = notebook_parameters(notebook)
    fields = {f.name: f.default for f in dataclasses.fields(ReportConfig)}
    assert list(declared) == list(fields)
    for name, info in declared.items():
        assert ast.literal_eval(info["default"]) == fields[name], name
    code = "".join("".join(c["source"]) for c in
                   json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
    assert "ReportConfig.from_namespace(globals())" in code
    assert "parameters=" not in code  # nothing copied by hand


def test_public_functions_leave_global_random_state_alone(digits):
    """Builders, training and the CleverHans / ART backends seed what they draw from for the
    call only: the caller's Python, NumPy and TensorFlow global state is as it was."""
    import random

    import numpy as np
    import tensorflow as tf
    from tensorflow.python.eager import context

    from robustlab.attacks import fgsm, pgd
    from robustlab.models import build_model
    from robustlab.training import train

    random.seed(123)
    np.random.seed(123)  # noqa: NPY002
    tf.random.set_seed(123)
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    model = build_model((8, 8, 1), 10, seed=5)
    small = digits.subset(n_train=64, n_test=16)
    train(model, small, epochs=1, seed=3)
    x, y = small.x_test, small.y_test
    pgd(model, x, y, epsilon=0.1, steps=2, backend="cleverhans", seed=4)
    pgd(model, x, y, epsilon=0.1, steps=2, backend="art", seed=4)
    fgsm(model, x, y, epsilon=0.1, backend="art")
    assert random.getstate() == py_state
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) \
        and after[2:] == np_state[2:]
    assert context.global_seed() == 123


def test_unknown_keyword_arguments_are_named(tiny_model, batch):
    import robustlab as rl

    x, y = batch
    for attack in (rl.apgd, rl.square, rl.deepfool, rl.carlini_wagner_l2, rl.pgd, rl.fgsm):
        with pytest.raises(TypeError, match="stepz"):
            attack(tiny_model, x, y, epsilon=0.1, stepz=10)
