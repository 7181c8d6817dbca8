"""The ``robustlab`` command line.

``robustlab run NOTEBOOK --out DIR -p name value ...`` executes a parameterized notebook with
papermill and leaves the executed notebook and its outputs (``report.html``,
``report.json``) in ``DIR``, sealed by ``DIR/manifest.json`` and committed in one step:
``DIR`` then holds that run's files only (see :mod:`robustlab.runner`). Exit status 0 on
success, 1 when the notebook failed (earlier outputs untouched; the executed notebook kept
as ``DIR.failed.ipynb`` beside the folder), 2 for bad arguments or a folder another run is
writing, 130 / 143 when stopped by SIGINT / SIGTERM (the kernel stopped, nothing half
written left behind). The kernel's own stderr goes to a log file (quoted when the run
fails); ``--verbose`` shows it instead.

``robustlab gate REPORT --policy POLICY`` judges a ``report.json`` against a YAML policy
(:mod:`robustlab.gate`): it removes any earlier verdict, refuses a report whose folder does
not verify against its manifest, writes ``blessing.json`` (recording only its own digest in
the manifest) and exits 0 if blessed, 1 if not, 2 for unreadable input. The verdict records
the sha256 of the model the report evaluated (``--model``, default ``model.keras`` beside
the report; without one exit 2 unless ``--no-model``) and is signed with ``--signing-key
PRIVATE`` (Ed25519, :mod:`robustlab.signing`), else written unsigned, saying so.

``robustlab verify DIR`` checks every file in ``DIR/manifest.json`` (sha256 and size) and
names the files that changed, went missing or appeared; exit 0 if all match, 1 if not. A
notebook that plain papermill wrote into the folder after the notebook sealed it is named
as not verified, without failing.

``robustlab keygen KEYFILE`` writes a new random key (mode 0600); ``robustlab encrypt FILE``,
``robustlab decrypt FILE`` and ``robustlab rewrap FILE --new-key KEYFILE`` encrypt, decrypt
and re-wrap (key rotation) a file in place or into ``--out`` (:mod:`robustlab.crypto`; the
key is ``--key KEYFILE``, else ``ROBUSTLAB_KEY_FILE`` / ``ROBUSTLAB_KEY``). Exit 0 on
success, 1 when the file does not decrypt (wrong key, damaged or tampered), 2 for bad
arguments (no key configured, a missing file, a file already (not) encrypted).

``robustlab signing-keygen PRIVATE PUBLIC`` writes an Ed25519 key pair (PEM; the private key
mode 0600; existing files refused). ``robustlab verify-blessing MODEL --blessing
blessing.json --public-key PUBLIC`` exits 0 only when the blessing is signed by that key,
says "blessed" and names MODEL's sha256 (:mod:`robustlab.signing`); otherwise one line
saying why and exit 1 (2 when an input cannot be read).

``robustlab monitor --model MODEL --monitor DIR --input BATCH.npz`` scores a batch with a
monitor saved by :meth:`robustlab.monitor.Monitor.save`: it prints one JSON line (the fields
of the monitor's log record, see :meth:`~robustlab.monitor.Monitor.score`, plus the model
file's sha256 and the input's path) and appends it to ``--log FILE`` (JSON Lines); with
``--scores OUT.npz`` it writes the per-input scores and flags. Exit 0 when the batch passes,
1 when the drift test fires (``--fail-on flagged`` also fails on any flagged input), 2 for
unreadable input (a missing file, a pickle, a monitor of another model).

``robustlab worker --hosts H0:P,H1:P --index I -- COMMAND ...`` runs COMMAND as worker I of
a ``MultiWorkerMirroredStrategy`` cluster (it sets ``TF_CONFIG``; ``--index`` defaults to a
Kubernetes indexed Job's ``JOB_COMPLETION_INDEX``) and exits with COMMAND's status;
``robustlab worker --local N -- COMMAND ...`` starts N such workers on this machine (ports
from the OS) and stops all of them when one fails (exit 0 when all succeed). Exit 2 for a bad
cluster description (:mod:`robustlab.distribute`).

``robustlab audit verify [LOG]`` checks the audit log's hash chain (exit 0 intact, 1 naming
the first broken record, 2 unreadable); ``robustlab audit show [LOG]`` prints it. ``run``,
``gate``, ``verify``, ``verify-blessing`` and ``signing-keygen`` each append one record
(:mod:`robustlab.audit`; ``ROBUSTLAB_AUDIT_LOG=off`` turns it off).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from robustlab.errors import NotebookExecutionError, RobustlabError, ValidationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustlab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a parameterized notebook with papermill")
    run.add_argument("notebook", help="path of the .ipynb to run")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"),
                     help="notebook parameter (VALUE as JSON, else a string); repeatable")
    run.add_argument("--kernel", default=None, help="Jupyter kernel name (default: notebook's)")
    run.add_argument("--timeout", type=float, default=None, help="per-cell timeout, seconds")
    run.add_argument("--verbose", action="store_true",
                     help="let the kernel's own stderr (TensorFlow's C++ start-up lines, "
                          "Jupyter's warnings) through to this terminal; by default it goes "
                          "to a log file that a failed run quotes")
    gate = sub.add_parser("gate", help="bless a report.json against a YAML policy (CI gate)")
    gate.add_argument("report", help="path of report.json")
    gate.add_argument("--policy", required=True, help="YAML policy (see robustlab.gate)")
    gate.add_argument("--baseline", default=None, help="baseline report.json for max_drop")
    gate.add_argument("--out", default=None,
                      help="where to write the verdict (default: blessing.json beside REPORT)")
    gate.add_argument("--model", default=None,
                      help="the model file the report evaluated, whose sha256 the verdict "
                           "records (default: model.keras beside REPORT)")
    gate.add_argument("--no-model", action="store_true",
                      help="bless the report without a model (deployment then cannot check "
                           "a model against the verdict)")
    gate.add_argument("--signing-key", default=None, metavar="PRIVATE",
                      help="sign the verdict with this Ed25519 private key (PEM, mode 0600; "
                           "robustlab signing-keygen); without it the verdict is unsigned")
    verify = sub.add_parser("verify", help="check an output directory against its "
                            "manifest.json")
    verify.add_argument("directory", help="output directory written by robustlab")
    _add_crypto_commands(sub)
    _add_signing_commands(sub)
    _add_monitor_command(sub)
    _add_worker_command(sub)
    return parser


def _add_worker_command(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser(
        "worker", help="run a command as a tf.distribute worker (TF_CONFIG)",
        description="Run COMMAND as one worker of a MultiWorkerMirroredStrategy cluster: "
                    "with --hosts and --index it sets TF_CONFIG and runs COMMAND (one per "
                    "machine, e.g. a Kubernetes pod: see deploy/); with --local N it starts "
                    "N workers of COMMAND on this machine (ports from the OS) and waits, "
                    "stopping all when one fails. COMMAND then calls evaluate / "
                    "train_adversarial with strategy='auto' (the notebooks' default): every "
                    "worker runs the same call and only worker 0, the chief, writes files.")
    where = worker.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", type=int, metavar="N", help="start N workers here")
    where.add_argument("--hosts", metavar="HOST:PORT,...",
                       help="every worker's address, in order (worker 0 is the chief)")
    worker.add_argument("--index", default=None,
                        help="this worker's place in --hosts (default: the environment's "
                             "JOB_COMPLETION_INDEX, as a Kubernetes indexed Job sets it)")
    worker.add_argument("--timeout", type=float, default=None,
                        help="with --local: stop all workers after this many seconds")
    worker.add_argument("--logs", default=None,
                        help="with --local: write worker-<i>.log files here (default: this "
                             "terminal)")
    worker.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                        help="what each worker runs, e.g. robustlab run notebooks/"
                             "robustness_report.ipynb --out out/run")


def _add_monitor_command(sub: argparse._SubParsersAction) -> None:
    mon = sub.add_parser("monitor", help="score a batch of inputs with a saved monitor "
                         "(exit 1 when the batch drifted)")
    mon.add_argument("--model", required=True, help="the model (.keras, loaded safely)")
    mon.add_argument("--monitor", required=True,
                     help="folder written by Monitor.save (monitor.json + monitor.npz)")
    mon.add_argument("--input", required=True,
                     help=".npz holding the batch as array 'x' (or its only array), "
                          "shape (N, ...) like the model's input; no pickles")
    mon.add_argument("--log", default=None,
                     help="append the batch's JSON line to this JSON Lines file")
    mon.add_argument("--scores", default=None,
                     help="write per-input scores and flags to this .npz")
    mon.add_argument("--batch-id", default=None, help="an id recorded in the log line")
    mon.add_argument("--fail-on", choices=("drift", "flagged"), default="drift",
                     help="exit 1 on drift (default), or on drift or any flagged input")
    mon.add_argument("--key", default=None, help="key file of an encrypted model")


def _add_crypto_commands(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("keygen", help="write a new random encryption key (mode 0600)")
    keygen.add_argument("keyfile", help="where to write the key (refused if it exists)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key file")
    key_help = "key file (default: ROBUSTLAB_KEY_FILE, or the key in ROBUSTLAB_KEY)"
    for name, text in (("encrypt", "encrypt a file (in place, or into --out)"),
                       ("decrypt", "decrypt a file (in place, or into --out)"),
                       ("rewrap", "re-wrap a file's data key with a new key (key rotation; "
                                  "the encrypted content is kept as it is)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("file", help="the file")
        cmd.add_argument("--out", default=None, help="write here instead of in place")
        cmd.add_argument("--key", default=None, help=key_help if name != "rewrap" else
                         "the file's current key file (default: as for decrypt)")
        if name == "rewrap":
            cmd.add_argument("--new-key", required=True, help="key file of the new key")


def _crypto(args: argparse.Namespace) -> int:
    from robustlab import crypto
    from robustlab.errors import DecryptionError, KeyRequiredError

    name = f"robustlab {args.command}"
    try:
        if args.command == "keygen":
            key = crypto.write_key_file(args.keyfile, overwrite=args.force)
            print(f"{name}: wrote {args.keyfile} (key {key.key_id}, mode 0600); keep it "
                  f"secret and backed up: what is encrypted with it cannot be read without it")
            return 0
        if args.command == "encrypt":
            out = crypto.encrypt_file(args.file, args.out, key=args.key)
        elif args.command == "decrypt":
            out = crypto.decrypt_file(args.file, args.out, key=args.key)
        else:
            out = crypto.rewrap_file(args.file, args.new_key, args.out, key=args.key)
    except KeyRequiredError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except DecryptionError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except (RobustlabError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: wrote {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from robustlab.manifest import verify

    try:
        found = verify(args.directory)
    except RobustlabError as exc:
        print(f"robustlab verify: {exc}", file=sys.stderr)
        return 2
    for line in found.problems():
        print(f"robustlab verify: {line}", file=sys.stderr)
    for name in found.unsealed:  # plain papermill wrote it after the notebook sealed the folder
        print(f"robustlab verify: not in the manifest (written after the run sealed the "
              f"folder; not verified): {name}", file=sys.stderr)
    if found.ok:
        print(f"robustlab verify: {found.checked} files match {args.directory}/manifest.json")
        return 0
    return 1


def _gate(args: argparse.Namespace) -> int:
    from robustlab.gate import run_gate

    def waiting(line: str) -> None:
        print(f"robustlab gate: {line}", file=sys.stderr, flush=True)

    try:  # an earlier verdict is gone even when this fails: no stale "blessed" survives
        blessing, out = run_gate(args.report, args.policy, args.baseline, args.out,
                                 on_wait=waiting, model=args.model, no_model=args.no_model,
                                 signing_key=args.signing_key)
    except RobustlabError as exc:
        print(f"robustlab gate: {exc}", file=sys.stderr)
        return 2
    for line in blessing.passed:
        print(f"robustlab gate: ok: {line}")
    for line in blessing.reasons:
        print(f"robustlab gate: REFUSED: {line}", file=sys.stderr)
    if blessing.key_id is not None:
        print(f"robustlab gate: signed with key {blessing.key_id} (model "
              f"{blessing.model or 'none: --no-model'})")
    else:
        print(f"robustlab gate: warning: {out.name} is not signed (no --signing-key): "
              f"robustlab verify-blessing refuses it", file=sys.stderr)
    print(f"robustlab gate: {'blessed' if blessing.blessed else 'not blessed'}; wrote {out}")
    return 0 if blessing.blessed else 1


# ------------------------------------------------------------ signed blessings, audit trail

# Commands that append one record to the audit log (robustlab.audit) once their outcome is
# known; the outcome is named from the exit status.
_AUDITED = {
    "run": {0: "ok", 1: "failed", 2: "refused", 130: "interrupted (SIGINT)",
            143: "interrupted (SIGTERM)"},
    "gate": {0: "blessed", 1: "not blessed", 2: "error"},
    "verify": {0: "verified", 1: "does not verify", 2: "error"},
    "verify-blessing": {0: "accepted", 1: "refused", 2: "error"},
    "signing-keygen": {0: "ok", 2: "error"},
}


def _add_signing_commands(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("signing-keygen", help="write a new Ed25519 key pair for signing "
                            "blessings (private key mode 0600)")
    keygen.add_argument("private", help="where to write the private key (PEM; refused if it "
                        "exists)")
    keygen.add_argument("public", help="where to write the public key (PEM; refused if it "
                        "exists)")
    check = sub.add_parser("verify-blessing", help="check that a model is the one a signed "
                           "blessing.json blesses (exit 0 only then)")
    check.add_argument("model", help="the model file to deploy (.keras)")
    check.add_argument("--blessing", required=True, help="blessing.json written by robustlab "
                       "gate --signing-key")
    check.add_argument("--public-key", required=True, help="the signer's public key (PEM)")
    audit = sub.add_parser("audit", help="check or show the audit log")
    what = audit.add_subparsers(dest="audit_command", required=True)
    for name, text in (("verify", "check the log's hash chain; name the first broken record"),
                       ("show", "print the log's records, one line each")):
        cmd = what.add_parser(name, help=text)
        cmd.add_argument("log", nargs="?", default=None,
                         help="the log (default: ROBUSTLAB_AUDIT_LOG, else "
                              "~/.local/state/robustlab/audit.jsonl)")
        if name == "show":
            cmd.add_argument("-n", "--last", type=int, default=None, metavar="N",
                             help="only the last N records")


def _signing_keygen(args: argparse.Namespace) -> int:
    from robustlab.signing import generate_keypair

    name = "robustlab signing-keygen"
    try:
        key = generate_keypair(args.private, args.public)
    except (RobustlabError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: wrote {args.private} (private key, mode 0600: keep it secret, e.g. as a "
          f"CI secret) and {args.public} (public key {key}: give it to whoever deploys)")
    return 0


def _verify_blessing(args: argparse.Namespace) -> int:
    from robustlab.signing import BlessingRefusedError, verify_blessing

    name = "robustlab verify-blessing"
    try:
        blessing = verify_blessing(args.model, args.blessing, args.public_key)
    except BlessingRefusedError as exc:  # one line naming why; exit 1
        args.audit_detail = exc.reason
        print(f"{name}: refused: {exc}", file=sys.stderr)
        return 1
    except (RobustlabError, OSError) as exc:  # an input that cannot be read at all
        print(f"{name}: cannot check: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: ok: {args.model} (sha256 {blessing['model_sha256'][:16]}...) is blessed "
          f"by key {blessing['key_id']} (report sha256 {blessing['report_sha256'][:16]}..., "
          f"{blessing.get('time')})")
    return 0


def _audit_command(args: argparse.Namespace) -> int:
    from robustlab import audit

    name = "robustlab audit"
    try:
        if args.audit_command == "verify":
            found = audit.verify_log(args.log)
        else:
            lines = list(audit.read_records(args.log))
    except (RobustlabError, OSError) as exc:
        print(f"{name}: cannot read the log: {exc}", file=sys.stderr)
        return 2
    if args.audit_command == "show":
        if args.last is not None:
            lines = lines[-max(args.last, 0):] if args.last > 0 else []
        for number, rec in lines:
            print(audit.format_record(rec) if rec is not None
                  else f"(line {number}: not an audit record)")
        return 0
    if found.ok:
        print(f"{name}: {found.path}: {found.records} records, chain intact; head "
              f"{found.head}")
        return 0
    print(f"{name}: {found.path}: chain broken at line {found.line} ({found.kind}): "
          f"{found.problem}", file=sys.stderr)
    return 1


def _audit_files(args: argparse.Namespace, inputs: bool, status: int | None = None
                 ) -> dict[str, str]:
    """Digests of the files a command reads (``inputs``) or wrote (ending with ``status``)."""
    from pathlib import Path

    from robustlab.audit import digests

    command = args.command
    paths: list[str | Path | None] = []
    if command == "run":
        if inputs:
            return digests([args.notebook])
        folder = Path(args.out)
        if status != 0:  # the folder is the earlier run's: only what this run kept
            kept = folder.parent / f"{folder.name}.failed.ipynb"
            return digests([kept]) if kept.is_file() else {}
        from robustlab.manifest import read_manifest

        try:  # the run's manifest lists every file with its digest: no need to rehash
            listed = read_manifest(folder)["files"]
            found = {str((folder / name).resolve()): str(info["sha256"])
                     for name, info in listed.items()}
        except (RobustlabError, KeyError, TypeError, AttributeError):
            found = {}
        return {**digests([folder / "manifest.json"]), **found}
    if command == "gate":
        report = Path(args.report)
        if inputs:
            model = getattr(args, "model", None)
            if model is None and not getattr(args, "no_model", False):
                model = report.with_name("model.keras")
            paths = [report, args.policy, args.baseline, model]
        else:
            paths = [args.out if args.out is not None else report.with_name("blessing.json")]
    elif command == "verify" and inputs:
        paths = [Path(args.directory) / "manifest.json"]
    elif command == "verify-blessing" and inputs:
        paths = [args.model, args.blessing, args.public_key]
    elif command == "signing-keygen" and not inputs:
        paths = [args.public]  # never the private key
    return digests(paths)


def _audited(args: argparse.Namespace, handler: Callable[[argparse.Namespace], int]) -> int:
    """Run ``handler(args)`` and append one audit record with its outcome."""
    from robustlab import audit

    params = {k: v for k, v in vars(args).items() if k not in ("command", "audit_detail")}
    inputs = _audit_files(args, inputs=True)
    status: int | None = None
    outcome = "crashed"
    try:
        status = handler(args)
        outcome = _AUDITED[args.command].get(status, f"exit {status}")
        detail = getattr(args, "audit_detail", None)
        if detail:
            outcome = f"{outcome}: {detail}"
        return status
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except BaseException as exc:
        outcome = f"crashed: {type(exc).__name__}"
        raise
    finally:
        try:
            audit.append(f"robustlab {args.command}", parameters=params, inputs=inputs,
                         outputs=_audit_files(args, inputs=False, status=status), outcome=outcome,
                         exit_status=status)
        except (OSError, ValueError) as exc:
            print(f"robustlab {args.command}: warning: could not append to the audit log "
                  f"{audit.log_path()}: {exc}", file=sys.stderr)


def _read_batch(path: str) -> Any:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as stored:
            names = list(stored.files)
            if "x" in names:
                return stored["x"]
            if len(names) == 1:
                return stored[names[0]]
    except FileNotFoundError:
        raise ValidationError(f"expected --input to be an existing .npz file, got "
                              f"{path!r}") from None
    except (OSError, ValueError, TypeError) as exc:  # not a .npz, or an object array
        raise ValidationError(f"expected --input to be a .npz of numeric arrays (no "
                              f"pickles), got {path!r}: {exc}") from None
    raise ValidationError(f"expected --input to hold an array named 'x' (or a single "
                          f"array), got arrays {names}")


def _monitor(args: argparse.Namespace) -> int:
    import contextlib

    import numpy as np

    from robustlab._io import sha256_file, write_bytes
    from robustlab.logs import json_lines
    from robustlab.models import load_model
    from robustlab.monitor import Monitor

    try:
        model = load_model(args.model, key=args.key)
        monitor = Monitor.load(args.monitor, model)
        batch = _read_batch(args.input)
        extra = {"model_file_sha256": sha256_file(args.model), "input": args.input}
        if args.batch_id is not None:
            extra["batch_id"] = args.batch_id
        with contextlib.ExitStack() as logs:
            logs.enter_context(json_lines(sys.stdout, logger="robustlab.monitor"))
            if args.log:
                logs.enter_context(json_lines(args.log, logger="robustlab.monitor"))
            scores = monitor.score(batch, fields=extra)
        if args.scores:
            import io

            buffer = io.BytesIO()
            arrays = {"flagged": scores.flagged,
                      **{f"score_{k}": v for k, v in scores.scores.items()},
                      **{f"flag_{k}": v for k, v in scores.flags.items()}}
            np.savez(buffer, **arrays)  # type: ignore[arg-type]
            write_bytes(args.scores, buffer.getvalue())
    except (RobustlabError, OSError) as exc:
        print(f"robustlab monitor: {exc}", file=sys.stderr)
        return 2
    if scores.drift is None:
        print("robustlab monitor: warning: no drift test for a batch of fewer than 2 inputs",
              file=sys.stderr)
    drifted = scores.drift is not None and scores.drift.fired
    failed = drifted or (args.fail_on == "flagged" and bool(scores.flagged.any()))
    if failed:
        why = "drift" if drifted else f"{int(scores.flagged.sum())} flagged inputs"
        print(f"robustlab monitor: batch failed ({why})", file=sys.stderr)
    return 1 if failed else 0


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM to ``robustlab worker --local``: leave through the cluster's ``with`` block,
    which stops every worker (they run in their own sessions and would outlive it)."""
    raise SystemExit(128 + signum)


