"""The edge node's health as input points: what the publisher writes, what a block judges.

The PLC pattern, as for a meter: the publisher (its thread, in the I/O process with
``[scan] io = "process"``) writes its state into the input image the way a driver writes a
reading, through the same image writer, and the ``sparkplug_health`` block
(:mod:`busguard_blocks.sparkplug_health`) reads those points in the scan and raises the
alarms. So the alarm table, the fault log and every outward interface learn about a refused
broker or a full queue exactly as they learn about a silent meter, and a publisher that stops
reporting (its thread or the I/O process gone) shows as stale points, not as silence.
"""

from __future__ import annotations

from busguard.image import PointSpec

SOURCE = "sparkplug"
PREFIX = "sparkplug."
# name -> what it says (docs/sparkplug.md lists them)
POINTS: dict[str, str] = {
    "connected": "1 while an MQTT session with the broker is up, else 0",
    "refused": "1 while the broker's last answer was a refusal (CONNACK failure, or the TLS "
               "handshake closed before it), else 0",
    "refused_code": "the refusal's MQTT reason code (134 bad user name or password, 135 not "
                    "authorized, ...; 0: closed before a CONNACK)",
    "offline_s": "seconds without a session (0 while connected)",
    "queue_held": "changes held in the store-and-forward queue",
    "queue_max": "the queue's bound (queue_max_changes)",
    "queue_dropped": "changes refused because the queue was full (since start)",
    "queue_full": "1 from the first change refused until the queue has drained, else 0",
}
WRITE_EVERY_S = 1.0  # the publisher rewrites them at least this often (a heartbeat)
MAX_AGE_S = 5.0  # older than this: stale (the publisher or the I/O process stopped)
# MQTT 5 reason codes of a refused CONNECT (paho maps 3.1.1's return codes onto them)
REFUSALS = {128: "unspecified error", 132: "unsupported protocol version",
            133: "client identifier not valid", 134: "bad user name or password",
            135: "not authorized", 136: "server unavailable", 138: "banned",
            140: "bad authentication method", 0: "connection closed before the broker "
                                                 "answered (TLS or client certificate)"}


def names() -> tuple[str, ...]:
    return tuple(PREFIX + k for k in POINTS)


def point_specs() -> list[PointSpec]:
    """The points, not retained (a restart starts from what the publisher says then) and not
    in the register map's extra area (the alarms are; ``busguard status`` shows the rest)."""
    return [PointSpec(PREFIX + k, source=SOURCE, max_age_s=MAX_AGE_S, doc=doc, retained=False,
                      mapped=False) for k, doc in POINTS.items()]


def refusal_text(code: float) -> str:
    return REFUSALS.get(int(code), f"reason code {int(code)}")
