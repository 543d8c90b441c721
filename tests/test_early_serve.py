"""The early server: a restarted `busguard run` answers from the restart image before it has
built anything, then hands the same listening socket and open connections to the real server.

End to end with a real `busguard run` (the throwaway plugin of test_retained_restart: a meter
fed from a file and a latching trip block), read with the raw Modbus client and mbpoll; and
the responder's framing rules and the image file format on their own.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from busguard.config.model import PATHS_PARAMS
from busguard.northbound import earlyserve, mapdef, mbap
from busguard.northbound import restartimage as ri
from test_northbound_helpers import f32, read, wait_for, write
from test_retained_restart import feed, free_port, install_plugin, snapshot, start, write_site

MBPOLL = shutil.which("mbpoll")


def _site(d: Path, port: int, io: str) -> Path:
    site = write_site(d, port)
    text = site.read_text().replace("period_ms = 10\n", f'period_ms = 10\nio = "{io}"\n')
    site.write_text(text)
    return site


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def _prime(d: Path, site: Path, port: int) -> None:
    """A first run that latches a trip, then stops cleanly (the last save and its image)."""
    proc = start(d, site)
    try:
        wait_for(lambda: _answers(port), timeout=20, what="first run serving")
        feed(d, 1500.0, 277.5)
        wait_for(lambda: snapshot(port)["flags"] & 2, timeout=10, what="trip latched")
        feed(d, 420.0, 278.25)
        wait_for(lambda: snapshot(port)["current"] == 420.0, timeout=10, what="new reading")
    finally:
        out = _stop(proc)
    assert "retained state saved" in out, out
    (d / "feed.json").unlink()  # the meters are silent at the next start


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return isinstance(read(s, 0, 8), list)
    except OSError:
        return False


def _connect_early(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.002)
    raise AssertionError("nothing listened")


def _restart_and_check(d: Path, site: Path, port: int) -> str:
    proc = start(d, site)
    try:
        s = _connect_early(port, proc)
        with s:
            head = read(s, 0, 32)
            assert isinstance(head, list)
            # the first answer: the restart image, before the first scan (state built, cycle 0)
            assert head[2] == mapdef.RUNTIME_STATES["built"]
            assert head[3] == mapdef.ORIGIN_RESTORED and head[4] == 0  # retained loaded
            assert head[6] << 16 | head[7] == 0
            meter = read(s, 1000, 124)
            cur = 8 + 6 * 4
            assert f32(meter[cur:cur + 2]) == 420.0 and meter[cur + 2] == 1  # stale
            breaker = read(s, mapdef.LAYOUT["breaker"][0], 12)
            assert breaker[3] & 2  # the trip is latched from the first answer
            reset = breaker[5]
            assert write(s, reset, [0x3F80, 0]) == mbap.DEVICE_BUSY  # nothing written early
            assert read(s, 0, 200) == mbap.ILLEGAL_VALUE  # the same rules as the real server
            assert read(s, 60000, 10) == mbap.ILLEGAL_ADDRESS
            if MBPOLL:
                r = subprocess.run([MBPOLL, "-m", "tcp", "-p", str(port), "-a", "1", "-0",
                                    "-t", "4", "-r", "3", "-c", "2", "-1", "127.0.0.1"],
                                   capture_output=True, text=True, timeout=20)
                assert r.returncode == 0, r.stdout + r.stderr
                assert "[3]: \t1" in r.stdout and "[4]: \t0" in r.stdout, r.stdout
            # the same connection, now answered by the runtime's server
            wait_for(lambda: read(s, 0, 8)[2] == mapdef.RUNTIME_STATES["running"],
                     timeout=30, what="the real server on the same connection")
            assert read(s, mapdef.LAYOUT["breaker"][0], 12)[3] & 2  # still latched
            assert write(s, reset, [0x3F80, 0]) is None  # writes go through now
    finally:
        out = _stop(proc)
    assert "early server: serving the restart image" in out, out
    assert "handed the listener and 1 connection(s)" in out, out
    return out


def test_process_mode_serves_the_restart_image_then_hands_the_connection_over(tmp_path):
    d = install_plugin(tmp_path)
    port = free_port()
    site = _site(d, port, "process")
    _prime(d, site, port)
    out = _restart_and_check(d, site, port)
    assert "1 writes refused as busy" in out


@pytest.mark.integration
def test_thread_mode_hands_over_in_process(tmp_path):
    d = install_plugin(tmp_path)
    port = free_port()
    site = _site(d, port, "thread")
    _prime(d, site, port)
    _restart_and_check(d, site, port)


@pytest.mark.integration
def test_a_corrupt_or_outdated_image_means_a_start_as_before(tmp_path):
    d = install_plugin(tmp_path)
    port = free_port()
    site = _site(d, port, "process")
    _prime(d, site, port)
    img = d / "var/lib/busguard" / ri.FILE_NAME
    data = bytearray(img.read_bytes())
    data[data.index(b"\n") + 10] ^= 0xFF  # a byte of the compressed image
    img.write_bytes(bytes(data))
    proc = start(d, site)
    try:
        wait_for(lambda: _answers(port), timeout=30, what="serving without the early server")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert read(s, 0, 8)[3] == mapdef.ORIGIN_RESTORED  # the retained state restored
    finally:
        out = _stop(proc)
    assert "unusable (checksum mismatch" in out, out
    assert "early server: serving" not in out
    # the clean stop wrote a good image again; a changed site file is not served from it
    site.write_text(site.read_text() + "\n# edited\n")
    proc = start(d, site)
    try:
        wait_for(lambda: _answers(port), timeout=30, what="serving after the edit")
    finally:
        out = _stop(proc)
    assert "not served: the site file changed" in out, out


# -- the pieces ------------------------------------------------------------------------------
def _image(views: dict[int, tuple[int, int]] | None = None) -> ri.RestartImage:
    regs = bytes(range(256)) * 4  # 512 registers
    return ri.RestartImage("h" * 64, 7, "/nonexistent/retained.json", 1.7e9, regs,
                           (("127.0.0.1", 5020),), ("10.0.0.0/8",), 8, (1, 0, 255),
                           views if views is not None else {7: (100, 20)})


def _req(fc: int, payload: bytes, tid: int = 1, unit: int = 1, pid: int = 0) -> bytes:
    return struct.pack(">HHHBB", tid, pid, len(payload) + 2, unit, fc) + payload


def test_image_file_round_trip_and_damage(tmp_path):
    im = _image()
    path = ri.path_in(tmp_path)
    ri.write(path, im)
    back = ri.read(path)
    assert back == im
    raw = bytearray(path.read_bytes())
    assert len(raw) % 4096 == 0  # overwritten in place, whole blocks
    body_at = raw.index(b"\n") + 1
    bad = bytearray(raw)
    bad[body_at + 3] ^= 1
    with pytest.raises(ri.BadImage, match="checksum"):
        ri.decode(bytes(bad))
    with pytest.raises(ri.BadImage, match="length"):
        ri.decode(bytes(raw[:body_at + 5]))  # truncated
    smaller = ri.RestartImage(**{**im.__dict__, "image": b"\x00\x01" * 4})
    ri.write(path, smaller)  # a smaller image over a larger one: the padding covers it
    assert ri.read(path) == smaller and path.stat().st_size == len(raw)
    with pytest.raises(ri.BadImage, match="no header"):
        ri.decode(b"garbage")
    with pytest.raises(ri.BadImage, match="not a busguard-restart-image"):
        ri.decode(b'{"format": "x"}\n')
    assert ri.newest_generation(tmp_path / "nothing.json") is None


def test_early_answers_follow_the_real_servers_rules():
    srv = earlyserve.EarlyServer(_image(), [])
    img = srv.ri.image
    out, used, close = srv.answer(_req(3, struct.pack(">HH", 2, 3), tid=9))
    assert (used, close) == (12, False)
    assert out == struct.pack(">HHHBBB", 9, 0, 9, 1, 3, 6) + img[4:10]
    # a device view at its unit id, and past its end
    out, _u, _c = srv.answer(_req(4, struct.pack(">HH", 0, 2), unit=7))
    assert out[9:] == img[200:204]
    assert srv.answer(_req(4, struct.pack(">HH", 19, 2), unit=7))[0][-2:] == b"\x84\x02"
    assert srv.answer(_req(3, struct.pack(">HH", 0, 1), unit=9))[0][-2:] == b"\x83\x0b"
    assert srv.answer(_req(3, struct.pack(">HH", 0, 126)))[0][-2:] == b"\x83\x03"
    assert srv.answer(_req(3, struct.pack(">HH", 510, 5)))[0][-2:] == b"\x83\x02"
    # writes and identification: busy; unknown functions 0x01; a malformed read 0x03
    assert srv.answer(_req(16, struct.pack(">HHBHH", 0, 2, 4, 1, 2)))[0][-2:] == b"\x90\x06"
    assert srv.answer(_req(6, struct.pack(">HH", 0, 1)))[0][-2:] == b"\x86\x06"
    assert srv.answer(_req(43, b"\x0e\x01\x00"))[0][-2:] == b"\xab\x06"
    assert srv.answer(_req(1, struct.pack(">HH", 0, 1)))[0][-2:] == b"\x81\x01"
    assert srv.answer(_req(0x83, b"\x00"))[0][-2:] == b"\x83\x01"
    assert srv.answer(_req(3, struct.pack(">HHB", 0, 1, 0)))[0][-2:] == b"\x83\x03"
    # another protocol id: dropped, the next frame answered; a partial frame waits
    two = _req(3, struct.pack(">HH", 0, 1), pid=5) + _req(3, struct.pack(">HH", 0, 1), tid=2)
    out, used, close = srv.answer(two + b"\x00\x03\x00")
    assert used == len(two) and not close and out[:2] == b"\x00\x02"
    # an MBAP length no Modbus frame has: answered up to it, then closed
    out, _u, close = srv.answer(_req(3, struct.pack(">HH", 0, 1)) + b"\x00\x01\x00\x00\x01\x00")
    assert close and len(out) == 11
    assert srv.busy == 3


def test_the_early_server_hands_connections_over_in_process(tmp_path):
    """Threads: a connection with half a request in flight reaches the adopter with it."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    im = _image()
    im = ri.RestartImage(im.config_hash, im.generation, im.retained, im.saved_utc, im.image,
                         (("127.0.0.1", port),), (), 8, im.site_units, im.views)
    srv = earlyserve.EarlyServer(im, [lsock])
    srv.start()
    got: list[tuple[socket.socket, bytes]] = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            assert read(c, 0, 2) == list(struct.unpack(">HH", im.image[:4]))
            c.sendall(_req(3, struct.pack(">HH", 0, 1))[:5])  # half a request
            wait_for(lambda: srv.reads == 1, what="the read answered")
            time.sleep(0.05)
            assert srv.hand_over(lambda s, p: got.append((s, p))) == 1
            assert len(got) == 1 and got[0][1] == _req(3, struct.pack(">HH", 0, 1))[:5]
            assert got[0][0].getpeername() == c.getsockname()
    finally:
        srv.close()
        for s, _p in got:
            s.close()


def test_defaults_match_the_configuration():
    assert PATHS_PARAMS["state_dir"].default == earlyserve.DEFAULT_STATE_DIR


def test_version_and_run_import_no_heavy_modules():
    code = ("import sys; from busguard import cli; rc = cli.main(['--version']); "
            "print(sorted(m for m in ('pymodbus', 'pluggy', 'busguard.runtime') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["busguard 0.1.0", "[]"]
    code = ("import sys; import busguard.commands.run, busguard.northbound.earlyserve, "
            "busguard.config.document; print(sorted(m for m in ('pymodbus', 'pluggy', "
            "'busguard.runtime', 'busguard.config.site') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
