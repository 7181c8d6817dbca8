"""The report's Privacy section and the comparison's privacy columns, rendered from a
PrivacyResult: the DP record, the audit table and ROC, and a verdict in plain words."""

import json
import re

import numpy as np
import pytest

from robustlab.errors import InputTypeError, ValidationError
from robustlab.membership import score_attack
from robustlab.report import privacy_sentences, render_html, write_report
from robustlab.results import MembershipAudit, PrivacyResult

HOSTILE = "<script>alert(1)</script>"


def _audit(shift: float, *, n: int = 2000, model: str = "cnn", seed: int = 0):
    """A synthetic audit: member scores shifted by ``shift`` standard deviations."""
    rng = np.random.default_rng(seed)
    attacks = tuple(score_attack(name, rng.normal(shift * k, 1, n), rng.normal(0, 1, n))
                    for k, name in ((1.0, "lira"), (0.5, "loss")))
    return MembershipAudit(attacks=attacks, shadows=8, seed=seed, fpr_resolution=1 / n,
                           seconds=1.0, model=model, dataset="digits", n_members=n,
                           n_nonmembers=n)


def _training(epsilon, delta=1e-5):
    return {"l2_clip": 1.0, "noise_multiplier": 1.1, "delta": delta, "sample_rate": 0.032,
            "expected_batch_size": 256, "steps_per_epoch": 32, "epochs": 20, "steps": 640,
            "n": 8000, "accountant": "rdp", "clipping": "ghost", "target_epsilon": epsilon,
            "sampling": "poisson", "epsilon": epsilon, "epochs_trained": 20}


def test_a_leaking_model_without_dp_gets_a_leak_verdict():
    p = PrivacyResult(audit=_audit(2.0))
    lines = privacy_sentences(p)
    assert lines[0].startswith("Trained without differential privacy")
    assert "lira" in lines[1] and "0.1% false positives" in lines[1]
    assert lines[2].startswith("Verdict: the model leaks membership")
    assert p.epsilon is None and p.bound() is None and p.consistent() is None


def test_a_dp_model_states_its_bound_and_consistency():
    p = PrivacyResult(training=_training(2.0), audit=_audit(0.0))
    lines = privacy_sentences(p)
    assert "(2, 1e-05)-differentially private" in lines[0]
    assert f"{100 * (np.exp(2) * 0.001 + 1e-5):.2g}%" in lines[0]  # e^ε·FPR + δ = 0.74%
    assert lines[2].startswith("Verdict: no evidence of leakage")
    assert p.consistent() is True and "consistent with ε = 2" in lines[3]
    # a leak far beyond what ε = 0.1 allows is called out
    loud = PrivacyResult(training=_training(0.1), audit=_audit(3.0))
    assert loud.consistent() is False
    assert "exceeds the bound that ε = 0.1 implies" in privacy_sentences(loud)[-1]
    assert "keep it secret" in lines[0]  # the guarantee assumes a secret seed


def _attack(name, members, nonmembers):
    return score_attack(name, np.asarray(members), np.asarray(nonmembers))


def test_the_verdict_weighs_every_attack_not_only_the_strongest():
    """LiRA has the highest TPR at 0.1% FPR (one outlier, not significant on 200
    non-members), the loss attack the significant AUC: the page must say it leaks."""
    rng = np.random.default_rng(1)
    nonmembers = rng.normal(0, 1, 200)
    lira = _attack("lira", np.r_[rng.normal(0, 1, 199), 10.0], rng.normal(0, 1, 200))
    loss = _attack("loss", np.minimum(rng.normal(0.7, 1, 200), nonmembers.max() - 0.1),
                   nonmembers)
    audit = MembershipAudit(attacks=(lira, loss), shadows=4, seed=0, fpr_resolution=1 / 200,
                            seconds=1.0, model="m", dataset="d", n_members=200,
                            n_nonmembers=200)
    p = PrivacyResult(audit=audit)
    assert p.strongest().name == "lira" and loss.auc_interval[0] > 0.5
    verdict = privacy_sentences(p)[2]
    assert verdict.startswith("Verdict: the model leaks") and "loss" in verdict


def test_an_attack_scoring_members_below_non_members_is_flagged():
    rng = np.random.default_rng(2)
    backwards = _attack("lira", rng.normal(-1, 1, 300), rng.normal(0, 1, 300))
    audit = MembershipAudit(attacks=(backwards,), shadows=4, seed=0, fpr_resolution=1 / 300,
                            seconds=1.0, model="m", dataset="d", n_members=300,
                            n_nonmembers=300)
    lines = privacy_sentences(PrivacyResult(audit=audit))
    assert any(line.startswith("Caution: lira scores members below") for line in lines)


def test_report_has_the_privacy_section_and_writes_privacy_json(digits_result, tmp_path):
    p = PrivacyResult(training=_training(4.0), audit=_audit(1.0, model=HOSTILE))
    html = render_html(digits_result, privacy=p)
    assert "<h2>Privacy</h2>" in html and "Membership-inference audit" in html
    assert "DP bound at 0.1% FPR" in html and "noise multiplier σ" in html
    assert "membership-inference ROC curves" in html  # the log-log plot
    assert HOSTILE not in html  # the model name is escaped
    paths = write_report(digits_result, tmp_path, privacy=p)
    record = json.loads(paths["privacy"].read_text())
    assert record["epsilon"] == 4.0 and record["consistent"] is True
    assert record["audit"]["attacks"][0]["name"] == "lira"
    # report.json is what it is without the section
    plain = json.loads(write_report(digits_result, tmp_path / "plain")["json"].read_text())
    assert json.loads(paths["json"].read_text()).keys() == plain.keys()
    assert "<h2>Privacy</h2>" not in render_html(digits_result)


def test_privacy_result_renders_alone_for_jupyter():
    html = PrivacyResult(audit=_audit(1.0))._repr_html_()
    assert "Membership-inference audit" in html and "Verdict" in html


def test_comparison_shows_epsilon_auc_and_tpr_per_model(digits_result):
    from robustlab.evaluate import compare

    privacy = {"standard": PrivacyResult(audit=_audit(2.0)),
               "dp": PrivacyResult(training=_training(2.0), audit=_audit(0.0))}
    c = compare({"standard": digits_result, "dp": digits_result}, privacy=privacy)
    html = render_html(c)
    for heading in ("DP ε (δ)", "audit AUC", "TPR at 0.1% FPR"):
        assert heading in html
    rows = re.findall(r"<tr><td class=\"l\">(standard|dp)</td>.*?</tr>", html, re.S)
    assert rows[:2] == ["standard", "dp"]
    assert "none" in html and "bound 0.7%" in html
    record = c.to_dict()
    assert record["privacy"]["dp"]["epsilon"] == 2.0
    assert "privacy" not in compare({"a": digits_result, "b": digits_result}).to_dict()
    with pytest.raises(ValidationError, match="privacy"):
        compare({"a": digits_result, "b": digits_result}, privacy={"c": privacy["dp"]})
    with pytest.raises(InputTypeError, match=r"privacy\['a'\]"):
        compare({"a": digits_result, "b": digits_result}, privacy={"a": 0.5})


def test_bad_privacy_arguments_are_named(digits_result):
    with pytest.raises(ValidationError, match="neither"):
        PrivacyResult()
    with pytest.raises(ValidationError, match="audit"):
        PrivacyResult(audit="lira")
    with pytest.raises(InputTypeError, match="privacy"):
        render_html(digits_result, privacy={"epsilon": 1})
