"""The compiled closed-loop client of (3) (``loadclient.c``): build it, run it, read its results.

Why: on a 2-core machine the client shares the cores with the server it measures, and the
Python client spends more CPU per request than the compiled one (figures in
docs/benchmarks.md; most of what is left is the kernel's loopback TCP work, which the sender
pays). The bench builds the client with the machine's C
compiler into its work folder; where there is none, :func:`build` says why and the Python
loop of :mod:`busguard_bench.clients` reads instead. Both servers of a comparison are always
read by the same client, and the JSON says which one it was (``client``).
"""

from __future__ import annotations

import array
import json
import os
import shutil
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

from busguard_bench.result import map_read_figures

SOURCE = "loadclient.c"
BUILD_TIMEOUT_S = 60.0
FOREVER_S = 86400.0  # the run ends with SIGTERM (``finish``), not with its own clock


def compiler() -> str | None:
    """``$CC`` when set, else the first of cc, gcc, clang on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def build(workdir: Path) -> tuple[Path | None, str]:
    """Compile the client into ``workdir``: (its path, "") or (None, why not)."""
    cc = compiler()
    if cc is None:
        return None, "no C compiler (cc, gcc, clang) on PATH"
    out = workdir / "loadclient"
    src = resources.files("busguard_bench").joinpath(SOURCE)
    with resources.as_file(src) as path:
        try:
            res = subprocess.run([cc, "-O2", "-std=c11", "-o", str(out), str(path)],
                                 capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{cc} failed: {exc}"
    if res.returncode != 0:
        return None, f"{cc} exited {res.returncode}: {res.stderr.strip()[:300]}"
    return out, ""


def _latencies(path: Path) -> list[float]:
    """The client's uint32 nanosecond samples, in seconds."""
    raw = array.array("I")
    with open(path, "rb") as f:
        raw.frombytes(f.read())
    return [ns * 1e-9 for ns in raw]


class NativeLoad:
    """``clients`` closed-loop connections read by the compiled client (the interface of
    :class:`busguard_bench.clients.Load`: ``start``, then ``finish`` for the results)."""

    def __init__(self, binary: Path, host: str, port: int, unit: int,
                 blocks: list[tuple[int, int, int]], clients: int, out_dir: Path) -> None:
        self.binary, self.host, self.port, self.unit = binary, host, port, unit
        self.blocks, self.clients = blocks, clients
        self.prefix = out_dir / f"loadclient-{os.getpid()}-{time.monotonic_ns()}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        args = [str(self.binary), self.host, str(self.port), str(self.unit), str(self.clients),
                str(FOREVER_S), str(self.prefix),
                *(f"{fc},{addr},{count}" for fc, addr, count in self.blocks)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True,
                                     env={**os.environ, "LOADCLIENT_PARENT": str(os.getpid())})

    def finish(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"loadclient exited {self.proc.returncode}: {err.strip()[:300]}")
        counts = json.loads(out.strip().splitlines()[-1])
        files = [self.prefix.with_suffix(ext) for ext in (".map", ".req", ".seen")]
        try:
            lat, req, seen = (_latencies(f) for f in files)
        finally:
            for f in files:
                f.unlink(missing_ok=True)
        return {"mode": "closed", "clients": self.clients, "hz": 0.0, "client": "native",
                **map_read_figures(lat, req, seen, counts["wall_s"], len(self.blocks)),
                "unstamped": counts["unstamped"], "errors": counts["errors"],
                "exception_replies": counts["exception_replies"],
                "late": 0, "cpu_s": counts["cpu_s"]}
