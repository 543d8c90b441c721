"""(web) The operator's page and /metrics must not slow the scan.

The measured runtime (:mod:`busguard_bench.target`) scans every 10 ms with 32 meters on Modbus TCP
(:mod:`busguard_bench.meters`), a threshold block per meter, ``[modbus_server]`` and
``[web]`` (plain HTTP on loopback, basic auth on: the scrypt check runs once per client, then
the remembered login). The same process is measured three times, back to back: web idle
(baseline A), web busy, web idle again (baseline B), so drift of a shared machine shows as a
gap between A and B instead of hiding in the comparison. "Busy" is what four operators and a
Prometheus server cost: four page clients (threads of this bench process, each on its own
keep-alive connection) load the page and its files once, then poll ``/api/view`` every second
as app.js does and ``/api/history`` every 10 s (the site records ``[history]``, so the trend
is served, not refused); a real Prometheus server (Debian's ``prometheus``, when installed;
else a scraper thread) scrapes ``/metrics`` every second with basic auth. Prometheus runs on
the same cores here (on a site it runs elsewhere): its own CPU counts against the busy figure.
The load average of the machine is recorded at the start and end of each run.
Target: scan lateness p99 busy no worse than 1.2x the baseline; overruns no more. Run with
each ``[scan] io`` mode of the bench (judged: the first, ``"process"``, where the web server
runs in the I/O process; with ``"thread"`` it shares the scan's process and GIL and waits for
the moment after a scan to work: for comparison).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from busguard_bench import beside, northbound_map, procs
from busguard_bench.context import Bench
from busguard_bench.result import INFO, Measurement, Row, pct

KEYS = (("web", "scan lateness with the web page open in 4 clients and a 1 s /metrics scrape"),)
NEEDS = ("modbus_server", "modbus_tcp", "threshold_alarm")
METERS, PAGES = 32, 4
USER, PASSWORD = "bench", "bench password"


class Client(threading.Thread):
    """One page (or the scraper): GETs on one keep-alive connection, paced, until stopped."""

    def __init__(self, port: int, plan: list[tuple[str, float]], first: list[str],
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.plan, self.first, self.stop_ev = port, plan, first, stop
        self.lat: list[float] = []
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> None:
        t0 = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("GET", path, headers={"Authorization": self.auth})
            r = self.conn.getresponse()
            r.read()
            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
        except (OSError, http.client.HTTPException):
            self.errors += 1
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return
        self.lat.append(time.monotonic() - t0)

    def run(self) -> None:
        for path in self.first:
            self.get(path)
        due = {path: time.monotonic() for path, _every in self.plan}
        while not self.stop_ev.is_set():
            now = time.monotonic()
            for path, every in self.plan:
                if now >= due[path]:
                    self.get(path)
                    due[path] += every
            self.stop_ev.wait(max(0.0, min(due.values()) - time.monotonic()))
        if self.conn is not None:
            self.conn.close()


class Prometheus:
    """A real Prometheus server scraping ``/metrics`` every second (or None: not installed)."""

    def __init__(self, folder: Path, web_port: int) -> None:
        self.port = northbound_map.free_port()
        (folder / "scrape.pw").write_text(PASSWORD, encoding="utf-8")
        cfg = folder / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: busguard\n    basic_auth:\n"
            f"      username: {USER}\n      password_file: {folder / 'scrape.pw'}\n"
            f"    static_configs:\n      - targets: [\"127.0.0.1:{web_port}\"]\n",
            encoding="utf-8")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.loads(r.read())["data"]["result"])

    def scraping(self, timeout_s: float = 30.0) -> bool:
        """True once Prometheus has scraped busguard successfully (bounded wait)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                up = self.query('up{job="busguard"}')
                if up and up[0]["value"][1] == "1":
                    return True
            except OSError:
                pass
            time.sleep(0.5)
        return False

    def scrapes(self, window_s: float) -> tuple[int, int]:
        """(scrapes, failed scrapes) in the last ``window_s`` seconds, from its own ``up``."""
        w = f"{max(1, int(window_s))}s"
        try:
            n = self.query(f'count_over_time(up{{job="busguard"}}[{w}])')
            ok = self.query(f'sum_over_time(up{{job="busguard"}}[{w}])')
        except OSError:
            return 0, 0
        total = int(float(n[0]["value"][1])) if n else 0
        good = int(float(ok[0]["value"][1])) if ok else 0
        return total, total - good

    def stop(self) -> None:
        procs.end(self.proc)


