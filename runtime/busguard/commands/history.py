"""`busguard history POINT --since 1h [--csv]`: a point's on-box history (docs/history.md)."""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from busguard.errors import BusguardError, UsageError
from busguard.image import Quality

UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="a point's recorded history ([history])",
                       description=(
        "Print the on-box history of POINT (device.point, as `busguard status --json` names "
        "it): 1 s samples for spans up to an hour, 1 min min/avg/max beyond (--resolution). "
        "Reads the files in the site's state_dir; the runtime need not be running. Exit 1 when "
        "there is no history or no such point."))
    p.add_argument("point", nargs="?", help="device.point, e.g. pqm-a1.power_kw; omit with "
                   "--list")
    p.add_argument("--since", default="1h", help="how far back: 90s, 15m, 1h, 7d, or a UTC "
                   "time (2026-12-04T10:00:00) (default 1h)")
    p.add_argument("--until", help="end (same forms; default now)")
    p.add_argument("--resolution", choices=("auto", "1s", "1min"), default="auto",
                   help="1s, 1min, or auto: 1 s up to an hour's span, 1 min beyond")
    p.add_argument("--site", help="site file whose state_dir holds the history (default "
                   "./site.toml)")
    p.add_argument("--state-dir", help="the state_dir itself, instead of --site")
    p.add_argument("--csv", action="store_true", help="CSV: t_utc,time,min,avg,max,quality")
    p.add_argument("--json", action="store_true", help="JSON list of samples")
    p.add_argument("--list", action="store_true", help="list the recorded points")
    p.set_defaults(func=run)


def parse_when(text: str, now: float, what: str) -> float:
    """``90s``/``15m``/``1h``/``7d`` ago, or an ISO 8601 time (UTC unless it says)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*", text)
    if m:
        return now - float(m.group(1)) * UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--{what} {text!r}: expected a span such as 90s, 15m, 1h, 7d, or a "
                         f"UTC time such as 2026-12-04T10:00:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    from busguard.loader import load

    return load(Path(args.site) if args.site else Path("site.toml")).site.state_dir


def _num(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"


def run(args: argparse.Namespace) -> int:
    from busguard.history import open_reader

    now = time.time()
    since = parse_when(args.since, now, "since")
    until = parse_when(args.until, now, "until") if args.until else now
    if until < since:
        raise UsageError(f"--until is before --since ({args.until} < {args.since})")
    reader = open_reader(state_dir(args))
    points = reader.points()
    if args.list or not args.point:
        if not args.list:
            raise UsageError("name a POINT (device.point), or --list the recorded ones")
        print("\n".join(points))
        return 0
    if args.point not in points:
        near = difflib.get_close_matches(args.point, points, n=3)
        raise BusguardError(f"no history for point {args.point!r}"
                            + (f"; did you mean {', '.join(near)}?" if near else
                               "; `busguard history --list` lists them"))
    samples = reader.query(args.point, since, until, args.resolution)
    out = sys.stdout
    if args.json:
        json.dump([{"t_utc": s.t_utc, "min": None if math.isnan(s.min) else s.min,
                    "avg": None if math.isnan(s.avg) else s.avg,
                    "max": None if math.isnan(s.max) else s.max,
                    "quality": Quality(s.quality).word} for s in samples], out, indent=1)
        print(file=out)
        return 0
    if args.csv:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["t_utc", "time", "min", "avg", "max", "quality"])
        for s in samples:
            w.writerow([f"{s.t_utc:.0f}", _iso(s.t_utc), _num(s.min), _num(s.avg), _num(s.max),
                        Quality(s.quality).word])
        return 0
    from busguard.history.reader import SECONDS_SPAN_S

    per_s = args.resolution == "1s" or (args.resolution == "auto"
                                        and until - since <= SECONDS_SPAN_S)
    print(f"{args.point}: {len(samples)} samples, {_iso(since)} .. {_iso(until)} "
          f"({'1 s' if per_s else '1 min min/avg/max'})", file=out)
    for s in samples:
        q = Quality(s.quality).word
        if per_s:
            print(f"  {_iso(s.t_utc)}  {_num(s.avg) or 'nan':>12s}  {q}", file=out)
        else:
            print(f"  {_iso(s.t_utc)}  min {_num(s.min) or 'nan':>10s}  avg "
                  f"{_num(s.avg) or 'nan':>10s}  max {_num(s.max) or 'nan':>10s}  {q}", file=out)
    return 0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
