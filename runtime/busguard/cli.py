"""`busguard` command line: one module per subcommand under :mod:`busguard.commands`.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from busguard import __version__
from busguard.errors import BusguardError, ConfigError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Each module has `add_parser(subparsers)`; the parser it adds sets `func(args) -> int`.
COMMANDS = ("check", "run", "replay", "version", "simulate", "demo", "bench", "map", "status",
            "apply", "recalibrate", "firewall", "peer-accept", "passwd", "snmp", "history",
            "alarms", "ack", "reset")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep the format
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (the first word that is not an option), if it is one of
    :data:`COMMANDS`; None for ``--help``, ``--version``, no command or an unknown one."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` (a command of :data:`COMMANDS`) just that command's module is
    imported: ``busguard run`` must reach its early server (the retained register image
    served, :mod:`busguard.northbound.earlyserve`) without importing every other command's
    dependencies (pymodbus, the simulator, the bench), and ``busguard --version`` none."""
    parser = _Parser(prog="busguard", description=(
        "Edge control runtime for AI-factory busway power distribution: reads meters, probes "
        "and breaker LEDs, runs interlock and alarm logic every scan, serves the DCIM over "
        "Modbus TCP. A supervisory layer beside the breakers' own trip units."))
    parser.add_argument("--version", action="version", version=f"busguard {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in (only,) if only else COMMANDS:
        importlib.import_module(f"busguard.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"]:  # nothing else to load
        print(f"busguard {__version__}")
        return EXIT_OK
    parser = build_parser(chosen_command(words))
    args = parser.parse_args(words)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):  # busguard.journal (and pluggy) imported only then
        from busguard.journal import JournalFormatter, under_journal

        if under_journal():  # systemd: the journal stamps the time; each line its priority
            for h in logging.getLogger().handlers:
                h.setFormatter(JournalFormatter("%(levelname)s %(name)s: %(message)s"))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"busguard: configuration error ({len(exc.problems)} problem"
              f"{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"busguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BusguardError as exc:
        print(f"busguard: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
