"""The live view of a running unit (``busguard status --watch``, ``busguard demo``), with rich.

It draws what the register map holds (the dict ``busguard status --json`` prints, or the map
snapshot of a runtime in this process), so it shows any unit exactly as its DCIM sees it. One
row per tap-off: the meter, the probe(s) on its joint and the breaker feeding it, grouped as the
web page groups them (:func:`busguard.web.view.rows`). The layout is chosen from the terminal's
size: at 80 columns the essentials (kW, load, worst current, voltage, PF, THD, joint
temperature, breaker), wider terminals add per-phase currents, the meter's own temperature and
the trip cause; taller ones more alarm and event rows. A value that is missing shows "--" with
its quality (n/c: not connected), never a unit after a quality word.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from busguard.web.view import rows

SEV_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "warning": "yellow",
             "info": "cyan"}


def layout_from_map(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tap-offs from the map alone (no site file): each meter with the probe and breaker of
    the same ordinal (the bundled site's convention); the rest on rows of their own."""
    devs = data.get("devices", ())
    meters = [d["name"] for d in devs if d["kind"] == "meter"]
    probes = [d["name"] for d in devs if d["kind"] == "probe"]
    breakers = [d["name"] for d in devs if d["kind"] == "breaker"]
    out = [{"name": m, "meter": m, "probes": probes[i:i + 1],
            "breaker": breakers[i] if i < len(breakers) else None, "rating_a": None}
           for i, m in enumerate(meters)]
    out += [{"name": p, "meter": None, "probes": [p], "breaker": None, "rating_a": None}
            for p in probes[len(meters):]]
    out += [{"name": b, "meter": None, "probes": [], "breaker": b, "rating_a": None}
            for b in breakers[len(meters):]]
    return out


def layout_matches(layout: list[dict[str, Any]], data: Mapping[str, Any]) -> bool:
    """Whether a site file's tap-offs name the devices this map serves."""
    names = {d["name"] for d in data.get("devices", ())}
    return any(t["meter"] in names for t in layout)


def _num(v: float | None, fmt: str) -> str:
    return "--" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _utc(t: float | None, seconds: bool = True) -> str:
    if not t:
        return "--"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime(
        "%H:%M:%SZ" if seconds else "%H:%MZ")


SHORT_Q = {"not-connected": "n/c", "stale": "stale", "bad": "bad"}


def _temp(v: float | None, quality: str | None = None) -> Text:
    if v is None:
        q = SHORT_Q.get(quality or "", "")
        return Text("--" + (f" {q}" if q else ""), "dim")
    return Text(f"{v:.1f}", "bold red" if v >= 90 else "yellow" if v >= 70 else "")


def _probe_quality(data: Mapping[str, Any], probes: list[str]) -> str | None:
    for d in data.get("devices", ()):
        if d["kind"] == "probe" and d["name"] in probes:
            rec = d["points"].get("temp_c")
            return rec["quality"] if rec else "not-connected"
    return None


def _breaker(r: Mapping[str, Any], wide: bool) -> Text:
    if not r["breaker"]:
        return Text("--", "dim")
    if r["tripped"]:
        cause = f" {r['trip_cause']}" if wide and r["trip_cause"] else ""
        return Text(f"TRIPPED{cause}", "bold red")
    led = r["led"] or "--"
    return Text(led if wide else led.split(" ")[0], "red" if led not in ("off", "--") else "")


def header(data: Mapping[str, Any], source: str, width: int) -> Text:
    """Two lines: who and what state; then the scan and the alarm summary."""
    h = data.get("header", {})
    p99 = h.get("scan_lateness_p99_ms")
    origin = h.get("data_origin", "?")
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"busguard {source}  ", "bold")
    t.append(f"{origin}", "bold yellow" if origin == "RESTORED" else "bold green")
    t.append(f"  {h.get('runtime_state', '?')}")
    if width >= 100:
        t.append(f"  uptime {h.get('uptime_s', 0)} s  cycles {h.get('cycle_count', 0)}  "
                 f"{_utc(time.time())}")
    t.append("\n")
    t.append(f"scan p99 {_num(p99, '.2f')} ms, {h.get('overruns', 0)} overruns   ")
    n, un = h.get("active_alarms", 0), h.get("unacked_alarms", 0)
    worst = h.get("highest_severity", "")
    t.append(f"alarms {n}" + (f" ({un} unacked, worst {worst})" if n else ""),
             SEV_STYLE.get(worst, "") if n else "green")
    return t


