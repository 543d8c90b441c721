"""What every measurement gets: run length, a work folder, the parts available, helpers to
start helper processes and the measured runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busguard.registry import TypeRegistry
from busguard_bench import native
from busguard_bench.procs import Child
from busguard_bench.sites import SiteSpec


@dataclass
class Bench:
    quick: bool
    workdir: Path
    registry: TypeRegistry
    parts: dict[str, bool]
    target_args: Sequence[str] = ()  # levers for the measured runtime (see bench.target)
    meters_backend: str = "sim"
    # (1) is measured loaded once per mode: [scan] io = "process" (judged: the design for
    # heavy I/O) and io = "thread" (everything beside the scan, shown for comparison)
    io_modes: tuple[str, ...] = ("process", "thread")
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    children: list[Child] = field(default_factory=list)
    profile_dir: Path | None = None  # py-spy record every measured runtime into this folder
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    spin_ms: float | None = None  # [scan] spin_ms of every measured site (None: the default)
    smoke: bool = False  # CI: every measurement wired end to end in seconds, tiny sizes
    client: str = "auto"  # closed-loop DCIM client of (3): auto, native (compiled), python

    def closed_loop_client(self) -> tuple[list[str], str]:
        """The arguments that give :mod:`busguard_bench.clients` the compiled client (none for
        the Python loop) and which client that is, with the reason when not the asked one."""
        if self.client == "python":
            return [], "python"
        binary, why = native.build(self.workdir)
        if binary is not None:
            return ["--native", str(binary)], "native"
        if self.client == "native":
            raise RuntimeError(f"--client native: cannot build the compiled client: {why}")
        self.log(f"bench: the closed-loop client is the Python loop: {why}")
        return [], f"python ({why})"

    def seconds(self, full: float, quick: float) -> float:
        if self.smoke:
            return min(quick, 0.5)
        return quick if self.quick else full

    def count(self, full: int, quick: int | None = None) -> int:
        """A size (meters, trips, clients...): ``full``, ``quick`` or a smoke test's few."""
        if self.smoke:
            return max(1, min(full // 8, 8))
        return quick if self.quick and quick is not None else full

    def child(self, module: str, args: Sequence[str], name: str, **kw: Any) -> Child:
        c = Child(f"busguard_bench.{module}", [str(a) for a in args], self.workdir, name, **kw)
        self.children.append(c)
        return c

    def target(self, spec: SiteSpec | Path, name: str, extra_args: Sequence[str] = (),
               levers: bool = True) -> Child:
        """The measured runtime (bench.target) on a site written from ``spec`` (or an
        existing site file); ``levers``: with the bench's levers (--fifo...)."""
        if isinstance(spec, SiteSpec) and self.spin_ms is not None:
            spec.spin_ms = self.spin_ms
        site = spec if isinstance(spec, Path) else spec.write(self.workdir / name / "site.toml")
        args = [str(site), *(self.target_args if levers else ()), *extra_args]
        c = self.child("target", args, name, ready_timeout_s=60.0)
        if self.profile_dir is not None:
            self.profile(c.pid, name)
        return c

    def profile(self, pid: int, name: str) -> None:
        """Sample ``pid`` with py-spy (all threads, folded stacks) until it exits."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{name}.folded"
        self.profilers.append(subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "250", "--threads", "--format", "raw",
             "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def close_all(self) -> None:
        while self.children:
            self.children.pop().close()
        while self.profilers:
            p = self.profilers.pop()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.terminate()
