import json
import re
from dataclasses import replace

import pytest

from robustlab.errors import ValidationError
from robustlab.report import render_html, write_report

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror=alert(1)></title>{{ 7*7 }}'


def test_report_is_self_contained(digits_result, tmp_path):
    paths = write_report(digits_result, tmp_path)
    html = paths["html"].read_text()
    assert "<script" not in html.lower()
    assert re.search(r"(src|href)=\"(https?:)?//", html) is None
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    assert html.count("data:image/png;base64,") == 3  # curves, examples, convergence
    for text in ("Can you trust this number?", "Robust accuracy per ε", "worst case", "FGSM",
                 "PGD-40", "tensorflow", "Examples", "seed", "Convergence", "Per class"):
        assert text in html
    data = json.loads(paths["json"].read_text())
    assert data["curves"][1]["points"][2]["accuracy"] == digits_result.curves[1].points[2].accuracy


def test_csp_hash_matches_the_style_block(digits_result):
    import base64
    import hashlib

    html = render_html(digits_result)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in html


def test_hostile_strings_are_escaped(digits_result):
    evil = replace(digits_result, model={**digits_result.model, "name": HOSTILE},
                   dataset={**digits_result.dataset, "name": HOSTILE,
                            "class_names": [HOSTILE] * 10},
                   parameters={"dataset": HOSTILE})
    html = render_html(evil)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "{{ 7*7 }}" in html  # template syntax in data is not evaluated
    assert html.count("</title>") == 1


def test_repr_html(digits_result):
    fragment = digits_result._repr_html_()
    assert "<table" in fragment and "PGD-40" in fragment and "<script" not in fragment


def test_comparison_report(digits_model, digits, tmp_path):
    from robustlab.evaluate import compare, evaluate
    from robustlab.report import write_comparison

    kwargs = dict(attacks="fgsm", epsilons="0, 0.1, 0.2", n=60, checks=False)
    a = evaluate(digits_model, digits, **kwargs)
    b = evaluate(digits_model, digits, **kwargs)
    comp = compare({"<b>base</b>": a, "same": b}, training_seconds={"same": 1.5})
    assert comp.focus_epsilon in (0.1, 0.2) and comp.gained == {"same": ()}
    paths = write_comparison(comp, tmp_path, digits.x_test[:60], digits.y_test[:60])
    html = paths["html"].read_text(encoding="utf-8")
    assert "&lt;b&gt;base&lt;/b&gt;" in html and "<b>base</b>" not in html
    assert "<script" not in html and "Content-Security-Policy" in html
    assert json.loads(paths["json"].read_text())["training_seconds"] == [None, 1.5]
    with pytest.raises(ValidationError, match="to write comparison.html and comparison.json "
                       "into, got '.*comparison.html' \\(a file name\\); pass its folder"):
        write_comparison(comp, tmp_path / "new" / "comparison.html")
    with pytest.raises(ValidationError, match="directory, got the existing file"):
        write_comparison(comp, paths["html"])
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValidationError, match="share epsilons"):
        compare({"a": a, "b": evaluate(digits_model, digits, attacks="fgsm", epsilons="0, 0.1",
                                       n=60, checks=False)})
    with pytest.raises(ValidationError, match="at least two"):
        compare({"a": a})


def _renamed(result, name, class_name=None):
    """``result`` with every user-visible name (model, dataset, classes, attack labels,
    parameters) replaced, without re-running the evaluation."""
    class_name = name if class_name is None else class_name
    curves = tuple(replace(c, label=f"{c.label} {name}") for c in result.curves)
    return replace(
        result, model={**result.model, "name": name},
        dataset={**result.dataset, "name": name, "source": name,
                 "class_names": [f"{class_name}{i}" for i in range(10)]},
        curves=curves, worst_case=replace(result.worst_case, label=f"worst {name}"),
        per_class=tuple(replace(k, name=f"{class_name}{k.label}") for k in result.per_class),
        examples=tuple(replace(e, attack=f"{e.attack} {name}") for e in result.examples),
        convergence=replace(result.convergence, attack=f"{result.convergence.attack}{name}"),
        parameters={**result.parameters, f"p{name}": name})


