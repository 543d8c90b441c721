"""`busguard bench`: functional checks only (the harness works and reports well-formed
results); never timings, which depend on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from pymodbus.client import ModbusTcpClient

from busguard.modbus.profiles import load_profile
from busguard_bench import native, runner
from busguard_bench.procs import Child
from busguard_bench.result import INFO, MISS, PASS, SKIP, Measurement, Row, below, pct, table
from busguard_bench.sites import SiteSpec, add_limit_blocks, add_memory_meters

ROW_KEYS = {"metric", "value", "unit", "baseline", "baseline_label", "floor", "status", "note"}


def test_percentile_and_floor_checks():
    assert pct([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert pct([1.0] * 99 + [50.0], 99) == 1.0
    assert below(0.5, 1.0) == PASS
    assert below(1.5, 1.0) == MISS
    assert below(None, 1.0) == MISS


def test_table_shows_value_baseline_floor_and_skips():
    ran = Measurement("1-scan", "scan", [Row("lateness p99", 0.2, "ms", 0.1, "idle", "< 1 ms",
                                             PASS, "a note")])
    skipped = Measurement("3-northbound", "northbound", skipped="skipped: needs the publisher")
    text = table([ran, skipped])
    assert "lateness p99" in text and "0.200 ms" in text and "0.100 ms (idle)" in text
    assert "< 1 ms" in text and "PASS" in text
    assert "3-northbound" in text and SKIP in text and "needs the publisher" in text
    assert ran.status == PASS and skipped.status == SKIP
    d = skipped.as_dict()
    assert d["status"] == SKIP and d["rows"] == []


def test_site_spec_is_a_valid_site(tmp_path):
    from busguard.runtime import check_site
    from busguard_bench.target import BenchPlugin

    profile = load_profile("generic-pqm")
    spec = SiteSpec(name="t")
    names = add_memory_meters(spec, 2, [p.name for p in profile.points],
                              {p.name: 1.0 for p in profile.points})
    add_limit_blocks(spec, names, "current_l1_a", high=600.0, output="relay.alarm")
    spec.add("output", name="out", driver="bench_output", outputs=["relay.alarm"])
    site = check_site(spec.write(tmp_path / "site.toml"), extra=[BenchPlugin()])
    assert [b.name for b in site.blocks] == ["limit-pqm-00", "limit-pqm-01"]


def test_meter_responder_serves_the_profile_and_moves_values(tmp_path):
    """The raw meter process answers a real Modbus TCP read with the profile's encoding."""
    profile = load_profile("generic-pqm")
    cur = profile.point("current_l1_a")
    with Child("busguard_bench.meters", ["--count", "2", "--backend", "raw"], tmp_path,
               "meters") as meters:
        port = meters.ready["ports"][1]
        blocks = json.dumps([[3, cur.address, cur.count]])
        with Child("busguard_bench.clients", ["--port", str(port), "--blocks", blocks],
                   tmp_path, "clients") as clients:
            meters.request("set", meter=1, point="current_l1_a", value=432.5)
            stats = clients.request("run", mode="closed", clients=2, duration_s=0.2)
        client = ModbusTcpClient("127.0.0.1", port=port)
        assert client.connect()
        try:
            rr = client.read_holding_registers(cur.address, count=cur.count, device_id=1)
        finally:
            client.close()
        served = meters.request("stats")
    assert stats["reads"] > 0 and stats["errors"] == 0 and stats["exception_replies"] == 0
    assert served["requests"] >= stats["reads"]
    assert cur.decode(rr.registers) == pytest.approx(432.5)


def test_missing_part_is_reported_as_skipped(monkeypatch, capsys):
    monkeypatch.setattr(runner, "parts", lambda registry: {
        "modbus_tcp": True, "w1": True, "modbus_server": False, "shunt_trip": True,
        "threshold_alarm": True})
    results = runner.run(["northbound"], quick=True)
    assert [m.status for m in results] == [SKIP]
    assert "[modbus_server]" in results[0].skipped
    assert "SKIP" in capsys.readouterr().out


