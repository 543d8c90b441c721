"""Communication health of the meters: packet loss, latency, RS-485 signal integrity, polling.

Protects the monitoring itself: a protection decision is only as good as the data behind it.
Reads the ``comm_*`` points the Modbus driver writes per meter after each poll attempt and
raises, per meter and naming it: Connection Timeout (Errno 110) when the meter stops
answering; Modbus exception 0x02, 0x80 (Illegal Data Address) when the meter answers but some
of its points are bad (the driver marks the points of a refused register block BAD); packet
loss and latency above their limits (the seed: monitoring latency under 100 ms); an RS-485
CRC/framing error rate over 0.1% (signal-attenuation: increase the shield grounding or install
a repeater); and a poll period under 3x the measured latency (requests would back up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.image import Quality, Snapshot
from busguard.inputwatch import input_code
from busguard_blocks._common import HighLimit, rnd

if TYPE_CHECKING:
    from busguard.config.site import BlockConfig, SiteConfig

COMM = ("comm_ok", "comm_latency_p50_ms", "comm_latency_p99_ms", "comm_loss_pct",
        "comm_error_pct", "comm_poll_ms")


class CommHealth(Block):
    """Per-meter communication alarms (see the module docstring)."""

    type_name = "comm_health"
    failsafe_policy: ClassVar[str] = (
        "If a meter's comm_* points themselves go stale, bad or missing (the driver stopped "
        "reporting), BG-INPUT names them and that meter's other comm alarms hold their state. "
        "No outputs.")
    codes: ClassVar[Mapping[str, str]] = {
        "errno 110": "major: Connection Timeout (Errno 110), the meter does not answer "
                     "(comm_ok = 0): packet-loss or a downstream network failure",
        "0x02": "major: Modbus exception 0x02, 0x80 (Illegal Data Address): the meter answers "
                "but points are bad; check the vendor register map / profile",
        "BG-COMM-LOSS": "minor: packet loss above loss_limit_pct",
        "BG-COMM-LATENCY": "minor: latency above latency_limit_ms",
        "BG-RS485-ERRORS": "major: RS-485 CRC/framing error rate above error_limit_pct "
                           "(seed: 0.1%, signal integrity)",
        "BG-POLL-RATIO": "warning: poll period under poll_latency_ratio x measured latency",
        **input_code("a comm_* point"),
    }
    params: ClassVar[Mapping[str, Param]] = {
        "meters": Param(list, item=str, ref="meter", default=(),
                        doc="meters to watch; default every meter that has comm_* points"),
        "loss_limit_pct": Param(float, default=1.0, above=0.0, maxval=100.0, unit="%",
                                doc="packet-loss limit"),
        "latency_limit_ms": Param(float, default=100.0, above=0.0, unit="ms",
                                  doc="seed: monitoring latency < 100 ms"),
        "latency_stat": Param(str, default="p50", choices=("p50", "p99"),
                              doc="latency figure judged against the limit and the poll ratio: "
                                  "p50, the typical round trip (p99 alarms on every hiccup of "
                                  "a loaded gateway)"),
        "error_limit_pct": Param(float, default=0.1, above=0.0, maxval=100.0, unit="%",
                                 doc="RS-485 error rate limit (seed: 0.1%)"),
        "poll_latency_ratio": Param(float, default=3.0, minval=1.0, maxval=100.0,
                                    doc="the poll period must be at least this x latency"),
        "check_points": Param(bool, default=True,
                              doc="raise 0x02 when a meter answers but some points are bad"),
        "delay_s": Param(float, default=5.0, minval=0.0, unit="s",
                         doc="on-delay of the loss, latency, error and poll-ratio alarms"),
    }

    def __init__(self, name: str, params: Mapping[str, Any],
                 meters: Mapping[str, tuple[str, ...]] | None = None,
                 rtu: frozenset[str] = frozenset()) -> None:
        """``rtu``: the meters on an RS-485 line (their timeout advice is the line's, not an
        Ethernet jack's)."""
        super().__init__(name, params)
        self.rtu = rtu
        p = self.p
        # meter -> its data points (judged for 0x02)
        self.meters: dict[str, tuple[str, ...]] = dict(meters) if meters is not None else {
            m: () for m in p["meters"]}
        d = p["delay_s"]
        self.limits: dict[tuple[str, str], HighLimit] = {}
        for m in self.meters:
            self.limits[(m, "loss")] = HighLimit(p["loss_limit_pct"],
                                                 p["loss_limit_pct"] * 0.2, d)
            self.limits[(m, "latency")] = HighLimit(p["latency_limit_ms"],
                                                    p["latency_limit_ms"] * 0.1, d)
            self.limits[(m, "errors")] = HighLimit(p["error_limit_pct"],
                                                   p["error_limit_pct"] * 0.2, d)
            # judged as latency x ratio - poll period > 0
            self.limits[(m, "poll")] = HighLimit(0.0, 0.0, d)

    @classmethod
    def from_config(cls, config: BlockConfig, site: SiteConfig) -> Block:
        names = {s.name for s in site.points}
        chosen = config.params["meters"] or tuple(
            d.name for d in site.devices_of("meter") if f"{d.name}.comm_ok" in names)
        comm = {f"{m}.{c}" for m in chosen for c in COMM}
        meters = {}
        for m in chosen:
            meters[m] = tuple(s.name for s in site.points
                              if s.source == m and s.name not in comm
                              and s.name.startswith(f"{m}.")) \
                if config.params["check_points"] else ()
        rtu = frozenset(d.name for d in site.devices_of("meter")
                        if d.name in meters and d.driver == "modbus_rtu")
        return cls(config.name, config.params, meters, rtu)

    def inputs(self) -> tuple[str, ...]:
        return tuple(x for m, data in self.meters.items()
                     for x in (*(f"{m}.{c}" for c in COMM), *data))

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        p = self.p
        res = self.begin_scan(now)
        snap = inputs
        lost_all: dict[str, str] = {}
        for m, data in self.meters.items():
            comm = {}
            for c in COMM:
                i = snap.index[f"{m}.{c}"]
                if snap.quality[i] == Quality.GOOD:
                    comm[c] = snap.values[i]
                else:
                    lost_all[f"{m}.{c}"] = Quality(snap.quality[i]).word
            latency = comm.get(f"comm_latency_{p['latency_stat']}_ms")
            figures = {"loss": comm.get("comm_loss_pct"), "latency": latency,
                       "errors": comm.get("comm_error_pct"),
                       "poll": None if latency is None or "comm_poll_ms" not in comm else
                       latency * p["poll_latency_ratio"] - comm["comm_poll_ms"]}
            values = {k: rnd(v, 3) for k, v in comm.items()}
            if comm.get("comm_ok") == 0.0:
                where = ("check the RS-485 line: A/B wiring and shield grounding, termination, "
                         "the baud rate, parity and unit id" if m in self.rtu else
                         "check the RJ45 jack on the PIU and the edge switch")
                res.alarms.append(AlarmCondition(
                    f"timeout:{m}", Severity.MAJOR, "errno 110",
                    f"Connection Timeout (Errno 110): {m} does not answer; packet-loss or a "
                    f"downstream network failure: {where}", device=m, values=values))
            elif comm.get("comm_ok") == 1.0 and data:
                bad = sorted(x for x in data if snap.quality[snap.index[x]] == Quality.BAD)
                if bad:
                    res.alarms.append(AlarmCondition(
                        f"address:{m}", Severity.MAJOR, "0x02",
                        f"Modbus exception 0x02, 0x80 (Illegal Data Address): {m} answers but "
                        f"{len(bad)} point(s) are bad ({', '.join(bad[:4])}"
                        f"{', ...' if len(bad) > 4 else ''}); check the vendor register map "
                        f"and the meter profile", device=m, values={"bad_points": bad}))
            for kind, figure in figures.items():
                lim = self.limits[(m, kind)]
                if figure is not None:
                    lim.update(figure, now)
                if lim.active:
                    res.alarms.append(self._alarm(kind, m, values))
        res.add(self.input_watch.alarm(lost_all, now, "comm alarms of those meters held"))
        return res

    def _alarm(self, kind: str, m: str, values: dict[str, Any]) -> AlarmCondition:
        """The alarm of one limit (``kind``) of meter ``m``: its id, severity, code and text."""
        p = self.p
        lat = p["latency_stat"]
        latency = values.get(f"comm_latency_{lat}_ms")
        if kind == "loss":
            sev, code, text = Severity.MINOR, "BG-COMM-LOSS", (
                f"packet-loss {values.get('comm_loss_pct')}% above {p['loss_limit_pct']:g}%")
        elif kind == "latency":
            sev, code, text = Severity.MINOR, "BG-COMM-LATENCY", (
                f"latency {lat} {latency} ms above {p['latency_limit_ms']:g} ms")
        elif kind == "errors":
            sev, code, text = Severity.MAJOR, "BG-RS485-ERRORS", (
                f"RS-485 error rate {values.get('comm_error_pct')}% above "
                f"{p['error_limit_pct']:g}%: noise on the data lines (signal-attenuation); "
                f"increase the shield grounding or install a signal repeater")
        else:
            sev, code, text = Severity.WARNING, "BG-POLL-RATIO", (
                f"poll period {values.get('comm_poll_ms')} ms is under "
                f"{p['poll_latency_ratio']:g}x the measured latency ({latency} ms); requests "
                f"will back up")
        return AlarmCondition(f"{kind}:{m}", sev, code, f"{m}: {text}", device=m,
                              values=values)
        return AlarmCondition(
            f"poll:{m}", Severity.WARNING, "BG-POLL-RATIO",
            f"{m}: poll period {values.get('comm_poll_ms')} ms is under "
            f"{p['poll_latency_ratio']:g}x the measured latency "
            f"({values.get(f'comm_latency_{lat}_ms')} ms); requests will back up",
            device=m, values=values)
