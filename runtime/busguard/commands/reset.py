"""`busguard reset BREAKER`: reset a latched shunt trip through the unit's command area.

Writes the breaker's ``cmd_reset`` counter (value + 1) as a DCIM would, then reads the map
until the latch is gone. A reset the block refuses (a cause persists: current above pickup, a
hot joint, the LED still showing the trip...) leaves the trip latched and raises
``BG-RESET-REFUSED``; the command then says so with the reason the block logged (from the
site's fault log, when this is the unit) and exits 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from busguard.commands.alarms import Unit, add_connection_args, wait_for
from busguard.errors import BusguardError

REFUSED = "BG-RESET-REFUSED"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reset", help="reset a breaker's latched trip (its cmd_reset)",
                       description=(
        "Reset BREAKER's latched shunt trip through the unit's Modbus command area (this host "
        "must be in [modbus_server] write_allow). The trip stays latched, and this command "
        "says why and exits 1, when the unit refuses the reset because its cause persists."))
    p.add_argument("breaker", help="the breaker's name, e.g. brk-a1")
    add_connection_args(p)
    p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the unit's "
                   "answer (default 5)")
    p.set_defaults(func=run)


def refusal_reason(site_arg: str | None, breaker: str) -> str:
    """The newest BG-RESET-REFUSED message for ``breaker`` in the site's fault log."""
    from busguard.faultlog import parse_line
    from busguard.loader import load

    path = Path(site_arg) if site_arg else Path("site.toml")
    try:
        log = load(path).site.fault_log
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except (BusguardError, OSError):
        return ""
    for line in reversed(tail):
        entry = parse_line(line) if REFUSED in line else None
        if entry is not None and entry.get("device") == breaker:
            return str(entry.get("msg", ""))
    return ""


def run(args: argparse.Namespace) -> int:
    unit = Unit(args)
    try:
        data = unit.data()
        brk = next((d for d in data["devices"] if d["kind"] == "breaker"
                    and d["name"] == args.breaker), None)
        if brk is None:
            names = [d["name"] for d in data["devices"] if d["kind"] == "breaker"]
            raise BusguardError(f"no breaker {args.breaker!r} at {unit.where} (its breakers: "
                                f"{', '.join(names) or 'none'})")
        if "trip_latched" not in brk["flags"]:
            print(f"{args.breaker}: no latched trip; nothing to reset")
            return 0
        name = f"{args.breaker}.cmd_reset"
        address = brk.get("reset_command")
        if not address:
            raise BusguardError(f"{args.breaker}: the map names no reset command for it (no "
                                f"shunt_trip block latches it)")
        cause = brk.get("trip_cause_name") or "unknown cause"
        current = data["commands"].get(name, {}).get("u32") or 0
        unit.write_counter(name, int(address), (int(current) + 1) & 0xFFFFFFFF)

        def outcome() -> str:
            d = unit.data()
            b = next(x for x in d["devices"] if x["name"] == args.breaker)
            if "trip_latched" not in b["flags"]:
                return "reset"
            if any(a["code"] == REFUSED and a["device"] == args.breaker
                   for a in d["alarm_table"]):
                return "refused"
            return ""

        got = wait_for(outcome, max(0.5, args.wait))
        if got == "reset":
            print(f"{args.breaker}: trip reset (it was: {cause})")
            return 0
        if got == "refused":
            why = refusal_reason(args.site, args.breaker)
            raise BusguardError(f"{args.breaker}: reset refused by the unit ({REFUSED}), the "
                                f"trip stays latched: "
                                + (why or f"a cause of the {cause} trip persists")
                                + "; clear the cause, then reset again")
        raise BusguardError(f"{args.breaker}: {name} written, but the trip is still latched "
                            f"after {args.wait:g} s and no refusal was raised")
    finally:
        unit.close()
