"""`busguard alarms [--json]`: the unit's alarm table, read through its map as a DCIM reads it.

Also the shared part of `busguard ack` and `busguard reset`: a connection to the unit's
[modbus_server], the addresses of its command records, and a command write that turns the
server's refusal into what the operator must do (this host not in `write_allow`, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from busguard.errors import BusguardError
from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
from busguard.northbound import mapdef as md
from busguard.northbound.reader import read_all, read_chunked, read_header

ReadFn = Callable[[int, int], list[int]]


def add_connection_args(p: argparse.ArgumentParser) -> None:
    """How a command reaches a running unit's [modbus_server] (status, alarms, ack, reset)."""
    p.add_argument("--host", default="127.0.0.1", help="the unit's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="its [modbus_server] port (default: from --site or "
                   "./site.toml, else 502)")
    p.add_argument("--site", help="site file to take the port from (default ./site.toml)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per request")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alarms", help="the unit's alarm table", description=(
        "Read a running busguard's alarm table through its Modbus map (most urgent first: "
        "time raised, code, severity, device, state, acknowledged). Exit 1 when the unit "
        "cannot be read."))
    add_connection_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


class Unit:
    """A connection to a unit's map: reads, the decoded map, command writes."""

    def __init__(self, args: argparse.Namespace) -> None:
        from busguard.commands.status import connect, unit_port

        self.port = unit_port(args)
        self.where = f"{args.host}:{self.port}"
        self.client: ModbusTcpClient = connect(args.host, self.port, args.timeout)
        self.client.unit = 1

    def read(self, address: int, count: int) -> list[int]:
        try:
            return self.client.read(address, count)
        except ExceptionReply as exc:
            raise BusguardError(f"{self.where}: reading {count} registers at {address} "
                                f"refused: {exc}") from exc
        except CommError as exc:
            raise BusguardError(f"{self.where}: {exc}") from exc

    def data(self) -> dict[str, Any]:
        return read_all(self.read)

    def commands(self) -> dict[str, int]:
        """Command point name -> address of its record (the uint32 pair is at +2)."""
        head = read_header(self.read)
        d = head["directory"]
        nd = d["name"]
        raw = read_chunked(self.read, nd["base"], nd["count"] * nd["stride"])
        names = []
        for i in range(nd["count"]):
            ws = raw[i * nd["stride"]:(i + 1) * nd["stride"]]
            names.append(b"".join(w.to_bytes(2, "big") for w in ws).rstrip(b"\0").decode(
                "ascii", "replace"))
        data = read_all(self.read)
        # the name table lists devices, outputs, alarm records, commands, extras in order
        k = len(data["devices"]) + len(data["outputs"]) + len(data["alarms"])
        a = d["command"]
        ws = read_chunked(self.read, a["base"], a["count"] * a["stride"])
        out = {}
        for i in range(a["count"]):
            rec = md.COMMAND.unpack(ws[i * a["stride"]:(i + 1) * a["stride"]])
            if rec["u32"] == 0xFFFFFFFF and rec["value"] != rec["value"]:  # vacant
                continue
            out[names[k]] = a["base"] + i * a["stride"]
            k += 1
        return out

    def write_counter(self, name: str, address: int, value: int) -> None:
        """Write a command counter (uint32 pair, FC16) and explain a refusal."""
        try:
            self.client.write(address + 2, [(value >> 16) & 0xFFFF, value & 0xFFFF])
        except ExceptionReply as exc:
            if exc.code == 1:
                raise BusguardError(
                    f"{self.where} refused the write of {name} (Modbus exception 0x01): this "
                    f"host is not in the unit's [modbus_server] write_allow; add its address "
                    f"there (write_allow = [\"10.0.5.10/32\"]), `busguard apply`, and retry"
                ) from exc
            raise BusguardError(f"{self.where} refused the write of {name} = {value}: "
                                f"{exc}") from exc
        except CommError as exc:
            raise BusguardError(f"{self.where}: writing {name}: {exc}") from exc

    def close(self) -> None:
        self.client.close()


def wait_for(cond: Callable[[], Any], timeout_s: float, every_s: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something true or ``timeout_s`` passes (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(every_s)


def utc(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def show(table: list[dict[str, Any]], out: Any) -> None:
    if not table:
        print("no alarms", file=out)
        return
    print(f"{'raised (UTC)':20s}  {'code':20s}  {'severity':8s}  {'device':16s}  "
          f"{'state':16s}  ack", file=out)
    for a in table:
        print(f"{utc(a['raised_utc']):20s}  {a['code']:20s}  {a['severity']:8s}  "
              f"{a['device'] or '-':16s}  {a['state']:16s}  {'yes' if a['acked'] else 'NO'}",
              file=out)


def run(args: argparse.Namespace) -> int:
    unit = Unit(args)
    try:
        table = unit.data()["alarm_table"]
    finally:
        unit.close()
    if args.json:
        print(json.dumps(table, indent=1))
    else:
        show(table, sys.stdout)
    return 0
