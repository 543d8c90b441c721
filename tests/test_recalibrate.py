"""`busguard recalibrate` against the simulator's Modbus TCP meter on 127.0.0.1 (one whose
reading alternates where a test needs it), read through the modbus_tcp driver: gain computed, file
written with a backup, the driver applying it closes the loop; unstable readings, small loads
and implausible corrections are refused."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from busguard.calibration import load_calibration
from busguard.cli import main
from busguard.commands.recalibrate import Refused, read_samples, recalibrate
from busguard.runtime import check_site
from busguard.testing import wait_until

CT = 40.0  # 200:5 A CT -> rating 200 A

SITE = """\
[site]
name = "cal"

[paths]
state_dir = "state"
fault_log = "state/fault.log"

[[meter]]
name = "pqm-a1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_ms = 20
timeout_ms = 500
points = ["current_l1_a", "current_l2_a"]
ct_ratio = {ct}
calibration = {{ current_l1_a = {{ gain = 1.01 }} }}
"""



def _write_site(tmp_path: Path, port: int):
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(port=port, ct=CT))
    return check_site(path)


def _meter_site(tmp_path: Path, modbus_meter, l1_raw_a: float, l2_raw_a: float = 50.0):
    """The site on a simulated meter (busguard.testing's modbus_meter) serving the raw
    secondary currents."""
    meter = modbus_meter("generic-pqm", {"current_l1_a": l1_raw_a / CT,
                                         "current_l2_a": l2_raw_a / CT})
    return _write_site(tmp_path, meter.port)


def test_gain_written_with_backup_and_the_driver_applies_it(tmp_path: Path, modbus_meter,
                                                            capsys) -> None:
    site = _meter_site(tmp_path, modbus_meter, l1_raw_a=97.0)
    # site.toml's gain 1.01 is in force: the meter reads 97.0 * 1.01 = 97.97 A
    assert main(["recalibrate", "pqm-a1", "--reference-amps", "100", "--samples", "5",
                 "--site", site.file, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mean_a"] == pytest.approx(97.97, abs=1e-3)
    assert res["gain_old"] == pytest.approx(1.01)
    assert res["gain_new"] == pytest.approx(1.01 * 100 / 97.97, rel=1e-6)
    assert res["load_pct"] == pytest.approx(50.0) and res["backup"] is None
    cal = load_calibration(tmp_path / "state" / "calibration.toml")
    entry = cal["pqm-a1"]["current_l1_a"]
    assert entry["gain"] == pytest.approx(100 / 97.0, rel=1e-5)
    assert entry["offset"] == 0.0 and entry["updated_utc"].endswith("Z")
    # the driver, reading again, applies the file: the meter now agrees with the reference
    dev = site.device("pqm-a1")
    again = read_samples(site, dev, "current_l1_a", 3)
    assert again == pytest.approx([100.0] * 3, abs=1e-3)
    # a second run (L1 again, now right; and L2) keeps a backup of the previous file
    res2 = recalibrate(site, "pqm-a1", 100.0, samples=3)
    assert res2["correction_pct"] == pytest.approx(0.0, abs=1e-3)
    assert res2["backup"] and Path(res2["backup"]).exists()
    res3 = recalibrate(site, "pqm-a1", 49.5, phase="L2", samples=3)
    assert res3["gain_old"] == 1.0 and res3["gain_new"] == pytest.approx(0.99)
    cal = load_calibration(tmp_path / "state" / "calibration.toml")
    assert set(cal["pqm-a1"]) == {"current_l1_a", "current_l2_a"}
    assert len(list((tmp_path / "state").glob("calibration.toml.*.bak"))) == 2


def test_human_output_shows_old_and_new(tmp_path: Path, modbus_meter, capsys) -> None:
    site = _meter_site(tmp_path, modbus_meter, l1_raw_a=99.0)
    assert main(["recalibrate", "pqm-a1", "--reference-amps", "100", "--samples", "3",
                 "--site", site.file, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "gain   old 1.010000  new 1.010101  (+0.010 %)" in out
    assert "dry run: nothing written" in out
    assert not (tmp_path / "state" / "calibration.toml").exists()


def test_unstable_readings_are_refused(tmp_path: Path, modbus_meter) -> None:
    meter = modbus_meter("generic-pqm", {"current_l1_a": 100.0 / CT, "current_l2_a": 50.0 / CT})
    site = _write_site(tmp_path, meter.port)
    meter.alternate({"current_l1_a": 100.0 / CT}, {"current_l1_a": 103.0 / CT})
    with pytest.raises(Refused, match=r"readings unstable: spread 2\.9\d %"):
        recalibrate(site, "pqm-a1", 100.0, samples=6)
    assert not (tmp_path / "state" / "calibration.toml").exists()


def test_small_load_and_implausible_corrections_are_refused(tmp_path: Path, modbus_meter,
                                                            capsys) -> None:
    site = _meter_site(tmp_path, modbus_meter, l1_raw_a=60.0)
    assert main(["recalibrate", "pqm-a1", "--reference-amps", "15", "--site",
                 site.file]) == 1
    out = capsys.readouterr().out
    assert "load too small for a meaningful gain: reference 15 A is 7.5 % of the 200 A" in out
    assert "nothing was written" in out
    with pytest.raises(Refused, match=r"gain change of \+65\.0 %.*check the CT ratio"):
        recalibrate(site, "pqm-a1", 100.0, samples=3)  # 60.6 A read against 100 A
    with pytest.raises(Refused, match="give --rating-amps"):
        recalibrate(site.__class__(**{**site.__dict__, "devices": tuple(
            d.__class__(**{**d.__dict__, "params": {**d.params, "ct_ratio": 1.0}})
            for d in site.devices)}), "pqm-a1", 100.0)
    assert not (tmp_path / "state" / "calibration.toml").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_from_running_reads_the_instance_map_and_the_service_applies_the_file(
        tmp_path: Path, modbus_meter, capsys) -> None:
    """An RS-485 meter's line belongs to the service: read through its Modbus map instead.
    The running service's driver then picks the new gain up by itself."""
    site = _meter_site(tmp_path, modbus_meter, l1_raw_a=97.0)
    path = Path(site.file)
    path.write_text(path.read_text() + f"""
[service]
realtime = "off"

[modbus_server]
host = "127.0.0.1"
port = {_free_port()}
allow = ["127.0.0.1/32"]
""")
    proc = subprocess.Popen([sys.executable, "-m", "busguard.cli", "run", str(path),
                             "--stats-every", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (tmp_path / "state" / "status.json").exists()
                   and json.loads((tmp_path / "state" / "status.json").read_text())["ready"],
                   timeout=15, what="the instance to be ready")
        argv = ["recalibrate", "pqm-a1", "--reference-amps", "100", "--samples", "3",
                "--site", str(path), "--from-running", "--json"]
        assert main(argv) == 0, capsys.readouterr()
        res = json.loads(capsys.readouterr().out)
        assert res["mean_a"] == pytest.approx(97.97, abs=1e-3)  # float32 in the map
        assert res["gain_new"] == pytest.approx(1.01 * 100 / 97.97, rel=1e-5)
        # the service's Modbus driver re-reads calibration.toml: the map now shows ~100 A
        def reads_100() -> bool:
            rc = main([*argv, "--dry-run"])
            got = json.loads(capsys.readouterr().out)
            return rc == 0 and abs(got["mean_a"] - 100.0) < 1e-3

        wait_until(reads_100, timeout=15, what="the running service to apply the new gain")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
