"""BUSGUARD-MIB, generated from :mod:`busguard.snmp.tree` (never edited by hand).

``busguard snmp mib`` prints it; packaging/mibs/BUSGUARD-MIB.txt is this text (a test keeps
them equal) and the .deb installs it under /usr/share/snmp/mibs.
"""

from __future__ import annotations

from busguard.northbound import mapdef as md
from busguard.snmp import tree

_HEAD = """BUSGUARD-MIB DEFINITIONS ::= BEGIN

IMPORTS
    MODULE-IDENTITY, OBJECT-TYPE, NOTIFICATION-TYPE, Integer32, Unsigned32,
    Gauge32, Counter32, enterprises
        FROM SNMPv2-SMI
    TEXTUAL-CONVENTION, DisplayString, TruthValue
        FROM SNMPv2-TC
    MODULE-COMPLIANCE, OBJECT-GROUP, NOTIFICATION-GROUP
        FROM SNMPv2-CONF;

busguardMIB MODULE-IDENTITY
    LAST-UPDATED "202612040000Z"
    ORGANIZATION "busguard"
    CONTACT-INFO "busguard maintainers"
    DESCRIPTION
        "Read-only view of a busguard unit (AI-factory busway power
        distribution): the register map's header, meters, probes and
        breakers indexed by their stable slot, and the alarm table.
        PLACEHOLDER: enterprise number {pen} is the documentation PEN
        of RFC 5612, used until a Private Enterprise Number is
        registered; the agent serves under [snmp] enterprise_oid."
    REVISION "202612040000Z"
    DESCRIPTION "First version."
    ::= {{ enterprises {pen} }}

BgQuality ::= TEXTUAL-CONVENTION
    STATUS current
    DESCRIPTION "Quality of a value: good, stale (served, not re-read),
        bad, or notConnected."
    SYNTAX INTEGER {{ good(0), stale(1), bad(2), notConnected(3) }}

BgSeverity ::= TEXTUAL-CONVENTION
    STATUS current
    DESCRIPTION "Alarm severity."
    SYNTAX INTEGER {{ none(0), info(1), warning(2), minor(3), major(4), critical(5) }}

BgMilli ::= TEXTUAL-CONVENTION
    DISPLAY-HINT "d-3"
    STATUS current
    DESCRIPTION "A fixed-point value: the value times 1000, rounded.
        -2147483648: no value (not read, or not a number)."
    SYNTAX Integer32

BgWhole ::= TEXTUAL-CONVENTION
    DISPLAY-HINT "d"
    STATUS current
    DESCRIPTION "A whole value (scale 1), rounded.
        -2147483648: no value (not read, or not a number)."
    SYNTAX Integer32

bgNotifications OBJECT IDENTIFIER ::= {{ busguardMIB 0 }}
bgObjects OBJECT IDENTIFIER ::= {{ busguardMIB 1 }}
bgConformance OBJECT IDENTIFIER ::= {{ busguardMIB 2 }}
bgHeader OBJECT IDENTIFIER ::= {{ bgObjects 1 }}
"""


def _obj(name: str, syntax: str, units: str, access: str, doc: str, parent: str,
         sub: int) -> str:
    u = f'    UNITS "{units}"\n' if units else ""
    return (f"{name} OBJECT-TYPE\n    SYNTAX {syntax}\n{u}    MAX-ACCESS {access}\n"
            f"    STATUS current\n    DESCRIPTION\n        \"{doc}\"\n"
            f"    ::= {{ {parent} {sub} }}\n\n")


def _columns(kind: str) -> list[tuple[str, str, str, str, int]]:
    """(name, syntax, units, description, column) of a kind's table, index excluded."""
    p = tree.KIND_PREFIX[kind]
    cols = [(f"{p}Name", "DisplayString", "", f"Name of the {kind} (site.toml).", 2),
            (f"{p}Status", "BgQuality", "", f"Status of the {kind}'s link.", 3)]
    if kind == "breaker":
        cols += [(f"{p}TripCause", "Unsigned32", "", "Code number of the latched or commanded "
                  "trip (the register map's cause table), 0 none.", 4),
                 (f"{p}TripTime", "Unsigned32", "seconds", "UTC time (epoch s) of the trip, "
                  "0 none.", 5)]
    for j, q in enumerate(md.STANDARD[kind]):
        n, col = p + tree.camel(q), tree.POINT_BASE + 3 * j
        unit = md.unit_of(q)
        tc = "BgMilli" if tree.scale_of(q) == 1000 else "BgWhole"
        scale = "x 1000" if tc == "BgMilli" else "x 1"
        note = md.QUANTITY_NOTES.get(q, q.replace("_", " "))
        note = note.replace('"', "'")
        cols += [(n, tc, unit, f"{q} ({unit or 'no unit'}, {scale}): {note}.", col),
                 (n + "Quality", "BgQuality", "", f"Quality of {q}.", col + 1),
                 (n + "Age", "Unsigned32", "milliseconds", f"Age of {q} (65535: 65.5 s or "
                  "more).", col + 2)]
    return cols


