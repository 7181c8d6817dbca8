"""Issue 13: an output folder describes exactly one run and cannot lie.

Runs use a tiny notebook (no TensorFlow) whose cell writes a gate-able report.json (and, when
asked, a model.keras) into ``output_dir`` and seals it the way ``write_report`` does; it can
also fail on request, or write its process id to ``marker`` and sleep (for signals).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from robustlab import _io
from robustlab.cli import main
from robustlab.errors import NotebookExecutionError, ValidationError
from robustlab.manifest import verify

FAKE_DEVICE = {"type": "CPU", "name": "test", "count": 1}

REPORT = {"clean_accuracy": 0.98, "clean_ci": [0.96, 0.99], "epsilons": [0.0, 0.1],
          "worst_case": {"label": "worst", "points": [
              {"epsilon": 0.0, "accuracy": 0.98, "ci_low": 0.96, "ci_high": 0.99},
              {"epsilon": 0.1, "accuracy": 0.60, "ci_low": 0.55, "ci_high": 0.65}]},
          "checks": [{"name": "gradients", "status": "pass", "evidence": "0 of 200"}]}
POLICY = "min_clean_accuracy: 0.9\nmin_robust_accuracy:\n  0.1: 0.5\n"

CELL = f"""\
import json, os, pathlib, time
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
(out / "report.json").write_text(json.dumps({{**{REPORT!r}, "tag": tag}}))
if model:
    (out / "model.keras").write_bytes(b"weights of run " + tag.encode())
from robustlab.manifest import update_manifest  # as write_report seals its outputs
update_manifest(out, parameters={{"tag": tag}}, seed=0, device={FAKE_DEVICE!r})
"""


def tiny_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('output_dir = "out"\ntag = "a"\nmodel = False\n'
                                       'fail = False\nmarker = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(CELL),
                nbformat.v4.new_code_cell("if fail:\n    raise RuntimeError('asked to fail')"),
                nbformat.v4.new_code_cell(
                    "if marker:\n    pathlib.Path(marker + '.tmp').write_text(str(os.getpid()))"
                    "\n    os.replace(marker + '.tmp', marker)\n    time.sleep(300)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def tag_of(folder):
    return json.loads((folder / "report.json").read_text())["tag"]


def siblings(out):
    """What lies beside the output folder (staging and old folders, lock, failed notebook)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name
                  and p.name.startswith((out.name, f".{out.name}")))


# ------------------------------------------------------- hole 2: one run per folder


def test_a_new_run_leaves_only_its_own_files(tmp_path, monkeypatch):
    """A rerun used to keep the earlier model, blessing and failed notebook and seal them."""
    import tempfile

    from robustlab.runner import run_notebook

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the failed run's log
    (tmp_path / "tmp").mkdir()

    nb, out = tiny_notebook(tmp_path), tmp_path / "out"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    run_notebook(nb, out, {"tag": "first", "model": True})
    assert main(["gate", str(out / "report.json"), "--policy", str(policy)]) == 0
    first = json.loads((out / "manifest.json").read_text())
    assert set(first["files"]) == {"report.json", "model.keras", "tiny.ipynb", "blessing.json"}

    with pytest.raises(NotebookExecutionError, match=r"kept at .*out\.failed\.ipynb") as info:
        run_notebook(nb, out, {"tag": "broken", "fail": True})
    assert info.value.executed_path == str(tmp_path / "out.failed.ipynb")
    # a failed run: the good folder as it was, verified, the failed notebook beside it
    assert verify(out).ok and tag_of(out) == "first" and (out / "blessing.json").exists()
    assert not list(out.glob("*.failed.ipynb"))
    assert siblings(out) == ["out.failed.ipynb", "out.lock"]

    run_notebook(nb, out, {"tag": "second"})
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.json",
                                                      "tiny.ipynb"]
    second = json.loads((out / "manifest.json").read_text())
    assert set(second["files"]) == {"report.json", "tiny.ipynb"} and verify(out).ok
    assert tag_of(out) == "second" and second["run_id"] != first["run_id"]
    assert second["parameters"]["tag"] == "second" and second["device"] == FAKE_DEVICE
    assert siblings(out) == ["out.lock"]  # the superseded failure is gone too


