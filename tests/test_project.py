"""The project's own promises: dependencies agree, README commands exist, no print()."""

import re
import subprocess
import sys

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