def _png_widths(html):
    import base64

    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    pngs = [base64.b64decode(u) for u in uris]
    assert pngs and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    return [int.from_bytes(p[16:20], "big") for p in pngs]


INVISIBLE = "\u202e\x00\u200b\x7f\x85\u202a\u2066\u200e\ufeff\u2028\r\x1b"


def test_control_and_bidi_characters_are_shown_escaped(digits_result):
    name = "abc\u202edef\x00ghi\u200bjkl"
    html = render_html(_renamed(digits_result, name + INVISIBLE))
    for ch in INVISIBLE:
        assert ch not in html, f"raw U+{ord(ch):04X} in the page"
    assert "abc\\u202edef\\u0000ghi\\u200bjkl" in html
    for escaped in ("\\u007f", "\\u0085", "\\u202a", "\\u2066", "\\u200e", "\\ufeff",
                    "\\u2028", "\\u000d", "\\u001b"):
        assert escaped in html
    assert "\t" in render_html(_renamed(digits_result, "tab\there"))  # tab and newline stay
    summary = _renamed(digits_result, name)._repr_html_()
    assert "\u202e" not in summary and "abc\\u202edef" in summary
    # JSON keeps the original
    assert _renamed(digits_result, name).to_dict()["model"]["name"] == name


def test_figure_text_is_escaped_and_shortened():
    from robustlab.report.plots import figure_text

    assert figure_text("a\u202eb\x00c") == "a\\u202eb\\u0000c"
    assert figure_text("cost $5 or $\\frac{1}$") == "cost \\$5 or \\$\\frac{1}\\$"
    long = figure_text("\u202e" * 10 + "x" * 5000, limit=40)
    assert long.endswith("…") and len(long) <= 40 and "\\u202e" in long
    assert not long.removesuffix("…").endswith("\\")  # an escape is never cut in half


def test_long_names_keep_figures_and_page_narrow(digits_result, digits):
    from robustlab.evaluate import compare
    from robustlab.report import CSS, render_comparison_html

    long = "é" + "x" * 5000
    widths = _png_widths(render_html(digits_result))
    long_widths = _png_widths(render_html(_renamed(digits_result, long)))
    assert len(long_widths) == len(widths) == 3
    assert max(long_widths) <= 1500, long_widths
    for short, wide in zip(widths, long_widths, strict=True):
        assert abs(short - wide) <= 8, (widths, long_widths)
    html = render_html(_renamed(digits_result, "$\\frac{1}$ " + long))  # mathtext is not parsed
    assert "x" * 100 in html  # the page keeps the full name (it wraps, see the CSS)
    assert re.search(r"body \{[^}]*overflow-wrap: anywhere", CSS)
    assert "table-layout" in CSS or re.search(r"td\.l[^{]*\{[^}]*overflow-wrap: anywhere", CSS)
    renamed = _renamed(digits_result, long)
    comp = compare({long: renamed, "b" + long: renamed})
    x, y = digits.x_test[:digits_result.n_examples], digits.y_test[:digits_result.n_examples]
    comp = replace(comp, gained={"b" + long: (0, 1, 2)})
    comp_widths = _png_widths(render_comparison_html(comp, x, y))
    assert len(comp_widths) == 2 and max(comp_widths) <= 1500, comp_widths


