"""[snmp] notifications received by net-snmp's own snmptrapd: the simulator's ground-fault
scenario (on the bundled site's blocks) latches a trip, and snmptrapd logs the SNMPv3
authPriv notification carrying the trip's alarm code; a cold start carries RESTORED/LIVE;
informs are acknowledged and counted."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from busguard.sim.model import METER_QUANTITIES
from busguard.snmp import tree
from busguard.snmp.publisher import engine_id
from busguard.snmp.users import make_user, write_users
from busguard.testing import wait_until
from test_block_scenarios import COMM, bundled_as_memory_site, model_for

USER, AUTH_PASS, PRIV_PASS = "bms", "auth passphrase 1", "priv passphrase 2"
NOTIFY = tree.DEFAULT_OID + ".0"

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("snmptrapd") is None,
                                 reason="net-snmp's snmptrapd (Debian `snmptrapd`) is missing")]


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TrapReceiver:
    """snmptrapd in the foreground on loopback, logging every notification to a file."""

    def __init__(self, folder, site_name: str) -> None:
        self.port = free_udp_port()
        self.log = folder / "traps.log"
        conf = folder / "snmptrapd.conf"
        eid = "0x" + engine_id(site_name).hex()
        # traps: the agent is the authoritative engine (its id); informs: snmptrapd is
        conf.write_text(f'createUser -e {eid} {USER} SHA-256 "{AUTH_PASS}" AES "{PRIV_PASS}"\n'
                        f'createUser {USER} SHA-256 "{AUTH_PASS}" AES "{PRIV_PASS}"\n'
                        f"authUser log {USER} priv\n")
        persist = folder / "snmp-persist"
        persist.mkdir()
        self.proc = subprocess.Popen(
            ["snmptrapd", "-f", "-n", "-On", "-C", "-c", str(conf), "-Lf", str(self.log),
             f"udp:127.0.0.1:{self.port}"],
            env={"SNMP_PERSISTENT_DIR": str(persist), "PATH": "/usr/sbin:/usr/bin:/bin"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.log.exists() and "NET-SNMP version" in self.log.read_text(),
                   15.0, "snmptrapd to start")

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def receiver(tmp_path):
    made = []

    def make(site_name: str) -> TrapReceiver:
        r = TrapReceiver(tmp_path, site_name)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def scenario_site(tmp_path, port: int, notify: str) -> tuple[str, dict]:
    text, info = bundled_as_memory_site(100.0)
    write_users(tmp_path / "snmp.users", {USER: make_user(USER, AUTH_PASS, PRIV_PASS)})
    text += (f'\n[modbus_server]\nport = 0\n\n[snmp]\nport = 0\nreceivers = '
             f'["127.0.0.1:{port}"]\nnotify = "{notify}"\nnotify_user = "{USER}"\n')
    return text, info


def drive_ground_fault(rt, run_scans, info, seconds: float) -> list[str]:
    model = model_for(info["data"], "ground-fault")
    breakers = [b.name for b in model.breakers]
    codes: list[str] = []

    def drive(rt, i):
        t = i * 0.1
        values = model.snapshot(t)
        items = []
        for m in model.meters:
            items += [(f"{m.name}.{q}", values[f"{m.name}.{q}"]) for q in METER_QUANTITIES]
            items += [(f"{m.name}.{c}", 1.0 if c == "comm_ok" else 0.0) for c in COMM]
        items += [(f"{p.name}.temp_c", values[f"{p.name}.temp_c"]) for p in model.probes]
        items += [(f"{b}.led", values[f"{b}.led"]) for b in breakers]
        rt.image.write_many([(n, float(v), 0) for n, v in items])
        for j, b in enumerate(breakers):
            if rt.engine.outputs.get(f"{b}.shunt_trip") == 1.0 and j not in model.shunt_trips:
                model.shunt_trips[j] = t

    for res in run_scans(rt, round(seconds / 0.1), between=drive):
        codes += [e.alarm.condition.code for e in res.edges if e.kind == "raised"
                  and e.alarm.id.endswith(":trip")]
    return codes


@pytest.mark.parametrize("notify", ["trap", "inform"])
def test_snmptrapd_receives_the_ground_fault_trip_with_its_code(make_runtime, run_scans,
                                                                tmp_path, receiver, notify):
    text, info = scenario_site(tmp_path, 0, notify)
    rcv = receiver("scenario")
    text = text.replace("127.0.0.1:0", f"127.0.0.1:{rcv.port}")
    rt = make_runtime(text, start=True)
    pub = next(p for p in rt.publishers if p.section == "snmp")
    run_scans(rt, 2)  # the first image: the cold start goes out with it
    try:
        wait_until(lambda: f"{NOTIFY}.4" in rcv.text(), 15.0, "the cold start notification")
    except AssertionError:
        raise AssertionError(f"{pub.status()}\n{rcv.text()}") from None
    cold = rcv.text()
    assert f"{tree.DEFAULT_OID}.1.1.4.0 = INTEGER: 0" in cold  # LIVE (fresh runtime)
    codes = drive_ground_fault(rt, run_scans, info, 22.0)
    assert codes and codes[0] in ("BG-TRIP-RCM", "BG-TRIP-GF"), codes
    wait_until(lambda: f'"{codes[0]}"' in rcv.text(), 15.0, f"a notification with {codes[0]}")
    text_ = rcv.text()
    assert f"{NOTIFY}.1" in text_  # bgAlarmRaiseEvent
    wait_until(lambda: f"{NOTIFY}.3" in rcv.text(), 15.0, "the bgTripEvent")
    st = pub.status()
    assert st["notifications"] >= 3 and st["edges_missed"] == 0
    if notify == "inform":
        wait_until(lambda: pub.status()["informs_acked"] >= st["notifications"], 15.0,
                   "every inform acknowledged")
        assert pub.status()["informs_failed"] == 0
    else:
        assert st["traps_sent"] >= 3


def test_an_inform_nobody_acknowledges_is_retried_and_counted(make_runtime, run_scans,
                                                               tmp_path):
    port = free_udp_port()  # nobody listens
    text, _info = scenario_site(tmp_path, port, "inform")
    text = text.replace('notify_user = "bms"\n', 'notify_user = "bms"\ninform_retries = 1\n'
                        'inform_timeout_s = 0.2\n')
    rt = make_runtime(text, start=True)
    pub = next(p for p in rt.publishers if p.section == "snmp")
    run_scans(rt, 2)
    wait_until(lambda: pub.status()["informs_failed"] >= 1, 20.0, "the cold start inform to "
               "give up")
    assert pub.status()["informs_acked"] == 0


RESTART_SITE = """
[site]
name = "coldstart"

