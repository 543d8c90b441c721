"""A simulated hall: ROWS x UNITS controllers, their meters, row aggregators and a hall
aggregator, as site files; `busguard simulate --hall` writes them and serves every meter.

Why: a fleet test and the fleet bench need N controllers' worth of meters at once and the
sites that read them. One simulator (one process, one model) serves all the hall's meters, each
on its own TCP port; every controller, row aggregator and the hall aggregator is an ordinary
busguard with an ordinary site file, so the fleet runs the production code paths.

Layout written under ``out``::

    sim.toml             the simulator's site: every controller's meters (c{r}{u}-m{k})
    c{r}{u}/site.toml    a controller: meters m1..mK (modbus_tcp), breaker b1 (gpio, mock
                         lines under c{r}{u}/gpio: LED line 4, shunt-trip line 17) protected
                         by a shunt_trip block, its map on [modbus_server]
    row{r}/site.toml     a row aggregator: busguard_peer per controller, row_summary "r{r}"
    hall/site.toml       the hall aggregator: busguard_peer per row, row_summary "hall"

Rows and units are numbered from 1; a controller's name is ``c{r}{u:02d}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from busguard.errors import UsageError
from busguard_blocks.row_summary import row_records

LED_LINE, SHUNT_LINE = 4, 17
HALL_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_hall(text: str) -> tuple[int, int]:
    """``"2x8"`` -> (2, 8); a clear error for anything else."""
    m = HALL_RE.match(text)
    if not m or not (1 <= int(m[1]) <= 9 and 1 <= int(m[2]) <= 99):
        raise UsageError(f"--hall {text!r}: expected ROWSxUNITS, e.g. 2x8 (rows 1..9, units "
                         f"per row 1..99)")
    return int(m[1]), int(m[2])


@dataclass(frozen=True)
class Node:
    name: str
    site: Path
    host: str
    port: int


@dataclass
class HallPlan:
    out: Path
    rows: int
    units: int
    meters: int
    sim_site: Path
    controllers: list[Node] = field(default_factory=list)
    row_aggs: list[Node] = field(default_factory=list)
    hall: Node | None = None
    meter_ports: dict[str, tuple[str, int]] = field(default_factory=dict)

    def gpio_dir(self, controller: str) -> Path:
        return self.out / controller / "gpio"


def controller_name(r: int, u: int) -> str:
    return f"c{r}{u:02d}"


def write_hall(out: str | Path, rows: int, units: int, meters: int = 2, *,
               meter_host: str = "127.0.0.1", meter_base_port: int = 21000,
               controller_addr: Callable[[int, int], tuple[str, int]] | None = None,
               agg_addr: Callable[[int], tuple[str, int]] | None = None,
               scan_ms: int = 100, meter_poll_ms: int = 500, peer_poll_ms: int = 1000,
               rating_kva: float = 1500.0,
               allow: tuple[str, ...] = ("127.0.0.0/8", "10.0.0.0/8"),
               sparkplug: tuple[str, int] | None = None) -> HallPlan:
    """Write the hall's site files; return where everything listens.

    ``controller_addr(r, u)`` and ``agg_addr(r)`` (r = 0: the hall) give each busguard's map
    address; default loopback, ports 22000 + ... . The scan period is long (``scan_ms``) and
    no spin: a fleet on a 2-core machine must leave the CPUs to the others. ``sparkplug``
    (broker host, port): every controller also publishes as a Sparkplug B edge node (group
    "hall", node id = its name, QoS 1).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c_addr = controller_addr or (lambda r, u: ("127.0.0.1", 22000 + r * 100 + u))
    a_addr = agg_addr or (lambda r: ("127.0.0.1", 23000 + r))
    plan = HallPlan(out, rows, units, meters, out / "sim.toml")
    sim = ['[site]\nname = "hall-sim"\n']
    port = meter_base_port
    row_peers: dict[int, list[tuple[str, list[str]]]] = {}
    for r in range(1, rows + 1):
        for u in range(1, units + 1):
            c = controller_name(r, u)
            host, cport = c_addr(r, u)
            lines = [f'[site]\nname = "{c}"\n[scan]\nperiod_ms = {scan_ms}\nspin_ms = 0\n'
                     f'[paths]\nstate_dir = "state"\nfault_log = "fault.log"\n'
                     f'[gpio]\nbackend = "mock"\nmock_dir = "gpio"\n']
            for k in range(1, meters + 1):
                lines.append(f'[[meter]]\nname = "m{k}"\ndriver = "modbus_tcp"\n'
                             f'host = "{meter_host}"\nport = {port}\npoll_ms = {meter_poll_ms}\n')
                sim.append(f'[[meter]]\nname = "{c}-m{k}"\ndriver = "modbus_tcp"\n'
                           f'host = "{meter_host}"\nport = {port}\n')
                plan.meter_ports[f"{c}-m{k}"] = (meter_host, port)
                port += 1
            lines.append(f'[[breaker]]\nname = "b1"\ndriver = "gpio"\nled_line = {LED_LINE}\n'
                         f'shunt_trip_line = {SHUNT_LINE}\nrating_a = 400.0\n')
            lines.append('[[block]]\nname = "st"\ntype = "shunt_trip"\nbreaker = "b1"\n'
                         'meter = "m1"\n')
            lines.append(f'[modbus_server]\nhost = "{host}"\nport = {cport}\n'
                         f'allow = {_toml_list(allow)}\n')
            if sparkplug is not None:
                lines.append(f'[sparkplug]\nhost = "{sparkplug[0]}"\nport = {sparkplug[1]}\n'
                             f'group_id = "hall"\nqos = 1\nreconnect_s = 0.5\n'
                             f'reconnect_max_s = 2.0\n')
            site = out / c / "site.toml"
            site.parent.mkdir(parents=True, exist_ok=True)
            site.write_text("\n".join(lines), encoding="utf-8")
            plan.controllers.append(Node(c, site, host, cport))
            row_peers.setdefault(r, []).append((c, ["b1"]))
    plan.sim_site.write_text("\n".join(sim), encoding="utf-8")
    meter_list = ", ".join(f'"m{k}"' for k in range(1, meters + 1))
    hall_lines = [f'[site]\nname = "hall"\n[scan]\nperiod_ms = {scan_ms}\nspin_ms = 0\n'
                  f'[paths]\nstate_dir = "state"\nfault_log = "fault.log"\n']
    for r, peers in row_peers.items():
        host, aport = a_addr(r)
        lines = [f'[site]\nname = "row{r}"\n[scan]\nperiod_ms = {scan_ms}\nspin_ms = 0\n'
                 f'[paths]\nstate_dir = "state"\nfault_log = "fault.log"\n']
        for c, _b in peers:
            node = next(n for n in plan.controllers if n.name == c)
            lines.append(f'[[meter]]\nname = "{c}"\ndriver = "busguard_peer"\n'
                         f'host = "{node.host}"\nport = {node.port}\npoll_ms = {peer_poll_ms}\n'
                         f'meters = [{meter_list}]\nbreakers = ["b1"]\n')
        lines.append(f'[[block]]\nname = "r{r}"\ntype = "row_summary"\n'
                     f'peers = [{", ".join(chr(34) + c + chr(34) for c, _b in peers)}]\n'
                     f'rating_kva = {rating_kva}\n')
        lines.append(f'[modbus_server]\nhost = "{host}"\nport = {aport}\n'
                     f'allow = {_toml_list(allow)}\n')
        site = out / f"row{r}" / "site.toml"
        site.parent.mkdir(parents=True, exist_ok=True)
        site.write_text("\n".join(lines), encoding="utf-8")
        plan.row_aggs.append(Node(f"row{r}", site, host, aport))
        records = ", ".join(f'"{x}"' for x in row_records(f"r{r}", peers))
        hall_lines.append(f'[[meter]]\nname = "row{r}"\ndriver = "busguard_peer"\n'
                          f'host = "{host}"\nport = {aport}\npoll_ms = {peer_poll_ms}\n'
                          f'records = [{records}]\n')
    host, hport = a_addr(0)
    rows_list = ", ".join(f'"row{r}"' for r in row_peers)
    hall_lines.append(f'[[block]]\nname = "hall"\ntype = "row_summary"\nrows = [{rows_list}]\n')
    hall_lines.append(f'[modbus_server]\nhost = "{host}"\nport = {hport}\n'
                      f'allow = {_toml_list(allow)}\n')
    site = out / "hall" / "site.toml"
    site.parent.mkdir(parents=True, exist_ok=True)
    site.write_text("\n".join(hall_lines), encoding="utf-8")
    plan.hall = Node("hall", site, host, hport)
    return plan


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"
