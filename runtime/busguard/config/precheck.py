"""Parse a site file in a child process first, where a hostile file cannot delay the scan.

A SIGHUP reload reads the new file in the running process's reload thread, beside the scan.
The TOML parser is pure Python: a file of millions of keys held the interpreter lock and the
collector for seconds and left hundreds of MB behind (issue 21: 53-55 missed scans for a
50 MB file), and some shapes are slow in it at any size (a dotted table header of 100,000
parts: 15 s for 200 kB). So before the reload thread parses anything, this module's
:func:`precheck` runs ``python -m busguard.config.precheck FILE`` under a memory limit and a
time limit: the size cap, the TOML syntax, the nesting depth and the parser's own limits
(:func:`busguard.config.site.read_site_toml`) are judged there. Only a file that passes is
then read in the running process, and that file is at most
:data:`~busguard.config.site.MAX_SITE_BYTES` of plain, shallow TOML.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from busguard.config.site import read_site_toml
from busguard.errors import ConfigError, ConfigProblem

PRECHECK_TIMEOUT_S = 10.0
PRECHECK_MEMORY_BYTES = 1 << 30  # address space of the child: a MemoryError, not an OOM kill


def precheck(path: str | Path, timeout_s: float = PRECHECK_TIMEOUT_S) -> None:
    """Raise :class:`ConfigError` when ``path`` would not parse (judged in a child)."""
    file = str(path)
    try:
        done = subprocess.run([sys.executable, "-m", "busguard.config.precheck", file],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"not parsed within {timeout_s:g} s; "
                                         f"a site file must be plain TOML")]) from exc
    except OSError:  # no child could be started: judge it here (bounded by the cap)
        read_site_toml(path)
        return
    if done.returncode == 0:
        return
    try:
        items = json.loads(done.stdout)
        problems = [ConfigProblem(str(p["file"]), str(p["key"]), str(p["message"]))
                    for p in items]
    except (ValueError, TypeError, KeyError):
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        problems = [ConfigProblem(file, "(file)", f"the parser failed: {why}")]
    raise ConfigError(problems or [ConfigProblem(file, "(file)", "the parser failed")])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m busguard.config.precheck SITE", file=sys.stderr)
        return 2
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (PRECHECK_MEMORY_BYTES, PRECHECK_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # no limit on this platform: the size cap still bounds the parse
    try:
        read_site_toml(args[0])
    except ConfigError as exc:
        print(json.dumps([{"file": p.file, "key": p.key, "message": p.message}
                          for p in exc.problems]))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
