"""The audit trail (robustlab.audit): hash-chained records, every kind of tampering named,
concurrent appends from several processes, and the CLI commands that write and read it."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from robustlab import audit
from robustlab.cli import main
from robustlab.errors import RobustlabWarning

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def log(tmp_path, monkeypatch):
    path = tmp_path / "state" / "audit.jsonl"
    monkeypatch.setenv(audit.ENV, str(path))
    return path


def _fill(log, n=6):
    for i in range(n):
        audit.append("robustlab test", parameters={"i": i}, inputs={"in": f"{i:064x}"},
                     outputs={}, outcome="ok", exit_status=0)
    return log.read_bytes().splitlines(keepends=True)


def _rehash(line):
    rec = json.loads(line)
    rec["hash"] = audit.record_hash(rec)
    return (json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode()


# ------------------------------------------------------------------------ records

def test_records_hold_who_what_where_and_the_chain(log):
    first = audit.append("robustlab gate", parameters={"policy": Path("p.yaml"), "eps": 0.1},
                         inputs={"/r.json": "a" * 64}, outputs={"/b.json": "b" * 64},
                         outcome="blessed", exit_status=0)
    second = audit.append("robustlab verify", outcome="verified", exit_status=0)
    lines = log.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert first["seq"] == 1 and first["prev"] == audit.GENESIS == "0" * 64
    assert second["seq"] == 2 and second["prev"] == first["hash"]
    assert first["hash"] == audit.record_hash(first) == hashlib.sha256(json.dumps(
        {k: v for k, v in first.items() if k != "hash"}, sort_keys=True,
        separators=(",", ":")).encode()).hexdigest()
    for field in ("user", "host", "pid", "cwd", "time", "command", "parameters", "inputs",
                  "outputs", "code", "outcome", "exit_status"):
        assert field in first, field
    assert first["parameters"] == {"policy": "p.yaml", "eps": 0.1}
    assert first["time"].endswith("+00:00")
    assert set(first["code"]) == {"robustlab", "git_commit"}
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert audit.verify_log(log) == audit.LogCheck(str(log), True, 2, second["hash"])


def test_log_location(monkeypatch, tmp_path):
    monkeypatch.setenv(audit.ENV, "off")
    assert audit.log_path() is None and audit.append("x", outcome="ok") is None
    monkeypatch.setenv(audit.ENV, "OFF")
    assert audit.log_path() is None
    monkeypatch.delenv(audit.ENV)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert audit.log_path() == tmp_path / "state" / "robustlab" / "audit.jsonl"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert audit.log_path() == tmp_path / "home" / ".local/state/robustlab/audit.jsonl"
    monkeypatch.setenv(audit.ENV, str(tmp_path / "mine.jsonl"))
    assert audit.log_path() == tmp_path / "mine.jsonl"


def test_the_suite_never_writes_into_the_home_directory():
    assert os.environ[audit.ENV].endswith("audit.jsonl")  # tests/conftest.py
    assert not os.environ[audit.ENV].startswith(str(Path.home()))


def test_digests_of_files_folders_and_missing_paths(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    found = audit.digests([tmp_path / "f", tmp_path, tmp_path / "nope", None])
    assert found == {str(tmp_path / "f"): hashlib.sha256(b"abc").hexdigest(),
                     str(tmp_path): "directory", str(tmp_path / "nope"): "missing"}


def _git(tmp_path, head, files=None):
    gitdir = tmp_path / "repo" / ".git"
    (gitdir / "refs" / "heads").mkdir(parents=True)
    (gitdir / "HEAD").write_text(head)
    for name, text in (files or {}).items():
        (gitdir / name).parent.mkdir(parents=True, exist_ok=True)
        (gitdir / name).write_text(text)
    (tmp_path / "repo" / "sub").mkdir()
    return tmp_path / "repo" / "sub"


def test_git_commit_from_the_files_without_git(tmp_path):
    commit = "1234567890abcdef1234567890abcdef12345678"
    loose = _git(tmp_path / "a", "ref: refs/heads/main\n", {"refs/heads/main": commit + "\n"})
    assert audit.git_commit(loose) == commit
    packed = _git(tmp_path / "b", "ref: refs/heads/dev\n",
                  {"packed-refs": f"# pack-refs\n{commit} refs/heads/dev\n"})
    assert audit.git_commit(packed) == commit
    detached = _git(tmp_path / "c", commit + "\n")
    assert audit.git_commit(detached) == commit
    unborn = _git(tmp_path / "d", "ref: refs/heads/main\n")
    assert audit.git_commit(unborn) == "unknown"
    escape = _git(tmp_path / "e", "ref: refs/../../../etc/passwd\n")
    assert audit.git_commit(escape) == "unknown"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert audit.git_commit(outside) in ("unknown", audit.git_commit(tmp_path))
    # a worktree: .git is a file naming its gitdir, whose commondir holds the refs
    main_git = tmp_path / "wt" / "main.git"
    (main_git / "refs" / "heads").mkdir(parents=True)
    (main_git / "refs" / "heads" / "topic").write_text(commit + "\n")
    wt_git = main_git / "worktrees" / "w"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (wt_git / "commondir").write_text("../..\n")
    tree = tmp_path / "wt" / "tree"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {wt_git}\n")
    assert audit.git_commit(tree) == commit


def test_git_commit_of_this_checkout_matches_git():
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout, or no git")
    assert audit.git_commit(ROOT) == proc.stdout.strip()


# ------------------------------------------------------------------------ tampering

def _broken(log, kind, line):
    found = audit.verify_log(log)
    assert not found.ok, found
    assert (found.kind, found.line) == (kind, line), found.problem
    assert f"line {line}" in found.problem or "before line" in found.problem
    return found


def test_an_intact_log_verifies(log):
    _fill(log)
    found = audit.verify_log(log)
    assert found.ok and found.records == 6 and found.problem is None


def test_edited_record(log):
    lines = _fill(log)
    lines[2] = lines[2].replace(b'"outcome":"ok"', b'"outcome":"blessed"')
    log.write_bytes(b"".join(lines))
    assert "does not match its hash" in _broken(log, "edited", 3).problem


@pytest.mark.parametrize("forge", [
    lambda line: b'{"outcome":"blessed",' + line[1:],  # a repeated field: last one wins
    lambda line: line.replace(b'{"', b'{ "', 1),  # same record, other bytes
])
def test_a_line_that_is_not_its_canonical_record_is_refused(log, forge):
    """The hash is of the parsed record: a repeated field (JSON parsers disagree on which
    value counts) or other bytes for the same record must not pass as the original."""
    lines = _fill(log)
    lines[2] = forge(lines[2])
    log.write_bytes(b"".join(lines))
    assert "not the canonical form" in _broken(log, "edited", 3).problem


def test_edited_record_with_its_hash_recomputed(log):
    lines = _fill(log)
    lines[2] = _rehash(lines[2].replace(b'"outcome":"ok"', b'"outcome":"blessed"'))
    log.write_bytes(b"".join(lines))
    assert "hash was recomputed" in _broken(log, "edited", 3).problem


def test_deleted_record(log):
    lines = _fill(log)
    del lines[2]
    log.write_bytes(b"".join(lines))
    assert "record 3 deleted before line 3" in _broken(log, "deleted", 3).problem


def test_deleted_first_records(log):
    lines = _fill(log)
    log.write_bytes(b"".join(lines[2:]))
    assert "records 1-2 deleted" in _broken(log, "deleted", 1).problem


def test_reordered_records(log):
    lines = _fill(log)
    lines[1], lines[2] = lines[2], lines[1]
    log.write_bytes(b"".join(lines))
    assert "reordered" in _broken(log, "reordered", 2).problem


def test_record_moved_to_the_end(log):
    lines = _fill(log)
    lines.append(lines.pop(1))
    log.write_bytes(b"".join(lines))
    _broken(log, "reordered", 2)


def test_inserted_forged_record(log):
    """A forged record that chains onto its predecessor correctly still breaks the next."""
    lines = _fill(log)
    forged = json.loads(lines[1])
    forged.update(outcome="blessed", seq=3, prev=forged["hash"])
    forged["hash"] = audit.record_hash(forged)
    lines.insert(2, (json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n").encode())
    log.write_bytes(b"".join(lines))
    assert "line(s) 3-3 were inserted" in _broken(log, "inserted", 4).problem


def test_inserted_copy_of_a_record(log):
    lines = _fill(log)
    lines.insert(4, lines[1])
    log.write_bytes(b"".join(lines))
    _broken(log, "inserted", 5)


@pytest.mark.parametrize("junk, kind", [(b"\n", "inserted"), (b"hello\n", "edited"),
                                        (b'{"seq": 1}\n', "edited")])
def test_inserted_junk_line(log, junk, kind):
    lines = _fill(log)
    lines.insert(3, junk)
    log.write_bytes(b"".join(lines))
    _broken(log, kind, 4)


def test_truncated_last_line(log):
    lines = _fill(log)
    log.write_bytes(b"".join(lines)[:-25])
    assert "cut short" in _broken(log, "truncated", 6).problem


def test_last_newline_cut_off(log):
    lines = _fill(log)
    log.write_bytes(b"".join(lines)[:-1])  # the record parses, its line is not complete
    assert "no newline" in _broken(log, "truncated", 6).problem


def test_record_with_a_forged_number(log):
    """A hand-made record that chains correctly but skips numbers is not one robustlab
    wrote."""
    lines = _fill(log)
    forged = json.loads(lines[-1])
    forged.update(seq=forged["seq"] + 5, prev=forged["hash"], outcome="blessed")
    forged["hash"] = audit.record_hash(forged)
    canonical = json.dumps(forged, sort_keys=True, separators=(",", ":"))  # as robustlab writes
    log.write_bytes(b"".join(lines) + (canonical + "\n").encode())
    assert "numbered 11, expected 7" in _broken(log, "edited", 7).problem


def test_append_after_a_truncated_line_keeps_it_visible(log):
    lines = _fill(log)
    log.write_bytes(b"".join(lines)[:-25])  # a crash in the middle of a write
    audit.append("robustlab next", outcome="ok")
    text = log.read_bytes()
    assert text.count(b"\n") == 7 and text.endswith(b"\n")
    found = _broken(log, "truncated", 6)
    assert "cut short" in found.problem
    assert json.loads(text.splitlines()[-1])["prev"] == json.loads(lines[4])["hash"]


def test_dropping_records_from_the_end_shows_only_in_the_head(log):
    """A hash chain cannot see its own tail cut off: the head changes, which is why
    `audit verify` prints it."""
    lines = _fill(log)
    head = audit.verify_log(log).head
    log.write_bytes(b"".join(lines[:-1]))
    found = audit.verify_log(log)
    assert found.ok and found.records == 5 and found.head != head


def test_an_empty_log_verifies(log):
    log.parent.mkdir(parents=True)
    log.write_bytes(b"")
    assert audit.verify_log(log) == audit.LogCheck(str(log), True, 0, audit.GENESIS)


# ------------------------------------------------------------------------ concurrency

_APPENDER = textwrap.dedent("""
    import os, sys, time
    from robustlab import audit
    start, worker = sys.argv[1], int(sys.argv[2])
    while not os.path.exists(start):
        time.sleep(0.001)
    for i in range(25):
        audit.append("robustlab test", parameters={"worker": worker, "i": i},
                     outcome="ok", exit_status=0)