def tap_table(data: Mapping[str, Any], layout: list[dict[str, Any]], width: int) -> Table:
    wide = width >= 120
    tab = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, expand=width >= 100,
                show_edge=False)
    tab.add_column("tap-off", no_wrap=True, max_width=14 if not wide else 20)
    tab.add_column("kW", justify="right")
    tab.add_column("load%", justify="right")
    if wide:
        for i in (1, 2, 3):
            tab.add_column(f"I{i} A", justify="right")
    else:
        tab.add_column("Imax A", justify="right")
    tab.add_column("V L-L", justify="right")
    if wide:
        tab.add_column("V L-N", justify="right")
    tab.add_column("PF", justify="right")
    tab.add_column("THD-V%", justify="right")
    tab.add_column("joint °C", justify="right", no_wrap=True)
    if width >= 100:
        tab.add_column("meter °C", justify="right", no_wrap=True)
    tab.add_column("breaker", no_wrap=True)
    for r in rows(data, layout):
        cur = r["current_a"]
        vals = [c for c in cur if c is not None and not math.isnan(c)]
        load = r["load_pct"]
        cells: list[Any] = [Text(r["name"], "bold" if r["alarms"] else ""),
                            _num(r["power_kw"], ".1f"),
                            Text(_num(load, ".0f"), "red" if load and load >= 80 else "")]
        if wide:
            cells += [_num(c, ".0f") for c in cur]
        else:
            cells.append(_num(max(vals) if vals else None, ".0f"))
        cells.append(_num(r["voltage_ll_v"], ".0f"))
        if wide:
            cells.append(_num(r["voltage_ln_v"], ".0f"))
        cells += [_num(r["power_factor"], ".2f"), _num(r["thd_v_pct"], ".1f"),
                  _temp(r["temp_c"], _probe_quality(data, r["probes"])
                        if r["probes"] else None) if r["probes"] else Text("", "dim")]
        if width >= 100:
            cells.append(_temp(r["meter_temp_c"]) if r["meter"] else Text(""))
        cells.append(_breaker(r, wide))
        if r["meter"] and r["meter_quality"] not in (None, "good"):
            cells[1] = Text(f"{cells[1]} {SHORT_Q.get(r['meter_quality'], '?')}", "dim")
        tab.add_row(*cells)
    return tab


def alarm_table(data: Mapping[str, Any], width: int, limit: int) -> Table | Text:
    alarms = list(data.get("alarm_table", ()))
    if not alarms:
        return Text("no alarms", "green")
    tab = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
                title=None)
    tab.add_column("since")
    tab.add_column("sev")
    tab.add_column("code", no_wrap=True)
    tab.add_column("device", no_wrap=True)
    tab.add_column("state")
    tab.add_column("ack")
    for a in alarms[:max(1, limit)]:
        tab.add_row(_utc(a.get("raised_utc")), Text(a["severity"], SEV_STYLE.get(
            a["severity"], "")), a["code"][:22 if width < 100 else 40], a["device"] or "-",
            a["state"], "yes" if a["acked"] else Text("NO", "bold"))
    if len(alarms) > limit:
        tab.caption = f"+{len(alarms) - limit} more (busguard alarms)"
    return tab


def render(data: Mapping[str, Any], layout: list[dict[str, Any]], source: str, width: int,
           height: int, note: str = "") -> Group:
    """The whole screen for a terminal of ``width`` x ``height``."""
    taps = tap_table(data, layout, width)
    used = 2 + 2 + len(layout) + (1 if note else 0) + 1  # header, table head, rows, note, gap
    room = max(1, height - used - 4)  # the alarm table's head and a margin
    parts: list[Any] = [header(data, source, width), taps, alarm_table(data, width, room)]
    if note:
        parts.append(Text(note, "dim"))
    return Group(*parts)


class LocalWatch:
    """The same view of a runtime in this process (``busguard demo`` on a terminal): it reads
    the map snapshot the DCIM's server serves (:func:`~busguard.northbound.snapshot.
    map_snapshot`), so the demo shows what `busguard status --watch` shows of the unit."""

    def __init__(self, rt: Any, title: str = "", extra: Any = None,
                 log_tail: Any = None) -> None:
        from busguard.web.view import tapoffs

        self.rt = rt
        self.title = title
        self.extra = extra
        self.log_tail = log_tail
        self.taps = tapoffs(rt.site)

    def frame(self, width: int, height: int) -> Group:
        from busguard.northbound.snapshot import map_snapshot

        data = map_snapshot(self.rt.publishers).latest()
        notes = [self.title] if self.title else []
        if self.extra is not None:
            notes.append(self.extra())
        if self.log_tail is not None:
            notes += list(self.log_tail.lines)[-2:]
        return render(data, self.taps, self.rt.site.name, width, height,
                      "\n".join(n[:width] for n in notes))

    def run(self, stop: Any, every_s: float = 0.5) -> None:
        import logging

        from rich.console import Console
        from rich.live import Live

        console = Console()
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                try:
                    w, h = console.size
                    live.update(self.frame(w, h), refresh=True)
                except Exception as exc:  # the view must never take the runtime down
                    logging.getLogger("busguard.view").warning("view failed: %s", exc)
                if stop.wait(every_s):
                    break

    def start(self, stop: Any, every_s: float = 0.5) -> Any:
        import threading

        t = threading.Thread(target=self.run, args=(stop, every_s), name="busguard-view",
                             daemon=True)
        t.start()
        return t
