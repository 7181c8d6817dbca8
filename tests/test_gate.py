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
    assert main(["gate", str(report), "--policy", str(_policy(tmp_path, POLICY)),
                 "--no-model"]) == 0
    blessing = json.loads((tmp_path / "blessing.json").read_text())
    assert blessing["blessed"] is True and blessing["policy"]["min_robust_accuracy"] == {
        "0.05": 0.75, "0.1": 0.35}
    out = tmp_path / "verdict.json"
    strict = _policy(tmp_path, "min_clean_accuracy: 0.99\n")
    assert main(["gate", str(report), "--policy", str(strict), "--out", str(out),
                 "--no-model"]) == 1
    assert json.loads(out.read_text())["blessed"] is False
    assert "REFUSED: clean accuracy 98.00% vs minimum 99.00%" in capsys.readouterr().err
    assert main(["gate", str(tmp_path / "missing.json"), "--policy", str(out),
                 "--no-model"]) == 2


# ------------------------------------------------- policies that would loosen the gate silently


@pytest.mark.parametrize("text", ["", "# thresholds to come\n", "allow_warnings: true\n",
                                  "min_robust_accuracy: {}\n"])
def test_a_policy_without_a_threshold_is_refused(tmp_path, text):
    """An empty policy used to bless every report."""
    with pytest.raises(ValidationError, match="at least one threshold"):
        gate(_report(tmp_path), _policy(tmp_path, text))


def test_a_policy_object_without_a_threshold_is_refused():
    with pytest.raises(ValidationError, match="at least one threshold"):
        Policy(allow_warnings=False)


@pytest.mark.parametrize(("text", "match"), [
    ("min_clean_accuracy: 0.99\nmin_robust_accuracy:\n  0.1: 0.5\nmin_clean_accuracy: 0.1\n",
     r"duplicate key 'min_clean_accuracy' on line 4 \(first on line 1\)"),
    ("min_robust_accuracy:\n  0.1: 0.5\n  0.05: 0.6\n  0.1: 0.0\n",
     r"duplicate key 0.1 on line 4 \(first on line 2\)"),
    ('min_robust_accuracy:\n  0.1: 0.5\n  "1/10": 0.0\n', r"each ε once.*'1/10'.*ε 0.1"),
])
def test_a_setting_given_twice_is_refused(tmp_path, text, match):
    """YAML lets the later duplicate win, and the later one may be the looser."""
    with pytest.raises(ValidationError, match=match):
        gate(_report(tmp_path), _policy(tmp_path, text))