[scan]
period_ms = 10

[retained]
interval_s = 3600

[[meter]]
name = "pqm-a1"
driver = "memory"
poll_ms = 100
points = ["current_l1_a", "voltage_l1_n_v"]

[modbus_server]
port = 0

[snmp]
port = 0
receivers = ["127.0.0.1:{port}"]
notify = "trap"
notify_user = "{user}"
"""


def cold_starts(text: str) -> list[str]:
    """snmptrapd's log split into notifications, keeping the bgColdStart ones."""
    return [chunk for chunk in text.split(f"{tree.DEFAULT_OID}.0.")
            if chunk.startswith("4")]


def test_the_cold_start_after_a_restart_carries_restored(make_runtime, run_scans, tmp_path,
                                                         receiver):
    """First run: live values, a clean stop saves them. Second run on the same state, the
    meter silent: its values are the retained ones, and the cold start says RESTORED (1),
    with the map fingerprint; the first run's said LIVE (0)."""
    rcv = receiver("coldstart")
    write_users(tmp_path / "snmp.users", {USER: make_user(USER, AUTH_PASS, PRIV_PASS)})
    site = tmp_path / "site.toml"
    site.write_text(RESTART_SITE.format(port=rcv.port, user=USER), encoding="utf-8")
    origin = f"{tree.DEFAULT_OID}.1.1.4.0 = INTEGER:"
    fingerprint = f"{tree.DEFAULT_OID}.1.1.1.0 = Gauge32:"

    rt1 = make_runtime(site, start=True, retained=True)
    rt1.image.write_many([("pqm-a1.current_l1_a", 400.0, 0),
                          ("pqm-a1.voltage_l1_n_v", 230.0, 0)])
    run_scans(rt1, 3)
    wait_until(lambda: len(cold_starts(rcv.text())) == 1, 15.0, "the first cold start")
    (first,) = cold_starts(rcv.text())
    assert f"{origin} 0" in first, first  # LIVE: a fresh state
    rt1.stop()

    rt2 = make_runtime(site, start=True, retained=True)
    assert rt2.restored
    run_scans(rt2, 3)  # nothing written: the meter's values are the retained ones
    wait_until(lambda: len(cold_starts(rcv.text())) == 2, 15.0, "the cold start after the "
               "restart")
    second = cold_starts(rcv.text())[1]
    assert f"{origin} 1" in second, second  # RESTORED
    assert fingerprint in second, second
    pub = next(p for p in rt2.publishers if p.section == "snmp")
    assert pub.status()["traps_sent"] >= 1
