"""The ``spips-bench`` command line: parse, call the library, print. Nothing else lives here.

Each subcommand is a module of this package with ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; such modules import heavy libraries only inside ``run``, so ``spips-bench --help``
stays fast. Modules whose name starts with an underscore (shared argument types) are not subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from spips_bench import __version__
from spips_bench.errors import SpipsBenchError
from spips_bench.settings import offline_mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spips-bench",
        description="Metric zoo and BAPPS benchmark harness for full-reference image quality.",
    )
    parser.add_argument("--version", action="version", version=f"spips-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"spips_bench.cli.{info.name}")
        name = getattr(module, "NAME", info.name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Every command's --offline, in one place: a switch of spips_bench.settings, not os.environ.
        with offline_mode(bool(getattr(args, "offline", False))):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; everything computed so far is saved, rerun the same command to resume.",
              file=sys.stderr)
        return 130
    except (SpipsBenchError, ValueError, FileNotFoundError) as exc:
        print(f"spips-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout went away (`spips-bench list | head`): stop quietly, as other tools do, and
        # point stdout at nothing so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
