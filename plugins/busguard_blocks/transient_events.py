"""Transient events: dI/dt and peak current events when a training job ramps.

Protects nothing by itself: it catches and records the load steps that thousands of GPUs
starting at once put on a busway, so operators can correlate nuisance trips, THD and thermal
rises with job starts. Each scan judges the highest value written since the previous scan
(:meth:`Snapshot.peak`, the image keeps min/max between scans, so a spike between two scans is
not lost); dI/dt is taken between the meter's own samples, by their timestamps. An event
keeps a short buffer of samples before the trigger and collects samples
after it; both are written to the event record: the alarm's values, hence the fault log's raise
line (pre-trigger samples) and clear line (pre and post).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from busguard.alarms import AlarmCondition, Severity
from busguard.block import Block, BlockResult
from busguard.config.params import Param
from busguard.image import Snapshot
from busguard.inputwatch import input_code, lost_inputs
from busguard_blocks._common import SEVERITIES, iso_utc, rnd, wall_utc


class TransientEvents(Block):
    """dI/dt and peak events with pre/post sample buffers (see the module docstring)."""

    type_name = "transient_events"
    failsafe_policy: ClassVar[str] = (
        "A stale, bad or missing point raises BG-INPUT and is left out; its dI/dt restarts "
        "from its next good value (a gap is never read as a step). No outputs.")
    codes: ClassVar[Mapping[str, str]] = {
        "BG-TRANSIENT": "severity per config: dI/dt or peak event; values hold the trigger and "
                        "the pre/post samples [ms from trigger, peak of each point]",
        **input_code(),
    }
    params: ClassVar[Mapping[str, Param]] = {
        "meter": Param(str, default="", ref="meter",
                       doc="meter whose current_l1..l3_a are watched when `points` is empty"),
        "points": Param(list, item=str, ref="point", default=(),
                        doc="current points to watch"),
        "didt_a_per_s": Param(float, default=5000.0, minval=0.0, unit="A/s",
                              doc="rate-of-change trigger; 0 disables"),
        "peak_a": Param(float, default=0.0, minval=0.0, unit="A",
                        doc="absolute peak trigger; 0 disables"),
        "pre_samples": Param(int, default=10, minval=0, maxval=200,
                             doc="scans kept before the trigger"),
        "post_samples": Param(int, default=10, minval=0, maxval=200,
                              doc="scans collected after the trigger"),
        "hold_s": Param(float, default=5.0, minval=0.0, unit="s",
                        doc="the event alarm stays at least this long after the last trigger"),
        "severity": Param(str, default="warning", choices=SEVERITIES,
                          doc="severity of the event alarm"),
    }

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        p = self.p
        self.watch = tuple(p["points"]) or tuple(f"{p['meter']}.current_l{n}_a"
                                                 for n in (1, 2, 3))
        self.pre: deque[tuple[float, list[float | None]]] = deque(maxlen=p["pre_samples"] or 1)
        self.prev: dict[str, tuple[float, float]] = {}
        self.event: dict[str, Any] | None = None
        self.events = 0
        self.last_event: dict[str, Any] = {}

    def inputs(self) -> tuple[str, ...]:
        return self.watch

    def scan(self, inputs: Snapshot, now: float) -> BlockResult:
        p = self.p
        res = self.begin_scan(now)
        lost = lost_inputs(inputs, self.watch)
        sample: list[float | None] = []
        trigger: dict[str, Any] | None = None
        for x in self.watch:
            if x in lost:
                self.prev.pop(x, None)
                sample.append(None)
                continue
            i = inputs.index[x]
            value = inputs.values[i]
            peak = inputs.peak(x)
            sample.append(rnd(peak, 2))
            # dI/dt between the meter's own samples (their timestamps), not between scans:
            # a poll every 100 ms seen by a 10 ms scan is one step per 100 ms, not per 10 ms
            t_sample = inputs.t_mono[i]
            last = self.prev.get(x)
            didt = 0.0
            if last is None or t_sample > last[0]:
                self.prev[x] = (t_sample, value)
                if last is not None:
                    didt = max(abs(value - last[1]), peak - last[1]) / (t_sample - last[0])
            hit = (p["didt_a_per_s"] > 0 and didt >= p["didt_a_per_s"]) or (
                p["peak_a"] > 0 and peak >= p["peak_a"])
            if hit and (trigger is None or didt > trigger["didt_a_per_s"]):
                trigger = {"point": x, "didt_a_per_s": rnd(didt, 1), "peak_a": rnd(peak, 2),
                           "value_a": rnd(value, 2), "from_a": rnd(last[1], 2) if last else None}
        ev = self.event
        if ev is not None and len(ev["post"]) > p["post_samples"] and \
                now - ev["last"] >= p["hold_s"]:
            self.last_event = self._record(ev)  # complete: its alarm clears this scan
            ev = self.event = None
        if ev is not None:
            if len(ev["post"]) <= p["post_samples"]:
                ev["post"].append([round((now - ev["t0"]) * 1000), *sample])
            if trigger is not None:
                ev["last"] = now
                if (trigger["didt_a_per_s"] or 0) > (ev["trigger"]["didt_a_per_s"] or 0):
                    ev["trigger"] = trigger
        elif trigger is not None:
            t = wall_utc(inputs, now, (trigger["point"],))
            self.events += 1
            ev = self.event = {
                "n": self.events, "time_utc": iso_utc(t), "trigger": trigger,
                "points": list(self.watch), "t0": now, "last": now,
                "pre": [[round((ts - now) * 1000), *smp] for ts, smp in self.pre]
                if p["pre_samples"] else [],
                "post": [[0, *sample]]}
        self.pre.append((now, sample))
        if ev is not None:
            tr = ev["trigger"]
            res.alarms.append(AlarmCondition(
                "event", Severity[p["severity"].upper()], "BG-TRANSIENT",
                f"transient on {tr['point']}: dI/dt {tr['didt_a_per_s']} A/s, from "
                f"{tr['from_a']} A to {tr['value_a']} A, peak {tr['peak_a']} A (event {ev['n']})",
                device=tr["point"].rsplit(".", 1)[0],
                values=self._record(ev)))
        res.add(self.input_watch.alarm(lost, now, "left out of the event detection"))
        return res

    @staticmethod
    def _record(ev: dict[str, Any]) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in ev.items()
                if k not in ("t0", "last")}

    def state(self) -> dict[str, Any]:
        return {"events": self.events, "last_event": dict(self.last_event)}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.events = int(state.get("events", 0))
        self.last_event = dict(state.get("last_event") or {})
