"""Issue 7: artifact integrity (manifest, verify), determinism, bad input everywhere (a table
and property-based tests), and failures in long work."""

import json
import math

import numpy as np
import pytest
from conftest import without_seconds
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robustlab.attacks import AttackSpec, fgsm, pgd
from robustlab.cli import main
from robustlab.errors import RobustlabError, UnsafeModelError
from robustlab.evaluate import evaluate
from robustlab.manifest import verify
from robustlab.report import write_report

# ---------------------------------------------------------------- manifest and verify


def test_manifest_lists_every_artifact_and_verify_names_changes(digits_result, tmp_path,
                                                                capsys):
    write_report(digits_result, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"report.json", "report.html"}
    info = manifest["files"]["report.json"]
    assert len(info["sha256"]) == 64 and info["size"] == (tmp_path / "report.json").stat().st_size
    assert manifest["parameters"] == {"note": "test"} and manifest["seed"] == 0
    assert manifest["versions"]["tensorflow"].startswith("2.") and manifest["device"]["type"]
    assert verify(tmp_path).ok and main(["verify", str(tmp_path)]) == 0

    (tmp_path / "report.html").write_text("tampered")
    (tmp_path / "report.json").unlink()
    (tmp_path / "extra.txt").write_text("new")
    found = verify(tmp_path)
    assert (found.changed, found.missing, found.added) == (("report.html",), ("report.json",),
                                                           ("extra.txt",))
    assert main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "changed: report.html" in err and "missing: report.json" in err
    assert main(["verify", str(tmp_path / "nowhere")]) == 2


# ---------------------------------------------------------------- determinism


def _numbers(path):
    """report.json without wall-clock fields."""
    return json.dumps(without_seconds(json.loads(path.read_text())), sort_keys=True)


def test_same_seed_same_report_numbers(digits_model, digits, tmp_path):
    runs = []
    for k in range(2):
        res = evaluate(digits_model, digits, "fgsm, pgd", "0, 0.1, 0.2", n=60, seed=5,
                       n_check=40)
        runs.append(write_report(res, tmp_path / str(k))["json"])
    assert _numbers(runs[0]) == _numbers(runs[1])
    data = json.loads(runs[0].read_text())
    assert data["determinism"] == {"op_determinism": False, "device": "CPU",
                                   "deterministic": True}
    assert "deterministic</th><td class=\"l\">yes" in (tmp_path / "0" / "report.html").read_text()


# ---------------------------------------------------------------- bad input, one table


def _bad_inputs(tiny_model, x, y, tmp_path):
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    nan_x = x.copy()
    nan_x[0, 0, 0, 0] = np.nan
    inf_x = x.copy()
    inf_x[1, 2, 3, 0] = np.inf
    from robustlab.models import build_small_cnn, load_model

    three = build_small_cnn((8, 8, 1), 3, seed=0)
    return [
        ("negative epsilon", lambda: pgd(tiny_model, x, y, epsilon=-0.1), "epsilon >= 0"),
        ("NaN epsilon", lambda: fgsm(tiny_model, x, y, epsilon=float("nan")), "epsilon"),
        ("step larger than epsilon", lambda: pgd(tiny_model, x, y, epsilon=0.1,
                                                 step_size=0.2), "step_size <= epsilon"),
        ("zero steps", lambda: pgd(tiny_model, x, y, epsilon=0.1, steps=0), "steps >= 1"),
        ("wrong rank", lambda: fgsm(tiny_model, x[..., 0], y, epsilon=0.1), "x"),
        ("wrong channel count", lambda: fgsm(tiny_model, np.repeat(x, 3, axis=-1), y,
                                             epsilon=0.1), "input shape"),
        ("label out of range", lambda: fgsm(tiny_model, x, y + 10, epsilon=0.1), "label"),
        ("non-integer labels", lambda: fgsm(tiny_model, x, y + 0.5, epsilon=0.1),
         "integer labels"),
        ("NaN pixels", lambda: fgsm(tiny_model, nan_x, y, epsilon=0.1), "NaN|finite"),
        ("infinite pixels", lambda: fgsm(tiny_model, inf_x, y, epsilon=0.1), "NaN|finite"),
        ("values outside the bounds", lambda: fgsm(tiny_model, x + 2, y, epsilon=0.1),
         "within bounds"),
        ("empty batch", lambda: fgsm(tiny_model, x[:0], y[:0], epsilon=0.1), "empty|at least"),
        ("mismatched lengths", lambda: fgsm(tiny_model, x, y[:3], epsilon=0.1),
         "one label per example"),
        ("unknown attack", lambda: AttackSpec("boom"), "attack to be one of"),
        ("unknown norm", lambda: fgsm(tiny_model, x, y, epsilon=0.1, norm="l7"), "norm"),
        ("model with the wrong number of outputs",
         lambda: evaluate(three, (x, y), "fgsm", "0, 0.1"), "label"),
        ("missing model file", lambda: load_model(tmp_path / "none.keras"), "does not exist"),
        ("empty model file", lambda: load_model(empty), "is empty"),
        ("unknown epsilons text", lambda: evaluate(tiny_model, (x, y), "fgsm", "0, lots"),
         "number"),
        ("n_check zero", lambda: evaluate(tiny_model, (x, y), "fgsm", "0, 0.1", n_check=0),
         "n_check >= 1"),
    ]


