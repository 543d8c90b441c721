"""Write busguard(1) from the CLI's own --help texts (so the man page never drifts).

    python packaging/make-manpage.py OUT.1
"""

from __future__ import annotations

import sys

from busguard import __version__
from busguard.cli import COMMANDS, build_parser


def esc(text: str) -> str:
    """Text as roff: backslashes escaped, lines starting with a control character guarded."""
    lines = []
    for ln in text.splitlines():
        ln = ln.replace("\\", "\\e")
        lines.append("\\&" + ln if ln.startswith((".", "'")) else ln)
    return "\n".join(lines)


def main(out: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = [f'.TH BUSGUARD 1 "" "busguard {__version__}" "User Commands"',
             ".SH NAME", "busguard \\- edge control runtime for AI-factory busway power "
             "distribution", ".SH SYNOPSIS", ".nf", esc(parser.format_usage().strip()), ".fi",
             ".SH DESCRIPTION", ".nf", esc(parser.format_help()), ".fi", ".SH COMMANDS"]
    for name in COMMANDS:
        parts += [f".SS {name}", ".nf", esc(sub.choices[name].format_help()), ".fi"]
    parts += [".SH FILES", "/etc/busguard/site.toml, /var/lib/busguard, "
              "/var/log/power/distribution_fault.log, /run/busguard/status.json",
              ".SH SEE ALSO", "/usr/share/doc/busguard/operations.md, systemctl(1), "
              "journalctl(1)"]
    with open(out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
