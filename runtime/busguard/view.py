"""A live terminal view of a running site (``busguard demo``): standard library only.

On a terminal the view redraws in place with ANSI escape codes (cursor home, erase line,
erase below): meters, probes, breaker LEDs, outputs, alarms, scan statistics and the last log
lines. When stdout is not a terminal it prints one plain summary line per refresh instead, so
a pipe or a CI log stays readable.

The view reads the snapshot the scan itself took in its last cycle (``rt.last_result``), never
``image.snapshot()``, which would start a new min/max window and steal the scan's peaks.
"""

from __future__ import annotations

import collections
import logging
import math
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from busguard.image import Quality, Snapshot

CSI = "\x1b["
HOME, ERASE_LINE, ERASE_BELOW = CSI + "H", CSI + "K", CSI + "J"
HIDE_CURSOR, SHOW_CURSOR, CLEAR = CSI + "?25l", CSI + "?25h", CSI + "2J"
RED, YELLOW, GREEN, DIM, BOLD, RESET = (CSI + c + "m" for c in ("31", "33", "32", "2", "1", "0"))
LED_WORDS = {0: "off", 1: "SOLID (overcurrent)", 2: "2-BLINK (ground fault)"}
SEVERITY_COLOUR = {"critical": RED, "major": RED, "minor": YELLOW, "warning": YELLOW}


class LogTail(logging.Handler):
    """Keeps the last few log records for the view (warnings and up by default)."""

    def __init__(self, size: int = 4, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record).splitlines()[0][:160])
        except Exception:  # a view never breaks logging
            self.handleError(record)