@pytest.mark.parametrize("broken", ["policy", "report", "empty policy"])
def test_a_gate_run_that_fails_leaves_no_earlier_verdict(tmp_path, capsys, broken):
    report = _report(tmp_path)
    assert main(["gate", str(report), "--policy", str(_policy(tmp_path, POLICY)),
                 "--no-model"]) == 0
    assert json.loads((tmp_path / "blessing.json").read_text())["blessed"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_clean_accuracy: [\n" if broken == "policy" else "")
    if broken == "report":
        report.write_text("{not json")
        bad = _policy(tmp_path, POLICY)
    assert main(["gate", str(report), "--policy", str(bad), "--no-model"]) == 2
    assert not (tmp_path / "blessing.json").exists()


# ------------------------------------------------- a report in a sealed folder


FAKE_DEVICE = {"type": "CPU", "name": "test", "count": 1}


def _sealed(tmp_path, accs=(0.98, 0.80, 0.40)):
    """A folder as `robustlab run` leaves it: report.json, report.html, model.keras (the
    gate records its digest), manifest.json."""
    from robustlab.manifest import update_manifest

    folder = tmp_path / "run"
    folder.mkdir()
    _report(folder, accs=accs)
    (folder / "model.keras").write_bytes(b"PK\x03\x04 stands in for the trained model")
    (folder / "report.html").write_text("<p>the report</p>")
    update_manifest(folder, device=FAKE_DEVICE)
    return folder


def _files(folder):
    return json.loads((folder / "manifest.json").read_text())["files"]


def test_gate_refuses_a_tampered_report_and_does_not_reseal_it(tmp_path, capsys):
    """Hand-edited numbers used to be blessed, and the folder resealed over them."""
    from robustlab.manifest import verify

    folder = _sealed(tmp_path, accs=(0.98, 0.70, 0.30))  # the policy refuses these numbers
    sealed = _files(folder)
    data = json.loads((folder / "report.json").read_text())
    for point, better in zip(data["worst_case"]["points"], (0.98, 0.90, 0.60), strict=True):
        point["accuracy"] = better
    (folder / "report.json").write_text(json.dumps(data))
    assert main(["gate", str(folder / "report.json"), "--policy",
                 str(_policy(tmp_path, POLICY))]) == 1
    err = capsys.readouterr().err
    assert "does not verify against its manifest.json" in err and "changed: report.json" in err
    verdict = json.loads((folder / "blessing.json").read_text())
    assert verdict["blessed"] is False and not verdict["passed"]  # numbers not judged
    found = verify(folder)
    assert found.changed == ("report.json",) and not found.ok  # still caught afterwards
    files = _files(folder)
    assert files.pop("blessing.json")["size"] == (folder / "blessing.json").stat().st_size
    assert files == sealed  # nothing else re-recorded


def test_gate_names_missing_and_added_files(tmp_path, capsys):
    folder = _sealed(tmp_path)
    (folder / "report.html").unlink()
    (folder / "notes.txt").write_text("added later")
    assert main(["gate", str(folder / "report.json"), "--policy",
                 str(_policy(tmp_path, POLICY))]) == 1
    err = capsys.readouterr().err
    assert "missing: report.html" in err and "not in the manifest: notes.txt" in err


def test_gate_records_only_its_own_verdict(tmp_path, capsys):
    from robustlab._io import sha256_file
    from robustlab.manifest import verify

    folder = _sealed(tmp_path)
    before = json.loads((folder / "manifest.json").read_text())
    assert main(["gate", str(folder / "report.json"), "--policy",
                 str(_policy(tmp_path, POLICY))]) == 0
    after = json.loads((folder / "manifest.json").read_text())
    entry = after["files"].pop("blessing.json")
    assert entry["sha256"] == sha256_file(folder / "blessing.json")
    assert after["files"] == before["files"] and verify(folder).ok
    blessed = json.loads((folder / "blessing.json").read_text())
    # a later edit of anything the gate did not write is still caught, gate or no gate
    (folder / "report.html").write_text("<p>edited</p>")
    assert verify(folder).changed == ("report.html",)
    assert main(["gate", str(folder / "report.json"), "--policy",
                 str(_policy(tmp_path, POLICY))]) == 1
    assert verify(folder).changed == ("report.html",)
    assert not json.loads((folder / "blessing.json").read_text())["blessed"]
    # the verdict says which run's folder it verified
    assert blessed["blessed"] is True and blessed["run_id"] == before["run_id"]
    assert any(line.startswith("report folder") and "verifies" in line
               for line in blessed["passed"])


def test_gate_reads_an_encrypted_report_with_its_key(tmp_path, monkeypatch):
    """With a key configured the report is ciphertext on disk; the gate decrypts it in
    memory, and without the key it refuses with a named error (exit 2), leaving no verdict."""
    from robustlab import crypto

    folder = tmp_path / "run"
    folder.mkdir()
    plain = _report(folder)
    crypto.write_key_file(tmp_path / "kek")
    monkeypatch.setenv("ROBUSTLAB_KEY_FILE", str(tmp_path / "kek"))
    crypto.encrypt_file(plain)
    assert crypto.looks_encrypted(plain.read_bytes())
    policy = _policy(tmp_path, POLICY)
    assert main(["gate", str(plain), "--policy", str(policy), "--no-model"]) == 0
    assert json.loads((folder / "blessing.json").read_text())["blessed"] is True
    monkeypatch.delenv("ROBUSTLAB_KEY_FILE")
    assert main(["gate", str(plain), "--policy", str(policy), "--no-model"]) == 2
    assert not (folder / "blessing.json").exists()


def test_gate_refuses_to_bless_a_model_the_report_did_not_evaluate(tmp_path):
    """The model sealed with the report (or pinned by its run) is the one a blessing may
    name: another file given with --model is refused, and no verdict is left."""
    folder = _sealed(tmp_path)
    other = tmp_path / "other.keras"
    other.write_bytes(b"PK\x03\x04 some other model")
    policy = _policy(tmp_path, POLICY)
    report = folder / "report.json"
    assert main(["gate", str(report), "--policy", str(policy), "--model", str(other)]) == 2
    assert not (folder / "blessing.json").exists()
    assert main(["gate", str(report), "--policy", str(policy)]) == 0  # its own model.keras
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    data = json.loads(_report(pinned).read_text())
    data["parameters"] = {"model_sha256": "ab" * 32}
    (pinned / "report.json").write_text(json.dumps(data))
    assert main(["gate", str(pinned / "report.json"), "--policy", str(policy), "--model",
                 str(other)]) == 2
