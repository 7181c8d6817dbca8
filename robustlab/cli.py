"""The ``robustlab`` command line.

``robustlab run NOTEBOOK --out DIR -p name value ...`` executes a parameterized notebook with
papermill and leaves the executed notebook and its outputs (``report.html``,
``report.json``) in ``DIR``. Exit status 0 on success, 1 when the notebook failed, 2 for
bad arguments. The kernel's own stderr goes to a log file (quoted when the run fails);
``--verbose`` shows it instead.

``robustlab gate REPORT --policy POLICY`` judges a ``report.json`` against a YAML policy
(:mod:`robustlab.gate`), writes ``blessing.json`` and exits 0 if blessed, 1 if not, 2 for
unreadable input.

``robustlab verify DIR`` checks every file in ``DIR/manifest.json`` (sha256 and size) and
names the files that changed, went missing or appeared; exit 0 if all match, 1 if not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from robustlab.errors import NotebookExecutionError, RobustlabError


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
    verify = sub.add_parser("verify", help="check an output directory against its "
                            "manifest.json")
    verify.add_argument("directory", help="output directory written by robustlab")
    return parser


def _verify(args: argparse.Namespace) -> int:
    from robustlab.manifest import verify

    try:
        found = verify(args.directory)
    except RobustlabError as exc:
        print(f"robustlab verify: {exc}", file=sys.stderr)
        return 2
    for kind, names in (("changed", found.changed), ("missing", found.missing),
                        ("not in the manifest", found.added)):
        for name in names:
            print(f"robustlab verify: {kind}: {name}", file=sys.stderr)
    if found.ok:
        print(f"robustlab verify: {found.checked} files match {args.directory}/manifest.json")
        return 0
    return 1


def _gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robustlab.gate import gate, write_blessing

    try:
        blessing = gate(args.report, args.policy, args.baseline)
    except RobustlabError as exc:
        print(f"robustlab gate: {exc}", file=sys.stderr)
        return 2
    out = write_blessing(blessing, args.out or Path(args.report).with_name("blessing.json"))
    from robustlab.manifest import MANIFEST, update_manifest

    if (out.parent / MANIFEST).is_file():  # the verdict joins the directory's artifacts
        update_manifest(out.parent)
    for line in blessing.passed:
        print(f"robustlab gate: ok: {line}")
    for line in blessing.reasons:
        print(f"robustlab gate: REFUSED: {line}", file=sys.stderr)
    print(f"robustlab gate: {'blessed' if blessing.blessed else 'not blessed'}; wrote {out}")
    return 0 if blessing.blessed else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "gate":
        return _gate(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "run":
        from robustlab.runner import parse_cli_value, run_notebook

        params = {name: parse_cli_value(value) for name, value in args.parameter}
        try:
            executed = run_notebook(args.notebook, args.out, params, kernel_name=args.kernel,
                                    timeout=args.timeout, verbose=args.verbose)
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