def test_smoke_run_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "bench", "--smoke", "--only",
                          "scan", "--only", "restart", "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "smoke test" in run.stdout and "floor" in run.stdout
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["machine"]["python"]
    keys = [m["key"] for m in report["measurements"]]
    # (1) and (5) are measured in both io modes: the judged one first, io = "thread" beside
    assert keys == ["1-scan", "6-resources", "1-scan-thread", "5-restart", "5-restart-thread"]
    for m in report["measurements"]:
        assert m["status"] in (PASS, MISS, INFO, SKIP), m
        assert not m["error"], m
        for row in m["rows"]:
            assert set(row) == ROW_KEYS
            assert row["status"] in (PASS, MISS, INFO)
            assert row["value"] is None or isinstance(row["value"], (int, float))
    scan = report["measurements"][0]
    assert scan["details"]["achieved"]["meter_requests_per_s"] > 0
    assert scan["details"]["loaded"]["stats"]["cycles"] > 0
    assert scan["details"]["load"]["io"] == "process"
    mach = scan["details"]["machine"]  # the box's own noise, beside every figure
    assert 0.0 <= mach["busy_pct"] <= 100.0 and 0.0 <= mach["steal_pct"] <= 100.0
    assert len(mach["cpu_ref_ms"]) == 2 and all(r > 0 for r in mach["cpu_ref_ms"])
    assert "reference loop" in run.stdout
    assert scan["details"]["loaded"]["retained_saves"] >= 0
    assert 0.0 < scan["details"]["loaded"]["spin_margin_ms"] <= 1.0  # the default allowance
    res = report["measurements"][1]
    assert res["details"]["io_process"]["pid"] > 0  # both processes measured
    assert any(r["metric"].startswith("RSS (peak), scan + I/O") for r in res["rows"])


needs_cc = pytest.mark.skipif(native.compiler() is None, reason="no C compiler on this machine")


def _map_blocks(size: int) -> list[list[int]]:
    return [[3, a, min(125, size - a)] for a in range(0, size, 125)]


@needs_cc
def test_compiled_client_reads_the_map_as_the_python_client_does(tmp_path):
    """The same closed-loop run, answered by a real pymodbus server on 127.0.0.1, through
    either client: whole map reads, each its blocks in sequence, no errors."""
    binary, why = native.build(tmp_path)
    assert binary is not None, why
    blocks = _map_blocks(300)
    got = {}
    with Child("busguard_bench.plainserver", ["--registers", "300"], tmp_path, "plain") as srv:
        port = str(srv.ready["port"])
        for name, extra in (("native", ["--native", str(binary)]), ("python", [])):
            with Child("busguard_bench.clients", ["--port", port, "--blocks",
                                                  json.dumps(blocks), *extra],
                       tmp_path, f"clients-{name}") as cl:
                got[name] = cl.request("run", mode="closed", clients=3, duration_s=0.3)
        served = srv.request("stats")
    for name, st in got.items():
        assert st["client"] == name
        assert st["reads"] > 0 and st["errors"] == 0 and st["exception_replies"] == 0
        assert st["requests_per_map"] == 3
        # every map read is its 3 requests; at most one map read per client is cut off
        assert 3 * st["reads"] <= st["requests"] < 3 * (st["reads"] + 3)
        assert 0 < st["request_p50_ms"] <= st["request_p99_ms"] <= st["max_ms"]
        assert st["p50_ms"] >= st["request_p50_ms"]
        # every reply carried the kernel's receive stamp, which comes before the client
        # read it: sample by sample, so every percentile too
        assert st["unstamped"] == 0
        for p in ("p50", "p99", "p999"):
            assert 0 < st[f"request_{p}_ms"] <= st[f"seen_request_{p}_ms"]
    assert served["cpu_s"] > 0


@needs_cc
def test_compiled_client_counts_exceptions_and_lost_connections(tmp_path):
    binary, why = native.build(tmp_path)
    assert binary is not None, why
    with Child("busguard_bench.plainserver", ["--registers", "100"], tmp_path, "plain") as srv:
        port = int(srv.ready["port"])
        past_end = native.NativeLoad(binary, "127.0.0.1", port, 1, [(3, 90, 20)], 2, tmp_path)
        past_end.start()
        time.sleep(0.3)
        st = past_end.finish()
        assert st["reads"] > 0 and st["exception_replies"] == st["reads"]
        assert st["errors"] == 0
        lost = native.NativeLoad(binary, "127.0.0.1", port, 1, [(3, 0, 10)], 2, tmp_path)
        lost.start()
        time.sleep(0.3)
    time.sleep(0.3)  # the server is gone: reconnections fail every 50 ms, counted
    st = lost.finish()
    assert st["reads"] > 0 and st["errors"] > 0
    assert not list(tmp_path.glob("loadclient-*"))  # its sample files are cleaned up


