"""Helper processes of the bench: start them, talk to them, stop them.

Every load generator and every measured runtime runs as its own ``python -m`` process, so the
measured interpreter never shares its interpreter lock with the load. Parent and child speak
JSON lines: the child prints ``{"ready": ...}`` once it serves, then answers one line per
command read from stdin (``{"cmd": "stats"}``...). Its stderr goes to a log file in the bench's
work folder. Timestamps exchanged are ``time.monotonic()`` (CLOCK_MONOTONIC is one clock for
every process of the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any


class ChildError(RuntimeError):
    pass


def end(proc: subprocess.Popen[Any], wait_s: float = 10.0) -> None:
    """Stop a third-party helper (snmptrapd, Prometheus...): SIGTERM, then SIGKILL when it
    has not exited within ``wait_s``, so a stuck helper never hangs the bench."""
    proc.terminate()
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(wait_s)


class Child:
    """One helper process running ``python -m MODULE ARGS``."""

    def __init__(self, module: str, args: Sequence[str], log_dir: Path, name: str,
                 ready_timeout_s: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        full_env = dict(os.environ)
        full_env.setdefault("W1THERMSENSOR_NO_KERNEL_MODULE", "1")
        full_env.update(env or {})
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1, env=full_env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        self.ready = self.reply(ready_timeout_s)
        if "ready" not in self.ready:
            raise ChildError(f"{name}: unexpected first line {self.ready!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def reply(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.01, left))
            except queue.Empty:
                raise ChildError(f"{self.name}: no answer within {timeout_s:g} s "
                                 f"(log: {self.log_path})\n{self.tail()}") from None
            if line is None:
                raise ChildError(f"{self.name}: exited with {self.proc.wait()} "
                                 f"(log: {self.log_path})\n{self.tail()}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def request(self, cmd: str, timeout_s: float = 30.0, **kw: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        self.send(cmd, **kw)
        res = self.reply(timeout_s)
        if "error" in res:
            raise ChildError(f"{self.name}: {cmd}: {res['error']}")
        return res

    def send(self, cmd: str, **kw: Any) -> None:
        """Send a command; collect its answer later with :meth:`reply`."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ChildError(f"{self.name}: gone ({exc}) (log: {self.log_path})\n"
                             f"{self.tail()}") from exc

    def tail(self, lines: int = 15) -> str:
        try:
            self._log.flush()
            return "\n".join(self.log_path.read_text(encoding="utf-8").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ChildError, OSError, ValueError):
                if self.proc.stdin is not None:
                    self.proc.stdin.write('{"cmd": "quit"}\n')
                    self.proc.stdin.flush()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self._log.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- child side ----------------------------------------------------------------------------
def say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


async def serve_commands(handlers: dict[str, Handler], ready: dict[str, Any]) -> None:
    """Announce readiness, then answer commands from stdin until ``quit`` or EOF."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=reader, daemon=True).start()
    say({"ready": True, **ready})
    while True:
        line = await lines.get()
        if not line:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        cmd = msg.get("cmd")
        if cmd == "quit":
            say({"ok": True})
            return
        handler = handlers.get(cmd or "")
        if handler is None:
            say({"error": f"unknown command {cmd!r}"})
            continue
        try:
            res = await handler(msg)
        except Exception as exc:  # report, keep serving
            say({"error": f"{type(exc).__name__}: {exc}"})
            continue
        say(res or {"ok": True})


def self_usage() -> dict[str, float]:
    """This process's CPU seconds (os.times) and memory (/proc/self/status)."""
    t = os.times()
    out = {"cpu_user_s": t.user, "cpu_system_s": t.system, "cpu_s": t.user + t.system}
    out.update(proc_memory("self"))
    return out


def proc_memory(pid: int | str) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process in MB, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[f"{key.lower()}_mb"] = int(rest.split()[0]) / 1024.0
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
