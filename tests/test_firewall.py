"""`busguard firewall`: kernel rules from a site's listeners, checked by the real tools
(`nft -c -f`, `iptables-restore --test`; Debian nftables / iptables, installed by .ci/run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from busguard.cli import main

SITE = """
[site]
name = "fw"
[modbus_server]
host = "0.0.0.0"
port = 502
allow = ["10.0.5.10/32", "10.0.6.0/24", "fd00:5::/64"]
write_allow = ["10.0.5.10/32"]
[modbus_server.tls]
port = 802
cert = "unit.crt"
key = "unit.key"
ca = "dcim-ca.crt"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    for name in ("unit.crt", "unit.key", "dcim-ca.crt"):
        (tmp_path / name).write_text("placeholder: only the file's presence is checked\n")
    path = tmp_path / "site.toml"
    path.write_text(SITE, encoding="utf-8")
    return path


def rules(site: Path, fmt: str, capsys) -> str:
    assert main(["firewall", str(site), "--format", fmt]) == 0
    return capsys.readouterr().out


def test_nft_admits_each_port_only_from_its_allow_list(site, capsys):
    text = rules(site, "nft", capsys)
    for port in (502, 802):
        assert f"tcp dport {port} ip saddr {{ 10.0.5.10/32, 10.0.6.0/24 }} accept" in text
        assert f"tcp dport {port} ip6 saddr {{ fd00:5::/64 }} accept" in text
        assert f"tcp dport {port} counter drop" in text
    assert "table inet busguard {" in text and "policy accept" in text


def test_empty_allow_is_loopback_only_as_the_server_applies_it(tmp_path, capsys):
    path = tmp_path / "lo.toml"
    path.write_text('[site]\nname = "lo"\n[modbus_server]\nport = 1502\n', encoding="utf-8")
    text = rules(path, "iptables", capsys)
    assert "-A BUSGUARD-INPUT -p tcp -m tcp --dport 1502 -s 127.0.0.0/8" in text
    assert "-A BUSGUARD-INPUT -p tcp -m tcp --dport 1502 -j DROP" in text


def test_a_site_without_listeners_says_so(tmp_path, capsys):
    path = tmp_path / "none.toml"
    path.write_text('[site]\nname = "none"\n', encoding="utf-8")
    assert main(["firewall", str(path), "--format", "nft"]) == 0
    out, err = capsys.readouterr()
    assert "dport" not in out and "declares no listener" in err


def test_bad_site_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[site]\nname = "bad"\n[modbus_server]\nport = 70000\n', encoding="utf-8")
    assert main(["firewall", str(path)]) == 2
    assert "modbus_server.port: got 70000" in capsys.readouterr().err


def _tool_checks(cmd: list[str], sample: str) -> None:
    """Skip (with the reason) when the tool is missing or cannot check anything here."""
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed (CI installs it: apt-get install "
                    f"{'nftables' if cmd[0] == 'nft' else 'iptables'})")
    probe = subprocess.run(cmd, input=sample, text=True, capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"{' '.join(cmd)} cannot check rules here: {probe.stderr.strip()}")


@pytest.mark.parametrize(("fmt", "cmd", "sample"), [
    ("nft", ["nft", "-c", "-f", "-"], "table inet probe {\n}\n"),
    ("iptables", ["iptables-restore", "--test", "--noflush"], "*filter\nCOMMIT\n"),
    ("ip6tables", ["ip6tables-restore", "--test", "--noflush"], "*filter\nCOMMIT\n"),
])
def test_the_real_tools_accept_the_rules(site, capsys, fmt, cmd, sample):
    _tool_checks(cmd, sample)
    text = rules(site, fmt, capsys)
    done = subprocess.run(cmd, input=text, text=True, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