def test_without_a_compiler_the_bench_falls_back_to_the_python_client(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    from busguard_bench.context import Bench

    bench = Bench(quick=True, workdir=tmp_path, registry=None, parts={},  # type: ignore[arg-type]
                  log=lambda msg: None)
    args, client = bench.closed_loop_client()
    assert args == [] and client.startswith("python (") and "C compiler" in client
    bench.client = "native"
    with pytest.raises(RuntimeError, match="cannot build the compiled client"):
        bench.closed_loop_client()
    bench.client = "python"
    assert bench.closed_loop_client() == ([], "python")


@needs_cc
def test_compiled_client_ends_when_the_bench_process_dies(tmp_path):
    """Started for "forever" and stopped with SIGTERM: if its parent dies first, it must not
    go on loading the machine."""
    binary, why = native.build(tmp_path)
    assert binary is not None, why
    with Child("busguard_bench.plainserver", ["--registers", "10"], tmp_path, "plain") as srv:
        code = ("import sys, time; from pathlib import Path; from busguard_bench import native;"
                f"load = native.NativeLoad(Path({str(binary)!r}), '127.0.0.1', "
                f"{srv.ready['port']}, 1, [(3, 0, 10)], 1, Path({str(tmp_path)!r}));"
                "load.start(); print(load.proc.pid, flush=True); time.sleep(60)")
        owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            pid = int(owner.stdout.readline())
        finally:
            owner.kill()
            owner.wait()

        def gone() -> bool:
            try:
                with open(f"/proc/{pid}/status") as f:
                    return any(line.startswith("State:") and "Z" in line for line in f)
            except FileNotFoundError:
                return True

        deadline = time.monotonic() + 10
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone()


def test_scale_curve_reports_every_size_from_both_processes(tmp_path):
    """(7) runs (1)'s load at each size of the curve with the I/O process, and reports per
    size lateness, overruns, CPU per meter poll and the RSS of both processes (smoke sizes:
    the figures mean nothing, the wiring does)."""
    from busguard_bench import scale

    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "busguard.cli", "bench", "--smoke", "--only",
                          "scale", "--json", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    with_map, no_map = json.loads(out.read_text())["measurements"]
    for m, key, want in ((with_map, "7-scale", scale.SIZES),
                         (no_map, "7-scale-nomap", scale.SIZES_NO_MAP)):
        assert m["key"] == key and not m["error"], m
        sizes = list(m["details"]["sizes"])
        assert len(sizes) == len(want)
        metrics = [r["metric"] for r in m["rows"]]
        for n in sizes:
            for what in ("lateness p99", "overruns", "CPU per meter poll",
                         "RSS peak, scan process", "RSS peak, I/O process"):
                assert f"{n} meters: {what}" in metrics
            load = m["details"]["sizes"][n]["load"]
            assert load["io"] == "process"
            # the map-less series runs no [modbus_server] and no DCIM clients
            assert ("none" in load["dcim"]) == (key == "7-scale-nomap"), load
        rss = {r["metric"]: r["value"] for r in m["rows"] if "RSS" in r["metric"]}
        assert all(v and v > 0 for v in rss.values()), rss  # both processes measured


def test_link_micro_benchmark_moves_the_same_traffic_both_ways():
    """(8) measures both designs over the same traffic and cleans its shared memory up
    (functional only: the figures are the bench's, never asserted here)."""
    from pathlib import Path

    from busguard_bench import link

    before = set(Path("/dev/shm").glob("psm_*")) if Path("/dev/shm").is_dir() else set()
    got = link.measure(12)
    assert set(got) == {"messages", "shared memory"}
    for figures in got.values():
        assert figures["cycles"] == 12
        assert figures["scan_p50_us"] > 0 and figures["io_p50_us"] > 0
    after = set(Path("/dev/shm").glob("psm_*")) if Path("/dev/shm").is_dir() else set()
    assert after <= before  # no block left behind
