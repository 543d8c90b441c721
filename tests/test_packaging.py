"""The Debian packaging: the packaged default site, the unit's hardening, the fragments, and,
once `make deb` has built it, the .deb's metadata and contents.

The install into a fresh Debian root (needs root and the Debian mirror) is
packaging/test-install.sh, run by .ci/run as a separate step.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from busguard.runtime import check_site

TOP = Path(__file__).resolve().parent.parent
PKG = TOP / "packaging"
UNIT = PKG / "systemd" / "busguard.service"


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def _deb() -> Path | None:
    given = os.environ.get("BUSGUARD_DEB")
    if given:
        return Path(given)
    found = sorted(glob.glob(str(TOP / "dist" / "busguard_*_all.deb")))
    return Path(found[-1]) if found else None


needs_deb = pytest.mark.skipif(_deb() is None, reason="no .deb built: run `make deb` (CI "
                               "builds it after the test legs and runs this file again)")


# -- always: the sources of the package --------------------------------------------------------
def test_packaged_default_site_is_valid_and_binds_no_public_address() -> None:
    site = check_site(PKG / "etc" / "site.toml")
    assert str(site.state_dir) == "/var/lib/busguard"
    assert str(site.fault_log) == "/var/log/power/distribution_fault.log"
    assert not site.devices and not site.blocks
    server = site.publishers["modbus_server"].params
    assert server["host"] == "127.0.0.1"
    assert list(server["write_allow"]) == []
    assert site.sections["service"]["run_dir"] == "/run/busguard"


def test_unit_is_notify_with_watchdog_and_hardened() -> None:
    u = _unit()
    one = {k: v[-1] for k, v in u.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] and one["Restart"] == "always"
    assert one["ExecStart"].startswith("/usr/bin/busguard run ${BUSGUARD_SITE}")
    assert one["EnvironmentFile"] == "-/etc/default/busguard"
    assert u["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert one["User"] == "busguard"
    assert "CAP_NET_BIND_SERVICE" in one["AmbientCapabilities"]
    assert one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert one["ProtectSystem"] == "strict"
    assert one["ReadWritePaths"].split() == ["/var/lib/busguard", "/var/log/power"]
    assert one["NoNewPrivileges"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "PrivateDevices" not in u or one["PrivateDevices"] == "no"
    allowed = " ".join(u["DeviceAllow"])
    for dev in ("char-ttyUSB", "char-ttyAMA", "char-gpiochip"):
        assert dev in allowed
    assert one["ProtectKernelModules"] == "yes"
    # the scan thread asks for SCHED_FIFO itself: RLIMIT_RTPRIO granted, not refused
    assert int(one["LimitRTPRIO"]) >= 40 and one["RestrictRealtime"] == "no"
    assert "CPUSchedulingPolicy" not in u
    assert one["Environment"] == "W1THERMSENSOR_NO_KERNEL_MODULE=1"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed here (CI installs systemd; "
                    "packaging/test-install.sh verifies against the installed root)")
    # the binary the unit starts is not installed on this machine: point it at ours
    ours = Path(sys.executable).with_name("busguard")
    unit = tmp_path / "busguard.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/busguard", str(ours)))
    res = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_fragments() -> None:
    sysctl = (PKG / "system" / "60-busguard.conf").read_text()
    values = dict(re.findall(r"^(net\.core\.\w+) = (\d+)$", sysctl, re.M))
    assert values == {"net.core.rmem_max": "16777216", "net.core.wmem_max": "16777216"}
    mods = [ln for ln in (PKG / "system" / "modules-load.conf").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert mods == ["w1-gpio", "w1-therm"]
    rot = (PKG / "system" / "logrotate").read_text()
    assert "/var/log/power/*.log" in rot and "copytruncate" in rot and "su busguard adm" in rot
    assert "/etc/busguard/site.toml" in (PKG / "debian" / "conffiles").read_text()


def test_vendored_pins_satisfy_pyproject() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    deps = tomllib.loads((TOP / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for name in ("requirements.txt", "requirements-sdist.txt"):
        for line in (PKG / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                req = Requirement(line)
                pins[req.name.lower()] = next(iter(req.specifier)).version
    for dep in map(Requirement, deps):
        assert dep.name.lower() in pins, f"{dep.name} is a dependency but not vendored"
        assert dep.specifier.contains(pins[dep.name.lower()]), (dep, pins[dep.name.lower()])


# -- after `make deb` ---------------------------------------------------------------------------
def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


@needs_deb
def test_deb_metadata() -> None:
    deb = _deb()
    info = _dpkg_deb("-I", str(deb))
    fields = dict(re.findall(r"^ (\S+): (.*)$", info, re.M))
    from busguard import __version__

    assert fields["Package"] == "busguard"
    assert fields["Version"] == f"{__version__}-1"
    assert fields["Architecture"] == "all"
    assert "python3 (>= 3.10)" in fields["Depends"] and "adduser" in fields["Depends"]
    for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
        assert re.search(rf"\b{script}\b", info), script
    conf = _dpkg_deb("-f", str(deb), "Package")
    assert conf.strip() == "busguard"


@needs_deb
def test_deb_contents() -> None:
    listing = _dpkg_deb("-c", str(_deb())).splitlines()
    paths = {ln.split()[-1].lstrip(".") for ln in listing}
    owners = {ln.split()[1] for ln in listing}
    assert owners == {"root/root"}
    for p in ("/usr/bin/busguard", "/usr/lib/systemd/system/busguard.service",
              "/etc/busguard/site.toml", "/etc/logrotate.d/busguard",
              "/usr/lib/sysctl.d/60-busguard.conf", "/usr/lib/modules-load.d/busguard.conf",
              "/usr/lib/udev/rules.d/60-busguard-gpio.rules",
              "/usr/lib/busguard/lib/busguard/runtime.py",
              "/usr/lib/busguard/lib/busguard_blocks/__init__.py",
              "/usr/lib/busguard/lib/pymodbus/__init__.py",
              "/usr/lib/busguard/lib/sdnotify/__init__.py",
              "/usr/lib/busguard/lib/tomli/__init__.py",
              "/usr/share/doc/busguard/copyright",
              "/usr/lib/busguard/lib/busguard/web/static/app.js",
              "/usr/lib/busguard/lib/aiohttp/__init__.py",
              "/usr/share/busguard/prometheus/busguard.rules.yml",
              "/usr/share/snmp/mibs/BUSGUARD-MIB.txt"):
        assert p in paths, p
    assert any(p.startswith("/usr/lib/busguard/lib/busguard-") and
               p.endswith(".dist-info/entry_points.txt") for p in paths)
    assert not [p for p in paths if "__pycache__" in p or p.endswith((".so", ".pyc"))]
    assert not [p for p in paths if p.endswith("/.DS_Store")]  # lintian macos-ds-store-file
    # vendored modules are imported, never run (lintian executable-not-elf-or-script)
    assert not [ln for ln in listing if ln.startswith("-") and "x" in ln.split()[0]
                and ln.split()[-1].startswith("./usr/lib/busguard/lib/")]
    assert not [p for p in paths if p.startswith("/usr/lib/busguard/lib/bin")]
    # the bench is a development tool: the runtime package has neither it nor its C client
    assert not [p for p in paths if "busguard_bench" in p or p.endswith(".c")]
    # rich without the dependencies the live view never imports (packaging/requirements.txt)
    for left_out in ("pygments", "markdown_it", "mdurl"):
        assert not [p for p in paths if p.startswith(f"/usr/lib/busguard/lib/{left_out}/")]


@needs_deb
def test_deb_tree_runs_busguard_check(tmp_path: Path) -> None:
    """The vendored tree alone (the system Python, isolated mode, as the launcher runs it)."""
    subprocess.run(["dpkg-deb", "-x", str(_deb()), str(tmp_path)], check=True, timeout=60)
    launcher = (tmp_path / "usr/bin/busguard").read_text()
    assert launcher.startswith("#!/usr/bin/python3 -I")
    local = tmp_path / "launcher.py"
    local.write_text(launcher.replace("/usr/lib/busguard/lib",
                                      str(tmp_path / "usr/lib/busguard/lib")))
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    res = subprocess.run([python, "-I", str(local), "check",
                          str(tmp_path / "etc/busguard/site.toml")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: ")
    res = subprocess.run([python, "-I", str(local), "version", "--json"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = {p["name"] for p in json.loads(res.stdout)["plugins"]}
    assert {"core", "blocks"} <= names  # entry points found in the vendored dist-info
    # `busguard bench` is not in the runtime package: it says where it is (exit 2)
    res = subprocess.run([python, "-I", str(local), "bench", "--quick"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "sudo apt-get install busguard-tools" in res.stderr
    assert "pip install '.[bench]'" in res.stderr
    # `busguard status --watch` draws its live view (rich, vendored without Pygments and
    # markdown-it) in a terminal: one frame against a port nobody serves, then exits
    screen = _in_a_pty([python, "-I", str(local), "status", "--watch", "--count", "1",
                        "--port", "1", "--timeout", "0.2", "--interval", "0.1"], tmp_path)
    assert "no alarms" in screen and "cannot connect to 127.0.0.1:1" in screen, screen


def _in_a_pty(cmd: list[str], cwd: Path, timeout: float = 60.0) -> str:
    """What ``cmd`` writes to a terminal (a pty of 100x30), read until it exits."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                            env={**env, "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _w, _x = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=10) == 0, out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))


