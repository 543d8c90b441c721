"""A reload counts only once every listener of the new site serves (issue 21): with
``[scan] io = "process"`` the new I/O process reports its binds back; a port that is taken
makes the reload a failed start and the previous site goes on, as in one process.

Real processes and real sockets on 127.0.0.1; the scan runs on the real clock in the test's
thread while the reload thread waits for the I/O process."""

from __future__ import annotations

import socket
import threading

from busguard.northbound import mapdef
from busguard.reload import Reloader
from busguard.runtime import Runtime
from busguard.service import Service
from test_io_process import scan_until, site_text
from test_northbound_helpers import connect, read


def test_process_mode_reload_to_a_taken_port_is_refused_and_the_old_site_goes_on(
        modbus_meter, tmp_path):
    meter_port = modbus_meter().port
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    path = tmp_path / "site.toml"
    text = site_text(meter_port, str(tmp_path / "state"))
    path.write_text(text, encoding="utf-8")
    rt = Runtime.from_file(str(path))
    svc = Service({})
    rt.pm.register(svc)
    rt.start()
    current = rt
    try:
        scan_until(rt, lambda: rt.io.ready.get("publishers"), what="the first io process")
        old_port = rt.publishers[0].port()
        reloader = Reloader(path, rt, service=svc)  # as `busguard run` makes it, at start
        path.write_text(text.replace("port = 0\n", f"port = {taken}\n", 1), encoding="utf-8")
        assert reloader.prepare() is True
        reloader._swap()
        current = reloader.current
        assert current is not rt and current.io is not None
        got: list[bool | None] = []
        waiter = threading.Thread(target=lambda: got.append(reloader.confirm(timeout_s=20)))
        waiter.start()
        scan_until(current, lambda: not waiter.is_alive(), timeout=25,
                   what="the new io process's report")
        waiter.join()
        assert got == [False]
        assert svc.last_reload["ok"] is False
        assert f"cannot listen on 127.0.0.1:{taken}" in svc.last_reload["message"]
        assert reloader.loaded[1] == rt.site.config_hash  # the old site is still the one
        reloader._swap()  # what the scan thread does next: the previous site again
        current = reloader.current
        assert current.site.config_hash == rt.site.config_hash
        scan_until(current, lambda: current.io.ready.get("publishers"),
                   what="the previous site's io process")
        assert "error" not in current.io.ready
        port = current.publishers[0].port()
        assert port != taken
        assert current.io_site_file.endswith(".site.toml.previous")  # what it was built from
        with connect(port) as dcim:
            assert read(dcim, 0, 1) == [mapdef.MAGIC]
        assert old_port  # the first site served too
        # the next reload that counts removes the copy of the previous bytes
        copy = tmp_path / ".site.toml.previous"
        assert copy.exists()
        path.write_text(text.replace("high = 500.0", "high = 90.0"), encoding="utf-8")
        assert reloader.prepare() is True
        reloader._swap()
        current = reloader.current
        got.clear()
        waiter = threading.Thread(target=lambda: got.append(reloader.confirm(timeout_s=20)))
        waiter.start()
        scan_until(current, lambda: not waiter.is_alive(), timeout=25,
                   what="the good reload's io process")
        waiter.join()
        assert got == [True] and svc.last_reload["ok"] is True
        assert not copy.exists()
    finally:
        blocker.close()
        current.stop()
        rt.stop()