def _worker(args: argparse.Namespace) -> int:
    """``robustlab worker``: exit 2 on a bad cluster description, else the command's exit
    status (with --local: 0 when every worker succeeded, else the first failure's)."""
    import os
    import signal

    from robustlab.distribute import LocalCluster, tf_config

    command = list(args.cmd)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        if not command:
            raise ValidationError("expected a command after --, e.g. robustlab worker "
                                  "--local 2 -- robustlab run notebooks/"
                                  "robustness_report.ipynb --out out/run")
        if args.local is not None:
            if args.index is not None:
                raise ValidationError("expected --index only with --hosts")
            with LocalCluster(command, args.local, log_dir=args.logs) as cluster:
                previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
                try:
                    codes = cluster.wait(args.timeout)
                finally:
                    signal.signal(signal.SIGTERM, previous)
            for index, code in enumerate(codes):
                print(f"robustlab worker: worker {index} exited with {code}", file=sys.stderr)
            if cluster.first_failure is None:
                return 0
            code = codes[cluster.first_failure]  # the first to fail, not the ones stopped
            return code if code > 0 else 128 - code
        given = args.index if args.index is not None else \
            os.environ.get("JOB_COMPLETION_INDEX")
        if given is None or not str(given).strip().isdigit():
            raise ValidationError(f"expected --index (or JOB_COMPLETION_INDEX) to be a worker "
                                  f"number, got {given!r}")
        config = tf_config(args.hosts.split(","), int(given))
    except RobustlabError as exc:
        print(f"robustlab worker: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, "TF_CONFIG": config}
    try:  # become the command: its exit status, and signals (a pod's SIGTERM) reach it
        os.execvpe(command[0], command, env)  # noqa: S606 - the user's own command
    except OSError as exc:
        print(f"robustlab worker: could not start {command[0]!r}: {exc}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - execvpe does not return


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in _AUDITED:  # one audit record, once the outcome is known
        return _audited(args, _dispatch)
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "signing-keygen":
        return _signing_keygen(args)
    if args.command == "verify-blessing":
        return _verify_blessing(args)
    if args.command == "audit":
        return _audit_command(args)
    if args.command == "monitor":
        return _monitor(args)
    if args.command == "worker":
        return _worker(args)
    if args.command in ("keygen", "encrypt", "decrypt", "rewrap"):
        return _crypto(args)
    if args.command == "gate":
        return _gate(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "run":
        from robustlab.runner import RunInterrupted, parse_cli_value, run_notebook

        params = {name: parse_cli_value(value) for name, value in args.parameter}
        try:
            executed = run_notebook(args.notebook, args.out, params, kernel_name=args.kernel,
                                    timeout=args.timeout, verbose=args.verbose)
        except RunInterrupted as exc:  # SIGINT / SIGTERM: cleaned up; one line, 130 / 143
            print(f"robustlab run: {exc}", file=sys.stderr)
            return 128 + exc.signum
        except KeyboardInterrupt:  # before the run had anything to clean up
            print("robustlab run: interrupted before the notebook started", file=sys.stderr)
            return 130
        except NotebookExecutionError as exc:
            print(f"robustlab run: {exc}", file=sys.stderr)
            return 1
        except RobustlabError as exc:
            print(f"robustlab run: {exc}", file=sys.stderr)
            return 2
        print(f"robustlab run: executed notebook {executed}")
        for name in ("report.html", "report.json"):
            if (executed.parent / name).exists():
                print(f"robustlab run: wrote {executed.parent / name}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
