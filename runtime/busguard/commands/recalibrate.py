"""`busguard recalibrate METER --reference-amps X`: correct a meter phase's current gain
against a NIST-traceable reference under a stable, known resistive load.

The meter is read through its own driver (the same code the runtime polls it with, started
here on a private process image), so the readings carry the calibration in force: site.toml's
``calibration``/``ct_ratio`` with ``{state_dir}/calibration.toml`` winning. The new gain is

    gain_new = gain_old * (reference - offset) / (mean_reading - offset)

(offset kept), written to the calibration file (never to site.toml) atomically, with a
backup. ``--from-running`` reads the value the running instance serves in its Modbus map
instead (for RS-485 meters, whose line the service owns). Refused, with nothing written,
when the readings are unstable (spread over ``--max-spread-pct``), the load is too small for
a meaningful gain (reference under
``--min-load-pct`` of the rating), or the correction is implausibly large (a wiring or phase
mistake, not a calibration). Modbus drivers re-read the file within a second; others take it
at the next reload.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from busguard.atomicfile import utc_stamp
from busguard.calibration import (
    Calibration,
    calibration_path,
    effective,
    load_calibration,
    update_calibration,
)
from busguard.clock import MonotonicClock
from busguard.commands import default_site
from busguard.config.site import DeviceConfig, SiteConfig
from busguard.driver import DriverContext
from busguard.errors import BusguardError
from busguard.image import ProcessImage, Quality
from busguard.loader import load_types
from busguard.runtime import check_site

PHASES = ("L1", "L2", "L3", "N")


class Refused(BusguardError):
    """Recalibration refused: nothing was written."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recalibrate", help="correct a meter's current gain against a "
                                           "reference under a known resistive load",
                       description=(
        "Read METER's current on PHASE through its driver while a stable, known resistive "
        "load flows, compare the mean with the reference meter's reading (--reference-amps), "
        "show the old and new gain, and write the new gain to {state_dir}/calibration.toml "
        "atomically with a backup. Refuses when the readings are unstable or the load is too "
        "small for a meaningful gain."))
    p.add_argument("meter", help="meter name from site.toml")
    p.add_argument("--reference-amps", type=float, required=True, metavar="X",
                   help="current measured by the reference meter on that phase")
    p.add_argument("--phase", default="L1", type=str.upper, choices=PHASES,
                   help="the phase whose current is compared with the reference meter "
                        "(default L1)")
    p.add_argument("--samples", type=int, default=10, metavar="N",
                   help="fresh readings to average (default 10)")
    p.add_argument("--site", help="site file (default: $BUSGUARD_SITE, ./site.toml, "
                                  "/etc/busguard/site.toml)")
    p.add_argument("--rating-amps", type=float, metavar="A", help="CT primary or circuit "
                   "rating (default: the meter's ct_ratio x 5 A)")
    p.add_argument("--min-load-pct", type=float, default=10.0, metavar="P",
                   help="refuse below P %% of the rating (default 10)")
    p.add_argument("--max-spread-pct", type=float, default=1.0, metavar="P",
                   help="refuse when (max - min) / mean of the readings exceeds P %% "
                        "(default 1)")
    p.add_argument("--max-correction-pct", type=float, default=20.0, metavar="P",
                   help="refuse a gain change larger than P %% (default 20)")
    p.add_argument("--timeout", type=float, default=0.0, metavar="S",
                   help="give up reading after S seconds (default: 3 poll periods per "
                        "sample + 5 s)")
    p.add_argument("--from-running", action="store_true", help="read the meter through the "
                   "running instance's Modbus map ([modbus_server] of the site) instead of "
                   "polling it here: for RS-485 meters, whose line the service owns")
    p.add_argument("--host", help="with --from-running: the instance's address (default: "
                                  "[modbus_server] host, or 127.0.0.1 when it listens on all)")
    p.add_argument("--dry-run", action="store_true", help="compute and show, write nothing")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    site = check_site(default_site(args.site))
    try:
        res = recalibrate(site, args.meter, args.reference_amps, phase=args.phase,
                          samples=args.samples, rating_a=args.rating_amps,
                          min_load_pct=args.min_load_pct, max_spread_pct=args.max_spread_pct,
                          max_correction_pct=args.max_correction_pct,
                          timeout_s=args.timeout or None, write=not args.dry_run,
                          from_running=args.from_running, host=args.host)
    except PermissionError as exc:
        raise BusguardError(f"{exc.filename}: permission denied; run it as root "
                            f"(sudo busguard recalibrate ...)") from exc
    except Refused as exc:
        if args.json:
            print(json.dumps({"ok": False, "refused": str(exc)}, indent=2))
        else:
            print(f"refused: {exc}\nnothing was written.")
        return 1
    if args.json:
        print(json.dumps({"ok": True, **res}, indent=2))
        return 0
    r = res
    print(f"{r['meter']}.{r['point']}: {r['samples']} readings, mean {r['mean_a']:.3f} A, "
          f"spread {r['spread_pct']:.3f} % (min {r['min_a']:.3f}, max {r['max_a']:.3f})")
    print(f"  reference {r['reference_a']:.3f} A = {r['load_pct']:.1f} % of "
          f"{r['rating_a']:g} A rating")
    print(f"  gain   old {r['gain_old']:.6f}  new {r['gain_new']:.6f}  "
          f"({r['correction_pct']:+.3f} %)")
    print(f"  offset {r['offset']:g} A (kept)")
    if r["written"]:
        print(f"written: {r['file']}" + (f" (backup: {r['backup']})" if r["backup"] else ""))
        print("the running service's Modbus drivers pick it up within a second; other "
              "drivers at the next `systemctl reload busguard`")
    else:
        print("dry run: nothing written")
    return 0


