"""`busguard ack [CODE|--all]`: acknowledge alarms through the unit's command area.

``--all`` changes ``cmd.ack_alarms`` (value + 1), which acknowledges every alarm.
``ack CODE`` writes ``cmd.ack_code``: the code's number (:mod:`busguard.alarmcodes`) in the
low word and, in the high word, one more than the count read there, so the value always
changes (a command fires on a change) and the same code can be acknowledged again later.
The unit acknowledges the alarms of that code only, on every device; the others keep waiting.

A code without a number of its own (a plugin's or a threshold block's own code: number
0xFFFF, "other") cannot be named in the map, and neither can anything on a unit whose map
predates ``cmd.ack_code``: then ``ack CODE`` falls back to ``cmd.ack_alarms`` only while
CODE is the one code waiting, so an operator never acknowledges, unknowingly, an alarm he
did not name.
"""

from __future__ import annotations

import argparse
from typing import Any

from busguard.alarmcodes import NONE, OTHER, code_number
from busguard.commands.alarms import Unit, add_connection_args, wait_for
from busguard.errors import BusguardError, UsageError

ACK = "cmd.ack_alarms"
ACK_CODE = "cmd.ack_code"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ack", help="acknowledge alarms (cmd.ack_code, cmd.ack_alarms)",
                       description=(
        "Acknowledge the unit's alarms through its Modbus command area, as a DCIM does "
        "(this host must be in [modbus_server] write_allow). `ack CODE` acknowledges the "
        "alarms of that code (cmd.ack_code) and leaves the others waiting; --all "
        "acknowledges every alarm (cmd.ack_alarms). A code without a number in the map "
        "(a plugin's own) is acknowledged only while it is the one code waiting. Exit 1 "
        "when refused or not confirmed."))
    p.add_argument("code", nargs="?", help="the alarm code to acknowledge (e.g. 0xCF)")
    p.add_argument("--all", action="store_true", help="acknowledge every alarm")
    add_connection_args(p)
    p.set_defaults(func=run)


def _waiting(unit: Unit, codes: set[str]) -> list[dict[str, Any]]:
    return [a for a in unit.data()["alarm_table"] if not a["acked"] and a["code"] in codes]


def _confirm(unit: Unit, codes: set[str], count: int) -> int:
    if not wait_for(lambda: not _waiting(unit, codes), 5.0):
        left = sorted({a["code"] for a in _waiting(unit, codes)})
        raise BusguardError(f"written, but still unacknowledged after 5 s: {', '.join(left)}")
    print(f"acknowledged {count} alarm{'s' if count != 1 else ''}: "
          f"{', '.join(sorted(codes))}")
    return 0


def run(args: argparse.Namespace) -> int:
    if bool(args.code) == bool(args.all):
        raise UsageError("ack: name one alarm CODE, or --all")
    unit = Unit(args)
    try:
        data = unit.data()
        waiting = [a for a in data["alarm_table"] if not a["acked"]]
        codes = {a["code"] for a in waiting}
        if not args.code:
            if not waiting:
                print("nothing to acknowledge")
                return 0
            cmds = unit.commands()
            if ACK not in cmds:
                raise BusguardError(f"{unit.where}: no {ACK} command in its map")
            current = data["commands"].get(ACK, {}).get("u32") or 0
            unit.write_counter(ACK, cmds[ACK], (int(current) + 1) & 0xFFFFFFFF)
            return _confirm(unit, codes, len(waiting))
        known = {a["code"] for a in data["alarm_table"]}
        if args.code not in known:
            raise BusguardError(f"no alarm {args.code!r} in {unit.where}'s table"
                                + (f" (it holds {', '.join(sorted(known))})" if known
                                   else " (it is empty)"))
        if args.code not in codes:
            print(f"{args.code}: already acknowledged")
            return 0
        mine = [a for a in waiting if a["code"] == args.code]
        num = code_number(args.code)
        cmds = unit.commands()
        others = sorted(codes - {args.code})
        if num not in (NONE, OTHER) and ACK_CODE in cmds:
            current = int(data["commands"].get(ACK_CODE, {}).get("u32") or 0)
            count = ((current >> 16) + 1) & 0xFFFF
            unit.write_counter(ACK_CODE, cmds[ACK_CODE], (count << 16) | num)
            rc = _confirm(unit, {args.code}, len(mine))
            if others:
                print(f"still waiting for acknowledgement: {', '.join(others)}")
            return rc
        why = (f"{args.code} has no number of its own in the register map (a plugin's or a "
               f"block's own code), so only cmd.ack_alarms, which acknowledges every alarm, "
               f"can acknowledge it" if num in (NONE, OTHER) else
               f"{unit.where}'s map has no {ACK_CODE} (an older busguard): only "
               f"cmd.ack_alarms, which acknowledges every alarm, can acknowledge it")
        if others:
            raise BusguardError(
                f"{why}; {', '.join(others)} also wait{'s' if len(others) == 1 else ''} for "
                f"acknowledgement: check them (`busguard alarms`), acknowledge them by code, "
                f"or `busguard ack --all`")
        if ACK not in cmds:
            raise BusguardError(f"{unit.where}: no {ACK} command in its map")
        current = data["commands"].get(ACK, {}).get("u32") or 0
        unit.write_counter(ACK, cmds[ACK], (int(current) + 1) & 0xFFFFFFFF)
        return _confirm(unit, {args.code}, len(mine))
    finally:
        unit.close()
