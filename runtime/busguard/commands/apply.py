"""`busguard apply NEW.toml`: change the running site safely, or not at all.

1. The new text is written next to the current site file (so relative paths resolve the same
   way) and validated there with the same check as `busguard check`; a bad file stops here.
2. Same bytes as the current file and the running instance already runs them: nothing to do
   (no backup, no reload): applying a file twice changes nothing.
3. The current file is backed up as ``site.toml.<UTC stamp>.bak`` and replaced atomically
   (rename in the same folder; owner and mode kept).
4. SIGHUP to the running instance (its pid file, else systemd's MainPID).
5. Health, read from the instance's status file (``{run_dir}/status.json``, refreshed every
   ``[service] status_every_s``): the new config hash running, ready, the scan on time, no
   block newly faulted. If that is not seen within ``--timeout`` seconds, or the reload was
   refused, the backup is put back and the instance reloaded again: exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from busguard.atomicfile import atomic_write, backup, fsync_dir
from busguard.commands import default_site
from busguard.commands.map import lock_diff, refusal
from busguard.config.site import SiteConfig
from busguard.errors import BusguardError, ConfigError
from busguard.northbound.slots import lock_path as map_lock_path
from busguard.runtime import check_site
from busguard.service import PID_FILE, read_status, run_dir

UNIT = "busguard.service"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="validate, back up, replace and reload site.toml; roll "
                                     "back if the runtime is not healthy", description=(
        "Apply NEW as the running site: validate it, back up the current site file with a UTC "
        "timestamp, replace it atomically, reload the running instance (SIGHUP) and wait "
        "until its status shows the new config running and healthy; otherwise put the backup "
        "back and reload again (exit 1). Applying the same file twice changes nothing."))
    p.add_argument("new", help="the new site file")
    p.add_argument("--site", help="the site file to replace (default: $BUSGUARD_SITE, "
                                  "./site.toml, /etc/busguard/site.toml)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the runtime to be healthy (default 30)")
    p.add_argument("--no-reload", action="store_true",
                   help="replace the file only; the next start or reload uses it")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("--accept-map-change", action="store_true",
                   help="apply even if the register map moves an existing point (the diff "
                        "against map.lock is printed either way)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    current = default_site(args.site)
    new_bytes = _read(Path(args.new))
    try:
        result = apply(current, new_bytes, timeout_s=args.timeout, reload=not args.no_reload,
                       say=None if args.json else print,
                       accept_map_change=args.accept_map_change)
    except PermissionError as exc:
        raise BusguardError(f"{exc.filename}: permission denied; run it as root "
                            f"(sudo busguard apply ...)") from exc
    if args.json:
        print(json.dumps(result, indent=2))
    if result.get("action") == "refused":
        return 2
    return 0 if result["ok"] else 1


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BusguardError(f"cannot read {path}: {exc.strerror}") from exc


def apply(current: Path, new_bytes: bytes, timeout_s: float = 30.0, reload: bool = True,
          say: Any = print, accept_map_change: bool = False) -> dict[str, Any]:
    """The whole procedure; returns a result dict (``ok``, ``action``, ``backup``...)."""
    say = say or (lambda *_a, **_k: None)
    current = Path(current)
    new_hash = hashlib.sha256(new_bytes).hexdigest()
    old_bytes = current.read_bytes() if current.exists() else None
    old_site = _quiet_check(current) if old_bytes is not None else None

    staged = _stage(current, new_bytes)
    try:
        new_site = check_site(staged)  # raises ConfigError: exit 2, nothing changed
    except ConfigError:
        staged.unlink()
        raise
    pid = find_instance(old_site or new_site) if reload else None
    status = read_status(old_site) if (old_site and pid) else None
    res: dict[str, Any] = {"ok": True, "site": str(current), "config_hash": new_hash,
                           "backup": None, "pid": pid}
    try:
        got = lock_diff(staged)  # the register map against map.lock
    except BusguardError:
        staged.unlink()
        raise
    if got is not None:
        m, changes = got
        res["map_changes"] = changes
        if changes and map_lock_path(new_site.state_dir).exists():
            say(f"register map changes against {map_lock_path(new_site.state_dir)}:")
            for line in changes:
                say(f"  {line}")
        elif changes:
            say(changes[0])
        if m.assignment is not None and m.assignment.moved and not accept_map_change:
            staged.unlink()
            say(refusal(m))
            return {**res, "ok": False, "action": "refused"}

    if old_bytes == new_bytes:
        staged.unlink()
        if not reload or pid is None or (status and status.get("config_hash") == new_hash):
            say(f"unchanged: {current} already holds this file"
                + ("" if pid is None else " and the running instance runs it"))
            return {**res, "action": "unchanged"}
        say(f"{current} already holds this file; the running instance (pid {pid}) does not "
            f"run it yet: reloading")
        res["action"] = "reloaded"
        return _reload_and_wait(current, new_site, pid, new_hash, status, timeout_s, None,
                                res, say)

    saved = backup(current) if old_bytes is not None else None
    res["backup"] = str(saved) if saved else None
    _replace(staged, current)
    say(f"replaced {current}" + (f" (backup: {saved})" if saved else ""))
    if not reload:
        say("not reloaded (--no-reload): the next start or `systemctl reload busguard` uses it")
        return {**res, "action": "replaced"}
    if pid is None:
        say("no running instance found (pid file, systemd): the next start uses the new file")
        return {**res, "action": "replaced"}
    res["action"] = "reloaded"
    return _reload_and_wait(current, new_site, pid, new_hash, status, timeout_s, saved, res,
                            say)


def _reload_and_wait(current: Path, new_site: SiteConfig, pid: int, new_hash: str,
                     before: dict[str, Any] | None, timeout_s: float, saved: Path | None,
                     res: dict[str, Any], say: Any) -> dict[str, Any]:
    t0 = time.time()
    os.kill(pid, signal.SIGHUP)
    say(f"reload requested (SIGHUP to pid {pid}); waiting up to {timeout_s:g} s for a healthy "
        f"runtime")
    ok, why = wait_healthy(new_site, pid, new_hash, t0, timeout_s, before)
    if ok:
        say(f"ok: the runtime runs config {new_hash[:12]} and is healthy ({why})")
        return {**res, "healthy": True, "detail": why}
    say(f"NOT HEALTHY: {why}")
    if saved is None:
        return {**res, "ok": False, "healthy": False, "detail": why, "rolled_back": False}
    _replace(_stage(current, saved.read_bytes()), current)
    say(f"rolled back: {current} restored from {saved}")
    old_hash = hashlib.sha256(saved.read_bytes()).hexdigest()
    back_site = _quiet_check(current) or new_site
    # the refusal just seen is not the answer to the rollback's reload (it may be less than
    # the freshness slack old): only a reload result written after it counts
    seen = ((read_status(back_site) or {}).get("last_reload") or {}).get("t")
    t1 = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    back_ok, back_why = wait_healthy(back_site, pid, old_hash, t1, timeout_s, before,
                                     accept_unchanged=True, seen_t=seen)
    say("the previous config runs again and is healthy" if back_ok else
        f"the previous file is in place, but the runtime has not confirmed it: {back_why}")
    return {**res, "ok": False, "healthy": False, "detail": why, "rolled_back": True,
            "rollback_healthy": back_ok, "rollback_detail": back_why}


def wait_healthy(site: SiteConfig, pid: int, want_hash: str, since: float, timeout_s: float,
                 before: dict[str, Any] | None = None, accept_unchanged: bool = False,
                 seen_t: float | None = None) -> tuple[bool, str]:
    """Poll the instance's status file until it shows ``want_hash`` running and healthy.
    ``seen_t``: the time of a reload result already seen, which answers an earlier reload."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    faulted_before = set((before or {}).get("faulted_blocks", []))
    why = "no status from the runtime"
    while True:
        if not _alive(pid):
            return False, f"the runtime (pid {pid}) is gone"
        st = read_status(site)
        if st is not None and st.get("pid") == pid:
            last = st.get("last_reload") or {}
            fresh = float(last.get("t", 0)) >= since - 0.5 and last.get("t") != seen_t
            if fresh and last.get("ok") is False:
                return False, "reload refused: " + str(last.get("message", "")).splitlines()[0]
            if st.get("config_hash") != want_hash:
                why = f"still running config {str(st.get('config_hash'))[:12]}"
            elif not (fresh or accept_unchanged) or st.get("updated_utc", 0) < since:
                why = "waiting for a status written after the reload"
            elif not st.get("ready") or st.get("state") != "running":
                why = f"state {st.get('state')}, ready {st.get('ready')}"
            elif not st.get("healthy"):
                why = "scan not on time (watchdog would not be fed)"
            elif set(st.get("faulted_blocks", [])) - faulted_before:
                why = f"blocks faulted: {', '.join(st['faulted_blocks'])}"
            else:
                return True, (f"cycle {st.get('cycles')}, {st.get('alarms_active')} alarms "
                              f"active, lateness p99 {st.get('lateness_p99_ms', 0):.2f} ms")
        if time.monotonic() >= deadline:
            return False, f"not healthy within {timeout_s:g} s: {why}"
        pause.wait(0.1)


