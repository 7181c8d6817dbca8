"""End to end in a real browser: JupyterLab on localhost, the explorer notebook opened in
headless Chromium (Debian's package, driven by Playwright), run, the ε slider moved, and the
adversarial prediction read back from the page. A screenshot is kept at
``out/test-artifacts/explorer.png``. Recipe: ../shared/recipes/browser-tests.md."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "out" / "test-artifacts" / "explorer.png"
PARAMS = {"n_test": 60, "epochs": 4, "epsilon": 0.02, "steps": 10, "curve_examples": 20}

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not installed (make test installs Debian's chromium package)")
    pytest.importorskip("playwright", reason="playwright not installed (pip install -e .[dev])")
    import nbformat
    import papermill
    from papermill.iorw import load_notebook_node

    nb = load_notebook_node(str(ROOT / "notebooks" / "explore_attacks.ipynb"))
    nb = papermill.parameterize.parameterize_notebook(
        nb, {**PARAMS, "output_dir": str(tmp_path / "out")})
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(nb, root / "explore.ipynb")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", ROBUSTLAB_PROGRESS="0")
    for var in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR"):
        env[var] = str(tmp_path / var.lower())
    news = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
         f"--port={port}", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.root_dir={root}", "--LabApp.extension_manager=readonly",
         "--LabApp.news_url=None"], env=env, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "lab.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/api/status", timeout=1).status == 200:  # noqa: S310
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
        yield url, tmp_path / "lab.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_explorer_in_jupyterlab_updates_on_the_slider(lab):
    url, lab_log = lab
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/lab/tree/explore.ipynb")
        expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=60_000)
        expect(page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator"
                            "[data-status='idle']")).to_have_count(1, timeout=60_000)
        labels = page.locator(".jp-OutputArea-output div.widget-label")
        adv = labels.filter(has_text="adversarial:")
        prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")
        idle = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator"
                            "[data-status='idle']")
        dialogs, runs = [], []
        deadline = time.monotonic() + 300
        # On a fresh workspace JupyterLab sometimes starts two kernels and shuts one down (lab
        # log: "Kernel started" twice, then "Kernel shutdown"); cells sent to the closed one
        # never run. So: run all, and run all again while the kernel sits idle with cells
        # that never ran.
        while not adv.count():
            if time.monotonic() > deadline or len(runs) > 4:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT.with_name("explorer-failed.png")),
                                full_page=True)
                outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
                raise AssertionError(f"explorer did not render after {len(runs)} run-all; "
                                     f"outputs: {outputs}; dialogs: {dialogs}; lab log: "
                                     f"{lab_log.read_text()[-1500:]}")
            dialog = page.locator(".jp-Dialog")
            if dialog.count():  # e.g. "kernel restarting": note it, accept it
                dialogs.append(dialog.first.inner_text())
                dialog.first.locator(".jp-mod-accept").first.click()
            stalled = idle.count() and any(t.strip().startswith("[ ]")
                                           for t in prompts.all_inner_texts())
            if not runs or (stalled and time.monotonic() - runs[-1] > 15):
                try:
                    page.locator(".lm-MenuBar-itemLabel", has_text="Run").click(timeout=10_000)
                    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click(
                        timeout=10_000)
                except PlaywrightTimeout:
                    page.keyboard.press("Escape")
                runs.append(time.monotonic())
            page.wait_for_timeout(1000)
        if len(runs) > 1 or dialogs:
            print(f"run-all clicks: {len(runs)}; dialogs accepted: {dialogs}")  # noqa: T201
        before = adv.inner_text()
        readout = page.locator(".jp-OutputArea-output .widget-hslider .widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.45")
        page.keyboard.press("Enter")
        expect(labels.filter(has_text="L∞ 0.4")).to_have_count(1, timeout=60_000)
        after = adv.inner_text()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        print(f"explorer screenshot: {SCREENSHOT}")  # noqa: T201
        browser.close()
    assert after != before and "fooled" in after, (before, after)
    assert not errors, errors


HOSTILE = [
    "<script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "</title><script>window.__pwned=3</script>",
    "{{ 7*7 }}{% raw %}",
    "<svg onload=window.__pwned=4>",
    "é🙂" * 50 + "x" * 5000,
]


def test_report_with_hostile_strings_runs_nothing_in_chromium(digits_model, digits, tmp_path):
    from dataclasses import replace

    from playwright.sync_api import sync_playwright

    from robustlab.evaluate import evaluate
    from robustlab.report import render_html

    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not installed (make test installs Debian's chromium package)")
    res = evaluate(digits_model, digits, "fgsm", "0, 0.1", n=20, checks=False)
    evil = replace(
        res, model={**res.model, "name": HOSTILE[0]},
        dataset={**res.dataset, "name": HOSTILE[2], "source": HOSTILE[1],
                 "class_names": [HOSTILE[i % len(HOSTILE)] for i in range(10)]},
        parameters={h[:20]: h for h in HOSTILE})
    page_path = tmp_path / "report.html"
    page_path.write_text(render_html(evil), encoding="utf-8")
    long = HOSTILE[5]  # every name 5,000+ characters: the page must wrap them, not widen
    long_path = tmp_path / "long.html"
    long_path.write_text(render_html(replace(
        res, model={**res.model, "name": long},
        dataset={**res.dataset, "name": long, "class_names": [long] * 10},
        curves=tuple(replace(c, label=long) for c in res.curves))), encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        console, errors = [], []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        pwned = page.evaluate("() => window.__pwned === undefined")
        text = page.inner_text("body")
        title = page.title()
        scripts = page.locator("script").count()
        page.goto(long_path.as_uri())
        page.wait_for_load_state("load")
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth")
        browser.close()
    assert pwned, "hostile markup executed"
    assert scripts == 0 and not errors and not console, (console, errors)
    assert title.startswith("Robustness report: <script>")  # shown as text, title intact
    for hostile in HOSTILE[:5]:
        assert hostile in text
    assert "Can you trust this number?" in text and "Package versions" in text
    assert overflow <= 20, f"a page with 5,000-character names is {overflow} px too wide"