def run(b: Bench) -> list[Measurement]:
    return [_run(b, io, judged=k == 0) for k, io in enumerate(b.io_modes)]


class Operators:
    """The busy run's load (a :class:`beside.Load`): the page clients and the scraper
    (Prometheus when it is installed and scrapes, else a scraper thread)."""

    def __init__(self, b: Bench, s: beside.Site, port: int) -> None:
        self.folder, self.port, self.dur = s.folder, port, s.dur
        self.stop_ev = threading.Event()
        page = ["/", "/static/app.js", "/static/app.css", "/api/layout"]
        self.clients = [Client(port, [("/api/view", 1.0), (
            f"/api/history?point={s.names[0]}.power_kw&range=1h", 10.0)], page, self.stop_ev)
            for _ in range(b.count(PAGES, PAGES))]
        self.started: list[Client] = []
        self.prom: Prometheus | None = None
        self.scraper, self.scrapes = "a scraper thread", (0, 0)

    def start(self) -> None:
        prom = Prometheus(self.folder, self.port) if shutil.which("prometheus") else None
        self.prom = prom
        self.scraper = "a Prometheus server" if prom is not None else "a scraper thread"
        if prom is None or not prom.scraping():
            self.clients.append(Client(self.port, [("/metrics", 1.0)], [], self.stop_ev))
            if prom is not None:
                prom.stop()
                self.prom, self.scraper = None, "a scraper thread (Prometheus never scraped)"
        for c in self.clients:
            c.start()
            self.started.append(c)

    def stop(self, busy: dict[str, Any] | None) -> None:
        try:
            if busy is not None and self.prom is not None:
                self.scrapes = self.prom.scrapes(self.dur)
        finally:
            self.stop_ev.set()
            for c in self.started:
                c.join(15)
            if self.prom is not None:
                self.prom.stop()


def _run(b: Bench, io: str, judged: bool) -> Measurement:
    from busguard.web.passwd import hash_password, write_users

    dur = b.seconds(30.0, 5.0)
    warm = b.seconds(2.0, 1.0)
    with beside.site(b, "web", io, dur, warm, METERS) as s:
        port = northbound_map.free_port()
        write_users(s.folder / "web.passwd", {USER: hash_password(PASSWORD)})
        s.spec.tables["web"] = {"host": "127.0.0.1", "port": port, "tls": False, "auth": True,
                                "passwd": str(s.folder / "web.passwd")}
        s.spec.tables["history"] = {"seconds_dir": str(s.folder / "history-ram"),
                                    "retention_days": 1}
        load = [os.getloadavg()[0]]
        ops = Operators(b, s, port)
        runs = beside.measure(b, s, ops)
        load.append(os.getloadavg()[0])
    return _rows(s, runs, ops.clients, dur, judged,
                 {"scraper": ops.scraper, "scrapes": ops.scrapes, "load_avg": load})


def _rows(s: beside.Site, r: beside.Runs, clients: list[Client], dur: float, judged: bool,
          extra: dict[str, Any]) -> Measurement:
    lat = [x for c in clients for x in c.lat]
    statuses: dict[int, int] = {}
    for c in clients:
        for k, v in c.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    errors = sum(c.errors for c in clients)
    if not extra["scrapes"][0] and len(clients) > PAGES:  # the scraper thread's own count
        extra = {**extra, "scrapes": (len(clients[-1].lat), clients[-1].errors)}
    rows = [
        *beside.scan_rows(r, "web idle", judged, "scan, drivers, Modbus server, web server",
                          extremes=True),
        Row("web requests", len(lat) / dur if dur else 0.0, "/s", status=INFO,
            note=f"{PAGES} pages" + (" + 1 scraper thread" if len(clients) > PAGES else "")
                 + f"; statuses {statuses}, {errors} errors"),
        Row("/metrics scrapes", extra["scrapes"][0] / dur if dur else 0.0, "/s", status=INFO,
            note=f"by {extra['scraper']}" + (
                f": {extra['scrapes'][0]} in the busy run, {extra['scrapes'][1]} failed"
                if extra["scrapes"][0] else "")),
        Row("load average (1 min)", extra["load_avg"][-1], "", extra["load_avg"][0],
            "at the start", status=INFO, note="of the machine, at the start and the end"),
        Row("web response p99", pct(lat, 99) * 1e3, "ms", status=INFO,
            note=f"p50 {pct(lat, 50) * 1e3:.2f} ms, client side, keep-alive"),
    ]
    return beside.measurement("web", KEYS[0][1], s, judged, r, rows, dur, statuses=statuses,
                              errors=errors, requests=len(lat), **extra)