def test_every_kind_of_bad_input_gets_a_named_error(tiny_model, batch, tmp_path):
    x, y = batch
    seen = []
    for what, call, match in _bad_inputs(tiny_model, x, y, tmp_path):
        with pytest.raises(RobustlabError, match=match):
            call()
        seen.append(what)
    assert len(seen) == 20


def test_truncated_model_file(tiny_model, tmp_path):
    from robustlab.models import load_model, save_model

    path = save_model(tiny_model, tmp_path / "m.keras")
    data = path.read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeModelError, match="truncated|not a .keras"):
        load_model(tmp_path / "cut.keras")


# ---------------------------------------------------------------- property-based


finite = st.floats(min_value=-2.0, max_value=2.0, allow_nan=False, width=32)
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), finite)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(pixels=st.one_of(st.lists(st.floats(0, 1, width=32), min_size=64, max_size=64),
                        st.lists(anything, min_size=64, max_size=64)),
       label=st.one_of(st.integers(0, 9), st.integers(-3, 13)),
       epsilon=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                         st.floats(0, 1)),
       steps=st.integers(-1, 4), norm=st.sampled_from(["linf", "l2", "l1", "inf"]),
       attack=st.sampled_from(["fgsm", "pgd"]))
def test_attacks_never_return_silently_wrong_output(tiny_model, pixels, label, epsilon,
                                                    steps, norm, attack):
    x = np.asarray(pixels, np.float32).reshape(1, 8, 8, 1)
    y = np.array([label])
    kwargs = {"epsilon": epsilon, "norm": norm}
    if attack == "pgd":
        kwargs["steps"] = steps
    try:
        out = (pgd if attack == "pgd" else fgsm)(tiny_model, x, y, **kwargs)
    except RobustlabError:
        return  # refused with a named error: fine
    # accepted: then the input was valid and the output must respect the threat model
    event("accepted")
    assert np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1 and 0 <= label < 10
    assert math.isfinite(epsilon) and epsilon >= 0 and (attack == "fgsm" or steps >= 1)
    assert out.shape == x.shape and out.dtype == x.dtype and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    delta = (out - x).reshape(-1)
    size = np.abs(delta).max() if norm in ("linf", "inf") else np.linalg.norm(delta)
    assert size <= epsilon * (1 + 1e-5) + 1e-6


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(epsilons=st.lists(st.one_of(st.floats(0, 0.6), st.floats(-0.5, 0.6),
                                   st.just(float("nan"))), min_size=0, max_size=3),
       n=st.one_of(st.none(), st.integers(1, 5), st.integers(-1, 5)), attacks=st.sampled_from(
           ["fgsm", "pgd", "fgsm, pgd-margin", "", "fgsm, fgsm", "square,", "nope"]))
def test_evaluate_refuses_or_returns_consistent_numbers(tiny_model, digits, epsilons, n,
                                                        attacks):
    x, y = digits.x_test[:6], digits.y_test[:6]
    try:
        res = evaluate(tiny_model, (x, y), attacks, epsilons, n=n, checks=False,
                       progress=False)
    except RobustlabError:
        return
    event("accepted")
    assert 1 <= res.n_examples <= 6 and len(res.epsilons) >= 1
    assert all(0 <= e for e in res.epsilons)
    for curve in (*res.curves, res.worst_case):
        for p in curve.points:
            assert 0 <= p.ci_low <= p.accuracy <= p.ci_high <= 1
            assert p.accuracy <= res.clean_accuracy


# ---------------------------------------------------------------- failures in long work


@pytest.mark.slow
def test_dead_kernel_is_a_clear_failure_and_keeps_earlier_outputs(tmp_path, monkeypatch):
    import tempfile

    import nbformat

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the kept kernel log goes here

    from robustlab.errors import NotebookExecutionError
    from robustlab.runner import run_notebook

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("code = 3  # exit status of the kernel")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import os\nos._exit(code)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "dies.ipynb"
    nbformat.write(nb, path)
    from robustlab.manifest import update_manifest

    out = tmp_path / "out"  # an earlier run's folder
    out.mkdir()
    (out / "report.json").write_text('{"good": true}')
    update_manifest(out, device={"type": "CPU", "name": "test", "count": 1})
    with pytest.raises(NotebookExecutionError, match="dies.ipynb failed: DeadKernelError"):
        run_notebook(path, out, {"code": 4})
    assert (out / "report.json").read_text() == '{"good": true}' and verify(out).ok
    assert (tmp_path / "out.failed.ipynb").is_file()  # beside the folder, not in it
    assert not [p for p in tmp_path.iterdir() if ".staging" in p.name]