def find_instance(site: SiteConfig) -> int | None:
    """The pid of the running instance of ``site``: its pid file, else systemd's MainPID."""
    try:
        pid = int((run_dir(site) / PID_FILE).read_text().strip())
        if _alive(pid) and _is_busguard(pid):
            return pid
    except (OSError, ValueError):
        pass
    systemctl = shutil.which("systemctl")
    if systemctl and Path("/run/systemd/system").is_dir():
        out = subprocess.run([systemctl, "show", "-p", "MainPID", "--value", UNIT],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out.isdigit() and int(out) > 0:
            return int(out)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not a running instance
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _is_busguard(pid: int) -> bool:
    try:
        return b"busguard" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file


def _quiet_check(path: Path) -> SiteConfig | None:
    try:
        return check_site(path)
    except (ConfigError, BusguardError):
        return None


def _stage(current: Path, data: bytes) -> Path:
    """``data`` written next to ``current`` (same folder: same relative paths, atomic rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{current.name}.apply-", suffix=".toml",
                               dir=current.parent)
    os.close(fd)
    atomic_write(tmp, data)
    return Path(tmp)


def _replace(staged: Path, current: Path) -> None:
    if current.exists():
        st = current.stat()
        os.chmod(staged, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(staged, st.st_uid, st.st_gid)
    os.replace(staged, current)
    fsync_dir(current.parent)
