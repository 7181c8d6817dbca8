"""The poisoning lab's report: its own page, its section in an evaluation report and its
Jupyter summary, rendered from hand-built PoisoningResults (no model is trained here)."""

import json
import re

import numpy as np
import pytest

from robustlab.errors import InputTypeError, ValidationError
from robustlab.report import (
    poisoning_sentences,
    render_html,
    render_poisoning_html,
    render_poisoning_summary_html,
    write_poisoning,
    write_report,
)
from robustlab.report.plots import poison_score_histograms_png, suspects_png
from robustlab.results import Inspection, ModelOutcome, PoisoningResult

HOSTILE = "<script>alert(1)</script>"
PNG = b"\x89PNG\r\n\x1a\n"
N_PER_CLASS = 100
POISON = np.arange(200, 215)  # 15 examples of class 2 (the backdoor's target)


def _inspections(flag: bool = True, detector: str = "spectre"):
    """Two detectors over 300 examples of 3 classes: the primary one (``detector``) scores
    the poison high and, with ``flag``, flags class 2 and its 20 highest-scored examples
    (the 15 poisons and 5 others: precision 75%, recall 100%); ``spectral`` flags nothing
    and has no per-class test."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), N_PER_CLASS)
    scores = rng.normal(0, 1, len(labels))
    scores[POISON] += 6.0
    top = np.sort(np.argsort(-scores, kind="stable")[:20])
    primary = Inspection(detector, scores, labels, top if flag else np.empty(0, np.int64),
                         (2,) if flag else (), {0: 0.41, 1: 0.73, 2: 3.1e-7 if flag else 0.02},
                         0.05, 1.25)
    spectral = Inspection("spectral", rng.normal(0, 1, len(labels)), labels,
                          np.empty(0, np.int64), (), {c: float("nan") for c in range(3)},
                          0.05, 0.5)
    return primary, spectral


_MODELS = (ModelOutcome("poisoned", 300, 0.95, (0.93, 0.97), 0.98, (0.95, 0.99)),
           ModelOutcome("sanitised", 280, 0.94, (0.92, 0.96), 0.03, (0.01, 0.06)),
           ModelOutcome("clean", 285, 0.955, (0.93, 0.97), 0.01, (0.0, 0.03)))
_ATTACK = {"attack": "backdoor", "target": 2, "source": None, "rate": 0.05, "seed": 0,
           "n_poison": 15, "n_train": 300,
           "trigger": {"kind": "patch", "shape": [8, 8, 1], "mask_sum": 4.0, "bounds": [0, 1]}}


def _result(*, truth: bool = True, flag: bool = True, class_names=("zero", "one", "two"),
            inputs=None, feature_names=None, models=_MODELS, dataset="digits",
            detector="spectre"):
    primary, spectral = _inspections(flag, detector)
    suspects = np.argsort(-primary.scores, kind="stable")[:10]
    if inputs is None:
        inputs = np.random.default_rng(1).uniform(0, 1, (10, 8, 8, 1)).astype(np.float32)
    return PoisoningResult(
        dataset=dataset, class_names=tuple(class_names), attack=_ATTACK if truth else None,
        poison=POISON.copy() if truth else None, inspections=(primary, spectral),
        removed=primary.flagged, models=models, suspects=suspects, suspect_inputs=inputs,
        n_train=300, seed=3, feature_names=feature_names, parameters={"rate": 0.05})


def _header(html: str, table_class: str) -> list[str]:
    """The header cells of the first table of ``table_class``."""
    table = re.search(rf'<table class="{table_class}">(.*?)</table>', html, re.S)
    assert table is not None
    head = re.search(r"<thead>(.*?)</thead>", table.group(1), re.S)
    assert head is not None
    return re.findall(r"<th[^>]*>(.*?)</th>", head.group(1), re.S)


def test_sentences_name_the_flagged_class_the_removal_and_the_models():
    lines = poisoning_sentences(_result())
    assert lines[0] == ("The spectre detector flags class two (p = 3.1e-07) as poisoned: it "
                        "would remove 20 of the 300 training examples (6.7%).")
    assert lines[1] == "The other detectors differ: spectral flags none."
    truth = lines[2]
    assert "finds 15 of them (recall 100.0%)" in truth
    assert "15 of the 20 examples it flags are poison (precision 75.0%)" in truth
    assert "AUROC 1.000" in truth
    assert lines[3].startswith("Sanitising lowered the attack success from 98.0% to 3.0% "
                               "(-95.0 points, beyond their 95% intervals)")
    assert lines[4].startswith("The sanitised model's clean accuracy is 94.0%, 1.5 points "
                               "below the model trained on clean data (95.5%, within")


def test_page_shows_flagged_class_detectors_precision_and_figures():
    html = render_html(_result())
    assert html == render_poisoning_html(_result())
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    assert "<h2>Poisoning</h2>" in html and "<script" not in html
    assert _header(html, "poisoning") == [
        "detector", "flagged classes", "flagged examples", "precision", "recall", "AUROC",
        "recall at 80% precision", "seconds"]
    rows = re.findall(r"<tr><td class=\"l\">(spectre|spectral)", html)
    assert rows == ["spectre", "spectral"]
    spectre = re.search(r"<tr><td class=\"l\">spectre.*?</tr>", html, re.S)
    assert spectre is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", spectre.group(0), re.S)
    assert cells[1:6] == ["two", "20", "75.0%", "100.0%", "1.000"]
    # per-class p-values of the primary detector, the flagged class in bold
    assert "<td><b>3.1e-07</b></td>" in html and "<td>0.41</td>" in html
    # models with intervals, attack success included
    assert "<th>attack success</th>" in html
    assert "98.0% <span class=\"ci\">[95.0, 99.0]</span>" in html
    assert 'alt="histograms of poison scores per class"' in html
    assert 'alt="the most suspicious training images"' in html
    assert "backdoor attack with a patch trigger to class two, 15 of 300" in html


def test_without_ground_truth_there_is_no_precision_column():
    r = _result(truth=False)
    html = render_html(r)
    assert _header(html, "poisoning") == ["detector", "flagged classes", "flagged examples",
                                          "seconds"]
    assert "<th>precision</th>" not in html and "No known poison" in html
    assert not any("recall" in line for line in poisoning_sentences(r))
    assert all("metrics" not in i for i in r.to_dict()["inspections"])


def test_a_result_without_flags_says_no_class_looks_poisoned():
    lines = poisoning_sentences(_result(flag=False))
    assert lines[0].startswith("No class looks poisoned to the spectre detector (it flags "
                               "none; the smallest p-value is 0.02, for class two).")
    assert "does not prove" in lines[0] and "clean-label" in lines[0]
    assert lines[1] == "The other detectors (spectral) flag the same classes."
    assert "finds none of it (it flags nothing)" in lines[2]
    assert "No class looks poisoned" in render_html(_result(flag=False))


def test_label_flips_without_attack_success_compare_clean_accuracy_only():
    models = (ModelOutcome("poisoned", 300, 0.80, (0.75, 0.85)),
              ModelOutcome("sanitised", 280, 0.90, (0.86, 0.93)))
    r = _result(models=models)
    lines = poisoning_sentences(r)
    assert not any("attack success" in line for line in lines)
    assert lines[-1] == ("The sanitised model's clean accuracy is 90.0% against the poisoned "
                         "model's 80.0% (+10.0 points, beyond their 95% intervals).")
    assert "<th>attack success</th>" not in render_html(r)


def test_hostile_names_are_escaped():
    r = _result(class_names=("zero", "one", HOSTILE), dataset=HOSTILE, detector=HOSTILE,
                inputs=np.random.default_rng(2).normal(size=(10, 4)),
                feature_names=("a", HOSTILE, "c", "d"))
    for html in (render_html(r), render_poisoning_summary_html(r)):
        assert HOSTILE not in html and "<script" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE in poisoning_sentences(r)[0]  # escaped by the template, not mangled


def test_feature_rows_render_as_a_table_of_the_most_deviant_features():
    rng = np.random.default_rng(3)
    rows = np.zeros((10, 20))
    varying = [1, 2, 4, 5, 7, 9, 11, 12, 14, 16, 17, 19]  # 12 features that move
    rows[:, varying] = rng.normal(0, 1, (10, 12))
    rows[4, 19] = 1000.0  # far from its median: shown first
    names = tuple(f"feat_{i}" for i in range(20))
    html = render_html(_result(inputs=rows, feature_names=names))
    assert 'alt="the most suspicious training images"' not in html
    header = _header(html, "poisoning suspects")
    assert header[:4] == ["index", "label", "score", "poison"]
    assert sorted(header[4:]) == sorted(f"feat_{i}" for i in varying)
    assert header[4] == "feat_19"  # the largest deviation first
    assert "12 of the 20 features shown" in html
    body = re.search(r'<table class="poisoning suspects">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None and body.group(1).count("<tr>") == 10
    assert ">yes</td>" in body.group(1)  # the suspects are the poison


def test_the_plots_are_pngs_and_feature_rows_get_no_image():
    primary, _ = _inspections()
    assert poison_score_histograms_png(primary, ("a", "b", "c")).startswith(PNG)
    assert poison_score_histograms_png(primary, ("a", "b", "c"), POISON).startswith(PNG)
    labels, idx = np.zeros(3, int), np.arange(3)
    assert suspects_png(np.zeros((3, 8, 8, 1)), labels, ("a",), idx).startswith(PNG)
    assert suspects_png(np.zeros((3, 5)), labels, ("a",), idx) is None


def test_jupyter_summary_has_the_tables_but_no_figures():
    r = _result()
    html = r._repr_html_()
    assert html == render_poisoning_summary_html(r)
    assert html.startswith('<div class="robustlab-summary">')
    assert "flags class two" in html and "<th>precision</th>" in html
    assert "data:image/png" not in html and "<!DOCTYPE" not in html


def test_write_poisoning_writes_both_files_and_the_manifest(tmp_path):
    r = _result()
    paths = write_poisoning(r, tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(r.to_dict()))
    assert "<h2>Poisoning</h2>" in paths["html"].read_text()
    files = json.loads(paths["manifest"].read_text())["files"]
    assert "poisoning.json" in files and "poisoning.html" in files
    with pytest.raises(ValidationError, match="out_dir"):
        write_poisoning(r, tmp_path / "x" / "poisoning.html")
    with pytest.raises(InputTypeError, match="PoisoningResult"):
        write_poisoning({"dataset": "digits"}, tmp_path)


def test_report_gets_the_poisoning_section_and_json(digits_result, tmp_path):
    r = _result()
    html = render_html(digits_result, poisoning=r)
    assert "<h2>Poisoning</h2>" in html and "<h2>Robustness curves</h2>" in html
    assert "<h2>Poisoning</h2>" not in render_html(digits_result)
    paths = write_report(digits_result, tmp_path, poisoning=r)
    assert json.loads(paths["poisoning"].read_text())["inspections"][0]["metrics"][
        "precision"] == 0.75
    assert "<h2>Poisoning</h2>" in paths["html"].read_text()
    assert "poisoning.json" in json.loads(paths["manifest"].read_text())["files"]


def test_wrong_poisoning_arguments_are_named(digits_result, tmp_path):
    with pytest.raises(InputTypeError, match="poisoning"):
        render_html(digits_result, poisoning={"dataset": "digits"})
    with pytest.raises(InputTypeError, match="poisoning"):
        write_report(digits_result, tmp_path / "out", poisoning=_inspections()[0])
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(ValidationError, match="only with an EvaluationResult"):
        render_html(_result(), poisoning=_result())
