"""The ``robustlab`` command line.

``robustlab run NOTEBOOK --out DIR -p name value ...`` executes a parameterized notebook with
papermill and leaves the executed notebook and its outputs (``report.html``,
``report.json``) in ``DIR``. Exit status 0 on success, 1 when the notebook failed, 2 for
bad arguments.
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        from robustlab.runner import parse_cli_value, run_notebook

        params = {name: parse_cli_value(value) for name, value in args.parameter}
        try:
            executed = run_notebook(args.notebook, args.out, params, kernel_name=args.kernel,
                                    timeout=args.timeout)
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
