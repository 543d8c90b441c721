"""Judge a site file in a child process first, where a hostile file cannot delay the scan.

A SIGHUP reload reads the new file in the running process's reload thread, beside the scan.
The TOML parser is pure Python: a file of millions of keys held the interpreter lock and the
collector for seconds and left hundreds of MB behind (issue 21: 53-55 missed scans for a
50 MB file), and some shapes are slow in it at any size (a dotted table header of 100,000
parts: 15 s for 200 kB). So before the reload thread parses anything, this module's
:func:`precheck` runs ``python -m busguard.config.precheck FILE`` under a memory limit and a
time limit: the size cap, the TOML syntax, the nesting depth and the parser's own limits
(:func:`busguard.config.site.read_site_toml`) are judged there and, with ``full``, the whole
check of ``busguard check`` (types from the installed plugins): a file of junk keys under the
cap (1 MB of them cost 19-37 missed scans when parsed beside the scan) is refused there too.
Only a file that passes is then read in the running process, and that file is at most
:data:`~busguard.config.site.MAX_SITE_BYTES` of plain, shallow TOML that a site needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from busguard.config.site import read_site_toml
from busguard.errors import ConfigError, ConfigProblem

PRECHECK_TIMEOUT_S = 30.0  # a Python start and the plugins' imports on a busy 2-core unit
PRECHECK_MEMORY_BYTES = 1 << 30  # address space of the child: a MemoryError, not an OOM kill
MAX_PROBLEMS = 50  # reported to the running process (70,000 junk keys made a 15 MB answer)


def precheck(path: str | Path, full: bool = False,
             timeout_s: float = PRECHECK_TIMEOUT_S) -> str:
    """The SHA-256 of the file judged, or :class:`ConfigError` when ``path`` would not parse
    (``full``: would not pass ``busguard check``), judged in a child process."""
    file = str(path)
    cmd = [sys.executable, "-m", "busguard.config.precheck", file]
    if full:
        cmd.append("--full")
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError([ConfigProblem(file, "(file)", f"not parsed within {timeout_s:g} s; "
                                         f"a site file must be plain TOML")]) from exc
    except OSError:  # no child could be started: judge it here (bounded by the cap)
        return read_site_toml(path)[1]
    if done.returncode == 0:
        try:
            return str(json.loads(done.stdout.strip().splitlines()[-1])["config_hash"])
        except (ValueError, TypeError, KeyError, IndexError):
            return read_site_toml(path)[1]
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
    full = "--full" in args
    args = [a for a in args if a != "--full"]
    if len(args) != 1:
        print("usage: python -m busguard.config.precheck SITE [--full]", file=sys.stderr)
        return 2
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (PRECHECK_MEMORY_BYTES, PRECHECK_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # no limit on this platform: the size cap still bounds the parse
    with contextlib.suppress(OSError):
        os.nice(19)  # the scan's CPU first: on a 2-core unit this child would take a core
    try:
        _data, digest = read_site_toml(args[0])
        if full:
            from busguard.runtime import check_site

            digest = check_site(args[0]).config_hash
    except ConfigError as exc:
        shown = [{"file": p.file, "key": p.key, "message": p.message}
                 for p in exc.problems[:MAX_PROBLEMS]]
        if len(exc.problems) > MAX_PROBLEMS:
            shown.append({"file": args[0], "key": "(file)", "message": f"and "
                          f"{len(exc.problems) - MAX_PROBLEMS} more problems (`busguard "
                          f"check` lists them all)"})
        print(json.dumps(shown))
        return 2
    print(json.dumps({"config_hash": digest}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
