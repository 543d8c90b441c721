"""What the page shows, derived once per refresh from the decoded map snapshot.

A tap-off is one row: its meter, the probe(s) on its joint and the breaker that feeds it. The
site file does not name tap-offs, so they are found from what the blocks tie together (a
``shunt_trip`` block names its breaker, meter and probes), then the rest pair up in file
order (the n-th probe and breaker with the n-th meter that has none yet; the bundled site's
convention). Ratings come from the breaker's ``rating_a``, else a ``power_quality`` block's
``rated_ampacity_a`` for the meter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from busguard.config.model import SiteConfig

LED_WORDS = {0: "off", 1: "solid", 2: "2-blink (ground fault)"}


def tapoffs(site: SiteConfig) -> list[dict[str, Any]]:
    """The site's tap-offs: ``{name, meter, probes, breaker, rating_a}`` in meter order."""
    meters = [d.name for d in site.devices if d.kind == "meter"]
    probes = [d.name for d in site.devices if d.kind == "probe"]
    breakers = {d.name: d for d in site.devices if d.kind == "breaker"}
    rows: dict[str, dict[str, Any]] = {
        m: {"name": m, "meter": m, "probes": [], "breaker": None, "rating_a": None}
        for m in meters}
    ampacity: dict[str, float] = {}
    used_p: set[str] = set()
    used_b: set[str] = set()
    for b in site.blocks:
        p = b.params
        m = p.get("meter")
        if not isinstance(m, str) or m not in rows:
            continue
        if b.type == "power_quality" and (p.get("rated_ampacity_a") or 0) > 0:
            ampacity[m] = float(p["rated_ampacity_a"])
        br = p.get("breaker")
        if isinstance(br, str) and br in breakers and br not in used_b and \
                rows[m]["breaker"] is None:
            rows[m]["breaker"] = br
            used_b.add(br)
        for pr in p.get("probes") or ():
            if pr in probes and pr not in used_p:
                rows[m]["probes"].append(pr)
                used_p.add(pr)
    free_p = [p for p in probes if p not in used_p]
    free_b = [b for b in breakers if b not in used_b]
    for i, m in enumerate(meters):
        if not rows[m]["probes"] and i < len(probes) and probes[i] in free_p:
            rows[m]["probes"].append(probes[i])
            free_p.remove(probes[i])
    for i, b in enumerate(breakers):
        if b in free_b and i < len(meters) and rows[meters[i]]["breaker"] is None:
            rows[meters[i]]["breaker"] = b
            free_b.remove(b)
    out = list(rows.values())
    for p in free_p:  # a probe no meter claims: a row of its own
        out.append({"name": p, "meter": None, "probes": [p], "breaker": None, "rating_a": None})
    for b in free_b:
        out.append({"name": b, "meter": None, "probes": [], "breaker": b, "rating_a": None})
    for r in out:
        br = r["breaker"]
        rating = breakers[br].params.get("rating_a") if br else None
        r["rating_a"] = float(rating) if rating else ampacity.get(r["meter"] or "")
    return out


def _v(pts: Mapping[str, Any], name: str) -> float | None:
    rec = pts.get(name)
    if not rec or rec["value"] is None or rec["quality"] == "not-connected":
        return None
    return float(rec["value"])


def _q(pts: Mapping[str, Any], names: tuple[str, ...]) -> str:
    """The worst quality among ``names`` the device has ('good' when all are)."""
    order = ("good", "stale", "bad", "not-connected")
    worst = "good"
    for n in names:
        rec = pts.get(n)
        if rec and rec["quality"] in order and order.index(rec["quality"]) > order.index(worst):
            worst = rec["quality"]
    return worst


def _max(*xs: float | None) -> float | None:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return max(vals) if vals else None


def rows(snapshot: Mapping[str, Any], layout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per tap-off with what the page's table shows (None: no value)."""
    devs = {(d["kind"], d["name"]): d for d in snapshot.get("devices", ())}
    out = []
    for t in layout:
        m = devs.get(("meter", t["meter"])) if t["meter"] else None
        mp = m["points"] if m else {}
        currents = [_v(mp, f"current_l{i}_a") for i in (1, 2, 3)]
        imax = _max(*currents)
        rating = t["rating_a"]
        temps = [_v(devs[("probe", p)]["points"], "temp_c") for p in t["probes"]
                 if ("probe", p) in devs]
        b = devs.get(("breaker", t["breaker"])) if t["breaker"] else None
        led = _v(b["points"], "led") if b else None
        flags = b["flags"] if b else []
        alarms = sorted({a for d in (m, b, *[devs.get(("probe", p)) for p in t["probes"]])
                         if d for a in d["alarms"] if a not in ("active", "unacked")})
        out.append({
            "name": t["name"], "meter": t["meter"], "probes": t["probes"],
            "breaker": t["breaker"], "rating_a": rating,
            "power_kw": _v(mp, "power_kw"),
            "load_pct": (100.0 * imax / rating) if imax is not None and rating else None,
            "current_a": currents,
            "voltage_ll_v": _v(mp, "voltage_l1_l2_v"),
            "voltage_ln_v": _v(mp, "voltage_l1_n_v"),
            "power_factor": _v(mp, "power_factor"),
            "thd_v_pct": _max(*(_v(mp, f"thd_v_l{i}_pct") for i in (1, 2, 3))),
            "temp_c": _max(*temps),
            "meter_temp_c": _v(mp, "temp_c"),
            "meter_quality": _q(mp, ("power_kw", "current_l1_a")) if m else None,
            "comm_ok": _v(mp, "comm_ok"),
            "led": None if led is None else LED_WORDS.get(int(led), f"{int(led)}-blink"),
            "tripped": "trip_latched" in flags or "shunt_trip" in flags,
            "trip_latched": "trip_latched" in flags,
            "trip_cause": (b.get("trip_cause_name") or None) if b else None,
            "trip_utc": b.get("trip_utc") if b else None,
            "alarms": alarms,
        })
    return out


def page_view(snapshot: Mapping[str, Any], layout: list[dict[str, Any]]) -> dict[str, Any]:
    """The page's one poll: header, tap-off rows, the alarm table and the newest edges."""
    h = snapshot.get("header", {})
    return {
        "header": {k: h.get(k) for k in (
            "runtime_state", "data_origin", "scan_lateness_p99_ms", "overruns", "cycle_count",
            "scan_period_ms", "active_alarms", "unacked_alarms", "highest_severity",
            "faulted_blocks", "uptime_s", "image_utc", "retained_status", "config_hash")},
        "taps": rows(snapshot, layout),
        "alarm_table": list(snapshot.get("alarm_table", ())),
        "events": list(snapshot.get("events", {}).get("edges", ()))[-10:],
    }


def dumps(obj: Any) -> bytes:
    """Compact JSON a browser parses: NaN and infinities become null."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False).encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