def _table(kind: str) -> str:
    p, t = tree.KIND_PREFIX[kind], tree.KIND_TABLE[kind]
    cols = _columns(kind)
    seq = ",\n        ".join([f"{p}Slot Unsigned32"] + [f"{n} {s}" for n, s, *_ in cols])
    s = (f"{p}Table OBJECT-TYPE\n    SYNTAX SEQUENCE OF {p.capitalize()}Entry\n"
         f"    MAX-ACCESS not-accessible\n    STATUS current\n    DESCRIPTION\n"
         f"        \"The {kind}s, indexed by their stable slot (the Modbus map's slot).\"\n"
         f"    ::= {{ bgObjects {t} }}\n\n"
         f"{p}Entry OBJECT-TYPE\n    SYNTAX {p.capitalize()}Entry\n"
         f"    MAX-ACCESS not-accessible\n    STATUS current\n    DESCRIPTION\n"
         f"        \"One {kind}.\"\n    INDEX {{ {p}Slot }}\n    ::= {{ {p}Table 1 }}\n\n"
         f"{p.capitalize()}Entry ::= SEQUENCE {{\n        {seq}\n    }}\n\n")
    s += _obj(f"{p}Slot", "Unsigned32 (0..65534)", "", "not-accessible",
              f"Stable slot of the {kind} in the register map.", f"{p}Entry", 1)
    for n, syn, unit, doc, col in cols:
        s += _obj(n, syn, unit, "read-only", doc, f"{p}Entry", col)
    return s


_ALARM = [("bgAlarmCode", "DisplayString", "", "The alarm code as text.", 2),
          ("bgAlarmCodeNum", "Unsigned32", "", "The alarm code number, 65535 other.", 3),
          ("bgAlarmSeverity", "BgSeverity", "", "Severity.", 4),
          ("bgAlarmDevice", "DisplayString", "", "Device (or block) the alarm names.", 5),
          ("bgAlarmSlot", "Integer32", "", "Slot of that device, -1 none.", 6),
          ("bgAlarmState", "INTEGER { empty(0), active(1), latched(2), clearedUnacked(3) }",
           "", "State of the alarm.", 7),
          ("bgAlarmAcked", "TruthValue", "", "Acknowledged.", 8),
          ("bgAlarmRaised", "Unsigned32", "seconds", "UTC time (epoch s) it was raised.", 9)]


def _alarms() -> str:
    seq = ",\n        ".join(["bgAlarmIndex Unsigned32"] + [f"{n} {s.split(' {')[0]}"
                                                             for n, s, *_ in _ALARM])
    seq = seq.replace("bgAlarmState INTEGER", "bgAlarmState INTEGER")
    s = ("bgAlarmTable OBJECT-TYPE\n    SYNTAX SEQUENCE OF BgAlarmEntry\n"
         "    MAX-ACCESS not-accessible\n    STATUS current\n    DESCRIPTION\n"
         "        \"The alarm table, most urgent first (at most 64).\"\n"
         f"    ::= {{ bgObjects {tree.ALARM_TABLE} }}\n\n"
         "bgAlarmEntry OBJECT-TYPE\n    SYNTAX BgAlarmEntry\n    MAX-ACCESS not-accessible\n"
         "    STATUS current\n    DESCRIPTION\n        \"One alarm.\"\n"
         "    INDEX { bgAlarmIndex }\n    ::= { bgAlarmTable 1 }\n\n"
         f"BgAlarmEntry ::= SEQUENCE {{\n        {seq}\n    }}\n\n")
    s += _obj("bgAlarmIndex", "Unsigned32 (1..64)", "", "not-accessible",
              "Rank of the alarm (1 most urgent).", "bgAlarmEntry", 1)
    for n, syn, unit, doc, col in _ALARM:
        s += _obj(n, syn, unit, "read-only", doc, "bgAlarmEntry", col)
    return s


