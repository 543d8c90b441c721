"""`busguard ack [CODE|--all]`: acknowledge alarms through the unit's command area.

The map acknowledges through one counter, ``cmd.ack_alarms``: a change acknowledges every
alarm at once (docs/northbound.md, "Writing: the command area"). So ``--all`` is that write,
and ``ack CODE`` is accepted only while CODE is the one code waiting for acknowledgement: an
operator never acknowledges, unknowingly, an alarm he did not name.
"""

from __future__ import annotations

import argparse

from busguard.commands.alarms import Unit, add_connection_args, wait_for
from busguard.errors import BusguardError, UsageError

ACK = "cmd.ack_alarms"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ack", help="acknowledge alarms (cmd.ack_alarms)", description=(
        "Acknowledge the unit's alarms through its Modbus command area, as a DCIM does "
        "(this host must be in [modbus_server] write_allow). The map acknowledges all alarms "
        "at once: `ack CODE` does so only while CODE is the only code unacknowledged; "
        "otherwise name them all with --all. Exit 1 when refused or not confirmed."))
    p.add_argument("code", nargs="?", help="the alarm code to acknowledge (e.g. 0xCF)")
    p.add_argument("--all", action="store_true", help="acknowledge every alarm")
    add_connection_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.code) == bool(args.all):
        raise UsageError("ack: name one alarm CODE, or --all")
    unit = Unit(args)
    try:
        data = unit.data()
        waiting = [a for a in data["alarm_table"] if not a["acked"]]
        codes = sorted({a["code"] for a in waiting})
        if args.code:
            known = {a["code"] for a in data["alarm_table"]}
            if args.code not in known:
                raise BusguardError(f"no alarm {args.code!r} in {unit.where}'s table"
                                    + (f" (it holds {', '.join(sorted(known))})" if known
                                       else " (it is empty)"))
            if args.code not in codes:
                print(f"{args.code}: already acknowledged")
                return 0
            others = [c for c in codes if c != args.code]
            if others:
                raise BusguardError(
                    f"the map acknowledges all alarms at once (cmd.ack_alarms), and "
                    f"{', '.join(others)} also wait{'s' if len(others) == 1 else ''} for "
                    f"acknowledgement: check them (`busguard alarms`), then `busguard ack "
                    f"--all`")
        if not waiting:
            print("nothing to acknowledge")
            return 0
        cmds = unit.commands()
        if ACK not in cmds:
            raise BusguardError(f"{unit.where}: no {ACK} command in its map")
        current = data["commands"].get(ACK, {}).get("u32") or 0
        unit.write_counter(ACK, cmds[ACK], (int(current) + 1) & 0xFFFFFFFF)
        done = wait_for(lambda: not [a for a in unit.data()["alarm_table"]
                                     if not a["acked"] and a["code"] in codes], 5.0)
        if not done:
            left = [a["code"] for a in unit.data()["alarm_table"] if not a["acked"]]
            raise BusguardError(f"written, but still unacknowledged after 5 s: "
                                f"{', '.join(sorted(set(left)))}")
        print(f"acknowledged {len(waiting)} alarm{'s' if len(waiting) != 1 else ''}: "
              f"{', '.join(codes)}")
        return 0
    finally:
        unit.close()