def test_a_folder_robustlab_did_not_write_is_refused_before_the_kernel_starts(tmp_path):
    from robustlab.runner import run_notebook

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ValidationError, match=r"replaces the whole folder.*thesis\.tex"):
        run_notebook(tiny_notebook(tmp_path), mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert main(["run", str(tiny_notebook(tmp_path)), "--out", str(mine / "thesis.tex")]) == 2
    # a manifest.json of some other tool does not make a folder robustlab's
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.json").write_text(json.dumps({"name": "my-app", "files": {}}))
    (app / "precious.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValidationError, match=r"replaces the whole folder"):
        run_notebook(tiny_notebook(tmp_path), app)
    assert (app / "precious.csv").is_file()


def test_a_later_write_into_an_earlier_run_inherits_nothing(tmp_path):
    """A report written by another process into an earlier run's folder is sealed as a new
    run: it does not take over the earlier run's id, device or parameters."""
    import subprocess
    import sys

    from robustlab.manifest import _PROCESS_RUN_ID, update_manifest

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.json").write_text("{}")
    code = ("import sys; from robustlab.manifest import update_manifest; "
            "update_manifest(sys.argv[1], parameters={'epochs': 3}, seed=7, "
            "device={'type': 'GPU', 'name': 'elsewhere', 'count': 1})")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
    earlier = json.loads((folder / "manifest.json").read_text())
    assert earlier["seed"] == 7 and earlier["run_id"] != _PROCESS_RUN_ID
    update_manifest(folder, parameters={"note": "later"},
                    device={"type": "CPU", "name": "here", "count": 2})
    later = json.loads((folder / "manifest.json").read_text())
    assert later["run_id"] == _PROCESS_RUN_ID and later["parameters"] == {"note": "later"}
    assert later["seed"] is None and later["device"]["name"] == "here"
    update_manifest(folder, parameters={"more": 1})  # the same process: the same run
    again = json.loads((folder / "manifest.json").read_text())
    assert again["parameters"] == {"note": "later", "more": 1}
    assert again["device"]["name"] == "here"


# ------------------------------------------------------- hole 3: commit in one step, locked


def build(staging, run, names=("report.json", "model.keras", "sub/extra.txt"), pause=0.0):
    """A run's files, each saying which run wrote it."""
    for name in names:
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"tag": run}))
        time.sleep(pause)


def commit(out, run, *, wait=False, pause=0.0):
    from robustlab.runner import commit_folder, output_folder

    with output_folder(out, run, wait=wait) as staging:
        build(staging, run, pause=pause)
        commit_folder(staging, out, run_id=run, parameters={"run": run})
        consistent(out, run)  # still holding the lock: what the commit left


def consistent(out, run=None):
    """The folder verifies and every file and the manifest come from one run."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert verify(out).ok, verify(out)
    runs = {json.loads((out / name).read_text())["tag"] for name in manifest["files"]}
    assert runs == {manifest["run_id"]} and (run is None or run == manifest["run_id"])


def test_the_manifest_records_the_run_and_the_swap_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "out"
    commit(out, "r1")
    (out / "stale.txt").write_text("left by hand")
    commit(out, "r2")
    assert not (out / "stale.txt").exists()
    assert siblings(out) == ["out.lock"]  # no staging or old folder left


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_a_crash_at_the_swap_leaves_the_complete_old_folder(tmp_path, monkeypatch, swap):
    out = tmp_path / "out"
    commit(out, "r1")
    if swap == "exchange":
        def crash(a, b):
            raise OSError("simulated crash at the swap")
        monkeypatch.setattr(_io, "exchange_directories", crash)
    else:  # no RENAME_EXCHANGE: the second rename (new folder in) fails
        monkeypatch.setattr(_io, "exchange_directories", lambda a, b: False)
        real, calls = os.rename, []

        def rename(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise OSError("simulated crash between the renames")
            return real(src, dst)
        monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="simulated crash"):
        commit(out, "r2")
    monkeypatch.undo()
    consistent(out, "r1")
    assert siblings(out) == ["out.lock"]
    commit(out, "r3")  # and the next run commits normally
    consistent(out, "r3")


def test_fallback_without_exchange_commits_and_recovers_from_a_hard_crash(tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(_io, "exchange_directories", lambda a, b: False)
    commit(out, "r1")
    commit(out, "r2")
    consistent(out, "r2")
    # a process killed between "old folder away" and "new folder in": no finally runs
    code = (
        "import os, sys\n"
        "from robustlab import _io\n"
        "from robustlab.runner import commit_folder, output_folder\n"
        "_io.exchange_directories = lambda a, b: False\n"
        "real, calls = os.rename, []\n"
        "def rename(src, dst):\n"
        "    calls.append(src)\n"
        "    if len(calls) == 2:\n"
        "        os._exit(9)\n"
        "    real(src, dst)\n"
        "with output_folder(sys.argv[1], 'r3') as staging:\n"
        "    (staging / 'report.json').write_text('{\"tag\": \"r3\"}')\n"
        "    os.rename = rename\n"
        "    commit_folder(staging, sys.argv[1], run_id='r3')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert not out.exists()  # the gap: the old folder is aside, the new one not yet in
    assert [n for n in siblings(out) if ".old-" in n or ".staging-" in n]
    commit(out, "r4")  # the next run puts the old folder back first, then commits
    consistent(out, "r4")
    assert siblings(out) == ["out.lock"]
    from robustlab._io import folder_lock, recover_directory

    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9
    with folder_lock(out):
        assert any("restored" in line for line in recover_directory(out))
    consistent(out, "r4")


def test_concurrent_commits_never_mix_two_runs(tmp_path):
    out = tmp_path / "out"
    errors = []

    def worker(k):
        try:
            for j in range(3):
                commit(out, f"t{k}-{j}", wait=True, pause=0.002)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    consistent(out)
    assert siblings(out) == ["out.lock"]


def test_a_second_run_into_a_held_folder_is_refused(tmp_path):
    from robustlab.runner import output_folder

    out = tmp_path / "out"
    with output_folder(out, "holder"):
        with pytest.raises(ValidationError, match=rf"being written by another robustlab "
                                                  rf"process \(pid {os.getpid()}"):
            with output_folder(out, "second"):
                pass


# ------------------------------------------------------- hole 4: SIGINT / SIGTERM


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped


@contextlib.contextmanager
def sleeping_run(tmp_path, out):
    """`robustlab run` of the tiny notebook in a subprocess, its kernel asleep in a cell:
    yields the process, the kernel's process id and the run's temporary directory (where
    jupyter_client writes the kernel's connection file and robustlab the kernel's log).
    Both processes are killed afterwards if a test left them running."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = tmp_path / "kernel.pid"
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "robustlab.cli", "run",
                             str(tiny_notebook(tmp_path)), "--out", str(out), "-p", "tag",
                             "interrupted", "-p", "marker", str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)
    kernel = None
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 120, "the kernel")
        assert proc.poll() is None, proc.communicate()
        kernel = int(marker.read_text())
        yield proc, kernel, tmp
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if kernel is not None and alive(kernel):
            os.kill(kernel, signal.SIGKILL)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_and_cleans_up(tmp_path, sig, code):
    """Ctrl-C used to print a long traceback and leave staging and a connection file."""
    from robustlab.manifest import update_manifest

    out = tmp_path / "out"  # earlier outputs that must survive
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"tag": "good"}))
    update_manifest(out, device=FAKE_DEVICE)
    with sleeping_run(tmp_path, out) as (proc, kernel, tmp):
        assert list(tmp.glob("*.json"))  # the kernel's connection file, while it runs
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == code, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and f"interrupted by {sig.name}: stopped the kernel" in lines[0]
        partial = tmp_path / "out.failed.ipynb"
        assert str(partial) in lines[0] and "marker" in partial.read_text()
        assert siblings(out) == ["out.failed.ipynb", "out.lock"]  # no staging left
        assert not list(tmp.iterdir())  # neither connection file nor kernel log
        wait_for(lambda: not alive(kernel), 10, "the kernel to stop")
    assert verify(out).ok and tag_of(out) == "good"