@pytest.mark.parametrize("make, expected", [
    (lambda d: (d / "report.html").write_text("x") and d / "report.html",
     "expected out_dir to be a directory, got the existing file"),
    (lambda d: d / "report.html", "got '.*report.html' \\(a file name\\); pass its folder"),
    (lambda d: d / "sub" / "Report.JSON", "to write report.html and report.json into"),
    (lambda d: (d / "f").write_text("x") and d / "f" / "sub",
     "expected out_dir to be a directory, got '.*sub' inside the existing file"),
    (lambda d: "", "expected out_dir to be a directory path, got ''"),
])
def test_write_report_refuses_a_file_as_out_dir(digits_result, tmp_path, make, expected):
    out_dir = make(tmp_path)
    with pytest.raises(ValidationError, match=expected) as info:
        write_report(digits_result, out_dir)
    assert isinstance(info.value, ValueError) and "out_dir" in str(info.value)
    assert not (tmp_path / "report.html").is_dir() and not (tmp_path / "sub").exists()


def test_write_report_accepts_an_existing_directory_named_like_a_file(digits_result, tmp_path):
    out = tmp_path / "report.html"
    out.mkdir()
    assert write_report(digits_result, out)["html"] == out / "report.html"


def test_write_report_refuses_a_non_path_out_dir(digits_result):
    from robustlab.errors import InputTypeError

    with pytest.raises(InputTypeError, match="expected out_dir to be a directory path .*int 3"):
        write_report(digits_result, 3)


# ------------------------------------------------------------------ tabular data

FEATURES = ["age", "income", "debt", HOSTILE, "a$b$", "b"]


@pytest.fixture(scope="module")
def tabular_result():
    """FGSM and PGD on a small seeded MLP over 6 synthetic features (the first immutable,
    one name hostile): a non-image result with feature shifts."""
    import keras
    import numpy as np

    from robustlab.evaluate import evaluate
    from robustlab.types import Constraints

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, 1] + x[:, 2] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=10, verbose=0)
    constraints = Constraints.build((6,), bounds=(-5, 5), scale=x.std(0), immutable=[0],
                                    names=FEATURES)
    return evaluate(model, (x[:100], y[:100]), "fgsm, pgd", "0, 0.5, 1",
                    constraints=constraints, bounds=None, checks=False, seed=0)


def test_tabular_report_shows_changed_features_not_images(tabular_result):
    import numpy as np
    from markupsafe import escape

    r = tabular_result
    assert not r.is_image and r.feature_shifts and r.examples
    html = render_html(r)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "clean, adversarial and perturbation images" not in html  # no image grid
    assert "<h2>Threat model</h2>" in html
    for sentence in r.constraints.describe(r.norm):
        assert sentence.replace("'", "&#39;") in html
    assert "1 feature cannot be changed by the attacker: age." in html
    assert "feature-scale units" in html
    assert html.count("data:image/png;base64,") == 2  # curves and the per-feature bars
    assert "percentage of broken examples in which each feature was moved" in html
    # the first broken example's table: each changed feature with its values
    first = next(j for j, ex in enumerate(r.examples) if ex.adv_pred != ex.label)
    clean = r.example_images["clean"][first]
    adv = r.example_images["adversarial"][first]
    section = html.split(f"<h3>Example #{r.examples[first].index}</h3>")[1].split("</table>")[0]
    assert ">age<" not in section  # immutable: never changed, so not listed
    for i in np.flatnonzero(clean != adv):
        assert f'<td class="l">{escape(FEATURES[i])}</td>' in section
        assert f"<td>{float(clean[i]):.4g}</td>" in section
        assert f"<td>{float(adv[i]):.4g}</td>" in section
        assert f"<td>{float(adv[i]) - float(clean[i]):+.4g}</td>" in section
    # the per-feature table: moved percentages, the attack and ε it was measured at
    shifts = html.split("Which features the attack moved")[1]
    assert f"broke at ε = {r.shift_epsilon:.4g}" in " ".join(shifts.split())
    assert "<td>100.0%</td>" in shifts and '<td class="l">age</td><td>0.0%</td>' in shifts
    assert "PGD-40" in shifts


