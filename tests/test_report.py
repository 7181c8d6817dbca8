import json
import re
from dataclasses import replace

import pytest

from robustlab.errors import ValidationError
from robustlab.evaluate import evaluate
from robustlab.report import render_html, write_report

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror=alert(1)></title>{{ 7*7 }}'


@pytest.fixture(scope="module")
def result(digits_model, digits):
    return evaluate(digits_model, digits, "fgsm, pgd", "0, 0.1, 0.2", n=60, seed=0)


def test_report_is_self_contained(result, tmp_path):
    paths = write_report(result, tmp_path)
    html = paths["html"].read_text()
    assert "<script" not in html.lower()
    assert re.search(r"(src|href)=\"(https?:)?//", html) is None
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    assert html.count("data:image/png;base64,") == 3  # curves, examples, convergence
    for text in ("Can you trust this number?", "Robust accuracy per ε", "worst case", "FGSM",
                 "PGD-40", "tensorflow", "Examples", "seed", "Convergence", "Per class"):
        assert text in html
    data = json.loads(paths["json"].read_text())
    assert data["curves"][1]["points"][2]["accuracy"] == result.curves[1].points[2].accuracy


def test_csp_hash_matches_the_style_block(result):
    import base64
    import hashlib

    html = render_html(result)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in html


def test_hostile_strings_are_escaped(result):
    evil = replace(result, model={**result.model, "name": HOSTILE},
                   dataset={**result.dataset, "name": HOSTILE,
                            "class_names": [HOSTILE] * 10},
                   parameters={"dataset": HOSTILE})
    html = render_html(evil)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "{{ 7*7 }}" in html  # template syntax in data is not evaluated
    assert html.count("</title>") == 1


def test_repr_html(result):
    fragment = result._repr_html_()
    assert "<table" in fragment and "PGD-40" in fragment and "<script" not in fragment


def test_comparison_report(digits_model, digits, tmp_path):
    from robustlab.evaluate import compare, evaluate
    from robustlab.report import write_comparison

    kwargs = dict(attacks="fgsm", epsilons="0, 0.1, 0.2", n=60)
    a = evaluate(digits_model, digits, **kwargs)
    b = evaluate(digits_model, digits, **kwargs)
    comp = compare({"<b>base</b>": a, "same": b}, training_seconds={"same": 1.5})
    assert comp.focus_epsilon in (0.1, 0.2) and comp.gained == {"same": ()}
    paths = write_comparison(comp, tmp_path, digits.x_test[:60], digits.y_test[:60])
    html = paths["html"].read_text(encoding="utf-8")
    assert "&lt;b&gt;base&lt;/b&gt;" in html and "<b>base</b>" not in html
    assert "<script" not in html and "Content-Security-Policy" in html
    assert json.loads(paths["json"].read_text())["training_seconds"] == [None, 1.5]
    with pytest.raises(ValidationError, match="share epsilons"):
        compare({"a": a, "b": evaluate(digits_model, digits, attacks="fgsm", epsilons="0, 0.1",
                                       n=60)})
    with pytest.raises(ValidationError, match="at least two"):
        compare({"a": a})