def test_a_run_into_a_folder_another_run_is_writing_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    with sleeping_run(tmp_path, out) as (proc, _, _):
        assert main(["run", str(tiny_notebook(tmp_path)), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"being written by another robustlab process (pid {proc.pid}" in err
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 143 and not out.exists()


# ------------------------------------------------------- hole 6: plain papermill


def test_plain_papermill_writing_its_notebook_into_the_folder(tmp_path, capsys):
    """The notebook seals the folder, then papermill writes the executed notebook into it:
    verify used to fail on it. Now it is named as not verified, and everything the run
    sealed is still checked."""
    out = tmp_path / "out"
    out.mkdir()
    papermill = shutil.which("papermill", path=str(Path(sys.executable).parent))
    proc = subprocess.run([papermill, str(tiny_notebook(tmp_path)), str(out / "tiny.ipynb"),
                           "-p", "output_dir", str(out), "-p", "tag", "plain"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = verify(out)
    assert found.ok and found.unsealed == ("tiny.ipynb",) and found.checked == 1
    assert main(["verify", str(out)]) == 0
    assert ("not in the manifest (written after the run sealed the folder; not verified): "
            "tiny.ipynb") in capsys.readouterr().err
    (out / "report.json").write_text("{}")
    assert verify(out).changed == ("report.json",)


def test_robustlab_run_seals_its_notebook_so_an_extra_one_fails_verify(tmp_path):
    out = tmp_path / "out"
    commit(out, "r1")
    (out / "other.ipynb").write_text("{}")
    found = verify(out)
    assert found.added == ("other.ipynb",) and not found.ok and found.unsealed == ()


def test_with_a_key_the_executed_notebook_is_encrypted_too(tmp_path, monkeypatch):
    """Its outputs show the report's numbers: with a key configured it must not stay the one
    plaintext copy, in the sealed folder or kept beside it after a failure."""
    from robustlab import crypto
    from robustlab.runner import run_notebook

    crypto.write_key_file(tmp_path / "kek")
    monkeypatch.setenv("ROBUSTLAB_KEY_FILE", str(tmp_path / "kek"))
    out = tmp_path / "out"
    run_notebook(tiny_notebook(tmp_path), out)
    blob = (out / "tiny.ipynb").read_bytes()
    assert crypto.looks_encrypted(blob)
    assert json.loads(crypto.decrypt(blob))["cells"]  # robustlab decrypt opens it
    assert main(["verify", str(out)]) == 0
    with pytest.raises(NotebookExecutionError):
        run_notebook(tiny_notebook(tmp_path), out, {"fail": True})
    kept = tmp_path / "out.failed.ipynb"
    assert kept.is_file() and crypto.looks_encrypted(kept.read_bytes())