def test_firewall_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """busguard-firewall.service (shipped disabled) is a valid unit that applies the nft
    rules `busguard firewall` writes and removes its table on stop."""
    exe = shutil.which("systemd-analyze")
    unit_src = PKG / "systemd" / "busguard-firewall.service"
    text = unit_src.read_text()
    assert 'busguard firewall "$BUSGUARD_SITE" --format nft | /usr/sbin/nft -f -' in text
    assert "EnvironmentFile=-/etc/default/busguard" in text
    assert "ExecStop=/usr/sbin/nft delete table inet busguard" in text
    if exe is None or shutil.which("nft") is None:
        pytest.skip("systemd-analyze or nft is not installed here (CI installs systemd and "
                    "nftables)")
    ours = Path(sys.executable).with_name("busguard")
    unit = tmp_path / "busguard-firewall.service"
    unit.write_text(text.replace("/usr/bin/busguard", str(ours)).replace(
        "/usr/sbin/nft", shutil.which("nft")))
    res = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_licence_is_one_and_the_same_everywhere() -> None:
    """LICENSE at the root is the Apache License 2.0 that pyproject.toml and the package's
    debian/copyright (written by build-deb.sh) name."""
    top = PKG.parent
    text = (top / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (top / "pyproject.toml").read_text()
    assert "License: Apache-2.0" in (PKG / "build-deb.sh").read_text()
    assert (top / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_bash_completion_is_generated_from_the_parser(tmp_path: Path) -> None:
    """packaging/make-completion.py writes a script bash accepts; it completes commands,
    options and option choices the CLI declares (run in a real bash)."""
    out = tmp_path / "busguard"
    subprocess.run([sys.executable, str(PKG / "make-completion.py"), str(out)], check=True,
                   timeout=60)
    probe = (f'source {out}; '
             'COMP_WORDS=(busguard fire); COMP_CWORD=1; _busguard; echo "${COMPREPLY[@]}"; '
             'COMP_WORDS=(busguard demo --scenario ""); COMP_CWORD=3; _busguard; '
             'echo "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    first, second = done.stdout.splitlines()
    assert first == "firewall"
    assert "thermal-runaway" in second.split() and "cyclic-overload" in second.split()


def test_sysusers_and_tmpfiles_make_the_user_and_folders(tmp_path: Path) -> None:
    """The package's sysusers.d and tmpfiles.d files, applied by the real systemd tools to a
    scratch root: the busguard user in gpio and dialout, the state and log folders with
    their owners and modes (what postinst did by hand in 0.1)."""
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed here (CI installs systemd)")
    root = tmp_path / "root"
    (root / "etc" / "busguard").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nadm:x:4:\n")
    for kind in ("sysusers", "tmpfiles"):
        d = root / "usr" / "lib" / f"{kind}.d"
        d.mkdir(parents=True)
        shutil.copy(PKG / "system" / f"{kind}.conf", d / "busguard.conf")
    subprocess.run(["systemd-sysusers", f"--root={root}", "busguard.conf"], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", "busguard.conf"],
                   check=True, capture_output=True, timeout=60)
    passwd = (root / "etc" / "passwd").read_text()
    groups = dict(ln.split(":")[0::3] for ln in (root / "etc" / "group").read_text().split())
    user = next(ln.split(":") for ln in passwd.splitlines() if ln.startswith("busguard:"))
    assert user[5:] == ["/var/lib/busguard", "/usr/sbin/nologin"]
    assert groups["gpio"] == "busguard" and groups["dialout"] == "busguard"
    uid = int(user[2])
    state, logs, etc = (root / "var/lib/busguard").stat(), (root / "var/log/power").stat(), \
        (root / "etc/busguard").stat()
    assert state.st_uid == uid and oct(state.st_mode & 0o7777) == "0o750"
    assert logs.st_uid == uid and logs.st_gid == 4 and oct(logs.st_mode & 0o7777) == "0o2750"
    assert oct(etc.st_mode & 0o7777) == "0o750"


def test_etc_default_sets_what_the_unit_defaults_to() -> None:
    """/etc/default/busguard (a conffile) and the unit's Environment= agree, so deleting the
    file changes nothing."""
    text = (PKG / "etc" / "default-busguard").read_text()
    values = dict(re.findall(r'^(BUSGUARD_\w+)="?([^"\n]*)"?$', text, re.M))
    assert values == {"BUSGUARD_SITE": "/etc/busguard/site.toml",
                      "BUSGUARD_RUN_OPTS": "--stats-every 300"}
    env = _unit()["Environment"][0]
    assert "BUSGUARD_SITE=/etc/busguard/site.toml" in env
    assert '"BUSGUARD_RUN_OPTS=--stats-every 300"' in env
    assert "/etc/default/busguard" in (PKG / "debian" / "conffiles").read_text()


def _tools_deb() -> Path | None:
    deb = _deb()
    if deb is None:
        return None
    found = sorted(deb.parent.glob("busguard-tools_*_all.deb"))
    return found[-1] if found else None


@needs_deb
def test_two_packages_runtime_without_simulator_tools_with_it() -> None:
    """busguard (the runtime) carries neither the simulator nor pymodbus's simulator web
    pages; busguard-tools carries the simulator, depends on the same busguard version."""
    runtime = {ln.split()[-1].lstrip(".") for ln in _dpkg_deb("-c", str(_deb())).splitlines()}
    assert not [p for p in runtime if "/busguard/sim/" in p or "/simulator/web" in p]
    tools_deb = _tools_deb()
    assert tools_deb is not None, "build-deb.sh builds busguard-tools beside busguard"
    tools = {ln.split()[-1].lstrip(".") for ln in _dpkg_deb("-c", str(tools_deb)).splitlines()}
    assert "/usr/lib/busguard/lib/busguard/sim/runner.py" in tools
    # the bench, from its own source root, with its C client: in the tools, not the runtime
    assert {"/usr/lib/busguard/lib/busguard_bench/runner.py",
            "/usr/lib/busguard/lib/busguard_bench/loadclient.c"} <= tools
    assert not (tools & {p for p in runtime if not p.endswith("/")})  # no file in both
    fields = dict(re.findall(r"^ (\S+): (.*)$", _dpkg_deb("-I", str(tools_deb)), re.M))
    version = _dpkg_deb("-f", str(_deb()), "Version").strip()
    assert fields["Package"] == "busguard-tools"
    assert fields["Depends"] == f"busguard (= {version})"


@needs_deb
def test_the_runtime_alone_says_where_the_simulator_is(tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(_deb()), str(tmp_path)], check=True, timeout=60)
    local = tmp_path / "launcher.py"
    local.write_text((tmp_path / "usr/bin/busguard").read_text().replace(
        "/usr/lib/busguard/lib", str(tmp_path / "usr/lib/busguard/lib")))
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    res = subprocess.run([python, "-I", str(local), "demo"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 2
    assert "busguard-tools package: sudo apt-get install busguard-tools" in res.stderr