class LiveView:
    """Renders a runtime's state; :meth:`run` refreshes it until ``stop`` is set."""

    def __init__(self, rt: Any, out: TextIO | None = None, tty: bool | None = None,
                 title: str = "", extra: Callable[[], str] | None = None,
                 log_tail: LogTail | None = None, colour: bool | None = None) -> None:
        self.rt = rt
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.colour = self.tty if colour is None else colour
        self.title = title
        self.extra = extra
        self.log_tail = log_tail
        self.frames = 0
        site = rt.site
        self.meters = [d.name for d in site.devices_of("meter")]
        self.probes = [d.name for d in site.devices_of("probe")]
        self.breakers = [d.name for d in site.devices_of("breaker")]

    # -- helpers ----------------------------------------------------------------------------
    def _c(self, colour: str, text: str) -> str:
        return f"{colour}{text}{RESET}" if self.colour else text

    @staticmethod
    def _get(snap: Snapshot, name: str) -> tuple[float, Quality] | None:
        i = snap.index.get(name)
        if i is None:
            return None
        return snap.values[i], Quality(snap.quality[i])

    def _num(self, snap: Snapshot, name: str, fmt: str, width: int) -> str:
        got = self._get(snap, name)
        if got is None:
            return "-".rjust(width)
        value, q = got
        if math.isnan(value):
            return self._c(DIM, q.word[:width].rjust(width))
        text = format(value, fmt).rjust(width)
        return text if q is Quality.GOOD else self._c(DIM, text)

    def _alarms(self) -> list[Any]:
        for _ in range(3):  # the scan thread may change the table while we copy it
            try:
                return sorted(self.rt.alarms.active(), key=lambda a: (-a.condition.severity,
                                                                       a.raised_utc))
            except RuntimeError:
                continue
        return []

    # -- the frame --------------------------------------------------------------------------
    def render(self) -> list[str]:
        rt = self.rt
        res = rt.last_result
        st = rt.stats.snapshot()
        now = datetime.now(timezone.utc).strftime("%H:%M:%S")
        lines = [self._c(BOLD, f"busguard  site {rt.site.name}  {self.title}") +
                 f"  {now} UTC",
                 f"scan  period {rt.site.scan.period_ms:g} ms  cycles {st.cycles}  lateness "
                 f"p50 {st.lateness_p50_ms:.3f} ms  p99 {st.lateness_p99_ms:.3f} ms  max "
                 f"{st.lateness_max_ms:.3f} ms  overruns {st.overruns}"]
        if self.extra is not None:
            lines.append(self.extra())
        pubs = self._publishers()
        if pubs:
            lines.append(pubs)
        if res is None:
            return [*lines, "waiting for the first scan..."]
        snap = res.snapshot
        lines.append("")
        lines.append(self._c(BOLD, f"{'METER':<12} {'I L1 / L2 / L3 (A)':>20} {'kW':>7} "
                                   f"{'PF':>5} {'THD-V%':>6} {'THD-I%':>6} {'RCM mA':>6} "
                                   f"{'T C':>5}  comm"))
        for m in self.meters:
            cur = " /".join(self._num(snap, f"{m}.current_l{p}_a", ".0f", 5) for p in (1, 2, 3))
            thd_v = self._num(snap, f"{m}.thd_v_l1_pct", ".2f", 6)
            got = self._get(snap, f"{m}.thd_v_l1_pct")
            if got and got[1] is Quality.GOOD and got[0] > 5.0:
                thd_v = self._c(RED, thd_v)
            lines.append(f"{m:<12} {cur:>20} {self._num(snap, f'{m}.power_kw', '.1f', 7)} "
                         f"{self._num(snap, f'{m}.power_factor', '.3f', 5)} {thd_v} "
                         f"{self._num(snap, f'{m}.thd_i_l1_pct', '.1f', 6)} "
                         f"{self._num(snap, f'{m}.residual_current_ma', '.0f', 6)} "
                         f"{self._num(snap, f'{m}.temp_c', '.1f', 5)}  {self._comm(snap, m)}")
        if self.probes:
            lines.append("")
            cells = []
            for p in self.probes:
                got = self._get(snap, f"{p}.temp_c")
                text = f"{p} {self._num(snap, f'{p}.temp_c', '.1f', 5)} C"
                if got and got[1] is Quality.GOOD and got[0] >= 90.0:
                    text = self._c(RED, text)
                elif got and got[1] is Quality.GOOD and got[0] >= 70.0:
                    text = self._c(YELLOW, text)
                cells.append(text)
            lines += _wrap("PROBES ", cells)
        if self.breakers:
            cells = []
            for b in self.breakers:
                got = self._get(snap, f"{b}.led")
                if got is None:
                    continue
                value, q = got
                if q is not Quality.GOOD or math.isnan(value):
                    cells.append(f"{b} LED {self._c(DIM, q.word)}")
                    continue
                word = LED_WORDS.get(int(value), f"{int(value)}-blink")
                cells.append(f"{b} LED " + (self._c(RED, word) if value else
                                            self._c(GREEN, word)))
            lines += _wrap("BREAKERS ", cells)
        if res.outputs:
            cells = [self._c(YELLOW, f"{k}={v:g}") if v > 0 and (
                k.startswith("relay.") or k.endswith(".shunt_trip")) else f"{k}={v:g}"
                for k, v in sorted(res.outputs.items())]
            lines += _wrap("OUTPUTS ", cells)
        alarms = self._alarms()
        cols, rows = self.size()
        tail = list(self.log_tail.lines) if self.log_tail is not None else []
        room = max(3, rows - len(lines) - 4 - (len(tail) + 1 if tail else 0))
        shown = alarms if len(alarms) <= room else alarms[:room - 1]
        lines.append("")
        lines.append(self._c(BOLD, f"ALARMS ({len(alarms)})"))
        for a in shown:
            c = a.condition
            sev = c.severity.word
            flag = "" if a.active else " (latched, ack to clear)"
            text = f"{c.message}{flag}"[:max(20, cols - 24)]
            lines.append("  " + self._c(SEVERITY_COLOUR.get(sev, ""), f"{sev.upper():<8}") +
                         f" {c.code:<10} {text}")
        if len(shown) < len(alarms):
            lines.append(f"  ... and {len(alarms) - len(shown)} more")
        if tail:
            lines.append("")
            lines += [self._c(DIM, line[:cols - 1]) for line in tail]
        return lines

    def size(self) -> tuple[int, int]:
        """Terminal columns and rows (a frame longer than the screen would scroll)."""
        if not self.tty:
            return 200, 1000
        size = shutil.get_terminal_size((120, 40))
        return max(60, size.columns), max(20, size.lines)

    def _publishers(self) -> str:
        """Where the DCIM reads us (publishers that report ``listening``)."""
        parts = []
        for pub in getattr(self.rt, "publishers", ()):
            try:
                st = pub.status()
            except Exception:
                continue
            if st.get("listening"):
                parts.append(f"[{pub.section}] {', '.join(st['listening'])}, "
                             f"{st.get('connections', 0)} connections")
        return ("northbound " + "; ".join(parts)) if parts else ""

    def _comm(self, snap: Snapshot, m: str) -> str:
        ok = self._get(snap, f"{m}.comm_ok")
        if ok is None:
            return ""
        lat = self._get(snap, f"{m}.comm_latency_p50_ms")
        loss = self._get(snap, f"{m}.comm_loss_pct")
        err = self._get(snap, f"{m}.comm_error_pct")
        parts = [self._c(GREEN, "ok") if ok[0] == 1 else self._c(RED, "LOST")]
        if lat and not math.isnan(lat[0]):
            parts.append(f"{lat[0]:.1f}ms")
        if loss and loss[0] and not math.isnan(loss[0]):
            parts.append(f"loss {loss[0]:.1f}%")
        if err and err[0] and not math.isnan(err[0]):
            parts.append(self._c(YELLOW, f"crc {err[0]:.2f}%"))
        return " ".join(parts)

    def summary(self) -> str:
        """One plain line: what a log reader needs to follow the run."""
        rt = self.rt
        st = rt.stats.snapshot()
        parts = [datetime.now(timezone.utc).strftime("%H:%M:%S"),
                 f"cycles={st.cycles} p50={st.lateness_p50_ms:.3f}ms "
                 f"p99={st.lateness_p99_ms:.3f}ms overruns={st.overruns}"]
        if self.extra is not None:
            parts.append(self.extra())
        res = rt.last_result
        if res is not None:
            snap = res.snapshot
            good = [snap.values[snap.index[n]] for n in (
                [f"{m}.thd_v_l1_pct" for m in self.meters]) if n in snap.index and snap.is_good(n)]
            if good:
                parts.append(f"max THD-V={max(good):.2f}%")
            temps = [snap.values[snap.index[f"{p}.temp_c"]] for p in self.probes
                     if f"{p}.temp_c" in snap.index and snap.is_good(f"{p}.temp_c")]
            if temps:
                parts.append(f"max probe={max(temps):.1f}C")
            leds = []
            for b in self.breakers:
                got = self._get(snap, f"{b}.led")
                if got is not None:
                    leds.append(f"{b}={'?' if got[1] is not Quality.GOOD else int(got[0])}")
            if leds:
                parts.append("led " + ",".join(leds))
            relays = [f"{k}={v:g}" for k, v in sorted(res.outputs.items())
                      if k.startswith("relay.") or k.endswith(".shunt_trip")]
            if relays:
                parts.append(" ".join(relays))
        alarms = self._alarms()
        parts.append(f"alarms={len(alarms)}" + (
            " [" + ", ".join(sorted({a.condition.code for a in alarms})) + "]" if alarms else ""))
        return "  ".join(parts)

    # -- drawing ----------------------------------------------------------------------------
    def draw(self) -> None:
        self.frames += 1
        if self.tty:
            frame = HOME + "".join(line + ERASE_LINE + "\n" for line in self.render())
            self.out.write(frame + ERASE_BELOW)
        else:
            self.out.write(self.summary() + "\n")
        self.out.flush()

    def run(self, stop: threading.Event, every_s: float = 0.5) -> None:
        """Refresh until ``stop`` is set (call from a thread of its own)."""
        if self.tty:
            self.out.write(HIDE_CURSOR + CLEAR)
        try:
            while True:
                try:
                    self.draw()
                except Exception as exc:  # the view must never take the runtime down
                    logging.getLogger("busguard.view").warning("view failed: %s", exc)
                if stop.wait(every_s):
                    break
        finally:
            if self.tty:
                self.out.write(SHOW_CURSOR)
                self.out.flush()

    def start(self, stop: threading.Event, every_s: float = 0.5) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop, every_s), name="busguard-view",
                             daemon=True)
        t.start()
        return t


def _wrap(head: str, cells: Sequence[str], per_line: int = 4) -> list[str]:
    out = []
    for i in range(0, len(cells), per_line):
        prefix = head if i == 0 else " " * len(head)
        out.append(prefix + "   ".join(cells[i:i + per_line]))
    return out