def recalibrate(site: SiteConfig, meter: str, reference_a: float, phase: str = "L1",
                samples: int = 10, rating_a: float | None = None, min_load_pct: float = 10.0,
                max_spread_pct: float = 1.0, max_correction_pct: float = 20.0,
                timeout_s: float | None = None, write: bool = True, from_running: bool = False,
                host: str | None = None) -> dict[str, Any]:
    try:
        dev = site.device(meter)
    except KeyError:
        known = ", ".join(d.name for d in site.devices_of("meter")) or "none"
        raise BusguardError(f"no meter named {meter!r} in {site.file}; meters: {known}"
                            ) from None
    if dev.kind != "meter":
        raise BusguardError(f"{meter!r} is a {dev.kind}, not a meter")
    point = f"current_{phase.lower()}_a"
    if not (reference_a > 0 and math.isfinite(reference_a)):
        raise Refused(f"reference {reference_a:g} A: a positive current is needed")
    rating = rating_a or _rating(dev)
    if rating is None:
        raise Refused(f"no rating known for {meter} (ct_ratio is 1): give --rating-amps, the "
                      f"CT primary or the circuit rating")
    load_pct = 100.0 * reference_a / rating
    if load_pct < min_load_pct:
        raise Refused(f"load too small for a meaningful gain: reference {reference_a:g} A is "
                      f"{load_pct:.1f} % of the {rating:g} A rating (need >= "
                      f"{min_load_pct:g} %); apply a larger resistive load")
    if from_running:
        readings = read_samples_running(site, dev, point, samples, timeout_s, host)
    else:
        if _is_serial(dev):
            from busguard.commands.apply import find_instance

            pid = find_instance(site)
            if pid is not None:
                raise Refused(f"{meter} is on a serial line that the running instance (pid "
                              f"{pid}) owns: read it through the instance (--from-running), "
                              f"or stop the service first")
        readings = read_samples(site, dev, point, samples, timeout_s)
    mean = statistics.fmean(readings)
    lo, hi = min(readings), max(readings)
    spread_pct = 100.0 * (hi - lo) / mean if mean > 0 else math.inf
    if spread_pct > max_spread_pct:
        raise Refused(f"readings unstable: spread {spread_pct:.2f} % over {len(readings)} "
                      f"readings (min {lo:.3f} A, max {hi:.3f} A; limit {max_spread_pct:g} %); "
                      f"wait for a steady resistive load")

    cal_file = calibration_path(site.state_dir)
    table = load_calibration(cal_file)
    old = effective(Calibration(), dev.params["calibration"].get(point),
                    table.get(meter, {}).get(point))
    if mean - old.offset <= 0:
        raise Refused(f"mean reading {mean:.3f} A is not above the offset {old.offset:g} A")
    gain_new = old.gain * (reference_a - old.offset) / (mean - old.offset)
    correction = 100.0 * (gain_new / old.gain - 1.0)
    if abs(correction) > max_correction_pct:
        raise Refused(f"a gain change of {correction:+.1f} % (reading {mean:.3f} A against "
                      f"reference {reference_a:g} A) is beyond {max_correction_pct:g} %: check "
                      f"the CT ratio, the phase (--phase) and the wiring; that is not a "
                      f"calibration")
    res: dict[str, Any] = {
        "meter": meter, "point": point, "samples": len(readings), "mean_a": mean,
        "min_a": lo, "max_a": hi, "spread_pct": spread_pct, "reference_a": reference_a,
        "rating_a": rating, "load_pct": load_pct, "gain_old": old.gain, "gain_new": gain_new,
        "offset": old.offset, "correction_pct": correction, "file": str(cal_file),
        "backup": None, "written": False}
    if write:
        entry = {"gain": round(gain_new, 6), "offset": old.offset, "updated_utc": utc_stamp()}
        saved = update_calibration(cal_file, meter, point, entry)
        _same_owner(cal_file, site.state_dir)
        res.update(backup=str(saved) if saved else None, written=True)
    return res


def _rating(dev: DeviceConfig) -> float | None:
    ct = dev.params["ct_ratio"]
    return ct * 5.0 if ct > 1.0 else None


def _is_serial(dev: DeviceConfig) -> bool:
    return "line" in dev.params or dev.driver.endswith("_rtu")


