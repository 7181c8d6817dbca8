"""The monitoring lab: detectors, thresholds, drift, safe save/load, logs, the attacker's
view of the detector (the defended model) and the honest evaluation."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

import robustlab as rl
from robustlab.errors import ValidationError
from robustlab.logs import JsonLinesFormatter, json_lines_handler
from robustlab.monitor import (
    SHIFTS,
    Detector,
    Monitor,
    evaluate_monitor,
    shift,
    threshold_at,
)
from robustlab.results import Status
from robustlab.stats import tpr_at_fpr


@pytest.fixture(scope="module")
def setup():
    data = rl.load("digits")
    model = rl.build_model(data.input_shape, data.num_classes, seed=0)
    rl.train(model, data, epochs=6, batch_size=32, seed=0)
    cal, held = data.x_test[:180], data.x_test[180:]
    monitor = Monitor.fit(model, data.x_train, data.y_train, cal, seed=0)
    return data, model, monitor, held, data.y_test[180:]


def test_threshold_matches_the_roc_rule():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=500), rng.normal(1.0, size=300)
    tau = threshold_at(neg, 0.05)
    assert tau == tpr_at_fpr(pos, neg, 0.05)[2]
    assert np.mean(neg > tau) <= 0.05
    assert threshold_at(neg[:10], 0.05) == neg[:10].max()


def test_fit_sets_thresholds_at_the_false_positive_rate(setup):
    data, model, monitor, held, _ = setup
    cal = data.x_test[:180]
    scores = monitor.score(cal, log_batch=False)
    assert set(scores.scores) == {d.value for d in Detector}
    for name, values in scores.scores.items():
        assert values.shape == (180,)
        assert np.mean(values > scores.thresholds[name]) <= 0.05  # exact on calibration
    # held-out clean data: near the target rate (180 inputs: well inside 0-15%)
    other = monitor.score(held, log_batch=False)
    for flags in other.flags.values():
        assert flags.mean() < 0.15
    np.testing.assert_array_equal(other.flagged, other.scores["mahalanobis"]
                                  > monitor.thresholds[Detector.MAHALANOBIS])


def test_fit_refuses_bad_settings(setup):
    data, model, _, _, _ = setup
    x, y, cal = data.x_train, data.y_train, data.x_test[:180]
    with pytest.raises(ValidationError, match="calibration to hold at least 20"):
        Monitor.fit(model, x, y, cal[:10])
    with pytest.raises(ValidationError, match="at least 100"):
        Monitor.fit(model, x, y, cal[:50], fpr=0.01)
    with pytest.raises(ValidationError, match="detector to be one of the detectors"):
        Monitor.fit(model, x, y, cal, detectors="knn, msp", detector="mahalanobis")
    with pytest.raises(ValidationError, match="expected detectors to be one of"):
        Monitor.fit(model, x, y, cal, detectors="knn, magic")
    with pytest.raises(ValidationError, match="fpr"):
        Monitor.fit(model, x, y, cal, fpr=0.7)
    with pytest.raises(ValidationError, match="one label per input"):
        Monitor.fit(model, x, y[:5], cal)
    with pytest.raises(ValidationError, match="integer class labels"):
        Monitor.fit(model, x, y + 0.5, cal)
    with pytest.raises(ValidationError, match="batch_size"):
        Monitor.fit(model, x, y, cal, batch_size=0)
    with pytest.raises(ValidationError, match="input shape"):
        Monitor.fit(model, x.reshape(len(x), -1), y, cal)
    with pytest.raises(ValidationError, match="finite"):
        bad = cal.copy()
        bad[0, 0, 0, 0] = np.nan
        Monitor.fit(model, x, y, bad)


def test_saved_monitor_loads_without_pickle_and_scores_the_same(setup, tmp_path):
    _, model, monitor, held, _ = setup
    path = monitor.save(tmp_path / "mon")
    assert sorted(p.name for p in path.iterdir()) == ["monitor.json", "monitor.npz"]
    with np.load(path / "monitor.npz", allow_pickle=False) as stored:  # no object arrays
        assert all(stored[name].dtype != object for name in stored.files)
    loaded = Monitor.load(path, model)
    a = monitor.score(held, log_batch=False)
    b = loaded.score(held, log_batch=False)
    for name in a.scores:  # iforest included: re-fitted from the stored bank and seed
        np.testing.assert_allclose(a.scores[name], b.scores[name], rtol=1e-6, atol=1e-6)
    assert loaded.fingerprint() == monitor.fingerprint()
    assert loaded.thresholds == monitor.thresholds


def test_load_refuses_altered_files_and_another_model(setup, tmp_path):
    data, model, monitor, _, _ = setup
    path = monitor.save(tmp_path / "mon")
    other = rl.build_model(data.input_shape, data.num_classes, seed=1)
    with pytest.raises(ValidationError, match="the model the monitor was fitted on"):
        Monitor.load(path, other)
    assert Monitor.load(path, other, check_model=False).detector is Detector.MAHALANOBIS
    blob = bytearray((path / "monitor.npz").read_bytes())
    blob[-40] ^= 1
    (path / "monitor.npz").write_bytes(bytes(blob))
    with pytest.raises(ValidationError, match="SHA-256"):
        Monitor.load(path, model)
    with pytest.raises(ValidationError, match="monitor.json and monitor.npz"):
        Monitor.load(tmp_path / "nowhere", model)
    monitor.save(path)  # a saved monitor's folder is replaced whole
    meta = json.loads((path / "monitor.json").read_text())
    meta["thresholds"]["mahalanobis"] = 1e9  # would flag nothing, ever
    (path / "monitor.json").write_text(json.dumps(meta))
    with pytest.raises(ValidationError, match="were edited"):
        Monitor.load(path, model)
    del meta["thresholds"]
    (path / "monitor.json").write_text(json.dumps(meta))
    with pytest.raises(ValidationError, match="bad or missing field"):
        Monitor.load(path, model)
    meta["format"] = 99
    (path / "monitor.json").write_text(json.dumps(meta))
    with pytest.raises(ValidationError, match="format 1"):
        Monitor.load(path, model)


def test_save_never_replaces_a_folder_that_is_not_a_monitor(setup, tmp_path):
    _, _, monitor, _, _ = setup
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "precious.txt").write_text("keep me")
    with pytest.raises(ValidationError, match="new or empty folder"):
        monitor.save(tmp_path / "results")
    assert (tmp_path / "results" / "precious.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]
    with pytest.raises(TypeError):
        monitor.thresholds[Detector.MSP] = 0.0  # read-only: the saved monitor decides


def test_defended_model_rejects_exactly_what_the_monitor_flags(setup):
    _, model, monitor, held, _ = setup
    x = np.concatenate([held[:60], shift(held[:60], "contrast", severity=0.2)])
    logits = np.asarray(model(x, training=False))
    scores = monitor.score(x, log_batch=False)
    for name in ("mahalanobis", "knn", "msp", "energy"):
        out = np.asarray(monitor.defended(name)(x, training=False))
        assert out.shape == (len(x), logits.shape[1] + 1)
        np.testing.assert_allclose(out[:, :-1], logits, rtol=1e-5, atol=1e-5)
        rejected = out.argmax(axis=1) == logits.shape[1]
        flagged = scores.flags[name]
        assert 0 < flagged.sum() < len(x)
        # the same decision, except ties within float round-off of the threshold
        margin = np.abs(scores.scores[name] - scores.thresholds[name])
        same = rejected == flagged
        assert same[margin > 1e-4 * max(1.0, abs(scores.thresholds[name]))].all()
    # iforest has no gradient: attacked through its surrogate
    assert monitor.defended("iforest").name == "defended_knn"
    # a margin makes the reject logit win a little below the threshold
    s = scores.scores["knn"]
    near = (s > scores.thresholds["knn"] - 0.5 * monitor.scales[Detector.KNN]) \
        & ~scores.flags["knn"]
    out = np.asarray(monitor.defended("knn", margin=0.5)(x, training=False))
    assert near.any() and (out.argmax(axis=1)[near] == logits.shape[1]).all()


def test_drift_test_quiet_on_clean_batches_and_fires_on_shift(setup):
    _, _, monitor, held, _ = setup
    clean = monitor.drift_test(held[:120])
    assert not clean.fired and clean.p_value > 0.01
    assert clean.components == monitor.settings["fitted_on"]["components"]
    moved = monitor.drift_test(shift(held[:120], "blur", severity=1.5))
    assert moved.fired and moved.p_value < 1e-4
    assert 0 <= moved.component < moved.components and moved.statistic > clean.statistic
    with pytest.raises(ValidationError, match="at least 2 inputs"):
        monitor.drift_test(held[:1])


def test_shifts_stay_in_bounds_and_are_seeded():
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    for name in SHIFTS:
        out = shift(x, name, seed=3)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not np.allclose(out, x)
        np.testing.assert_array_equal(out, shift(x, name, seed=3))
    assert not np.array_equal(shift(x, "noise", seed=1), shift(x, "noise", seed=2))
    with pytest.raises(ValidationError, match="images"):
        shift(np.zeros((3, 5), np.float32), "rotation")
    with pytest.raises(ValidationError, match="one of noise"):
        shift(x, "fog")


def test_json_lines_block_removes_its_handler(setup, tmp_path):
    _, _, monitor, held, _ = setup
    path = tmp_path / "log.jsonl"
    with rl.json_lines(path, logger="robustlab.monitor"):
        monitor.score(held[:20])
    monitor.score(held[20:40])  # after the block: not logged
    assert len(path.read_text().splitlines()) == 1
    assert not logging.getLogger("robustlab.monitor").handlers


def test_each_scored_batch_logs_one_json_line(setup):
    _, _, monitor, held, _ = setup
    stream = io.StringIO()
    handler = json_lines_handler(stream, logger="robustlab.monitor")
    try:
        monitor.score(held[:50], fields={"batch_id": "b-1"})
        monitor.score(held[50:60])
        monitor.score(held[60:70], log_batch=False)
    finally:
        logging.getLogger("robustlab.monitor").removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    for key in ("time", "level", "logger", "event", "model_weights_sha256", "monitor_sha256",
                "robustlab_version", "n_inputs", "n_flagged", "detector", "threshold",
                "score_p50", "score_p90", "score_p99", "score_max", "flagged_by",
                "drift_p_value", "drift", "batch_id"):
        assert key in first, key
    assert first["n_inputs"] == 50 and first["batch_id"] == "b-1"
    assert first["event"] == "monitor.batch" and first["time"].endswith("Z")
    assert first["monitor_sha256"] == monitor.fingerprint()
    assert isinstance(first["drift"], bool)


def test_json_lines_formatter_writes_null_for_non_finite_numbers():
    record = logging.makeLogRecord({"name": "robustlab.x", "levelname": "INFO", "msg": "e",
                                    "fields": {"p": float("nan"), "a": np.arange(2),
                                               "time": "spoofed"}})
    line = json.loads(JsonLinesFormatter().format(record))
    assert line["p"] is None and line["a"] == [0, 1] and line["time"] != "spoofed"


def test_resize_images_gives_the_model_shape():
    from robustlab.data import resize_images

    digits = rl.load("digits").x_test[:3]
    out = resize_images(digits, (28, 28, 1))
    assert out.shape == (3, 28, 28, 1) and out.min() >= 0 and out.max() <= 1
    assert resize_images(digits, (8, 8, 3)).shape == (3, 8, 8, 3)
    with pytest.raises(ValidationError, match="images"):
        resize_images(digits[:, :, :, 0], (28, 28, 1))


@pytest.mark.slow
def test_adaptive_attack_is_at_least_as_strong_and_checks_claims(setup):
    _, _, monitor, held, y = setup
    ev = evaluate_monitor(monitor, held[:120], y[:120], epsilons="0.1, 0.25", steps=10,
                          targets=2, escalate=3, drift_batch=60, drift_batches=10, ood=None,
                          seed=0)
    for eps in (0.1, 0.25):
        for d in ev.detectors:
            plain = next(r for r in ev.defended if r.attack == "pgd" and r.detector == d
                         and r.epsilon == eps)
            adaptive = next(r for r in ev.defended if r.attack == "adaptive"
                            and r.detector == d and r.epsilon == eps)
            assert plain.defended_accuracy >= plain.model_accuracy
            assert adaptive.model_accuracy <= plain.model_accuracy
    # against Mahalanobis, which catches nearly all of plain PGD, the adaptive attacker
    # really does better than PGD (the attack is not a no-op on the detector)
    maha = {r.attack: r for r in ev.defended if r.detector == "mahalanobis"
            and r.epsilon == 0.25}
    assert maha["pgd"].defended_accuracy >= 0.8
    assert maha["adaptive"].defended_accuracy < maha["pgd"].defended_accuracy - 0.3
    check = next(c for c in ev.checks if c.name == "adaptive-mahalanobis"
                 and c.values["epsilon"] == 0.25)
    # the escalated pass (3 × 10 steps) never does worse than the first 10 steps
    assert check.values["steps"] == 10 and check.values["escalated_steps"] == 30
    assert check.values["defended_accuracy_first_pass"] >= maha["adaptive"].defended_accuracy
    statuses = {c.name: c.status for c in ev.checks if c.values["epsilon"] == 0.25}
    assert set(statuses) == {f"adaptive-{d}" for d in ev.detectors}
    # at ε=0.25 on digits no detector keeps its claim against a white-box attacker
    assert all(s in (Status.FAIL, Status.WARN, Status.SKIP) for s in statuses.values())
    assert ev.collapsed()
    record = json.loads(json.dumps(ev.to_dict()))
    assert {r["condition"] for r in record["detections"]} >= {"fgsm", "pgd", "adaptive",
                                                              "noise", "blur"}
    clean = next(r for r in ev.drift if r.condition == "clean")
    assert clean.batches == 10 and clean.rate <= 0.2
    blur = next(r for r in ev.drift if r.condition == "blur")
    assert blur.rate == 1.0


def test_claim_check_measures_both_gains_from_one_baseline():
    from robustlab.monitor import _claim_check
    from robustlab.results import DefendedAccuracy

    def row(attack, model, defended):
        return DefendedAccuracy("knn", attack, 0.3, model, (0, 1), defended, (0, 1), 100)

    # model alone: 10 % under PGD, 2 % under either attack; with the detector 60 % -> 47 %:
    # kept (47 - 2) / (60 - 2) = 78 % (a warning), not (47 - 2) / (60 - 10) = 90 % (a pass)
    check = _claim_check("knn", 0.3, row("pgd", 0.10, 0.60), row("adaptive", 0.02, 0.47),
                         None, None)
    assert check.status is Status.WARN and "keeps only 78%" in check.evidence
    assert check.values["model_accuracy"] == 0.02
    fail = _claim_check("knn", 0.3, row("pgd", 0.1, 0.9), row("adaptive", 0.0, 0.2), None,
                        None)
    assert fail.status is Status.FAIL and "do not rely on it" in fail.evidence
    none = _claim_check("knn", 0.3, row("pgd", 0.1, 0.11), row("adaptive", 0.1, 0.1), None,
                        None)
    assert none.status is Status.SKIP
    # a longer attack still gaining: a pass becomes a warning, and the text says why
    held = _claim_check("knn", 0.3, row("pgd", 0.0, 0.9), row("adaptive", 0.0, 0.88), None,
                        None, first_pass=(40, 0.95), escalated=200)
    assert held.status is Status.WARN and "had not converged" in held.evidence
    assert held.values["still_gaining"] and held.values["escalated_steps"] == 200
    steady = _claim_check("knn", 0.3, row("pgd", 0.0, 0.9), row("adaptive", 0.0, 0.88), None,
                          None, first_pass=(40, 0.89), escalated=200)
    assert steady.status is Status.PASS and "converged" not in steady.evidence


def test_evaluate_monitor_refuses_bad_arguments(setup):
    data, model, monitor, held, y = setup
    lone = Monitor.fit(model, data.x_train, data.y_train, data.x_test[:180],
                       detectors="mahalanobis, iforest")
    with pytest.raises(ValidationError, match="'knn' too"):
        evaluate_monitor(lone, held[:20], y[:20])
    with pytest.raises(ValidationError, match="attacks among"):
        evaluate_monitor(monitor, held[:20], y[:20], attacks="square")
    with pytest.raises(ValidationError, match="shifts among"):
        evaluate_monitor(monitor, held[:20], y[:20], shifts="fog")
    with pytest.raises(ValidationError, match="targets"):
        evaluate_monitor(monitor, held[:20], y[:20], targets=0)


@pytest.fixture(scope="module")
def saved(setup, tmp_path_factory):
    data, model, monitor, held, _ = setup
    root = tmp_path_factory.mktemp("cli")
    rl.save_model(model, root / "m.keras")
    monitor.save(root / "mon")
    np.savez(root / "clean.npz", x=held[:100])
    np.savez(root / "blurred.npz", x=shift(held[:100], "blur", severity=1.5))
    np.save(root / "plain.npy", held[:10])
    np.savez(root / "words.npz", x=np.array([["a", "b"]]))
    with open(root / "pickle.npz", "wb") as f:
        np.savez(f, x=np.array([{"a": 1}], dtype=object))
    return root


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robustlab.cli", *args], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_monitor_scores_logs_and_exits_on_drift(saved):
    """The real command line (a new process), on a clean and a drifted batch."""
    base = ["monitor", "--model", str(saved / "m.keras"), "--monitor", str(saved / "mon")]
    log = saved / "batches.jsonl"
    ok = _cli(*base, "--input", str(saved / "clean.npz"), "--log", str(log),
              "--scores", str(saved / "scores.npz"), "--batch-id", "7")
    assert ok.returncode == 0, ok.stderr
    line = json.loads(ok.stdout.strip().splitlines()[-1])
    assert line["n_inputs"] == 100 and line["drift"] is False and line["batch_id"] == "7"
    assert len(line["model_file_sha256"]) == 64
    with np.load(saved / "scores.npz") as scores:
        assert scores["flagged"].shape == (100,) and "score_iforest" in scores.files
    drifted = _cli(*base, "--input", str(saved / "blurred.npz"), "--log", str(log))
    assert drifted.returncode == 1 and "drift" in drifted.stderr
    logged = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["drift"] for x in logged] == [False, True]


@pytest.mark.parametrize(("name", "says"), [
    ("pickle.npz", "no pickles"), ("nothing.npz", "existing .npz"),
    ("plain.npy", "numeric arrays"), ("words.npz", "numeric array")])
def test_cli_monitor_refuses_bad_batches_with_exit_2(saved, capsys, name, says):
    from robustlab.cli import main

    status = main(["monitor", "--model", str(saved / "m.keras"), "--monitor",
                   str(saved / "mon"), "--input", str(saved / name)])
    assert status == 2 and says in capsys.readouterr().err


def test_cli_monitor_refuses_a_folder_that_is_not_a_monitor(saved, capsys):
    from robustlab.cli import main

    status = main(["monitor", "--model", str(saved / "m.keras"), "--monitor", str(saved),
                   "--input", str(saved / "clean.npz")])
    assert status == 2 and "monitor.json and monitor.npz" in capsys.readouterr().err
