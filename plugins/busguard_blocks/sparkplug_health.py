"""The Sparkplug edge node's health: broker refused, broker offline, store-and-forward full.

The ``[sparkplug]`` publisher writes its state as input points (``sparkplug.connected``,
``queue_held``, ...; :mod:`busguard.sparkplug.health`), from its thread or the I/O process,
like a driver writes a meter; this block judges them in the scan, so the operator sees a
refused password or a queue that drops changes in the alarm table, the fault log, the map's
alarm records, SNMP and the web page, like any other alarm. One is built with every
``[sparkplug]`` table (named ``sparkplug``, default options); declare a ``[[block]]`` of this
type to change its options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param, defaults
from busguard.errors import ConfigError, ConfigProblem
from busguard.image import PointSpec, Quality, Snapshot
from busguard.inputwatch import InputWatch, input_code
from busguard.sparkplug import health

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, PublisherConfig, SiteConfig

# the I/O process needs a few seconds to start and connect: its points are not connected
# until then, which is no input loss
STARTUP_GRACE_S = 30.0


class SparkplugHealth(Block):
    """Alarms for the [sparkplug] edge node (see the module docstring)."""

    type_name = "sparkplug_health"
    failsafe_policy: ClassVar[str] = (
        "If the sparkplug.* health points go stale, bad or missing (the publisher or the I/O "
        "process stopped reporting), BG-INPUT names them and the Sparkplug alarms hold the "
        "state of the last good points. No outputs.")
    codes: ClassVar[Mapping[str, str]] = {
        "BG-SPB-REFUSED": "major: the MQTT broker refused the edge node (bad user name or "
                          "password, not authorized, client certificate): nothing reaches "
                          "the Sparkplug hosts; changes wait in the store-and-forward queue",
        "BG-SPB-OFFLINE": "minor: no session with the broker for offline_delay_s; changes "
                          "wait in the store-and-forward queue (held count in the alarm)",
        "BG-SPB-QUEUE-FULL": "major: the store-and-forward queue is full and new changes are "
                             "dropped; the alarm says how many are held and dropped; clears "
                             "once the queue has drained",
        **input_code("a sparkplug.* health point"),
    }
    params: ClassVar[Mapping[str, Param]] = {
        "offline_delay_s": Param(float, default=10.0, minval=0.0, unit="s",
                                 doc="BG-SPB-OFFLINE once the node has had no session with "
                                     "the broker this long (a broker restart is shorter)"),
    }

    def __init__(self, name: str, params: Mapping[str, Any], broker: str = "") -> None:
        super().__init__(name, params)
        self.broker = broker or "the broker"
        self.input_watch = InputWatch(grace_s=STARTUP_GRACE_S)
        self.last: dict[str, float] = {}  # the last good value of each health point

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        pub = site.publishers.get("sparkplug")
        if pub is None:
            raise ConfigError([ConfigProblem(config.file, config.path, "judges the "
                                             "[sparkplug] publisher's health: the site needs a "
                                             "[sparkplug] table")])
        return cls(config.name, config.params, _broker(pub))

    @classmethod
    def for_publisher(cls, config: PublisherConfig, site: SiteConfig) -> Block:
        """The block built with a ``[sparkplug]`` table that has none declared."""
        return cls(config.section, defaults(cls.params), _broker(config))

    def points(self) -> list[PointSpec]:
        return health.point_specs()

    def inputs(self) -> tuple[str, ...]:
        return health.names()

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        snap = inputs
        lost: dict[str, str] = {}
        for key in health.POINTS:
            i = snap.index[health.PREFIX + key]
            if snap.quality[i] == Quality.GOOD:
                self.last[key] = snap.values[i]
            else:
                lost[health.PREFIX + key] = Quality(snap.quality[i]).word
        res = BlockResult()
        v = self.last
        held, cap = int(v.get("queue_held", 0)), int(v.get("queue_max", 0))
        dropped = int(v.get("queue_dropped", 0))
        queue = {"queue_held": held, "queue_max": cap, "queue_dropped": dropped}
        if v.get("refused", 0.0) >= 1.0:
            why = health.refusal_text(v.get("refused_code", 0.0))
            res.alarms.append(AlarmCondition(
                "refused", Severity.MAJOR, "BG-SPB-REFUSED",
                f"Sparkplug: {self.broker} refused the connection ({why}); check [sparkplug] "
                f"username, password_file and the client certificate; {held} change(s) wait "
                f"in the queue", device=health.SOURCE,
                values={"reason_code": int(v.get("refused_code", 0.0)), "reason": why,
                        **queue}))
        elif v.get("connected", 1.0) < 1.0 and \
                v.get("offline_s", 0.0) >= self.p["offline_delay_s"]:
            res.alarms.append(AlarmCondition(
                "offline", Severity.MINOR, "BG-SPB-OFFLINE",
                f"Sparkplug: no session with {self.broker} for {v.get('offline_s', 0.0):.0f} s; "
                f"{held} change(s) held in the store-and-forward queue (limit {cap})",
                device=health.SOURCE, values={"offline_s": round(v.get("offline_s", 0.0)),
                                              **queue}))
        if v.get("queue_full", 0.0) >= 1.0:
            res.alarms.append(AlarmCondition(
                "queue-full", Severity.MAJOR, "BG-SPB-QUEUE-FULL",
                f"Sparkplug: store-and-forward queue full: {held} change(s) held (limit {cap}), "
                f"{dropped} change(s) dropped; raise queue_max_changes or bring the broker "
                f"back", device=health.SOURCE, values=queue))
        res.add(self.input_watch.alarm(lost, now, "Sparkplug alarms held",
                                       device=health.SOURCE))
        return res


def _broker(config: PublisherConfig) -> str:
    return f"the broker at {config.params['host']}:{config.params['port']}"
