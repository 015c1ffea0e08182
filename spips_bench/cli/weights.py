"""``spips-bench weights``: where every weight file is, and ``weights fetch`` to download them."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "show every weight file (present where / missing, size, SHA-256, license); `weights fetch` downloads"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    f = sub.add_parser("fetch", help="download weight files into the torch hub cache (SHA-256 checked)",
                       description="Download weight files into the torch hub cache; each is SHA-256 checked.")
    f.add_argument("names", nargs="+", metavar="NAME", help="weight file names (see `spips-bench weights`) or 'all'")
    f.add_argument("--offline", action="store_true", help="never download: only check what is present")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")


def _human(n: int | None) -> str:
    if not n:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _short_license(text: str) -> str:
    short = text.split(" (")[0]
    return short + " + CC BY-NC-SA 4.0 parts" if "CC BY-NC-SA" in text else short


def _print_status(fmt: str) -> int:
    from spips_bench import weights
    from spips_bench.registry import DISTRIBUTIONS, pip_install_line
    from spips_bench.report.grid import text_table

    rows = weights.status()
    for r in rows:  # the exact install line for a file that ships in a wheel that is not installed
        r["install"] = pip_install_line([r["package"]]) if r["package"] and not r["package_installed"] else None
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return 0

    def package_cell(r: dict[str, Any]) -> str:
        if not r["package"]:
            return "-"
        name = DISTRIBUTIONS.get(r["package"], r["package"])
        return f"{name} (missing: {r['install']})" if r["install"] else f"{name} (installed)"

    header = ("name", "status", "size", "sha256", "license", "ships in package")
    print("\n".join(text_table(header, [
        (r["name"], f"present ({r['where']})" if r["present"] else "missing", _human(r["size"]),
         r["sha256"][:12], _short_license(r["license"]), package_cell(r))
        for r in rows
    ])))
    missing = [r for r in rows if not r["present"]]
    if missing:
        print(f"\n{len(missing)} missing; `spips-bench weights fetch NAME|all` downloads them "
              f"(to {weights.hub_checkpoint_dir()}).")
    uninstalled = list(dict.fromkeys(r["package"] for r in missing if r["install"]))
    if uninstalled:
        print(f"Files that ship in a package come with it: `{pip_install_line(uninstalled)}` "
              "(all of them: the `all` extra of spips-bench).")
    return 0


def _fetch(names: list[str], offline: bool, progress: bool) -> int:
    from spips_bench import weights

    wanted = list(weights.WEIGHTS) if names == ["all"] else names
    unknown = [n for n in wanted if n not in weights.WEIGHTS]
    if unknown:
        raise ValueError(f"unknown weight file(s) {unknown}; known: {', '.join(weights.WEIGHTS)} (or 'all').")
    failures = 0
    for name in wanted:
        try:
            path = weights.resolve(name, offline=offline or None, progress=progress)
        except (weights.WeightsUnavailableError, weights.WeightsIntegrityError) as exc:
            failures += 1
            print(f"{name}: FAILED: {exc}")
            continue
        print(f"{name}: ok ({path})")
    return 1 if failures else 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "fetch":
        return _fetch(args.names, args.offline, not args.no_progress)
    return _print_status(args.format)