def _same_owner(path: Path, folder: Path) -> None:
    """Files root writes into the service's state folder belong to the service user."""
    if os.geteuid() != 0:
        return
    st = folder.stat()
    for p in [path, *path.parent.glob(f"{path.name}.*.bak")]:
        with contextlib.suppress(OSError):
            os.chown(p, st.st_uid, st.st_gid)


def collect(sample: Any, n: int, timeout_s: float, what: str, pause_s: float) -> list[float]:
    """``n`` fresh good readings from ``sample() -> (stamp, value, quality word)``; a reading
    is fresh when its stamp differs from the previous one."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    out: list[float] = []
    seen: Any = None
    quality = "none"
    while len(out) < n:
        stamp, value, quality = sample()
        if stamp is not None and stamp != seen and quality == "good" and math.isfinite(value):
            out.append(value)
            seen = stamp
        elif time.monotonic() > deadline:
            raise Refused(f"only {len(out)} of {n} good readings of {what} in {timeout_s:g} s "
                          f"(quality {quality}); is the meter reachable?")
        else:
            pause.wait(pause_s)
    return out


def read_samples_running(site: SiteConfig, dev: DeviceConfig, point: str, n: int,
                         timeout_s: float | None = None, host: str | None = None
                         ) -> list[float]:
    """``n`` fresh readings of ``dev.point`` from the running instance's Modbus map, as a DCIM
    reads them (the value the scan used, calibration applied)."""
    from busguard.commands.status import connect, reader
    from busguard.northbound import mapdef as md
    from busguard.northbound.reader import read_all

    server = site.publishers.get("modbus_server")
    if server is None:
        raise BusguardError(f"{site.file} has no [modbus_server]: --from-running reads the "
                            f"running instance through it")
    listen = server.params["host"]
    host = host or ("127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen)
    if point not in md.STANDARD["meter"]:
        raise BusguardError(f"{point!r} is not in the register map's meter block")
    client = connect(host, int(server.params["port"]), timeout=2.0)
    try:
        read = reader(client, 1)
        data = read_all(read)
        if data["header"]["runtime_state"] != "running":
            raise Refused(f"the instance at {host} is {data['header']['runtime_state']}, not "
                          f"running")
        meters = [d["name"] for d in data["devices"] if d["kind"] == "meter"]
        if dev.name not in meters:
            raise Refused(f"the running instance serves no meter {dev.name!r} (it has: "
                          f"{', '.join(meters) or 'none'}); apply the site first")
        area = data["header"]["directory"]["meter"]
        slot = next(d.get("slot", d["ordinal"]) for d in data["devices"]
                    if d["kind"] == "meter" and d["name"] == dev.name)
        base = area["base"] + slot * area["stride"] + \
            md.DEVICE_HEADER_WORDS + md.STANDARD["meter"].index(point) * md.POINT_WORDS
        last: dict[str, Any] = {"age": math.inf, "value": None, "k": 0}

        def sample() -> tuple[Any, float, str]:
            rec = md.POINT.unpack(read(base, md.POINT_WORDS))
            value, age = rec["value"], rec["age_ms"]
            if age < last["age"] or value != last["value"]:  # a new reading arrived
                last["k"] += 1
            last["age"], last["value"] = age, value
            return last["k"], value, md.QUALITY_WORDS.get(rec["quality"], "?")

        return collect(sample, n, timeout_s or (3 * dev.poll_s * n + 5.0),
                       f"{dev.name}.{point} at {host}", min(0.05, dev.poll_s / 4))
    finally:
        client.close()


def read_samples(site: SiteConfig, dev: DeviceConfig, point: str, n: int,
                 timeout_s: float | None = None) -> list[float]:
    """``n`` fresh good readings of ``dev.point`` through the device's own driver."""
    _pm, registry = load_types(disabled=site.disabled_plugins)
    cls = registry.drivers[dev.kind][dev.driver]
    specs = cls.declare_points(dev, site)
    name = f"{dev.name}.{point}"
    if name not in {s.name for s in specs}:
        raise BusguardError(f"meter {dev.name} has no point {point!r} (profile points: "
                            f"{', '.join(s.name.split('.', 1)[1] for s in specs)})")
    clock = MonotonicClock()
    image = ProcessImage(specs, clock)
    loop = asyncio.new_event_loop()
    io = threading.Thread(target=loop.run_forever, name="recalibrate-io", daemon=True)
    io.start()
    drv = cls(dev, site)
    i = image.index[name]

    def sample() -> tuple[Any, float, str]:
        with image._lock:
            t, q, v = image.t_mono[i], image.quality[i], image.values[i]
        return (t if t > -math.inf else None), v, Quality(q).word

    try:
        drv.start(DriverContext(image, clock, loop, site))
        return collect(sample, n, timeout_s or (3 * dev.poll_s * n + 5.0), name,
                       min(0.05, dev.poll_s / 4))
    finally:
        try:
            drv.stop()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            io.join(timeout=5)
            if not loop.is_running():
                loop.close()
