"""The CI gate: blesses a good report, refuses one below the policy or with failed checks,
and refuses policies it cannot read rather than loosening."""

import json

import pytest

from robustlab.cli import main
from robustlab.errors import RobustlabError, ValidationError
from robustlab.gate import Policy, gate


def _report(tmp_path, name="report.json", clean=0.98, accs=(0.98, 0.80, 0.40), checks=None):
    eps = [0.0, 0.05, 0.1]
    points = [{"epsilon": e, "accuracy": a, "ci_low": a - 0.05, "ci_high": min(1, a + 0.05),
               "n_correct": int(a * 200)} for e, a in zip(eps, accs, strict=True)]
    data = {"clean_accuracy": clean, "clean_ci": [clean - 0.02, min(1, clean + 0.01)],
            "epsilons": eps, "worst_case": {"label": "worst", "points": points},
            "checks": checks if checks is not None else [
                {"name": "gradients", "status": "pass", "evidence": "0 of 200"},
                {"name": "convergence", "status": "warn", "evidence": "moved 1.5 pt"}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _policy(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


POLICY = """
min_clean_accuracy: 0.95
min_robust_accuracy:
  0.05: 0.75
  "1/10": 0.35
"""


def test_blesses_a_report_that_meets_the_policy(tmp_path):
    verdict = gate(_report(tmp_path), _policy(tmp_path, POLICY))
    assert verdict.blessed and verdict.reasons == ()
    assert len(verdict.passed) == 4 and len(verdict.report_sha256) == 64


def test_refuses_with_every_reason(tmp_path):
    report = _report(tmp_path, accs=(0.98, 0.70, 0.30), checks=[
        {"name": "margin_loss", "status": "fail", "evidence": "broke 40"}])
    verdict = gate(report, _policy(tmp_path, POLICY))
    assert not verdict.blessed
    text = "\n".join(verdict.reasons)
    assert "ε 0.05 70.00% vs minimum 75.00%" in text and "ε 0.1 30.00%" in text
    assert "check margin_loss failed: broke 40" in text


def test_lower_bound_warnings_and_missing_epsilon(tmp_path):
    strict = "use_lower_bound: true\nallow_warnings: false\nmin_robust_accuracy:\n  0.3: 0.1\n"
    verdict = gate(_report(tmp_path), _policy(tmp_path, strict))
    assert not verdict.blessed
    assert any("report has no ε 0.3" in r for r in verdict.reasons)
    assert any("convergence warned" in r for r in verdict.reasons)
    lower = gate(_report(tmp_path), Policy(min_clean_accuracy=0.97, use_lower_bound=True))
    assert not lower.blessed and "95% lower bound of clean accuracy 96.00%" in lower.reasons[0]


def test_max_drop_against_a_baseline(tmp_path):
    base = _report(tmp_path, "base.json", accs=(0.98, 0.85, 0.45))
    policy = _policy(tmp_path, "max_drop: 0.02\nbaseline: base.json\n")
    verdict = gate(_report(tmp_path), policy)
    assert not verdict.blessed and verdict.baseline.endswith("base.json")
    assert any("ε 0.05 80.00% vs baseline 85.00% (drop 5.00 pt" in r for r in verdict.reasons)
    assert gate(_report(tmp_path), Policy(max_drop=0.06), baseline=base).blessed
    with pytest.raises(ValidationError, match="expected a baseline report"):
        gate(_report(tmp_path), Policy(max_drop=0.06))


@pytest.mark.parametrize(("text", "match"), [
    ("min_robust_acuracy: {0.1: 0.5}\n", "unknown \\['min_robust_acuracy'\\]"),
    ("min_clean_accuracy: 95\n", "min_clean_accuracy <= 1"),
    ("- 1\n- 2\n", "mapping of settings"),
    ("min_robust_accuracy: {-0.1: 0.5}\n", "epsilons >= 0"),
    ("allow_warnings: maybe\n", "allow_warnings to be true or false"),
])
def test_bad_policies_are_refused(tmp_path, text, match):
    with pytest.raises(RobustlabError, match=match):
        gate(_report(tmp_path), _policy(tmp_path, text))


def test_cli_exit_codes_and_blessing_file(tmp_path, capsys):
    report = _report(tmp_path)
    assert main(["gate", str(report), "--policy", str(_policy(tmp_path, POLICY))]) == 0
    blessing = json.loads((tmp_path / "blessing.json").read_text())
    assert blessing["blessed"] is True and blessing["policy"]["min_robust_accuracy"] == {
        "0.05": 0.75, "0.1": 0.35}
    out = tmp_path / "verdict.json"
    strict = _policy(tmp_path, "min_clean_accuracy: 0.99\n")
    assert main(["gate", str(report), "--policy", str(strict), "--out", str(out)]) == 1
    assert json.loads(out.read_text())["blessed"] is False
    assert "REFUSED: clean accuracy 98.00% vs minimum 99.00%" in capsys.readouterr().err
    assert main(["gate", str(tmp_path / "missing.json"), "--policy", str(out)]) == 2