_EVENT = [("bgEventSeq", "Unsigned32", "", "Sequence number of the alarm edge in the event "
            "ring (never goes back, across restarts too).", 1),
           ("bgEventCode", "DisplayString", "", "Alarm code (or, in bgTripEvent, the trip cause) "
            "as text.", 2),
           ("bgEventCodeNum", "Unsigned32", "", "Alarm (or trip cause) code number.", 3),
           ("bgEventSeverity", "BgSeverity", "", "Severity of the alarm.", 4),
           ("bgEventDevice", "DisplayString", "", "Device (or block) the alarm or trip "
            "names.", 5),
           ("bgEventTime", "Unsigned32", "seconds", "UTC time (epoch s) of the edge or trip.",
            6)]
_NOTIFS = [("bgAlarmRaiseEvent", 1, "bgEventSeq, bgEventCode, bgEventCodeNum, bgEventSeverity, "
            "bgEventDevice, bgEventTime", "An alarm was raised."),
           ("bgAlarmClearEvent", 2, "bgEventSeq, bgEventCode, bgEventCodeNum, bgEventSeverity, "
            "bgEventDevice, bgEventTime", "An alarm cleared."),
           ("bgTripEvent", 3, "bgEventCode, bgEventCodeNum, bgEventDevice, bgEventTime",
            "A breaker trip latched (or was commanded): its cause and breaker."),
           ("bgColdStartEvent", 4, "bgDataOrigin, bgMapFingerprint", "The agent started; "
            "bgDataOrigin says whether values come from retained state (restored).")]


def _events() -> str:
    s = f"bgEvents OBJECT IDENTIFIER ::= {{ bgObjects {6} }}\n\n"
    for n, syn, unit, doc, sub in _EVENT:
        s += _obj(n, syn, unit, "accessible-for-notify", doc, "bgEvents", sub)
    for n, sub, objs, doc in _NOTIFS:
        s += (f"{n} NOTIFICATION-TYPE\n    OBJECTS {{ {objs} }}\n    STATUS current\n"
              f"    DESCRIPTION\n        \"{doc}\"\n    ::= {{ bgNotifications {sub} }}\n\n")
    return s


def _conformance() -> str:
    names = [h.name for h in tree.HEADER]
    for kind in tree.KIND_TABLE:
        names += [c[0] for c in _columns(kind)]
    names += [n for n, *_ in _ALARM]
    objs = ",\n        ".join(names)
    events = ",\n        ".join(n for n, *_ in _EVENT)
    notifs = ",\n        ".join(n for n, *_ in _NOTIFS)
    return ("bgCompliances OBJECT IDENTIFIER ::= { bgConformance 1 }\n"
            "bgGroups OBJECT IDENTIFIER ::= { bgConformance 2 }\n\n"
            "bgObjectGroup OBJECT-GROUP\n    OBJECTS {\n        " + objs + "\n    }\n"
            "    STATUS current\n    DESCRIPTION \"Everything the agent serves.\"\n"
            "    ::= { bgGroups 1 }\n\n"
            "bgEventGroup OBJECT-GROUP\n    OBJECTS {\n        " + events + "\n    }\n"
            "    STATUS current\n    DESCRIPTION \"What the notifications carry.\"\n"
            "    ::= { bgGroups 2 }\n\n"
            "bgNotificationGroup NOTIFICATION-GROUP\n    NOTIFICATIONS {\n        " +
            notifs + "\n    }\n"
            "    STATUS current\n    DESCRIPTION \"The notifications.\"\n"
            "    ::= { bgGroups 3 }\n\n"
            "bgCompliance MODULE-COMPLIANCE\n    STATUS current\n    DESCRIPTION\n"
            "        \"A busguard agent serves every object.\"\n    MODULE\n"
            "        MANDATORY-GROUPS { bgObjectGroup, bgEventGroup, bgNotificationGroup }\n"
            "    ::= { bgCompliances 1 }\n\n")


def mib_text() -> str:
    s = _HEAD.format(pen=tree.PLACEHOLDER_PEN)
    for h in tree.HEADER:
        s += _obj(h.name, h.syntax, h.units, "read-only", h.doc, "bgHeader", h.sub)
    for kind in tree.KIND_TABLE:
        s += _table(kind)
    s += _alarms()
    s += _events()
    s += _conformance()
    return s + "END\n"