def test_tabular_summary_html(tabular_result):
    fragment = tabular_result._repr_html_()
    assert "<table" in fragment and "PGD-40" in fragment and "<script" not in fragment
    assert "threat model: Each feature may move at most ε" in fragment
    assert "most often moved features" in fragment and "age" not in fragment.split(
        "most often moved")[1]  # the immutable feature never moved


def test_tabular_report_json_keeps_its_shape(tabular_result, tmp_path):
    paths = write_report(tabular_result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data == json.loads(json.dumps(tabular_result.to_dict()))
    assert "Examples the attack broke" in paths["html"].read_text()


# ------------------------------------------------------------------ cross-validation

def _crossval(names=("FGSM", "PGD-40"), dataset="breast_cancer"):
    """A 3-fold cross-validation made by hand: at ε 0.1 the folds spread far more than
    their Wilson intervals (75, 60, 85%), at ε 0.3 they agree (30, 31, 29%)."""
    from robustlab.results import CrossValidationResult, CurvePoint, FoldResult, Status
    from robustlab.stats import wilson_interval
    from robustlab.types import Norm

    def point(eps, k, n):
        low, high = wilson_interval(k, n)
        return CurvePoint(eps, k / n, low, high, k)

    n = 200
    folds = tuple(
        FoldResult(i, 400, n, c / n, wilson_interval(c, n),
                   (point(0.0, c, n), point(0.1, r1, n), point(0.3, r3, n)), 2.5, Status.PASS)
        for i, (c, r1, r3) in enumerate([(190, 150, 60), (188, 120, 62), (192, 170, 58)]))
    return CrossValidationResult(3, 0, "pgd", Norm.LINF, (0.0, 0.1, 0.3), tuple(names),
                                 {"name": dataset}, folds, 7.5, {"epochs": 5})


def test_crossval_page_says_whether_the_split_matters(tmp_path):
    from robustlab.report import crossval_sentences, render_crossval_html, write_crossval

    cv = _crossval()
    assert cv.spread_exceeds_sampling(0.1) and not cv.spread_exceeds_sampling(0.3)
    lines = crossval_sentences(cv)
    assert len(lines) == 3  # clean, ε 0.1, ε 0.3 (ε 0 is the clean accuracy)
    assert lines[1] == (f"At ε = 0.1 the folds differ more than sampling alone explains (sd "
                        f"{100 * cv.robust_sd(0.1):.1f} points > half-width "
                        f"{100 * cv.sampling_halfwidth(0.1):.1f} points): the number depends "
                        f"on the split.")
    assert lines[2].startswith("At ε = 0.3 the spread across folds is within what sampling")
    html = render_html(cv)
    assert html == render_crossval_html(cv)
    assert "Content-Security-Policy" in html and "<script" not in html
    assert html.count("data:image/png;base64,") == 1
    assert "the number depends on the split." in html
    assert "75.0%" in html and "60.0%" in html and "85.0%" in html  # every fold at ε 0.1
    assert f"{100 * cv.robust_mean(0.1):.1f}% ± {100 * cv.robust_sd(0.1):.1f}" in html
    paths = write_crossval(cv, tmp_path)
    assert json.loads(paths["json"].read_text())["summary"][1]["spread_exceeds_sampling"]
    fragment = cv._repr_html_()
    assert "mean ± sd over 3 folds" in fragment and "depends on the split" in fragment


def test_crossval_names_are_escaped():
    cv = _crossval(names=("FGSM", HOSTILE), dataset=HOSTILE)
    for html in (render_html(cv), cv._repr_html_()):
        assert "<script>window.__pwned" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html


def test_write_report_appends_the_crossval_section(digits_result, tmp_path):
    cv = _crossval()
    plain = write_report(digits_result, tmp_path / "plain")
    paths = write_report(digits_result, tmp_path / "cv", crossval=cv)
    assert paths["json"].read_bytes() == plain["json"].read_bytes()  # report.json unchanged
    assert json.loads(paths["crossval"].read_text()) == json.loads(json.dumps(cv.to_dict()))
    html = paths["html"].read_text()
    assert html.index("<h2>Cross-validation</h2>") > html.index("<h2>Package versions</h2>")
    assert "the number depends on the split." in html
    assert "<h2>Cross-validation</h2>" not in plain["html"].read_text()
    assert "crossval.json" in json.loads(paths["manifest"].read_text())["files"]
    from robustlab.errors import InputTypeError

    with pytest.raises(InputTypeError, match="expected crossval to be a CrossValidationResult"):
        write_report(digits_result, tmp_path / "bad", crossval=digits_result)


# ------------------------------------------------------------------ which attack broke what

def _section(html, heading):
    """The page from ``<h2>heading</h2>`` to the next ``<h2>``."""
    return html.split(f"<h2>{heading}</h2>")[1].split("<h2>")[0]


def _cells(row_html):
    """The numbers of one table row: ``(count, "percent")`` per ``count (pct%)`` cell."""
    return [(int(c), p) for c, p in
            re.findall(r"<t[dh]>(\d+) <span class=\"ci\">\(([\d.]+)%\)</span></t[dh]>", row_html)]


def test_breaks_table_shows_which_attack_broke_what(digits_result):
    from robustlab.report import breaks_table

    r = digits_result
    n_clean = round(r.clean_accuracy * r.n_examples)
    table = breaks_table(r)
    assert table["epsilons"] == [0.1, 0.3] and table["n_clean"] == n_clean
    assert [row["label"] for row in table["rows"]] == ["FGSM", "PGD-40"] == list(r.breaks)
    for j in (1, 2):  # every clean-correct example is counted once
        assert sum(c[j] for c in r.breaks.values()) + r.worst_case.points[j].n_correct == n_clean
    section = _section(render_html(r), "Which attack broke what")
    assert "<th>ε 0.1</th><th>ε 0.3</th>" in section.replace("\n", "") and "ε 0<" not in section
    rows = section.split("</tr>")
    for label, counts in r.breaks.items():
        row = next(x for x in rows if f'<td class="l">{label}</td>' in x)
        assert _cells(row) == [(counts[j], f"{100 * counts[j] / n_clean:.1f}") for j in (1, 2)]
    robust = next(x for x in rows if "still robust" in x)
    assert _cells(robust) == [(p.n_correct, f"{100 * p.n_correct / n_clean:.1f}")
                              for p in r.worst_case.points[1:]]
    assert "AutoAttack" not in section  # no suite among FGSM, PGD
    last = r.epsilons[-1]
    assert (f"first to break at ε = {last:.4g}: FGSM {r.breaks['FGSM'][-1]}, PGD-40 "
            f"{r.breaks['PGD-40'][-1]}, still robust {r.worst_case.points[-1].n_correct}"
            ) in r._repr_html_()
    # a result without breaks (made before they were recorded) has no section
    assert "Which attack broke what" not in render_html(replace(r, breaks={}))


def test_autoattack_suite_is_named_as_a_cascade(digits_model, digits):
    from robustlab.evaluate import evaluate
    from robustlab.report import suite_sentences

    r = evaluate(digits_model, digits, "autoattack-fast", "0, 0.1", n=16, checks=False)
    assert r.cascade and list(r.breaks) == [c.label for c in r.curves]
    labels = [c.label for c in r.curves]
    expected = (f"AutoAttack, fast version (Croce &amp; Hein 2020): {labels[0]} and {labels[1]} "
                f"run as a cascade; each attack only ran on the examples the ones before it left.")
    html = render_html(r)
    assert expected in _section(html, "Which attack broke what")
    assert expected.replace("&amp;", "&") == suite_sentences(r)[0]
    full = replace(r, curves=tuple(replace(c, spec=replace(c.spec, suite="autoattack"))
                                   for c in r.curves))
    assert suite_sentences(full)[0].startswith("AutoAttack (Croce & Hein 2020): ")
    independent = suite_sentences(replace(full, cascade=False))[0]
    assert "each ran on every example (no cascade)" in independent
    for row in _section(html, "Which attack broke what").split("</tr>")[1:-1]:
        if "still robust" not in row:
            label = re.search(r'<td class="l">(.*?)</td>', row).group(1)
            count = r.breaks[label][1]
            n_clean = round(r.clean_accuracy * r.n_examples)
            assert _cells(row) == [(count, f"{100 * count / n_clean:.1f}")]


def _failing(result, title=HOSTILE, evidence=HOSTILE):
    from robustlab.results import Check, Status

    return replace(result, checks=(
        Check("gradient_masking", title, Status.FAIL, evidence, "why", "paper"),
        Check("convergence", "Attack converged", Status.WARN, "still falling", "why", "paper"),
        Check("noise", "Noise is weaker", Status.PASS, "ok", "why", "paper")))


def test_comparison_shows_each_models_trust_and_failing_checks(digits_result, tmp_path):
    from robustlab.evaluate import compare
    from robustlab.report import render_comparison_summary_html, write_comparison

    hardened = _failing(digits_result, title="Gradients <b>masked</b>",
                        evidence="FGSM breaks 12 more than PGD")
    unchecked = replace(digits_result, checks=())
    comp = compare({"baseline": digits_result, "hardened": hardened, "plain": unchecked})
    html = write_comparison(comp, tmp_path)["html"].read_text(encoding="utf-8")
    top = _section(html, "Worst-case robust accuracy per ε")
    rows = top.split("<tbody>")[1].split("</tbody>")[0].split("</tr>")
    for name, status in (("baseline", digits_result.trust.value), ("hardened", "fail"),
                         ("plain", "skip")):
        row = next(x for x in rows if f'<td class="l">{name}</td>' in x)
        assert f'<span class="badge {status}">{status}</span>' in row
    warning = top.split('<div class="verdict fail"><b>hardened</b>')[1].split("</div>")[0]
    assert ": 1 check failed, 1 warned" in warning
    assert "Gradients &lt;b&gt;masked&lt;/b&gt;: FGSM breaks 12 more than PGD" in warning
    assert "Attack converged: still falling" in warning and "Noise is weaker" not in warning
    assert warning.index("Gradients") < warning.index("Attack converged")  # failing first
    assert "No sanity checks ran for plain" in top
    assert "<script" not in html and "<b>masked" not in html
    # which attack broke how many at the focus ε, per model
    j = digits_result.epsilons.index(comp.focus_epsilon)
    focus = _section(html, f"Which attack broke what at ε = {comp.focus_epsilon:.4g}")
    row = next(x for x in focus.split("</tr>") if '<td class="l">hardened</td>' in x)
    n_clean = round(digits_result.clean_accuracy * digits_result.n_examples)
    counts = [digits_result.breaks[k][j] for k in ("FGSM", "PGD-40")]
    counts.append(digits_result.worst_case.points[j].n_correct)
    assert [c for c, _ in _cells(row)] == counts and f"<td>{n_clean}</td>" in row
    fragment = render_comparison_summary_html(comp)  # Jupyter: badges and the warning too
    assert '<span class="badge fail">fail</span>' in fragment and "Gradients &lt;b&gt;" in fragment


def test_check_text_is_escaped_in_every_page(digits_result):
    from markupsafe import escape

    from robustlab.evaluate import compare
    from robustlab.report import render_comparison_html

    evil = _failing(digits_result)
    comp = compare({HOSTILE: evil, "b": digits_result})
    safe = str(escape(HOSTILE))
    html = render_html(evil)
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert f'<td class="l">{safe}</td><td class="l">{safe}</td>' in html  # title, evidence
    for html in (render_comparison_html(comp), comp._repr_html_()):
        assert "<script>window.__pwned" not in html and "<img src=x" not in html
        assert f"{safe}: {safe}</li>" in html  # the failing check's title and evidence
    assert "<script" not in evil._repr_html_()  # the Jupyter summary names the checks only
