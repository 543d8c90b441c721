"""The web page's users: scrypt-hashed passwords in a file of their own (0600).

Credentials stay out of site.toml (which is shared, diffed, committed): one line per user,
``user:scrypt$N$r$p$salt$hash`` (base64), written atomically by ``busguard passwd`` with mode
0600. scrypt (hashlib, no extra dependency) makes a stolen file expensive to brute-force; the
price is ~50 ms of CPU per check, so the server remembers credentials it has verified
(:class:`Verifier`) instead of re-hashing on every request of a page that polls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from busguard.atomicfile import atomic_write

N, R, P = 2**14, 8, 1  # scrypt cost: ~16 MB and ~50 ms per check on a Pi-class CPU
SCHEME = "scrypt"
USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


class PasswdError(Exception):
    """A passwd file that cannot be used, with the reason a person can act on."""


def check_user(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= USER_CHARS:
        raise PasswdError(f"user name {name!r}: 1-64 characters of letters, digits, "
                          f"'.', '_', '-', '@'")
    return name


def hash_password(password: str, salt: bytes | None = None, n: int = N, r: int = R,
                  p: int = P) -> str:
    salt = os.urandom(16) if salt is None else salt
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20,
                        dklen=32)
    b64 = base64.b64encode
    return f"{SCHEME}${n}${r}${p}${b64(salt).decode()}${b64(dk).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, dk = encoded.split("$")
        if scheme != SCHEME:
            return False
        want = base64.b64decode(dk)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), maxmem=64 * 2**20, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def read_users(path: Path) -> dict[str, str]:
    """user -> encoded hash. Raises PasswdError (missing, readable by others, malformed)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswdError(f"{path}: no such file; create a user with "
                          f"`busguard passwd USER --file {path}`") from None
    except OSError as exc:
        raise PasswdError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise PasswdError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users "
                          f"read the password hashes; chmod 600 {path}")
    users: dict[str, str] = {}
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, enc = line.partition(":")
        if not sep or not enc.startswith(SCHEME + "$") or enc.count("$") != 5:
            raise PasswdError(f"{path}:{no}: expected 'user:scrypt$N$r$p$salt$hash' "
                              f"(written by `busguard passwd`)")
        users[name] = enc
    return users


def write_users(path: Path, users: dict[str, str]) -> None:
    body = "# busguard web users (busguard passwd USER); keep mode 0600\n" + "".join(
        f"{u}:{h}\n" for u, h in sorted(users.items()))
    atomic_write(path, body.encode(), mode=0o600)


class Verifier:
    """Checks HTTP basic credentials against the file, re-reading it when it changes.

    Verified ``Authorization`` values are remembered (an HMAC of them under a key made at
    start, never the password) so a page polling every second costs one scrypt per login,
    not one per request. Thread-safe: checks run in an executor.
    """

    def __init__(self, path: Path, remember: int = 64) -> None:
        self.path = path
        self.remember = remember
        self._key = os.urandom(32)
        self._ok: OrderedDict[bytes, str] = OrderedDict()
        self._users: dict[str, str] = {}
        self._mtime: tuple[int, ...] | None = None
        self._lock = threading.Lock()
        self.error = ""

    def _load(self) -> dict[str, str]:
        try:
            st = self.path.stat()
            key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode, st.st_ino)
        except OSError:
            key = None
        if key != self._mtime or key is None:
            self._ok.clear()
            self._mtime = key
            try:
                self._users = read_users(self.path)
                self.error = ""
            except PasswdError as exc:
                self._users = {}
                self.error = str(exc)
        return self._users

    def known(self, header: str) -> str | None:
        """The user of an already verified header (cheap; call on the event loop)."""
        tag = hmac.digest(self._key, header.encode("latin-1", "replace"), "sha256")
        with self._lock:
            self._load()
            return self._ok.get(tag)

    def check(self, header: str, user: str, password: str) -> bool:
        """Full check (scrypt): call from an executor thread."""
        with self._lock:
            enc = self._load().get(user)
        if enc is None:
            verify_password(password, hash_password("x", b"0" * 16))  # same cost either way
            return False
        if not verify_password(password, enc):
            return False
        tag = hmac.digest(self._key, header.encode("latin-1", "replace"), "sha256")
        with self._lock:
            self._ok[tag] = user
            while len(self._ok) > self.remember:
                self._ok.popitem(last=False)
        return True