""")


def test_parallel_appends_lose_nothing(log, tmp_path):
    start = tmp_path / "go"
    env = {**os.environ, audit.ENV: str(log), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(start), str(w)], env=env)
             for w in range(8)]
    time.sleep(1.0)  # let every process import and wait at the line
    start.touch()
    assert [p.wait(timeout=300) for p in procs] == [0] * 8
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 200
    assert [r["seq"] for r in records] == list(range(1, 201))
    assert sorted((r["parameters"]["worker"], r["parameters"]["i"]) for r in records) == \
        [(w, i) for w in range(8) for i in range(25)]
    assert len({r["pid"] for r in records}) == 8
    found = audit.verify_log(log)
    assert found.ok and found.records == 200, found.problem


# ------------------------------------------------------------------------ the CLI

def _run(capsys, *args):
    status = main([*map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_cli_audit_verify_and_show(log, capsys):
    _fill(log, 3)
    status, out, _ = _run(capsys, "audit", "verify")
    assert status == 0 and "3 records, chain intact" in out
    assert audit.verify_log(log).head in out
    status, out, _ = _run(capsys, "audit", "show", log)
    assert status == 0 and len(out.splitlines()) == 3
    first = out.splitlines()[0]
    assert "robustlab test" in first and "ok (exit 0)" in first and "@" in first
    assert "in: in 00000000" in first and "[#1 robustlab" in first
    status, out, _ = _run(capsys, "audit", "show", "--last", "1")
    assert status == 0 and "[#3 " in out and len(out.splitlines()) == 1
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[2])
    status, out, err = _run(capsys, "audit", "verify", log)
    assert status == 1 and out == ""
    assert "chain broken at line 2 (deleted): record 2 deleted before line 2" in err
    status, _, err = _run(capsys, "audit", "verify", log.with_name("none.jsonl"))
    assert status == 2 and "cannot read the log" in err


def test_cli_audit_with_the_log_off(monkeypatch, capsys):
    monkeypatch.setenv(audit.ENV, "off")
    status, _, err = _run(capsys, "audit", "verify")
    assert status == 2 and "off" in err


def test_commands_append_a_record_with_digests_and_outcome(tmp_path, log, capsys):
    from robustlab.manifest import update_manifest

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.json").write_text("{}")
    manifest = update_manifest(folder, device={"type": "CPU"})
    assert _run(capsys, "verify", folder)[0] == 0
    (folder / "report.json").write_text('{"x": 1}')
    assert _run(capsys, "verify", folder)[0] == 1
    assert _run(capsys, "signing-keygen", tmp_path / "k.pem", tmp_path / "k.pub")[0] == 0
    status = _run(capsys, "verify-blessing", folder / "report.json", "--blessing",
                  folder / "report.json", "--public-key", tmp_path / "k.pub")[0]
    assert status == 1
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["command"], r["outcome"], r["exit_status"]) for r in records] == [
        ("robustlab verify", "verified", 0), ("robustlab verify", "does not verify", 1),
        ("robustlab signing-keygen", "ok", 0),
        ("robustlab verify-blessing", "refused: malformed", 1)]
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert records[0]["inputs"] == {str(manifest.resolve()): digest}
    assert records[0]["parameters"] == {"directory": str(folder)}
    assert records[2]["outputs"] == audit.digests([tmp_path / "k.pub"])  # never the private
    assert str(tmp_path / "k.pem") not in records[2]["outputs"]
    assert set(records[3]["inputs"]) == {str(folder / "report.json"), str(tmp_path / "k.pub")}
    assert audit.verify_log(log).ok


def test_commands_write_nothing_with_the_log_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(audit.ENV, "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert _run(capsys, "signing-keygen", tmp_path / "k.pem", tmp_path / "k.pub")[0] == 0
    assert not (tmp_path / ".local").exists()


def test_an_unwritable_log_warns_and_keeps_the_exit_status(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(audit.ENV, str(blocker / "audit.jsonl"))  # a file as the folder
    status, _, err = _run(capsys, "signing-keygen", tmp_path / "k.pem", tmp_path / "k.pub")
    assert status == 0 and "could not append to the audit log" in err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert audit.record("robustlab train", outcome="ok") is None
    assert any(issubclass(w.category, RobustlabWarning) for w in caught)


def test_gate_records_report_policy_model_and_verdict(tmp_path, log, capsys):
    report = tmp_path / "report.json"
    point = {"epsilon": 0.0, "accuracy": 0.99, "ci_low": 0.98, "ci_high": 1.0}
    report.write_text(json.dumps({"clean_accuracy": 0.99, "clean_ci": [0.98, 1.0],
                                  "epsilons": [0.0], "worst_case": {"points": [point]},
                                  "checks": [{"name": "x", "status": "pass"}]}))
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_clean_accuracy: 0.9\n")
    (tmp_path / "model.keras").write_bytes(b"model")
    assert _run(capsys, "gate", report, "--policy", policy)[0] == 0
    (tmp_path / "model.keras").unlink()
    assert _run(capsys, "gate", report, "--policy", policy)[0] == 2
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert (first["command"], first["outcome"], first["exit_status"]) == \
        ("robustlab gate", "blessed", 0)
    assert first["inputs"] == audit.digests([report, policy, tmp_path / "model.keras"]) | {
        str(tmp_path / "model.keras"): hashlib.sha256(b"model").hexdigest()}
    blessing = tmp_path / "blessing.json"
    assert list(first["outputs"]) == [str(blessing)]
    assert len(first["outputs"][str(blessing)]) == 64
    assert (second["outcome"], second["exit_status"]) == ("error", 2)
    assert second["inputs"][str(tmp_path / "model.keras")] == "missing"
    assert second["outputs"] == {str(blessing): "missing"}  # no stale verdict left


# ------------------------------------------------------------------------ training

def test_training_appends_one_record_per_call(tmp_path, log, digits):
    from robustlab.errors import ValidationError
    from robustlab.models import build_small_cnn
    from robustlab.training import train, train_adversarial

    model = build_small_cnn(digits.input_shape, digits.num_classes, seed=0)
    train(model, digits, epochs=1, seed=0)
    hardened = build_small_cnn(digits.input_shape, digits.num_classes, seed=0)
    save_to = tmp_path / "hardened.keras"
    train_adversarial(hardened, digits, method="pgd", epsilon=0.1, steps=2, epochs=1,
                      save_to=save_to)
    with pytest.raises(ValidationError):
        train_adversarial(hardened, digits, epochs=0)
    plain, adversarial, failed = [json.loads(line) for line in log.read_text().splitlines()]
    assert (plain["command"], plain["outcome"]) == ("robustlab.train", "ok")
    assert (adversarial["command"], adversarial["outcome"]) == \
        ("robustlab.train_adversarial", "ok")
    assert failed["outcome"].startswith("failed: ValidationError: expected epochs >= 1")
    assert failed["outputs"] == {}
    fingerprint = plain["inputs"]["training data digits"]
    assert len(fingerprint) == 64 and adversarial["inputs"] == plain["inputs"]
    assert adversarial["outputs"][str(save_to)] == \
        hashlib.sha256(save_to.read_bytes()).hexdigest()
    assert len(plain["outputs"]["model weights (in memory)"]) == 64
    assert adversarial["parameters"]["method"] == "pgd"
    assert adversarial["parameters"]["save_to"] == str(save_to)
    assert plain["parameters"]["epochs"] == 1 and plain["parameters"]["data"] == "digits"
    assert audit.verify_log(log).ok


def test_training_with_the_log_off_computes_nothing(monkeypatch, digits):
    from robustlab import training
    from robustlab.models import build_small_cnn

    monkeypatch.setenv(audit.ENV, "off")
    monkeypatch.setattr(training, "_data_fingerprint", lambda *a: pytest.fail("computed"))
    training.train(build_small_cnn(digits.input_shape, digits.num_classes, seed=0), digits,
                   epochs=1)
