"""`busguard status [--host H --port P] [--json]`: read a running instance through its map."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from busguard.commands.alarms import add_connection_args
from busguard.errors import BusguardError
from busguard.modbus.tcpclient import CommError, ExceptionReply, ModbusTcpClient
from busguard.northbound.reader import read_all


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="read a running busguard through its Modbus map",
                       description=(
        "Connect to a running busguard's [modbus_server] as a DCIM would (a plain Modbus TCP "
        "client, the documented registers only) and show the header, every device, output, alarm "
        "word and command value. Exit 1 when the server cannot be read."))
    add_connection_args(p)
    p.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    p.add_argument("--tls-ca", help="Modbus/TCP Security: CA that signed the server's "
                   "certificate")
    p.add_argument("--tls-cert", help="client certificate (PEM)")
    p.add_argument("--tls-key", help="client key (PEM)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", action="store_true", help="live view, redrawn every --interval "
                   "(Ctrl-C stops it): one row per tap-off, the alarm table")
    p.add_argument("--interval", type=float, default=1.0, help="--watch: seconds between "
                   "reads (default 1)")
    p.add_argument("--count", type=int, default=0, help="--watch: stop after this many "
                   "frames (default 0: until Ctrl-C)")
    p.set_defaults(func=run)


BRIEF = ("voltage_l1_n_v", "current_l1_a", "current_l2_a", "current_l3_a", "power_kw",
         "thd_v_l1_pct", "temp_c", "comm_ok", "led")


def unit_port(args: argparse.Namespace, tls: bool = False) -> int:
    """The port a command reaches the unit on: ``--port``, else the site's (see
    :func:`add_connection_args`)."""
    return args.port if args.port is not None else _port_from_site(args.site, tls)


def _port_from_site(site: str | None, tls: bool) -> int:
    """The [modbus_server] port (or its TLS port) of the site file, read by the loader; the
    declared default when the file has none or cannot be loaded."""
    from busguard.loader import load
    from busguard.northbound.publisher import TLS_PARAMS, ModbusServerPublisher

    declared = ModbusServerPublisher.params
    try:
        ms = load(Path(site) if site else Path("site.toml")).site.publishers["modbus_server"]
    except (BusguardError, KeyError):  # no such file, not valid, no [modbus_server]
        return TLS_PARAMS["port"].default if tls else declared["port"].default
    if tls:
        return ms.params["tls"].get("port", TLS_PARAMS["port"].default)
    return ms.params["port"]


def connect(host: str, port: int, timeout: float, tls_ca: str | None = None,
            tls_cert: str | None = None, tls_key: str | None = None) -> ModbusTcpClient:
    ctx = None
    if tls_ca or tls_cert:
        from busguard.northbound.tls import client_context

        ctx = client_context(Path(tls_ca) if tls_ca else None,
                             Path(tls_cert) if tls_cert else None,
                             Path(tls_key) if tls_key else None)
    client = ModbusTcpClient(host, port, timeout_s=timeout, unit=1, ssl_context=ctx)
    if not client.connect():
        client.close()
        raise BusguardError(f"cannot connect to {host}:{port} (is busguard running with a "
                            f"[modbus_server], and is this address in its allow list?)")
    return client


def reader(client: ModbusTcpClient, unit: int) -> Callable[[int, int], list[int]]:
    client.unit = unit

    def read(address: int, count: int) -> list[int]:
        try:
            return client.read(address, count)
        except ExceptionReply as exc:
            raise BusguardError(f"reading {count} registers at {address} failed: "
                                f"{exc}") from exc

    return read


def run(args: argparse.Namespace) -> int:
    tls = bool(args.tls_ca or args.tls_cert)
    port = unit_port(args, tls)
    if args.watch:
        from busguard.commands.watch import watch

        return watch(args, port)
    client = connect(args.host, port, args.timeout, args.tls_ca, args.tls_cert, args.tls_key)
    try:
        data = read_all(reader(client, args.unit))
    except CommError as exc:
        raise BusguardError(f"{args.host}:{port}: {exc}") from exc
    finally:
        client.close()
    data["server"] = f"{args.host}:{port}"
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    show(data, sys.stdout)
    return 0


def _utc(t: int) -> str:
    if not t:
        return "never"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _fmt(p: dict[str, Any]) -> str:
    q = "" if p["quality"] == "good" else f" ({p['quality']})"
    return f"{_val(p['value'])}{q}"


def show(data: dict[str, Any], out: Any) -> None:
    h = data["header"]
    p99 = h["scan_lateness_p99_ms"]
    print(f"busguard at {data['server']}: map v{h['map_version']}, {h['runtime_state']}, "
          f"{h['data_origin']} ({h['points_restored']} values restored), retained state "
          f"{h['retained_status']}, start #{h['starts']}", file=out)
    print(f"  scan: {h['cycle_count']} cycles, {h['overruns']} overruns, p99 lateness "
          f"{'n/a' if p99 is None else f'{p99:.3f}'} ms, period {h['scan_period_ms']} ms, "
          f"uptime {h['uptime_s']} s, last good scan {_utc(h['last_good_scan_utc'])}", file=out)
    print(f"  alarms: {h['active_alarms']} ({h['unacked_alarms']} unacknowledged, highest "
          f"{h['highest_severity']}); faulted blocks {h['faulted_blocks']}; config "
          f"{h['config_hash'][:12]}"
          + (f"; map fingerprint 0x{h['fingerprint']:08x}" if "fingerprint" in h else ""),
          file=out)
    for d in data["devices"]:
        flags = f" [{', '.join(d['flags'] + d['alarms'])}]" if d["flags"] or d["alarms"] else ""
        shown = {q: p for q, p in d["points"].items() if q in BRIEF} or d["points"]
        pts = "  ".join(f"{q}={_fmt(p)}" for q, p in shown.items())
        if len(shown) < len(d["points"]):
            pts += f"  (+{len(d['points']) - len(shown)} more: --json)"
        if d.get("trip_cause"):
            pts += f"  trip {d['trip_cause_name']} since {_utc(int(d['trip_utc'] or 0))}"
        print(f"  {d['kind']:7s} {d['name']:16s} {d['status']:13s}{flags} {pts}", file=out)
    if data["outputs"]:
        print("  outputs: " + "  ".join(f"{n}={_fmt(p)}" for n, p in data["outputs"].items()),
              file=out)
    if data["extras"]:
        print("  other points: " + "  ".join(f"{n}={_fmt(p)}" for n, p in data["extras"].items()),
              file=out)
    for block, a in data["alarms"].items():
        if a["count"] or a["bits"]:
            print(f"  block {block}: {a['count']} alarms [{', '.join(a['bits'])}]", file=out)
    if data["commands"]:
        print("  commands: " + "  ".join(f"{n}={_val(c['value'])}"
                                         for n, c in data["commands"].items()), file=out)
    for a in data.get("alarm_table", ()):
        print(f"  alarm {a['severity']:8s} {a['code']:20s} {a['device'] or '-':16s} "
              f"{a['state']}{'' if a['acked'] else ', unacknowledged'} since "
              f"{_utc(int(a['raised_utc']))}", file=out)
    ev = data.get("events")
    if ev and ev["seq"]:
        last = ev["edges"][-1] if ev["edges"] else None
        print(f"  events: last #{ev['seq']} ({len(ev['edges'])} of {ev['capacity']} held)"
              + (f": {last['kind']} {last['code']} {last['device']} at "
                 f"{_utc(int(last['t_utc']))}" if last else ""), file=out)


def _val(v: float | None) -> str:
    return "nan" if v is None else f"{v:g}"
