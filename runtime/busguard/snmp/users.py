"""SNMPv3 users: their USM master keys in a file of their own (mode 0600), never site.toml.

One JSON object per line: ``{"user", "auth", "priv", "auth_key", "priv_key"}``, the keys
being RFC 3414 master keys (Ku, the passphrase stretched over 1 MB with the auth hash) in hex,
not the passphrases: the agent localises them with its engine id, as net-snmp's
``usmUser`` lines with ``-m`` do. ``busguard snmp user-add`` writes it atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from busguard.atomicfile import atomic_write

AUTH = {"SHA-256": hashlib.sha256, "SHA-384": hashlib.sha384, "SHA-512": hashlib.sha512}
PRIV = ("AES", "AES-192", "AES-256")  # AES = AES-128 (RFC 3826)
USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


class UsersError(Exception):
    """A users file or entry that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class User:
    name: str
    auth: str
    priv: str
    auth_key: bytes
    priv_key: bytes


def master_key(passphrase: str, auth: str) -> bytes:
    """RFC 3414 A.2 password-to-key (without localisation): 1 MiB of the repeated
    passphrase through the auth hash."""
    if len(passphrase) < 8:
        raise UsersError("a USM passphrase needs at least 8 characters (RFC 3414)")
    h = AUTH[auth]()
    pw = passphrase.encode()
    h.update((pw * (1048576 // len(pw) + 1))[:1048576])
    return h.digest()


def make_user(name: str, auth_pass: str, priv_pass: str, auth: str = "SHA-256",
              priv: str = "AES") -> User:
    if not name or len(name) > 32 or not set(name) <= USER_CHARS:
        raise UsersError(f"user name {name!r}: 1-32 characters of letters, digits, . _ - @")
    if auth not in AUTH:
        raise UsersError(f"auth {auth!r}: one of {', '.join(AUTH)}")
    if priv not in PRIV:
        raise UsersError(f"priv {priv!r}: one of {', '.join(PRIV)}")
    return User(name, auth, priv, master_key(auth_pass, auth), master_key(priv_pass, auth))


def read_users(path: Path) -> dict[str, User]:
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise UsersError(f"{path}: {exc.strerror}; add a user with `busguard snmp user-add "
                         f"USER --file {path}`") from exc
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise UsersError(f"{path}: mode {stat.S_IMODE(st.st_mode):o}, readable by others; "
                         f"chmod 600 it (it holds USM keys)")
    users: dict[str, User] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            u = User(d["user"], d["auth"], d["priv"], bytes.fromhex(d["auth_key"]),
                     bytes.fromhex(d["priv_key"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsersError(f"{path}:{n}: not a user entry ({exc})") from None
        if u.auth not in AUTH or u.priv not in PRIV:
            raise UsersError(f"{path}:{n}: auth {u.auth!r} / priv {u.priv!r} not supported")
        users[u.name] = u
    return users


def write_users(path: Path, users: dict[str, User]) -> None:
    text = "".join(json.dumps({"user": u.name, "auth": u.auth, "priv": u.priv,
                               "auth_key": u.auth_key.hex(), "priv_key": u.priv_key.hex()})
                   + "\n" for u in users.values())
    atomic_write(path, text.encode(), mode=0o600)
    os.chmod(path, 0o600)
