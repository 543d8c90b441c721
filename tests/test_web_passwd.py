"""`busguard passwd`: scrypt hashes in a 0600 file the server reads; bad files are refused
with the reason."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

from busguard.web.passwd import PasswdError, Verifier, read_users, verify_password


def passwd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "busguard.cli", "passwd", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_passwd_adds_changes_and_deletes_users_in_a_0600_file(tmp_path):
    f = tmp_path / "web.passwd"
    r = passwd("ops", "--file", str(f), "--password-stdin", stdin="first password\n")
    assert r.returncode == 0, r.stderr
    assert "added ops" in r.stdout
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    text = f.read_text()
    assert "first password" not in text and text.count("ops:scrypt$") == 1
    assert verify_password("first password", read_users(f)["ops"])
    assert not verify_password("first passwordx", read_users(f)["ops"])
    r = passwd("ops", "--file", str(f), "--password-stdin", stdin="second password\n")
    assert "changed ops" in r.stdout
    assert verify_password("second password", read_users(f)["ops"])
    assert passwd("ops", "--file", str(f), "--delete").returncode == 0
    assert read_users(f) == {}


def test_passwd_refuses_short_passwords_and_bad_names(tmp_path):
    f = tmp_path / "web.passwd"
    r = passwd("ops", "--file", str(f), "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "at least 8 characters" in r.stderr
    r = passwd("o:ps", "--file", str(f), "--password-stdin", stdin="long enough\n")
    assert r.returncode == 1 and "user name 'o:ps'" in r.stderr
    assert not f.exists()


def test_passwd_takes_the_file_from_the_sites_web_table(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[site]\nname = "x"\n[modbus_server]\nport = 0\n'
                    '[web]\ntls = false\npasswd = "secrets/users"\n')
    (tmp_path / "secrets").mkdir()
    r = passwd("ops", "--site", str(site), "--password-stdin", stdin="long enough\n")
    assert r.returncode == 0, r.stderr
    assert "ops" in read_users(tmp_path / "secrets/users")


def test_a_file_others_can_read_or_a_malformed_one_is_refused_with_the_fix(tmp_path):
    f = tmp_path / "web.passwd"
    f.write_text("ops:plaintext\n")
    f.chmod(0o600)
    with pytest.raises(PasswdError, match=r"web.passwd:1: expected 'user:scrypt"):
        read_users(f)
    f.chmod(0o640)
    with pytest.raises(PasswdError, match="mode 0640 lets other users read"):
        read_users(f)
    with pytest.raises(PasswdError, match="no such file; create a user with `busguard passwd"):
        read_users(tmp_path / "missing")


def test_the_verifier_remembers_a_login_and_forgets_it_when_the_file_changes(tmp_path):
    f = tmp_path / "web.passwd"
    passwd("ops", "--file", str(f), "--password-stdin", stdin="long enough\n")
    v = Verifier(f)
    header = "Basic b3BzOmxvbmcgZW5vdWdo"
    assert v.known(header) is None
    assert v.check(header, "ops", "long enough")
    assert v.known(header) == "ops"
    passwd("ops", "--file", str(f), "--password-stdin", stdin="another one\n")
    assert v.known(header) is None  # a changed password ends the remembered login
    assert not v.check(header, "ops", "long enough")
